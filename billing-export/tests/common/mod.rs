//! Test harness: billing-export in-process on port 0 against the test's own vhost
//! and database, a publisher for `reading.accepted`, the registry set up through the
//! validator's own migrations and import, and a billing double.

#![allow(dead_code)] // each test binary uses part of the harness

pub mod billing;

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use shared::broker::Publisher;
use shared::config::{BrokerConfig, LogFormat, RuntimeConfig};
use shared::events::{Channel, Event, ReadingAccepted};
use shared::testing::{TestEnv, eventually};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub const TOKEN: &str = "billing-test-token";

pub struct App {
    pub base: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

#[derive(Default, Clone)]
pub struct Options {
    pub billing_url: Option<String>,
    pub export_dir: Option<PathBuf>,
}

pub fn config(
    env: &TestEnv,
    addr: std::net::SocketAddr,
    options: &Options,
) -> billing_export::Config {
    billing_export::Config {
        http_addr: addr,
        billing_url: options
            .billing_url
            .as_deref()
            .map(|u| u.parse().expect("billing url")),
        billing_token: Some(TOKEN.to_owned().into()),
        calendar: shared::calendar::Calendar::default(),
        export_dir: options.export_dir.clone(),
        broker: BrokerConfig {
            amqp_url: env.amqp_url.clone().into(),
        },
        database: env.database(),
        runtime: RuntimeConfig {
            log_format: LogFormat::Text,
            shutdown_grace_seconds: 5,
        },
    }
}

pub async fn spawn_app(env: &TestEnv, options: Options) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(billing_export::run(
        config(env, addr, &options),
        listener,
        shutdown.clone(),
    ));
    let app = App {
        base: format!("http://{addr}"),
        shutdown,
        task,
    };
    app.ready().await;
    app
}

impl App {
    async fn ready(&self) {
        let client = reqwest::Client::new();
        eventually("billing-export ready", Duration::from_secs(30), || async {
            let r = client
                .get(format!("{}/readyz", self.base))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("no panic").expect("clean exit");
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("{}{path}", self.base))
            .await
            .expect("request")
    }

    pub async fn metrics(&self) -> String {
        self.get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one sample, e.g. `billing_pushes_total{result="delivered"}`.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
    }

    /// Waits until the consumer has acked `n` messages.
    pub async fn wait_acked(&self, n: u64) {
        eventually("messages acked", Duration::from_secs(30), || async {
            let v = self
                .metric(
                    r#"billing_consumer_messages_total{queue="billing-export",outcome="acked"}"#,
                )
                .await?;
            (v as u64 >= n).then_some(())
        })
        .await;
    }
}

/// Publishes events onto `meter.events` with confirms, like the validator's outbox.
pub struct Events {
    publisher: Publisher,
    shutdown: CancellationToken,
}

impl Events {
    pub async fn connect(env: &TestEnv) -> Events {
        let shutdown = CancellationToken::new();
        let publisher = Publisher::start(
            env.amqp_url.clone(),
            "test-publisher".into(),
            shared::topology::system_queues(),
            &TaskTracker::new(),
            shutdown.clone(),
        );
        let ready = publisher.ready();
        eventually("publisher connected", Duration::from_secs(20), || async {
            ready.get().then_some(())
        })
        .await;
        Events {
            publisher,
            shutdown,
        }
    }

    pub async fn publish(&self, reading: &ReadingAccepted) {
        self.publisher
            .publish(&Event::ReadingAccepted(reading.clone()))
            .await
            .expect("published");
    }

    /// Publishes with a given W3C `traceparent` header, as the validator's relay does.
    pub async fn publish_traced(&self, reading: &ReadingAccepted, traceparent: &str) {
        let mut headers = lapin::types::FieldTable::default();
        headers.insert(
            "traceparent".into(),
            lapin::types::AMQPValue::LongString(traceparent.into()),
        );
        let event = Event::ReadingAccepted(reading.clone());
        self.publisher
            .publish_to(
                shared::events::EXCHANGE,
                event.routing_key(),
                &event.to_json(),
                event.message_id(),
                headers,
            )
            .await
            .expect("published");
    }

    pub async fn publish_raw(&self, body: &[u8]) {
        self.publisher
            .publish_to(
                shared::events::EXCHANGE,
                shared::events::READING_ACCEPTED,
                body,
                "raw",
                Default::default(),
            )
            .await
            .expect("published");
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn at(s: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(s).expect("timestamp")
}

/// A reading of `account`/`meter` in `period`, received at `received_at`.
pub fn reading(
    account: &str,
    meter: &str,
    period: &str,
    values: &[u64],
    received_at: &str,
) -> ReadingAccepted {
    let reading_id = Uuid::new_v4();
    ReadingAccepted {
        reading_id,
        message_id: format!("gw-{}", reading_id.simple()),
        account: account.into(),
        meter: meter.into(),
        period: period.parse().expect("period"),
        values: values.to_vec(),
        received_at: at(received_at),
        channel: Channel::Sms,
        email: None,
        supersedes: None,
    }
}

/// The billing schema, for looking at what the service stored.
pub fn billing_pool(env: &TestEnv) -> PgPool {
    shared::db::pool(&env.database(), billing_export::SCHEMA).expect("pool")
}

pub async fn stored_count(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

pub async fn wait_stored(pool: &PgPool, n: i64) {
    eventually("readings stored", Duration::from_secs(30), || async {
        (stored_count(pool).await >= n).then_some(())
    })
    .await;
}

pub async fn delivery_of(pool: &PgPool, reading_id: Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT delivery FROM readings WHERE reading_id = $1")
        .bind(reading_id)
        .fetch_optional(pool)
        .await
        .ok()
        .flatten()
}

/// Loads the account registry the way production does: the validator's own
/// migrations and `import-registry` code, on the validator's schema.
pub async fn import_registry(env: &TestEnv, csv: &str) {
    let pool = shared::db::pool(&env.database(), validator::SCHEMA).expect("pool");
    validator::DATABASE
        .apply(&pool, &CancellationToken::new())
        .await
        .expect("validator migrations");
    let report = validator::registry::import(&pool, csv.as_bytes())
        .await
        .expect("registry import");
    assert_eq!(report.rows_rejected, 0, "{:?}", report.errors);
    pool.close().await;
}

/// Parses a CSV body into rows of fields (header included).
pub fn csv_rows(body: &str) -> Vec<Vec<String>> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(body.as_bytes())
        .records()
        .map(|r| r.expect("valid CSV").iter().map(str::to_owned).collect())
        .collect()
}
