//! billing-export: the billing side of the meter-reading system (SPEC §4.5). It
//! consumes `reading.accepted`, keeps every reading in its own schema, pushes each
//! to billing with an idempotency key (exactly once in effect, retried without
//! limit while billing is down), serves the period exports and the
//! missing-readings report as streamed CSV, and writes both files to EXPORT_DIR
//! when a period's window closes.

pub mod config;
pub mod export;
pub mod metrics;
pub mod push;
pub mod reading;
pub mod store;
pub mod window;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use log::LevelFilter;
use prometheus_client::registry::Registry;
use shared::broker::ReadyFlag;
use shared::consumer::{self, ConsumerConfig};
use shared::metrics::ConsumerMetrics;
use sqlx::migrate::Migrator;
use sqlx::{ConnectOptions as _, PgPool};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

use crate::export::files::PeriodFiles;
use crate::export::http::ExportState;
use crate::metrics::BillingMetrics;
use crate::push::Billing;
use crate::reading::{CrashPoint, ReadingHandler};
use crate::window::WindowClose;

/// Deliveries stored and recorded in one statement each.
const BATCH: usize = 64;
/// Batches in flight at once.
const BATCHES: usize = 2;

/// billing-export's migrations (schema `billing`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");
pub const SCHEMA: &str = "billing";
/// The queue this service consumes (declared by `shared::topology`).
pub const QUEUE: &str = "billing-export";

/// Statements slower than this are logged as warnings.
const SLOW_STATEMENT: Duration = Duration::from_secs(60);

/// Exports streamed at once: half the pool, so the consumer always has connections.
fn export_slots(config: &Config) -> usize {
    (config.database.database_max_connections as usize / 2).max(1)
}

/// Applies the migrations (the `migrate` subcommand and every start).
pub async fn migrate(pool: &PgPool, shutdown: &CancellationToken) -> anyhow::Result<()> {
    shared::db::migrate(pool, SCHEMA, &MIGRATOR, shutdown).await
}

/// Runs billing-export until `shutdown`: consumes and pushes, serves the exports,
/// writes the period files; then finishes the messages in hand (their pushes
/// complete and are acked) and the requests in flight.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    let pool = shared::db::pool(&config.database, SCHEMA)?;
    // An export statement lives as long as its client reads (a million rows: many
    // seconds), so sqlx's default 1 s slow-statement warning would fire on every
    // download; processing latency is in the consumer metrics anyway.
    pool.set_connect_options(
        (*pool.connect_options())
            .clone()
            .log_slow_statements(LevelFilter::Warn, SLOW_STATEMENT),
    );
    migrate(&pool, &shutdown).await?;
    let billing = match (&config.billing_url, &config.billing_token) {
        (Some(url), Some(token)) => {
            Some(Billing::new(url, token).context("BILLING_URL / BILLING_TOKEN")?)
        }
        _ => None,
    };
    match &billing {
        Some(b) => tracing::info!(endpoint = %b.endpoint(), "pushing readings to billing"),
        None => tracing::info!("BILLING_URL not set: readings are stored, not pushed"),
    }
    let window = WindowClose {
        end_day: config.window_end_day,
        zone: config.timezone,
    };

    let mut registry = Registry::with_prefix("billing");
    let consumer_metrics = ConsumerMetrics::register(&mut registry);
    let metrics = BillingMetrics::register(&mut registry);
    let tracker = TaskTracker::new();

    let topology = shared::topology::system_queues();
    let queue = topology
        .iter()
        .find(|q| q.name == QUEUE)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("topology has no {QUEUE} queue"))?;
    let consumer_ready = ReadyFlag::default();
    let handler = Arc::new(ReadingHandler {
        pool: pool.clone(),
        billing,
        metrics: metrics.clone(),
        crash: CrashPoint::from_env(),
    });
    let consuming = tracker.spawn(consumer::run_batched(
        ConsumerConfig {
            batch: BATCH,
            concurrency: BATCHES,
            prefetch: u16::try_from(BATCH * BATCHES).unwrap_or(u16::MAX),
            ..ConsumerConfig::new(config.broker.url(), queue, topology)
        },
        handler,
        consumer_metrics,
        consumer_ready.clone(),
        shutdown.clone(),
    ));

    let files = match &config.export_dir {
        Some(dir) => {
            tokio::fs::create_dir_all(dir)
                .await
                .with_context(|| format!("EXPORT_DIR {} cannot be created", dir.display()))?;
            let files = PeriodFiles {
                pool: pool.clone(),
                dir: dir.clone(),
                window,
                metrics: metrics.clone(),
            };
            Some(tracker.spawn(files.run(shutdown.clone())))
        }
        None => None,
    };

    let ops = shared::http::Ops {
        registry: Arc::new(registry),
        broker_links: vec![consumer_ready],
        database: Some(pool.clone()),
    };
    let exports = ExportState {
        pool: pool.clone(),
        zone: config.timezone,
        metrics,
        slots: Arc::new(Semaphore::new(export_slots(&config))),
    };
    let app = export::http::router(exports).merge(shared::http::router(ops));
    tracing::info!(addr = %listener.local_addr()?, "billing-export listening");
    let served = shared::http::serve(listener, app, shutdown.clone()).await;

    let _ = consuming.await;
    if let Some(files) = files {
        let _ = files.await;
    }
    tracker.close();
    tokio::time::timeout(config.runtime.grace(), tracker.wait())
        .await
        .ok();
    pool.close().await;
    served?;
    Ok(())
}
