//! ingest's HTTP contract (SPEC §4.1) against the real RabbitMQ.

mod common;

use common::TOKEN;
use shared::events::Event;
use shared::testing::{Broker, Service, Taken, TestEnv};
/// The token being rotated out: accepted beside `TOKEN` (INGEST_TOKEN="new,old").
const OLD_TOKEN: &str = "ingest-old-token-4567";

/// ingest on port 0 against `amqp_url`, not yet awaited ready.
async fn spawn_app(amqp_url: &str, max_body: u32) -> Service {
    let amqp_url = amqp_url.to_owned();
    let config = move |http_addr| ingest::Config {
        ingest_token: shared::token::Tokens::parse(&format!("{TOKEN}, {OLD_TOKEN}"))
            .expect("two tokens"),
        max_body_bytes: max_body,
        ..ingest::Config {
            http_addr,
            ..common::config(&amqp_url)
        }
    };
    Service::spawn("ingest", config, ingest::run).await
}

/// The next message in the validator's queue, if any.
async fn take_received(env: &TestEnv) -> Option<Taken> {
    let broker = Broker::connect(env).await;
    let got = broker.take("validator").await;
    broker.close().await;
    got
}

fn body_event(msg: &Taken) -> shared::events::SmsReceived {
    match msg.event() {
        Event::SmsReceived(e) => e,
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn accepted_sms_is_in_the_queue_when_202_is_answered() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 16 * 1024).await;
    app.ready().await;
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/v1/sms", app.base))
        .bearer_auth(TOKEN)
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&serde_json::json!({
            "message_id": "gw-123", "from": "89001234567", "to": "+79037672060",
            "text": "1234567 12345", "received_at": "2026-11-20T10:00:00+05:00"
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 202);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["message_id"], "gw-123");
    // Confirmed before 202: the message is already in the consumer's queue.
    let msg = take_received(&env)
        .await
        .expect("message in the validator queue");
    let event = body_event(&msg);
    assert_eq!(event.message_id, "gw-123");
    assert_eq!(event.from, "+79001234567", "normalised to E.164");
    assert_eq!(event.text, "1234567 12345");
    assert_eq!(event.received_at.to_rfc3339(), "2026-11-20T10:00:00+05:00");
    let tp = msg.header("traceparent").expect("traceparent header");
    assert!(
        tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "same trace: {tp}"
    );
    assert_eq!(
        msg.properties.content_type().as_ref().map(|c| c.as_str()),
        Some("application/json")
    );
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn without_id_and_time_a_stable_id_is_derived_and_time_stamped() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 16 * 1024).await;
    app.ready().await;
    let client = reqwest::Client::new();
    let send = || async {
        let r = client
            .post(format!("{}/v1/sms", app.base))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"from": "+79001234567", "to": "7377", "text": "1000001 5"}))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 202);
        r.json::<serde_json::Value>().await.expect("json")["message_id"]
            .as_str()
            .expect("id")
            .to_owned()
    };
    let minute = || chrono::Utc::now().timestamp().div_euclid(60);
    let before = minute();
    let first = send().await;
    let second = send().await;
    let after = minute();
    assert!(first.starts_with("sms-"), "{first}");
    // Same minute, same content: a gateway retry is the same message. (Both requests
    // fell in one minute when the clock read the same minute before and after them;
    // the old check, `now % 60 < 58` after the fact, was true just after a boundary.)
    if before == after {
        assert_eq!(first, second);
    }
    let event = body_event(&take_received(&env).await.expect("queued"));
    assert!(
        (chrono::Utc::now() - event.received_at.to_utc())
            .num_seconds()
            .abs()
            < 60
    );
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn refusals_carry_a_status_and_a_json_reason() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 1024).await;
    app.ready().await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/sms", app.base);
    let ok_body = serde_json::json!({"from": "+79001234567", "to": "7377", "text": "1 2"});

    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (client.post(&url).json(&ok_body), 401, "unauthorized"),
        (client.post(&url).bearer_auth("wrong-token-xx").json(&ok_body), 401, "unauthorized"),
        (client.post(&url).bearer_auth(TOKEN).body("{not json"), 400, "bad_request"),
        (client.post(&url).bearer_auth(TOKEN).json(&serde_json::json!({"from": "+79001234567"})), 400, "bad_request"),
        (client.post(&url).bearer_auth(TOKEN).json(&serde_json::json!({"from": "call me", "to": "7377", "text": "x"})), 400, "bad_request"),
        (client.post(&url).bearer_auth(TOKEN).json(&serde_json::json!({"from": "+79001234567", "to": "7377", "text": 5})), 400, "bad_request"),
        (client.post(&url).bearer_auth(TOKEN).json(&serde_json::json!({"message_id": "", "from": "+79001234567", "to": "7377", "text": "x"})), 400, "bad_request"),
        (client.post(&url).bearer_auth(TOKEN).json(&serde_json::json!({"from": "+79001234567", "to": "7377", "text": "x", "received_at": "yesterday"})), 400, "bad_request"),
        (client.post(&url).bearer_auth(TOKEN).body(vec![b'a'; 64 * 1024]), 413, "too_large"),
    ];
    for (i, (req, status, code)) in cases.into_iter().enumerate() {
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status().as_u16(), status, "case {i}");
        let body: serde_json::Value = resp.json().await.expect("json error body");
        assert_eq!(body["error"], code, "case {i}: {body}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "case {i}: {body}"
        );
    }
    assert!(
        take_received(&env).await.is_none(),
        "nothing refused was published"
    );
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn broker_down_is_503_with_retry_after() {
    let app = spawn_app("amqp://guest:guest@127.0.0.1:1/%2f", 16 * 1024).await;
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let live = client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .expect("healthz");
    assert_eq!(live.status(), 200);
    let resp = client
        .post(format!("{}/v1/sms", app.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({"from": "+79001234567", "to": "7377", "text": "1 2"}))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    app.stop().await;
}

#[tokio::test]
async fn kannel_get_url_form_is_accepted() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 16 * 1024).await;
    app.ready().await;
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("{}/v1/sms/kannel", app.base))
        .query(&[
            ("token", TOKEN),
            ("id", "0b4f2f5e-1c1d-4a53-9c55-6b1f0a0e0a11"),
            ("from", "79121234567"),
            ("to", "7377"),
            ("ts", "1795154400"),
            ("text", "лс 1000001 т1 45100"),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 202);
    assert!(
        resp.text().await.expect("body").is_empty(),
        "empty body for Kannel"
    );
    let event = body_event(&take_received(&env).await.expect("queued"));
    assert_eq!(
        event.message_id,
        "kannel-0b4f2f5e-1c1d-4a53-9c55-6b1f0a0e0a11"
    );
    assert_eq!(event.from, "+79121234567");
    assert_eq!(event.to, "7377");
    assert_eq!(event.text, "лс 1000001 т1 45100");
    assert_eq!(event.received_at.timestamp(), 1_795_154_400);

    let bad = client
        .get(format!("{}/v1/sms/kannel", app.base))
        .query(&[
            ("token", "nope-nope-nope"),
            ("from", "79121234567"),
            ("to", "7377"),
            ("text", "1"),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(bad.status(), 401);
    let bad_ts = client
        .get(format!("{}/v1/sms/kannel", app.base))
        .query(&[
            ("token", TOKEN),
            ("from", "79121234567"),
            ("to", "7377"),
            ("text", "1"),
            ("ts", "soon"),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(bad_ts.status(), 400);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn metrics_count_requests_by_status() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 16 * 1024).await;
    app.ready().await;
    let client = reqwest::Client::new();
    client
        .post(format!("{}/v1/sms", app.base))
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("request");
    let metrics = app.metrics().await;
    assert_eq!(
        metrics.exact(
            "ingest_requests_total",
            &[("endpoint", "sms"), ("status", "401")]
        ),
        Some(1.0),
        "{}",
        metrics.text
    );
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn during_a_rotation_either_token_is_accepted_and_no_other() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 16 * 1024).await;
    app.ready().await;
    let client = reqwest::Client::new();
    let sms = |id: &str| serde_json::json!({"message_id": id, "from": "+79001234567", "to": "7377", "text": "1000001 5"});
    for (i, token) in [TOKEN, OLD_TOKEN].into_iter().enumerate() {
        let resp = client
            .post(format!("{}/v1/sms", app.base))
            .bearer_auth(token)
            .json(&sms(&format!("rot-{i}")))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 202, "token {i}");
        let kannel = client
            .get(format!("{}/v1/sms/kannel", app.base))
            .query(&[
                ("token", token),
                ("id", &format!("k{i}")),
                ("from", "79121234567"),
                ("to", "7377"),
                ("text", "1"),
            ])
            .send()
            .await
            .expect("request");
        assert_eq!(kannel.status(), 202, "kannel, token {i}");
    }
    // Both tokens glued together, one with its last character changed, a prefix:
    // each is refused with a challenge.
    let glued = format!("{TOKEN},{OLD_TOKEN}");
    let changed = format!("{}X", &OLD_TOKEN[..OLD_TOKEN.len() - 1]);
    for wrong in [glued.as_str(), changed.as_str(), &TOKEN[..16]] {
        let resp = client
            .post(format!("{}/v1/sms", app.base))
            .bearer_auth(wrong)
            .json(&sms("rot-wrong"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 401, "{wrong}");
        assert_eq!(
            resp.headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
    }
    let broker = Broker::connect(&env).await;
    let mut ids = Vec::new();
    while let Some(msg) = broker.take("validator").await {
        ids.push(body_event(&msg).message_id);
    }
    broker.close().await;
    ids.sort();
    assert_eq!(ids, ["kannel-k0", "kannel-k1", "rot-0", "rot-1"]);
    app.stop().await;
    env.cleanup().await;
}

#[test]
fn a_token_shorter_than_16_characters_is_refused_at_start() {
    use clap::Parser as _;
    #[derive(clap::Parser)]
    struct Probe {
        #[command(flatten)]
        config: ingest::Config,
    }
    let err = Probe::try_parse_from(["ingest", "--ingest-token", "short-token"])
        .err()
        .expect("a short token is refused");
    assert!(err.to_string().contains("16 characters"), "{err}");
    let ok = Probe::try_parse_from(["ingest", "--ingest-token", &format!("{TOKEN},{OLD_TOKEN}")])
        .expect("two long tokens");
    assert_eq!(ok.config.ingest_token.len(), 2);
}

/// A gateway whose clock runs a day ahead: the message is taken, with the time of
/// receipt instead of the gateway's (SPEC §4.1), and counted; a retry of it is still
/// the same message (its derived id comes from what the gateway sent).
#[tokio::test]
async fn a_received_at_from_the_future_is_replaced_by_the_time_of_receipt() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 16 * 1024).await;
    app.ready().await;
    let client = reqwest::Client::new();
    let ahead = chrono::Utc::now() + chrono::TimeDelta::days(1);
    let body = serde_json::json!({
        "from": "+79001234567", "to": "7377", "text": "1000001 5",
        "received_at": ahead.to_rfc3339(),
    });
    let mut ids = Vec::new();
    for _ in 0..2 {
        let resp = client
            .post(format!("{}/v1/sms", app.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 202);
        let id: serde_json::Value = resp.json().await.expect("json");
        ids.push(id["message_id"].as_str().expect("id").to_owned());
    }
    assert_eq!(ids[0], ids[1], "a retry is the same message");
    let kannel = client
        .get(format!("{}/v1/sms/kannel", app.base))
        .query(&[
            ("token", TOKEN),
            ("id", "future-ts"),
            ("from", "79121234567"),
            ("to", "7377"),
            ("ts", &ahead.timestamp().to_string()),
            ("text", "1000001 5"),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(kannel.status(), 202);
    // Within the bound, the gateway's time stands.
    let near = chrono::Utc::now() + chrono::TimeDelta::minutes(3);
    let resp = client
        .post(format!("{}/v1/sms", app.base))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({
            "message_id": "near", "from": "+79001234567", "to": "7377", "text": "1000001 5",
            "received_at": near.to_rfc3339(),
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 202);

    let broker = Broker::connect(&env).await;
    let mut events = Vec::new();
    while let Some(msg) = broker.take("validator").await {
        events.push(body_event(&msg));
    }
    broker.close().await;
    assert_eq!(events.len(), 4, "{events:?}");
    for e in &events {
        let off = (e.received_at.to_utc() - chrono::Utc::now()).num_seconds();
        if e.message_id == "near" {
            assert_eq!(
                e.received_at.timestamp(),
                near.timestamp(),
                "within the bound it stands"
            );
        } else {
            assert!(
                off.abs() < 600,
                "{}: {} is not the time of receipt",
                e.message_id,
                e.received_at
            );
        }
    }
    assert_eq!(
        app.metric("ingest_received_at_replaced_total", &[]).await,
        3.0,
        "two posts and the Kannel one"
    );
    app.stop().await;
    env.cleanup().await;
}

/// Phone numbers never appear whole in logs: an invalid `from` is refused with `400`,
/// and neither the log line nor the answer repeats it (only its last two characters).
#[tokio::test]
async fn an_invalid_from_is_refused_without_being_logged_whole() {
    let logs = shared::testing::CapturedLogs::start();
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 16 * 1024).await;
    app.ready().await;
    let client = reqwest::Client::new();
    let numbers = ["+790012345671234", "+7900123456x"];
    let mut answers = Vec::new();
    for from in numbers {
        let resp = client
            .post(format!("{}/v1/sms", app.base))
            .bearer_auth(TOKEN)
            .json(&serde_json::json!({"from": from, "to": "7377", "text": "1234567 12345"}))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 400, "{from}");
        answers.push(resp.text().await.expect("body"));
    }
    let resp = client
        .get(format!("{}/v1/sms/kannel", app.base))
        .query(&[
            ("token", TOKEN),
            ("id", "k-1"),
            ("from", "79001234567999"),
            ("to", "7377"),
            ("text", "1234567 12345"),
        ])
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 400);
    answers.push(resp.text().await.expect("body"));
    app.stop().await;

    let logged = logs.text();
    assert!(
        logged.contains("request refused"),
        "the refusals are logged: {logged}"
    );
    for number in numbers.iter().chain(&["79001234567999"]) {
        // Its digits but the last two, in any form.
        let digits: String = number.chars().filter(char::is_ascii_digit).collect();
        let head = &digits[..digits.len() - 2];
        for (what, text) in
            std::iter::once(("logs", &logged)).chain(answers.iter().map(|a| ("answer", a)))
        {
            let shown: String = text.chars().filter(char::is_ascii_digit).collect();
            assert!(!shown.contains(head), "{what} show {number}: {text}");
        }
    }
    env.cleanup().await;
}
