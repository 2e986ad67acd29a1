//! Once and only once (SPEC §5): what a redelivered event finds in the ledger after a
//! crash, and what it does. A crash is simulated by leaving the row as a dead worker
//! would have left it, then delivering the event again.

mod common;

use std::time::Duration;

use common::{App, Broker, config, ledger, rejected, use_http_gateway, wait_state};
use notifier::config::GatewayKind;
use shared::testing::TestEnv;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{header, method, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const REPLY: &str = "Лицевой счёт не найден. Проверьте номер";

/// Leaves `key` as a worker that died would: `state`, one attempt, lease ending in `lease_secs`.
async fn leave_row(pool: &PgPool, key: &str, state: &str, lease_secs: f64) {
    sqlx::query(
        "INSERT INTO deliveries (key, channel, recipient, state, attempts, lease_until)
         VALUES ($1, 'sms', '+79001234567', $2, 1, now() + make_interval(secs => $3))",
    )
    .bind(key)
    .bind(state)
    .bind(lease_secs)
    .execute(pool)
    .await
    .expect("seed ledger row");
}

async fn attempts(pool: &PgPool, key: &str) -> i32 {
    sqlx::query_scalar("SELECT attempts FROM deliveries WHERE key = $1")
        .bind(key)
        .fetch_one(pool)
        .await
        .expect("attempts")
}

#[tokio::test]
async fn a_crash_before_sending_does_not_skip_the_reply() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &server.uri());
    let app = App::spawn(cfg).await;
    let pool = ledger(&env);
    // Claimed, then the process died before the request left.
    leave_row(&pool, "reply:gw-pending", "pending", 0.0).await;

    let broker = Broker::connect(&env).await;
    broker
        .publish(&rejected("gw-pending", "+79001234567", Some(REPLY)))
        .await;
    wait_state(&pool, "reply:gw-pending", "sent").await;
    server.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_interrupted_http_attempt_is_resent_with_the_same_idempotency_key() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(header(
            "idempotency-key",
            notifier::gateway::idempotency_key("gw-crash").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &server.uri());
    let app = App::spawn(cfg).await;
    let pool = ledger(&env);
    // Sending when the process died; its lease has run out.
    leave_row(&pool, "reply:gw-crash", "sending", -1.0).await;

    let broker = Broker::connect(&env).await;
    broker
        .publish(&rejected("gw-crash", "+79001234567", Some(REPLY)))
        .await;
    wait_state(&pool, "reply:gw-crash", "sent").await;
    assert_eq!(attempts(&pool, "reply:gw-crash").await, 2);
    server.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_copy_waits_while_another_worker_holds_the_lease() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &server.uri());
    let app = App::spawn(cfg).await;
    let pool = ledger(&env);
    // Another replica is sending it now; it then dies without finishing. The lease must
    // outlast the publish and the first handling even on a loaded machine: with 3 s a
    // fresh-clone CI run under load (load average ~9) handled the message after the
    // lease had ended, sent at once, and the expected retry never came.
    leave_row(&pool, "reply:gw-busy", "sending", 20.0).await;

    let broker = Broker::connect(&env).await;
    broker
        .publish(&rejected("gw-busy", "+79001234567", Some(REPLY)))
        .await;
    // First told to come back later; after the lease, the retry takes over and sends.
    app.wait_metric(
        "notifier_consumer_messages_total",
        &[("outcome", "retried")],
        1.0,
    )
    .await;
    assert_eq!(server.received_requests().await.map_or(0, |r| r.len()), 0);
    wait_state(&pool, "reply:gw-busy", "sent").await;
    server.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

/// After a `kill -9` the broker redelivers the dead worker's events at once, but their
/// rows are still leased (up to a minute). The redelivery must come back when the lease
/// ends — not on the back-off schedule (1, 5, 30, then 120 s: the reply would wait
/// 2½ minutes) — and must not take the lease over while it runs.
#[tokio::test]
async fn a_dead_holders_lease_is_taken_over_when_it_ends() {
    // Longer than the first three back-off delays together (36 s), so that without a
    // retry at the lease's end the reply would wait for the 120 s one.
    const LEASE: Duration = Duration::from_secs(45);
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &server.uri());
    let app = App::spawn(cfg).await;
    let pool = ledger(&env);
    leave_row(&pool, "reply:gw-dead", "sending", LEASE.as_secs_f64()).await;
    let leased_at = tokio::time::Instant::now();

    let broker = Broker::connect(&env).await;
    broker
        .publish(&rejected("gw-dead", "+79001234567", Some(REPLY)))
        .await;
    // The promise of docs/notifier.md: out within the lease plus 30 s.
    shared::testing::eventually(
        "reply:gw-dead is sent",
        LEASE + Duration::from_secs(30),
        || async {
            (common::state(&pool, "reply:gw-dead").await.as_deref() == Some("sent")).then_some(())
        },
    )
    .await;
    let took = leased_at.elapsed();
    assert!(
        took >= LEASE,
        "the live lease was taken over after {took:?}"
    );
    assert_eq!(attempts(&pool, "reply:gw-dead").await, 2);
    server.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn kannel_does_not_resend_an_attempt_whose_outcome_is_unknown() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let kannel = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(202).set_body_string("0: Accepted for delivery"))
        .expect(0)
        .mount(&kannel)
        .await;
    let mut cfg = config(&env, &scratch);
    cfg.sms.sms_gateway = GatewayKind::Kannel;
    cfg.sms.kannel_sendsms_url = Some(
        format!("{}/cgi-bin/sendsms", kannel.uri())
            .parse()
            .expect("url"),
    );
    cfg.sms.kannel_user = Some("notifier".into());
    cfg.sms.kannel_password = Some("secret".to_owned().into());
    let app = App::spawn(cfg).await;
    let pool = ledger(&env);
    leave_row(&pool, "reply:gw-unknown", "sending", -1.0).await;

    let broker = Broker::connect(&env).await;
    broker
        .publish(&rejected("gw-unknown", "+79001234567", Some(REPLY)))
        .await;
    wait_state(&pool, "reply:gw-unknown", "unknown").await;
    app.wait_settled("acked", 1.0).await;
    assert_eq!(
        app.metric(
            "notifier_send_failures_total",
            &[("channel", "sms"), ("kind", "unknown")]
        )
        .await,
        1.0
    );
    kannel.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn kannel_sendsms_gets_credentials_and_ucs2_coding() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let kannel = MockServer::start().await;
    Mock::given(method("GET"))
        .and(query_param("username", "notifier"))
        .and(query_param("password", "secret"))
        .and(query_param("from", "7377"))
        .and(query_param("to", "+79001234567"))
        .and(query_param("text", REPLY))
        .and(query_param("charset", "UTF-8"))
        .and(query_param("coding", "2"))
        .respond_with(ResponseTemplate::new(202).set_body_string("0: Accepted for delivery"))
        .expect(1)
        .mount(&kannel)
        .await;
    let mut cfg = config(&env, &scratch);
    cfg.sms.sms_gateway = GatewayKind::Kannel;
    cfg.sms.kannel_sendsms_url = Some(
        format!("{}/cgi-bin/sendsms", kannel.uri())
            .parse()
            .expect("url"),
    );
    cfg.sms.kannel_user = Some("notifier".into());
    cfg.sms.kannel_password = Some("secret".to_owned().into());
    let app = App::spawn(cfg).await;

    let broker = Broker::connect(&env).await;
    broker
        .publish(&rejected("gw-kannel", "+79001234567", Some(REPLY)))
        .await;
    wait_state(&ledger(&env), "reply:gw-kannel", "sent").await;
    assert_eq!(
        app.metric("notifier_replies_sent_total", &[("gateway", "kannel")])
            .await,
        1.0
    );
    kannel.verify().await;

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn shutdown_finishes_the_reply_in_flight() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_millis(1500)))
        .expect(1)
        .mount(&server)
        .await;
    let mut cfg = config(&env, &scratch);
    use_http_gateway(&mut cfg, &server.uri());
    let app = App::spawn(cfg).await;
    let broker = Broker::connect(&env).await;
    broker
        .publish(&rejected("gw-stop", "+79001234567", Some(REPLY)))
        .await;
    shared::testing::eventually("the request reached the gateway", common::WAIT, || async {
        server
            .received_requests()
            .await
            .filter(|r| !r.is_empty())
            .map(|_| ())
    })
    .await;

    // SIGTERM while the gateway is still answering.
    app.stop().await;
    assert_eq!(
        common::state(&ledger(&env), "reply:gw-stop")
            .await
            .as_deref(),
        Some("sent")
    );
    // Acked before exit: nothing is left for the next replica to redeliver.
    assert!(broker.take("notifier").await.is_none());
    server.verify().await;

    broker.close().await;
    env.cleanup().await;
}

#[tokio::test]
async fn migrate_creates_the_ledger_and_is_repeatable() {
    let env = TestEnv::new().await;
    let token = CancellationToken::new();
    notifier::DATABASE
        .migrate(&env.database(), &token)
        .await
        .expect("first run");
    notifier::DATABASE
        .migrate(&env.database(), &token)
        .await
        .expect("second run");
    let pool = ledger(&env);
    let tables: Vec<String> = sqlx::query_scalar(
        // Tables only: the schema also publishes views (console_deliveries, for the console).
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'notifier' AND table_type = 'BASE TABLE' ORDER BY table_name",
    )
    .fetch_all(&pool)
    .await
    .expect("tables");
    assert_eq!(
        tables,
        [
            "_sqlx_migrations",
            "chat_pace",
            "chat_slots",
            "deliveries",
            "reply_quota"
        ]
        .map(String::from)
    );
    pool.close().await;
    env.cleanup().await;
}
