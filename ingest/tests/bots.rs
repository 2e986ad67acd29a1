//! The bots' webhooks (SPEC §4.9) against the real RabbitMQ, in the style of Courier's
//! handler tests: each recorded update of `tests/bots/<platform>.json` (built from
//! the platform's published `Update` objects) is posted with the platform's secret;
//! the case says the status it must get, the `sms.received` it must publish — or that
//! nothing is published — and how the update is counted.

mod common;

use std::collections::HashMap;

use common::{MAX_SECRET, TELEGRAM_OLD_SECRET, TELEGRAM_SECRET, taken};
use serde::Deserialize;
use shared::testing::{Service, TestEnv};

/// One recorded update and what it must lead to.
#[derive(Debug, Deserialize)]
struct Case {
    label: String,
    /// The update, as the platform posts it.
    body: Option<serde_json::Value>,
    /// A body that is not JSON, as sent.
    raw: Option<String>,
    status: u16,
    /// The fields the published event must have; `null`: nothing is published.
    event: Option<serde_json::Value>,
    /// The `outcome` label the update is counted under (`None`: not counted).
    outcome: Option<String>,
}

struct Webhook {
    path: &'static str,
    header: &'static str,
    secret: &'static str,
    platform: &'static str,
    cases: &'static str,
}

const TELEGRAM: Webhook = Webhook {
    path: "/v1/bots/telegram",
    header: "X-Telegram-Bot-Api-Secret-Token",
    secret: TELEGRAM_SECRET,
    platform: "telegram",
    cases: include_str!("bots/telegram.json"),
};

const MAX: Webhook = Webhook {
    path: "/v1/bots/max",
    header: "X-Max-Bot-Api-Secret",
    secret: MAX_SECRET,
    platform: "max",
    cases: include_str!("bots/max.json"),
};

async fn post(
    app: &Service,
    hook: &Webhook,
    secret: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}{}", app.base, hook.path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(secret) = secret {
        request = request.header(hook.header, secret);
    }
    request.send().await.expect("request")
}

fn body_of(case: &Case) -> Vec<u8> {
    match (&case.body, &case.raw) {
        (Some(body), _) => serde_json::to_vec(body).expect("json"),
        (None, Some(raw)) => raw.clone().into_bytes(),
        (None, None) => panic!("{}: no body", case.label),
    }
}

/// Checks that `event` has every field `expected` names, with its value (times as
/// instants: an offset may be written `Z` or `+00:00`).
fn assert_fields(label: &str, event: &serde_json::Value, expected: &serde_json::Value) {
    assert_eq!(event["schema"], "sms.received/v1", "{label}");
    for (field, want) in expected.as_object().expect("an object of fields") {
        let got = &event[field.as_str()];
        if field == "received_at" {
            let at = |v: &serde_json::Value| {
                chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap_or_default())
                    .unwrap_or_else(|e| panic!("{label}: {field} {v}: {e}"))
            };
            assert_eq!(at(got), at(want), "{label}: {field}");
        } else {
            assert_eq!(got, want, "{label}: {field} in {event}");
        }
    }
}

/// Runs every recorded case of one platform on one ingest, then checks the counts.
async fn replay(hook: &Webhook) {
    let env = TestEnv::new().await;
    let app = common::spawn(common::config(&env.amqp_url)).await;
    let cases: Vec<Case> = serde_json::from_str(hook.cases).expect("the recorded cases");
    let mut counted: HashMap<String, f64> = HashMap::new();
    for case in &cases {
        let response = post(&app, hook, Some(hook.secret), body_of(case)).await;
        let status = response.status().as_u16();
        let answer = response.text().await.expect("body");
        assert_eq!(status, case.status, "{}: {answer}", case.label);
        if status == 200 {
            // Telegram would execute a JSON answer naming a `method`.
            assert_eq!(answer, "", "{}: a 200 has no body", case.label);
        } else {
            let reason: serde_json::Value = serde_json::from_str(&answer).expect("a JSON reason");
            assert!(
                reason["message"].as_str().is_some_and(|m| !m.is_empty()),
                "{}: {reason}",
                case.label
            );
        }
        let published = taken(&env).await;
        match &case.event {
            Some(expected) => {
                assert_eq!(published.len(), 1, "{}: one event", case.label);
                let event: serde_json::Value =
                    serde_json::from_slice(&published[0].body).expect("json");
                assert_fields(&case.label, &event, expected);
            }
            None => assert!(published.is_empty(), "{}: nothing published", case.label),
        }
        if let Some(outcome) = &case.outcome {
            *counted.entry(outcome.clone()).or_default() += 1.0;
        }
    }
    for outcome in ["published", "unused", "unreadable"] {
        let labels = [("platform", hook.platform), ("outcome", outcome)];
        assert_eq!(
            app.metric("ingest_bot_updates_total", &labels).await,
            counted.get(outcome).copied().unwrap_or(0.0),
            "{labels:?}"
        );
    }
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn recorded_telegram_updates_publish_what_they_must() {
    replay(&TELEGRAM).await;
}

#[tokio::test]
async fn recorded_max_updates_publish_what_they_must() {
    replay(&MAX).await;
}

/// The first recorded case of a platform: a text message.
fn first_message(hook: &Webhook) -> Vec<u8> {
    let cases: Vec<Case> = serde_json::from_str(hook.cases).expect("cases");
    body_of(&cases[0])
}

#[tokio::test]
async fn a_webhook_needs_its_platforms_secret_and_takes_either_during_a_rotation() {
    let env = TestEnv::new().await;
    let app = common::spawn(common::config(&env.amqp_url)).await;
    for (hook, refused) in [
        (
            &TELEGRAM,
            [None, Some("wrong-secret-0123456789"), Some(MAX_SECRET)],
        ),
        (
            &MAX,
            [None, Some("wrong-secret-0123456789"), Some(TELEGRAM_SECRET)],
        ),
    ] {
        for secret in refused {
            let response = post(&app, hook, secret, first_message(hook)).await;
            assert_eq!(response.status(), 401, "{} with {secret:?}", hook.path);
        }
        assert!(
            taken(&env).await.is_empty(),
            "nothing published without the secret"
        );
    }
    // The Bearer token of the gateways is not a webhook's secret.
    let response = reqwest::Client::new()
        .post(format!("{}{}", app.base, TELEGRAM.path))
        .bearer_auth(common::INGEST_TOKEN)
        .body(first_message(&TELEGRAM))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401);
    for secret in [TELEGRAM_SECRET, TELEGRAM_OLD_SECRET] {
        let response = post(&app, &TELEGRAM, Some(secret), first_message(&TELEGRAM)).await;
        assert_eq!(response.status(), 200, "{secret}");
    }
    assert_eq!(taken(&env).await.len(), 2);
    assert_eq!(
        app.metric(
            "ingest_requests_total",
            &[("endpoint", "telegram"), ("status", "401")]
        )
        .await,
        4.0
    );
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_platforms_retry_is_the_same_message() {
    let env = TestEnv::new().await;
    let app = common::spawn(common::config(&env.amqp_url)).await;
    for hook in [&TELEGRAM, &MAX] {
        for _ in 0..2 {
            let response = post(&app, hook, Some(hook.secret), first_message(hook)).await;
            assert_eq!(response.status(), 200);
        }
        let ids: Vec<String> = taken(&env)
            .await
            .iter()
            .map(|m| m.event().message_id().to_owned())
            .collect();
        assert_eq!(ids.len(), 2, "{}", hook.path);
        assert_eq!(ids[0], ids[1], "the validator takes it once");
    }
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn without_its_setting_a_webhook_is_off_and_says_which() {
    let env = TestEnv::new().await;
    let mut config = common::config(&env.amqp_url);
    config.channels.max_webhook_secret = None;
    let app = common::spawn(config).await;
    let response = post(&app, &MAX, Some(MAX_SECRET), first_message(&MAX)).await;
    assert_eq!(response.status(), 503);
    let reason: serde_json::Value = response.json().await.expect("json");
    assert_eq!(reason["error"], "not_configured");
    assert!(
        reason["message"]
            .as_str()
            .is_some_and(|m| m.contains("MAX_WEBHOOK_SECRET")),
        "{reason}"
    );
    // The other platform's webhook is not affected.
    let response = post(
        &app,
        &TELEGRAM,
        Some(TELEGRAM_SECRET),
        first_message(&TELEGRAM),
    )
    .await;
    assert_eq!(response.status(), 200);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_update_past_max_body_bytes_is_taken_and_past_a_mebibyte_refused() {
    let env = TestEnv::new().await;
    let app = common::spawn(common::config(&env.amqp_url)).await;
    // A 4,096-character Cyrillic message quoting another as long: about 16 KiB of
    // text alone, past MAX_BODY_BYTES (16,384) with the rest of the update.
    let long = "ж".repeat(4096);
    let update = serde_json::json!({
        "update_id": 1,
        "message": {
            "message_id": 77,
            "from": {"id": 5, "is_bot": false, "first_name": "Иван"},
            "chat": {"id": 5, "type": "private"},
            "date": 1_795_000_000,
            "text": long,
            "reply_to_message": {
                "message_id": 76,
                "from": {"id": 5, "is_bot": false, "first_name": "Иван"},
                "chat": {"id": 5, "type": "private"},
                "date": 1_794_999_000,
                "text": long
            }
        }
    });
    let body = serde_json::to_vec(&update).expect("json");
    assert!(body.len() > 16 * 1024, "{}", body.len());
    let response = post(&app, &TELEGRAM, Some(TELEGRAM_SECRET), body).await;
    assert_eq!(response.status(), 200);
    let published = taken(&env).await;
    assert_eq!(published.len(), 1);
    let shared::events::Event::SmsReceived(sms) = published[0].event() else {
        panic!("an sms.received");
    };
    assert_eq!(sms.text.chars().count(), 4096);

    let huge = vec![b' '; ingest_body_limit() + 1];
    let response = post(&app, &TELEGRAM, Some(TELEGRAM_SECRET), huge).await;
    assert_eq!(response.status(), 413);
    assert!(taken(&env).await.is_empty());
    app.stop().await;
    env.cleanup().await;
}

/// The bots' body limit (1 MiB).
fn ingest_body_limit() -> usize {
    1024 * 1024
}

#[tokio::test]
async fn with_the_broker_away_an_update_is_503_and_the_platform_retries() {
    let app = Service::spawn(
        "ingest",
        |http_addr| ingest::Config {
            http_addr,
            ..common::config("amqp://guest:guest@127.0.0.1:1/%2f")
        },
        ingest::run,
    )
    .await;
    for hook in [&TELEGRAM, &MAX] {
        let response = post(&app, hook, Some(hook.secret), first_message(hook)).await;
        assert_eq!(response.status(), 503, "{}", hook.path);
        assert!(response.headers().contains_key("retry-after"));
    }
    app.stop().await;
}
