//! SMS replies (SPEC §4.3) through an HTTP gateway double (`wiremock`, with
//! `expect(n)`): once per refusal, retried on 503, dead-lettered on 400, and held back
//! by the country filter, the per-number daily cap and the global hourly budget.

mod common;

use std::time::Duration;

use common::{App, Broker, accepted, config, ledger, rejected, use_http_gateway, wait_state};
use shared::testing::TestEnv;
use wiremock::matchers::{body_partial_json, header, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const REPLY: &str = "Неверный формат. Пример: 1000001 12345";

async fn gateway() -> MockServer {
    MockServer::start().await
}

fn gateway_url(server: &MockServer) -> String {
    format!("{}/v1/sms", server.uri())
}

#[tokio::test]
async fn refusal_is_answered_once_with_an_idempotency_key() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = gateway().await;
    Mock::given(method("POST"))
        .and(path("/v1/sms"))
        .and(header("authorization", "Bearer gw-token-123"))
        .and(header(
            "idempotency-key",
            notifier::gateway::idempotency_key("gw-1").as_str(),
        ))
        .and(body_partial_json(serde_json::json!({
            "to": "+79001234567", "from": "7377", "text": REPLY, "reply_to": "gw-1"
        })))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &gateway_url(&server));
    let app = App::spawn(cfg).await;
    let broker = Broker::connect(&env).await;

    broker
        .publish(&rejected("gw-1", "+79001234567", Some(REPLY)))
        .await;
    wait_state(&ledger(&env), "reply:gw-1", "sent").await;
    app.wait_settled("acked", 1.0).await;
    assert_eq!(
        app.metric("notifier_replies_sent_total", &[("gateway", "http")])
            .await,
        1.0
    );
    server.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_same_refusal_delivered_twice_is_answered_once() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = gateway().await;
    Mock::given(method("POST"))
        .and(header_exists("idempotency-key"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &gateway_url(&server));
    let app = App::spawn(cfg).await;
    let broker = Broker::connect(&env).await;

    let event = rejected("gw-dup", "+79001234567", Some(REPLY));
    broker.publish(&event).await;
    broker.publish(&event).await;
    // Both copies are settled (acked directly, or after a "busy" retry).
    app.wait_settled("acked", 2.0).await;
    assert_eq!(
        common::state(&ledger(&env), "reply:gw-dup")
            .await
            .as_deref(),
        Some("sent")
    );
    assert_eq!(
        app.metric("notifier_duplicates_skipped_total", &[("channel", "sms")])
            .await,
        1.0
    );
    server.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn accepted_readings_and_silent_refusals_send_no_sms() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = gateway().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &gateway_url(&server));
    let app = App::spawn(cfg).await;
    let broker = Broker::connect(&env).await;

    broker
        .publish(&accepted(uuid::Uuid::new_v4(), None, vec![45100]))
        .await;
    // rate_limited: the validator sends no reply for it.
    broker
        .publish(&rejected("gw-quiet", "+79001234567", None))
        .await;
    app.wait_settled("acked", 2.0).await;
    server.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn gateway_503_is_retried_and_the_reply_sent_once() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = gateway().await;
    let key = notifier::gateway::idempotency_key("gw-503");
    Mock::given(method("POST"))
        .and(header("idempotency-key", key.as_str()))
        .respond_with(ResponseTemplate::new(503).set_body_string("try later"))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header("idempotency-key", key.as_str()))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &gateway_url(&server));
    let app = App::spawn(cfg).await;
    let broker = Broker::connect(&env).await;

    broker
        .publish(&rejected("gw-503", "+79001234567", Some(REPLY)))
        .await;
    wait_state(&ledger(&env), "reply:gw-503", "sent").await;
    app.wait_settled("acked", 1.0).await;
    assert_eq!(
        app.metric(
            "notifier_consumer_messages_total",
            &[("outcome", "retried")]
        )
        .await,
        1.0
    );
    assert_eq!(
        app.metric(
            "notifier_send_failures_total",
            &[("channel", "sms"), ("kind", "transient")]
        )
        .await,
        1.0
    );
    server.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

/// A gateway's `429` with `Retry-After` is retried when it said, not on the back-off
/// schedule (whose first retry comes after 1 s).
#[tokio::test]
async fn gateway_429_is_retried_after_the_wait_it_asks_for() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "6"))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &gateway_url(&server));
    let app = App::spawn(cfg).await;
    let broker = Broker::connect(&env).await;

    broker
        .publish(&rejected("gw-429", "+79001234567", Some(REPLY)))
        .await;
    app.wait_metric(
        "notifier_send_failures_total",
        &[("channel", "sms"), ("kind", "transient")],
        1.0,
    )
    .await;
    let refused_at = tokio::time::Instant::now();
    wait_state(&ledger(&env), "reply:gw-429", "sent").await;
    let waited = refused_at.elapsed();
    // To within the consumer's tolerance: the retry queue's TTL runs on the broker's wall clock.
    assert!(
        waited + shared::consumer::DUE_TOLERANCE >= Duration::from_secs(5),
        "retried after {waited:?}"
    );
    server.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn gateway_400_is_dead_lettered_and_counted() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = gateway().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string("invalid destination"))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &gateway_url(&server));
    let app = App::spawn(cfg).await;
    let broker = Broker::connect(&env).await;

    broker
        .publish(&rejected("gw-400", "+79001234567", Some(REPLY)))
        .await;
    let dead = common::dead_letter(&broker).await;
    let event = shared::events::Event::from_json(&dead.body).expect("the event itself");
    assert_eq!(event.message_id(), "gw-400");
    let reason = dead.header("x-last-error").unwrap_or_default();
    assert!(
        reason.contains("400") && reason.contains("invalid destination"),
        "{reason}"
    );
    app.wait_settled("dead_lettered", 1.0).await;
    assert_eq!(
        app.metric(
            "notifier_send_failures_total",
            &[("channel", "sms"), ("kind", "permanent")]
        )
        .await,
        1.0
    );
    assert_eq!(
        common::state(&ledger(&env), "reply:gw-400")
            .await
            .as_deref(),
        Some("failed")
    );
    server.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn replies_go_only_to_allowed_countries() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = gateway().await;
    Mock::given(method("POST"))
        .and(body_partial_json(serde_json::json!({"to": "+79001234567"})))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_partial_json(
            serde_json::json!({"to": "+380441234567"}),
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &gateway_url(&server));
    let app = App::spawn(cfg).await;
    let broker = Broker::connect(&env).await;

    broker
        .publish(&rejected("gw-ua", "+380441234567", Some(REPLY)))
        .await;
    broker
        .publish(&rejected("gw-ru", "+79001234567", Some(REPLY)))
        .await;
    app.wait_settled("acked", 2.0).await;
    assert_eq!(
        app.metric(
            "notifier_replies_suppressed_total",
            &[("reason", "country")]
        )
        .await,
        1.0
    );
    let pool = ledger(&env);
    assert_eq!(
        common::state(&pool, "reply:gw-ua").await.as_deref(),
        Some("suppressed")
    );
    assert_eq!(
        common::state(&pool, "reply:gw-ru").await.as_deref(),
        Some("sent")
    );
    server.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn one_number_gets_at_most_the_daily_cap() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = gateway().await;
    Mock::given(method("POST"))
        .and(body_partial_json(serde_json::json!({"to": "+79001234567"})))
        .respond_with(ResponseTemplate::new(200))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(body_partial_json(serde_json::json!({"to": "+79007654321"})))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &gateway_url(&server));
    cfg.limits.reply_daily_cap_per_number = 2;
    let app = App::spawn(cfg).await;
    let broker = Broker::connect(&env).await;

    for i in 1..=4 {
        broker
            .publish(&rejected(
                &format!("gw-cap-{i}"),
                "+79001234567",
                Some(REPLY),
            ))
            .await;
    }
    // Another number is not affected by the first one's cap.
    broker
        .publish(&rejected("gw-other", "+79007654321", Some(REPLY)))
        .await;
    app.wait_settled("acked", 5.0).await;
    assert_eq!(
        app.metric(
            "notifier_replies_suppressed_total",
            &[("reason", "daily_cap")]
        )
        .await,
        2.0
    );
    assert_eq!(
        app.metric("notifier_replies_sent_total", &[("gateway", "http")])
            .await,
        3.0
    );
    server.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_hourly_budget_once_spent_stops_replies_and_raises_a_metric() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = gateway().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(3)
        .mount(&server)
        .await;
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &gateway_url(&server));
    cfg.limits.reply_hourly_budget = 3;
    let app = App::spawn(cfg).await;
    let broker = Broker::connect(&env).await;

    // Five different numbers: no per-number cap is involved.
    for i in 1..=5 {
        broker
            .publish(&rejected(
                &format!("gw-budget-{i}"),
                &format!("+7900123456{i}"),
                Some(REPLY),
            ))
            .await;
    }
    app.wait_settled("acked", 5.0).await;
    assert_eq!(
        app.metric("notifier_replies_suppressed_total", &[("reason", "budget")])
            .await,
        2.0
    );
    assert_eq!(
        app.metric("notifier_reply_budget_exhausted", &[]).await,
        1.0
    );
    assert_eq!(
        app.metric("notifier_reply_budget_exhaustions_total", &[])
            .await,
        2.0
    );
    // Suppressed, not retried: nothing waits in a retry queue.
    assert_eq!(
        app.metric(
            "notifier_consumer_messages_total",
            &[("outcome", "retried")]
        )
        .await,
        0.0
    );
    server.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn undecodable_events_are_dead_lettered() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let app = App::spawn(config(&env, &scratch)).await;
    let broker = Broker::connect(&env).await;

    broker
        .publish_raw("reading.rejected", br#"{"schema":"reading.rejected/v9"}"#)
        .await;
    let dead = common::dead_letter(&broker).await;
    let reason = dead.header("x-last-error").unwrap_or_default();
    assert!(reason.contains("undecodable"), "{reason}");

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_log_gateway_is_the_local_default() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let app = App::spawn(config(&env, &scratch)).await;
    let broker = Broker::connect(&env).await;

    broker
        .publish(&rejected("gw-log", "89001234567", Some(REPLY)))
        .await;
    app.wait_metric("notifier_replies_sent_total", &[("gateway", "log")], 1.0)
        .await;
    assert_eq!(
        common::state(&ledger(&env), "reply:gw-log")
            .await
            .as_deref(),
        Some("sent")
    );

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

/// SPEC §5: an event the ledger cannot store (a foreign publisher's message id with a
/// NUL, so its delivery key has one: SQLSTATE 22021) is dead-lettered at once with the reason; the other replies of its
/// batch are sent and recorded.
#[tokio::test]
async fn an_event_the_ledger_refuses_is_dead_lettered_alone() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let broker = Broker::connect(&env).await;
    // Queued before the notifier starts, so that they arrive as one batch.
    let good = ["gw-good-1", "gw-good-2", "gw-good-3"];
    broker
        .publish(&rejected(good[0], "+79001234561", Some(REPLY)))
        .await;
    broker
        .publish(&rejected("gw-refused\u{0}", "+79001234562", Some(REPLY)))
        .await;
    broker
        .publish(&rejected(good[1], "+79001234563", Some(REPLY)))
        .await;
    broker
        .publish(&rejected(good[2], "+79001234564", Some(REPLY)))
        .await;
    let app = App::spawn(config(&env, &scratch)).await;

    let pool = ledger(&env);
    for key in good {
        wait_state(&pool, &format!("reply:{key}"), "sent").await;
    }
    let dead = common::dead_letter(&broker).await;
    let event = shared::events::Event::from_json(&dead.body).expect("the event itself");
    assert_eq!(event.message_id(), "gw-refused\u{0}");
    let reason = dead.header("x-last-error").unwrap_or_default();
    assert!(reason.contains("0x00"), "{reason}");
    assert_eq!(
        shared::broker::header_int(&dead.headers, shared::consumer::ATTEMPT_HEADER),
        Some(1),
        "dead-lettered on its first attempt"
    );
    app.wait_settled("acked", 3.0).await;
    app.wait_settled("dead_lettered", 1.0).await;
    assert!(broker.take("notifier.dead").await.is_none(), "only the one");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM deliveries")
        .fetch_one(&pool)
        .await
        .expect("ledger");
    assert_eq!(
        rows, 3,
        "the three good replies, nothing of the refused one"
    );

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

/// A peer's answer is recorded in the ledger's `detail`: a NUL in it (the gateway's
/// bytes) is stored as `␀`, so the failed attempt is recorded (`failed`) instead of the
/// record being refused and the row left `sending`.
#[tokio::test]
async fn a_nul_in_the_gateways_answer_is_recorded() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = gateway().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(400).set_body_string("invalid\u{0}destination"))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &gateway_url(&server));
    let app = App::spawn(cfg).await;
    let broker = Broker::connect(&env).await;
    broker
        .publish(&rejected("gw-nul-answer", "+79001234567", Some(REPLY)))
        .await;
    let pool = ledger(&env);
    wait_state(&pool, "reply:gw-nul-answer", "failed").await;
    let detail: Option<String> =
        sqlx::query_scalar("SELECT detail FROM deliveries WHERE key = 'reply:gw-nul-answer'")
            .fetch_one(&pool)
            .await
            .expect("the delivery");
    let detail = detail.unwrap_or_default();
    assert!(detail.contains("invalid\u{2400}destination"), "{detail}");
    app.wait_settled("dead_lettered", 1.0).await;
    server.verify().await;
    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}
