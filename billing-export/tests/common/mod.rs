//! billing-export's part of the test harness: its configuration, the service
//! in-process through `shared::testing::Service`, `reading.accepted` published through
//! `shared::testing::Broker`, the registry set up through the validator's own
//! migrations and import, and a billing double.

#![allow(dead_code)] // each test binary uses part of the harness

pub mod billing;

use std::path::PathBuf;

use chrono::{DateTime, FixedOffset};
use shared::config::{BrokerConfig, LogFormat, RuntimeConfig};
use shared::events::{Channel, Event, ReadingAccepted};
use shared::testing::{Broker, Service, TestEnv, WAIT, eventually};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const TOKEN: &str = "billing-test-token";
/// What the tests download the exports with (EXPORT_TOKEN), unless they say otherwise.
pub const EXPORT_TOKEN: &str = "export-test-token-0123";

/// A running billing-export.
pub struct App(Service);

#[derive(Default, Clone)]
pub struct Options {
    pub billing_url: Option<String>,
    pub export_dir: Option<PathBuf>,
    /// EXPORT_TOKEN's value; `None`: [`EXPORT_TOKEN`].
    pub export_tokens: Option<String>,
    /// EXPORT_TOKEN left unset (every export answers 503).
    pub no_export_token: bool,
    /// EXPORT_TIMEOUT_SECONDS; `None`: the default.
    pub export_timeout_seconds: Option<u64>,
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
        export_token: (!options.no_export_token).then(|| {
            shared::token::Tokens::parse(options.export_tokens.as_deref().unwrap_or(EXPORT_TOKEN))
                .expect("export tokens")
        }),
        export_timeout_seconds: options.export_timeout_seconds.unwrap_or(300),
        broker: BrokerConfig {
            amqp_url: env.amqp_url.clone().into(),
        },
        database: env.database(),
        runtime: RuntimeConfig {
            log_format: LogFormat::Text,
            shutdown_grace_seconds: 30,
            ..RuntimeConfig::default()
        },
    }
}

/// Starts billing-export on port 0 and waits until it is ready.
pub async fn spawn_app(env: &TestEnv, options: Options) -> App {
    let config = |addr| config(env, addr, &options);
    App(Service::start("billing-export", config, billing_export::run).await)
}

impl App {
    pub async fn stop(self) {
        self.0.stop().await;
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.0.base
    }

    /// A GET with the bearer token the exports need ([`EXPORT_TOKEN`]).
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.get_as(path, Some(EXPORT_TOKEN)).await
    }

    /// A GET with `token` as the bearer, or without one.
    pub async fn get_as(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut request = reqwest::Client::new().get(self.0.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn metrics(&self) -> shared::testing::Metrics {
        self.0.metrics().await
    }

    /// The sample with exactly these labels, e.g. `billing_pushes_total` with
    /// `result="delivered"`; `None` while it was never counted.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0.metrics().await.exact(name, labels)
    }

    /// Waits until the consumer has acked `n` messages.
    pub async fn wait_acked(&self, n: u64) {
        self.0
            .wait_metric(
                "billing_consumer_messages_total",
                &[("queue", "billing-export"), ("outcome", "acked")],
                n as f64,
            )
            .await;
    }
}

/// Publishes readings onto `meter.events` with confirms, like the validator's outbox.
pub struct Events(Broker);

impl Events {
    pub async fn connect(env: &TestEnv) -> Events {
        Events(Broker::connect(env).await)
    }

    pub async fn publish(&self, reading: &ReadingAccepted) {
        self.0
            .publish(&Event::ReadingAccepted(reading.clone()))
            .await;
    }

    /// Publishes with a given W3C `traceparent` header, as the validator's relay does.
    pub async fn publish_traced(&self, reading: &ReadingAccepted, traceparent: &str) {
        let mut headers = lapin::types::FieldTable::default();
        headers.insert(
            shared::tracecontext::TRACEPARENT.into(),
            lapin::types::AMQPValue::LongString(traceparent.into()),
        );
        self.0
            .publish_with_headers(&Event::ReadingAccepted(reading.clone()), headers)
            .await;
    }

    pub async fn publish_raw(&self, body: &[u8]) {
        self.0
            .publish_raw(shared::events::READING_ACCEPTED, body)
            .await;
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
        from: None,
        chat: None,
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
    eventually("readings stored", WAIT, || async {
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
