//! Delivery reports (SPEC §4.3) at the notifier's own endpoints: the HTTP aggregator's
//! `POST /v1/dlr` with its token, Kannel's signed `GET /v1/dlr/kannel` as Kannel calls
//! it and Jasmin's signed `POST /v1/dlr/jasmin` as its DLR thrower posts (the real
//! round trips are in `kannel.rs` and `jasmin.rs`). Every authentic report is answered
//! 200 and counted by what it did — recorded, early, duplicate, conflicting, progress,
//! unknown reply — and a failed reply is never sent again.

mod common;

use common::{App, Broker, config, ledger, rejected, use_http_gateway, wait_state};
use notifier::report::{DlrCallback, SigningKeys};
use shared::testing::TestEnv;
use sqlx::PgPool;
use wiremock::matchers::{body_partial_json, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const REPLY: &str = "Неверный формат. Пример: 1000001 12345";
const SECRET: &str = "dlr-secret-for-tests-0123";

/// The report recorded for a reply: `(report, report_detail)`.
async fn report(pool: &PgPool, message_id: &str) -> (Option<String>, Option<String>) {
    sqlx::query_as("SELECT report, report_detail FROM deliveries WHERE key = $1")
        .bind(format!("reply:{message_id}"))
        .fetch_one(pool)
        .await
        .expect("ledger row")
}

async fn post_report(app: &App, token: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let response = reqwest::Client::new()
        .post(app.url("/v1/dlr"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("POST /v1/dlr");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

fn outcome(answer: &(u16, serde_json::Value)) -> (u16, &str) {
    (answer.0, answer.1["outcome"].as_str().unwrap_or(""))
}

#[tokio::test]
async fn aggregator_reports_settle_each_reply_once_and_a_failed_one_is_not_resent() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = MockServer::start().await;
    for id in ["gw-1", "gw-2"] {
        Mock::given(method("POST"))
            .and(path("/v1/sms"))
            .and(body_partial_json(serde_json::json!({"reply_to": id})))
            .respond_with(ResponseTemplate::new(200))
            .expect(1)
            .mount(&server)
            .await;
    }
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &format!("{}/v1/sms", server.uri()));
    let app = App::spawn(cfg).await;
    let broker = Broker::connect(&env).await;
    let pool = ledger(&env);
    for id in ["gw-1", "gw-2"] {
        broker
            .publish(&rejected(id, "+79001234567", Some(REPLY)))
            .await;
    }
    wait_state(&pool, "reply:gw-1", "sent").await;
    wait_state(&pool, "reply:gw-2", "sent").await;
    assert_eq!(report(&pool, "gw-1").await, (None, None));

    // Strangers cannot report: no token, a wrong one.
    let forged = serde_json::json!({"reply_to": "gw-1", "status": "failed"});
    assert_eq!(post_report(&app, "", forged.clone()).await.0, 401);
    assert_eq!(post_report(&app, "gw-token-124", forged).await.0, 401);

    let token = "gw-token-123";
    let delivered = serde_json::json!({"reply_to": "gw-1", "status": "delivered"});
    let failed = serde_json::json!({"reply_to": "gw-2", "status": "failed"});
    assert_eq!(
        outcome(&post_report(&app, token, delivered.clone()).await),
        (200, "recorded")
    );
    assert_eq!(
        outcome(&post_report(&app, token, failed.clone()).await),
        (200, "recorded")
    );
    assert_eq!(
        report(&pool, "gw-1").await,
        (Some("delivered".into()), Some("http delivered".into()))
    );
    assert_eq!(report(&pool, "gw-2").await.0.as_deref(), Some("failed"));
    // The sending state is untouched: still `sent`, one attempt each.
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM deliveries WHERE key = 'reply:gw-2'")
            .fetch_one(&pool)
            .await
            .expect("attempts");
    assert_eq!(attempts, 1);
    assert_eq!(
        common::state(&pool, "reply:gw-2").await.as_deref(),
        Some("sent")
    );

    // The aggregator retries: a duplicate, answered 200, counted, nothing changed.
    assert_eq!(
        outcome(&post_report(&app, token, delivered).await),
        (200, "duplicate")
    );
    // Out of order: failed after delivered. The first final report stands.
    let contradicting = serde_json::json!({"reply_to": "gw-1", "status": "failed"});
    assert_eq!(
        outcome(&post_report(&app, token, contradicting).await),
        (200, "conflicting")
    );
    assert_eq!(report(&pool, "gw-1").await.0.as_deref(), Some("delivered"));
    // A reply we never sent.
    let unknown = serde_json::json!({"reply_to": "gw-404", "status": "delivered"});
    assert_eq!(
        outcome(&post_report(&app, token, unknown).await),
        (200, "unknown_reply")
    );
    // Malformed: a status the contract does not have; no reply_to.
    let odd = serde_json::json!({"reply_to": "gw-1", "status": "DELIVRD"});
    assert_eq!(post_report(&app, token, odd).await.0, 400);
    let empty = serde_json::json!({"status": "failed"});
    assert_eq!(post_report(&app, token, empty).await.0, 400);

    let count = |status: &'static str, outcome: &'static str| {
        let app = &app;
        async move {
            app.metric(
                "notifier_delivery_reports_total",
                &[("source", "http"), ("status", status), ("outcome", outcome)],
            )
            .await
        }
    };
    assert_eq!(count("delivered", "recorded").await, 1.0);
    assert_eq!(count("failed", "recorded").await, 1.0);
    assert_eq!(count("delivered", "duplicate").await, 1.0);
    assert_eq!(count("failed", "conflicting").await, 1.0);
    assert_eq!(count("delivered", "unknown_reply").await, 1.0);
    assert_eq!(
        app.metric(
            "notifier_delivery_reports_refused_total",
            &[("source", "http"), ("reason", "unauthorized")]
        )
        .await,
        2.0
    );
    // Nothing was sent again: each reply's mock expects exactly one request.
    server.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn kannel_reports_need_the_replys_signature_and_may_overtake_the_send() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let mut cfg = config(&env, &scratch);
    let keys = SigningKeys::parse(SECRET).expect("keys");
    cfg.reports.dlr_secret = Some(keys.clone());
    let app = App::spawn(cfg).await;
    let pool = ledger(&env);
    // A reply whose sendsms answer is not recorded yet (the worker is between the
    // request and the ledger write), and one that was sent.
    for (key, state) in [("reply:kannel-a", "sending"), ("reply:kannel-b", "sent")] {
        sqlx::query(
            "INSERT INTO deliveries (key, channel, recipient, state, attempts)
             VALUES ($1, 'sms', '+79001234567', $2, 1)",
        )
        .bind(key)
        .bind(state)
        .execute(&pool)
        .await
        .expect("seed ledger row");
    }
    let callback = DlrCallback::new(app.url("/").parse().expect("url"), keys);
    // What Kannel requests: its dlr-url with `%d` replaced by the status code.
    let kannel = |message_id: &str, code: &str| {
        let url = callback.kannel_url(message_id).replace("%d", code);
        async move {
            let response = reqwest::get(url).await.expect("GET dlr-url");
            let status = response.status().as_u16();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (status, body["outcome"].as_str().unwrap_or("").to_owned())
        }
    };

    assert_eq!(kannel("kannel-a", "1").await, (200, "early".to_owned()));
    assert_eq!(
        report(&pool, "kannel-a").await.0.as_deref(),
        Some("delivered")
    );
    assert_eq!(kannel("kannel-b", "8").await, (200, "progress".to_owned()));
    assert_eq!(report(&pool, "kannel-b").await.0, None);
    assert_eq!(kannel("kannel-b", "16").await, (200, "recorded".to_owned()));
    assert_eq!(
        report(&pool, "kannel-b").await,
        (Some("failed".into()), Some("kannel 16".into()))
    );
    assert_eq!(kannel("kannel-b", "2").await, (200, "duplicate".to_owned()));
    assert_eq!(
        kannel("kannel-zzz", "1").await,
        (200, "unknown_reply".to_owned())
    );
    assert_eq!(kannel("kannel-b", "3").await.0, 400, "not a DLR code");

    // A signature for another reply, or none: refused, nothing recorded.
    let stolen = callback.kannel_url("kannel-b").replace("%d", "1");
    let other_reply = stolen.replace(&hex_of("kannel-b"), &hex_of("kannel-c"));
    assert_eq!(reqwest::get(other_reply).await.expect("GET").status(), 401);
    let unsigned = app.url(&format!(
        "/v1/dlr/kannel?reply={}&status=1",
        hex_of("kannel-b")
    ));
    assert_eq!(reqwest::get(unsigned).await.expect("GET").status(), 401);
    assert_eq!(report(&pool, "kannel-b").await.0.as_deref(), Some("failed"));
    assert_eq!(
        app.metric(
            "notifier_delivery_reports_refused_total",
            &[("source", "kannel"), ("reason", "unauthorized")]
        )
        .await,
        2.0
    );
    // Without SMS_HTTP_TOKEN the aggregator endpoint is not there.
    assert_eq!(
        post_report(
            &app,
            "x",
            serde_json::json!({"reply_to": "kannel-b", "status": "failed"})
        )
        .await
        .0,
        404
    );

    app.stop().await;
    env.cleanup().await;
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Jasmin's DLR thrower as it posts (seen from a running Jasmin 0.11.1, `jasmin.rs`): a
/// form with `id`, `level`, `message_status`, `connector` (and the receipt's fields at
/// level 2) to the signed dlr-url. Every authentic report is answered `ACK/Jasmin` —
/// the only answer that stops Jasmin throwing it again — and counted by what it did.
#[tokio::test]
async fn jasmin_reports_are_acked_once_recorded_and_need_the_replys_signature() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let mut cfg = config(&env, &scratch);
    let keys = SigningKeys::parse(SECRET).expect("keys");
    cfg.reports.dlr_secret = Some(keys.clone());
    let app = App::spawn(cfg).await;
    let pool = ledger(&env);
    for (key, state) in [("reply:jasmin-a", "sending"), ("reply:jasmin-b", "sent")] {
        sqlx::query(
            "INSERT INTO deliveries (key, channel, recipient, state, attempts)
             VALUES ($1, 'sms', '+79001234567', $2, 1)",
        )
        .bind(key)
        .bind(state)
        .execute(&pool)
        .await
        .expect("seed ledger row");
    }
    let callback = DlrCallback::new(app.url("/").parse().expect("url"), keys);
    let client = reqwest::Client::new();
    let jasmin = |url: String, fields: Vec<(&'static str, &'static str)>| {
        let client = client.clone();
        async move {
            let response = client
                .post(url)
                .header("user-agent", "Jasmin gateway/1.0 DLRThrower")
                .form(&fields)
                .send()
                .await
                .expect("POST dlr-url");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
    };
    let level1 = |status: &'static str| {
        vec![
            ("id", "15f55d5b-9471-48c5-8958-fd288edc2241"),
            ("level", "1"),
            ("message_status", status),
            ("connector", "upstream"),
        ]
    };
    let level2 = |status: &'static str| {
        vec![
            ("id", "15f55d5b-9471-48c5-8958-fd288edc2241"),
            ("level", "2"),
            ("message_status", status),
            ("connector", "smsc000001"),
            ("id_smsc", "SMSC000001"),
            ("sub", "001"),
            ("dlvrd", "001"),
            ("subdate", "2612020524"),
            ("donedate", "2612020524"),
            ("err", "000"),
            ("text", ""),
        ]
    };
    let ack = (200, "ACK/Jasmin".to_owned());
    let counted = |status: &'static str, outcome: &'static str| {
        let app = &app;
        async move {
            app.metric(
                "notifier_delivery_reports_total",
                &[
                    ("source", "jasmin"),
                    ("status", status),
                    ("outcome", outcome),
                ],
            )
            .await
        }
    };

    // Delivered before the ledger says sent: it stands (early).
    assert_eq!(
        jasmin(callback.jasmin_url("jasmin-a"), level2("DELIVRD")).await,
        ack
    );
    assert_eq!(
        report(&pool, "jasmin-a").await,
        (
            Some("delivered".into()),
            Some("jasmin DELIVRD err:000 id:15f55d5b-9471-48c5-8958-fd288edc2241".into())
        )
    );
    assert_eq!(counted("delivered", "early").await, 1.0);
    // The SMSC took it (level 1): nothing to record; then it could not be delivered.
    assert_eq!(
        jasmin(callback.jasmin_url("jasmin-b"), level1("ESME_ROK")).await,
        ack
    );
    assert_eq!(report(&pool, "jasmin-b").await.0, None);
    assert_eq!(counted("progress", "progress").await, 1.0);
    assert_eq!(
        jasmin(callback.jasmin_url("jasmin-b"), level2("UNDELIV")).await,
        ack
    );
    assert_eq!(report(&pool, "jasmin-b").await.0.as_deref(), Some("failed"));
    // Thrown again (Jasmin retries what it did not see acknowledged): a duplicate.
    assert_eq!(
        jasmin(callback.jasmin_url("jasmin-b"), level2("UNDELIV")).await,
        ack
    );
    assert_eq!(counted("failed", "duplicate").await, 1.0);
    // Delivered after failed: the first one stands.
    assert_eq!(
        jasmin(callback.jasmin_url("jasmin-b"), level2("DELIVRD")).await,
        ack
    );
    assert_eq!(counted("delivered", "conflicting").await, 1.0);
    assert_eq!(report(&pool, "jasmin-b").await.0.as_deref(), Some("failed"));
    // No such reply: acknowledged, counted, nothing written.
    assert_eq!(
        jasmin(callback.jasmin_url("jasmin-zzz"), level1("ESME_RINVDSTADR")).await,
        ack
    );
    assert_eq!(counted("failed", "unknown_reply").await, 1.0);
    // The reply is still `sent`: a failed reply is not re-sent by itself.
    assert_eq!(
        common::state(&pool, "reply:jasmin-b").await.as_deref(),
        Some("sent")
    );

    // Not a Jasmin status, or no status: 400, with the reason; nothing recorded.
    let (status, body) = jasmin(callback.jasmin_url("jasmin-b"), level2("delivered")).await;
    assert_eq!(status, 400);
    assert!(body.contains("not a Jasmin DLR status"), "{body}");
    let (status, _) = jasmin(callback.jasmin_url("jasmin-b"), vec![("id", "x")]).await;
    assert_eq!(status, 400);
    // Another reply's signature, or none: 401 with the reason, counted.
    let stolen = callback
        .jasmin_url("jasmin-b")
        .replace(&hex_of("jasmin-b"), &hex_of("jasmin-a"));
    let (status, body) = jasmin(stolen, level2("UNDELIV")).await;
    assert_eq!(status, 401);
    assert!(body.contains("unauthorized"), "{body}");
    let unsigned = app.url(&format!("/v1/dlr/jasmin?reply={}", hex_of("jasmin-a")));
    assert_eq!(jasmin(unsigned, level2("UNDELIV")).await.0, 401);
    assert_eq!(
        report(&pool, "jasmin-a").await.0.as_deref(),
        Some("delivered")
    );
    for (reason, n) in [("unauthorized", 2.0), ("malformed", 2.0)] {
        assert_eq!(
            app.metric(
                "notifier_delivery_reports_refused_total",
                &[("source", "jasmin"), ("reason", reason)]
            )
            .await,
            n,
            "{reason}"
        );
    }

    app.stop().await;
    env.cleanup().await;
}

/// Without `DLR_SECRET` no gateway was asked for reports: Jasmin's endpoint is not there.
#[tokio::test]
async fn jasmin_reports_without_a_secret_are_not_found() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let app = App::spawn(config(&env, &scratch)).await;
    let response = reqwest::Client::new()
        .post(app.url(&format!(
            "/v1/dlr/jasmin?reply={}&sig=00",
            hex_of("jasmin-a")
        )))
        .form(&[("id", "x"), ("level", "2"), ("message_status", "DELIVRD")])
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(
        app.metric(
            "notifier_delivery_reports_refused_total",
            &[("source", "jasmin"), ("reason", "not_configured")]
        )
        .await,
        1.0
    );
    app.stop().await;
    env.cleanup().await;
}
