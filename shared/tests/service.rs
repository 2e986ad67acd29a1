//! The service skeleton (`shared::service`) on the real broker and database: the
//! service's own routes wait for start-up to finish, and a consumer that dies (a
//! panicking handler) fails readiness and makes `run` return an error, so the process
//! exits non-zero instead of staying "ready" while doing nothing (SPEC §5).

use std::time::Duration;

use axum::routing::get;
use shared::broker::Publisher;
use shared::config::{BrokerConfig, DatabaseConfig, LogFormat, RuntimeConfig};
use shared::consumer::{BatchHandler, Incoming, Outcomes};
use shared::events::{Channel, Event, SmsReceived};
use shared::service::{Batching, Schema, Service};
use shared::testing::{TestEnv, eventually};
use sqlx::migrate::Migrator;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Anything that crosses the broker gets a busy machine's allowance.
const WAIT: Duration = Duration::from_secs(60);

static NO_MIGRATIONS: Migrator = Migrator::DEFAULT;

fn runtime() -> RuntimeConfig {
    RuntimeConfig {
        log_format: LogFormat::Text,
        shutdown_grace_seconds: 10,
        ..RuntimeConfig::default()
    }
}

fn broker(env: &TestEnv) -> BrokerConfig {
    BrokerConfig {
        amqp_url: env.amqp_url.clone().into(),
    }
}

/// A handler that panics on every message.
struct Panics;

impl BatchHandler for Panics {
    async fn handle_batch(&self, _msgs: &[Incoming]) -> Outcomes {
        panic!("a bug in the handler");
    }
}

async fn status(client: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let response = client.get(url).send().await.ok()?;
    let code = response.status().as_u16();
    Some((code, response.text().await.unwrap_or_default()))
}

#[tokio::test]
async fn own_routes_wait_for_the_migrations_and_liveness_does_not() {
    let env = TestEnv::new().await;
    // A database nobody listens on: the migrations retry until shutdown.
    let unreachable = DatabaseConfig {
        database_url: "postgres://postgres@127.0.0.1:1/nothing".to_owned().into(),
        database_max_connections: 1,
        retention_days: 1095,
    };
    let mut service = Service::new("skeleton-test", "skeleton_test", &runtime());
    service
        .database(
            &unreachable,
            Schema {
                name: "skeleton_test",
                migrator: &NO_MIGRATIONS,
            },
        )
        .expect("pool");
    service.routes(axum::Router::new().route("/own", get(|| async { "served" })));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(service.run(listener, shutdown.clone()));

    let client = reqwest::Client::new();
    let healthz = eventually("healthz answers", WAIT, || async {
        status(&client, &format!("{base}/healthz")).await
    })
    .await;
    assert_eq!(healthz.0, 200);
    let readyz = status(&client, &format!("{base}/readyz"))
        .await
        .expect("readyz");
    assert_eq!(readyz.0, 503);
    assert!(readyz.1.contains("starting"), "{}", readyz.1);
    let own = client
        .get(format!("{base}/own"))
        .send()
        .await
        .expect("own route");
    assert_eq!(own.status().as_u16(), 503);
    assert_eq!(
        own.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );

    shutdown.cancel();
    let ended = tokio::time::timeout(WAIT, running)
        .await
        .expect("run returns after shutdown")
        .expect("task");
    assert!(
        ended.is_ok(),
        "a shutdown during start-up is no error: {ended:?}"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn a_consumer_that_dies_fails_readiness_and_run() {
    let env = TestEnv::new().await;
    let mut service = Service::new("skeleton-test", "skeleton_test", &runtime());
    service
        .consume(&broker(&env), "validator", Batching::ONE_BY_ONE, Panics)
        .expect("the validator queue is in the topology");
    service.routes(axum::Router::new().route("/own", get(|| async { "served" })));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(service.run(listener, shutdown.clone()));

    let client = reqwest::Client::new();
    eventually("the service is ready", WAIT, || async {
        status(&client, &format!("{base}/readyz"))
            .await
            .filter(|(code, _)| *code == 200)
    })
    .await;
    let own = status(&client, &format!("{base}/own")).await.expect("own");
    assert_eq!(own, (200, "served".to_owned()));

    // One message, and the handler panics on it.
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let publisher = Publisher::start(
        env.amqp_url.clone(),
        "skeleton-test".into(),
        shared::topology::system_queues(),
        &tracker,
        stop.clone(),
    );
    let sms = Event::SmsReceived(SmsReceived {
        message_id: "panics-1".into(),
        from: "+79000000001".into(),
        to: "7377".into(),
        text: "1000001 45100".into(),
        received_at: chrono::DateTime::parse_from_rfc3339("2026-11-20T10:00:00+05:00")
            .expect("time"),
        channel: Channel::Sms,
        chat: None,
        contact: None,
    });
    eventually("the message is published", WAIT, || async {
        publisher.publish(&sms).await.ok()
    })
    .await;

    let ended = tokio::time::timeout(WAIT, running)
        .await
        .expect("run returns once the consumer died")
        .expect("task");
    let error = format!("{:#}", ended.expect_err("a dead consumer is an error"));
    assert!(error.contains("validator"), "{error}");
    assert!(error.contains("stopped on its own"), "{error}");
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    env.cleanup().await;
}

/// The queues of the vhost, from the management API (declared by whoever connects).
async fn queues(env: &TestEnv) -> Option<usize> {
    let api =
        std::env::var("TEST_RABBITMQ_API").unwrap_or_else(|_| "http://127.0.0.1:15672".into());
    let resp = reqwest::Client::new()
        .get(format!("{api}/api/queues/{}", env.name))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .ok()?;
    resp.json::<Vec<serde_json::Value>>()
        .await
        .ok()
        .map(|q| q.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn require_tls_refuses_plaintext_links_before_opening_any() {
    let env = TestEnv::new().await;
    let runtime = RuntimeConfig {
        require_tls: true,
        ..runtime()
    };
    let mut service = Service::new("skeleton-test", "skeleton", &runtime);
    let database = DatabaseConfig {
        database_url: env.database_url.clone().into(),
        database_max_connections: 2,
        retention_days: 1095,
    };
    service
        .database(
            &database,
            Schema {
                name: "skeleton",
                migrator: &NO_MIGRATIONS,
            },
        )
        .expect("pool");
    let _publisher = service.publisher(&broker(&env), "skeleton-test-publisher");
    service
        .consume(&broker(&env), "validator", Batching::ONE_BY_ONE, Panics)
        .expect("the validator queue is in the topology");
    // A service sets itself up for a while before `run`: long enough for a publisher
    // that connects at once to declare the topology.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let ended = tokio::time::timeout(WAIT, service.run(listener, CancellationToken::new()))
        .await
        .expect("a refusal is immediate");
    let error = format!("{:#}", ended.expect_err("plaintext links are refused"));
    assert!(error.contains("REQUIRE_TLS=true"), "{error}");
    assert!(error.contains("AMQP_URL names amqp://"), "{error}");
    assert!(error.contains("DATABASE_URL has sslmode=prefer"), "{error}");
    assert_eq!(error.matches("AMQP_URL").count(), 1, "named once: {error}");
    // The refused broker link was never opened, not even for the topology.
    assert_eq!(
        queues(&env).await,
        Some(0),
        "nothing was declared on the broker"
    );
    env.cleanup().await;
}
