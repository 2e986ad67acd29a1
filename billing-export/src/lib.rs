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

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use log::LevelFilter;
use shared::service::{Batching, Schema, Service};
use sqlx::ConnectOptions as _;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::export::files::PeriodFiles;
use crate::export::http::ExportState;
use crate::metrics::BillingMetrics;
use crate::push::Billing;
use crate::reading::{CrashPoint, ReadingHandler};

/// Deliveries stored and recorded in one statement each, and batches in flight at once.
const BATCHING: Batching = Batching {
    batch: 64,
    batches: 2,
};

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

/// What ages out after `RETENTION_DAYS` (SPEC §4.7): the readings (each with its
/// account), by when they were received. The period files in `EXPORT_DIR` expire by
/// the same rule ([`export::files::expire`]); `period_exports` holds no personal data.
pub const RETENTION: [shared::retention::Purge; 1] = [shared::retention::Purge {
    table: "readings",
    aged_by: "received_at",
    only_if: "TRUE",
}];

/// billing-export's tables (schema `billing`).
pub const DATABASE: Schema = Schema {
    name: SCHEMA,
    migrator: &MIGRATOR,
};

/// Runs billing-export until `shutdown` on the service skeleton ([`shared::service`]):
/// consumes and pushes, serves the exports, writes the period files.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
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
    let mut service = Service::new("billing-export", "billing", &config.runtime);
    if let Some(url) = &config.billing_url {
        service.link("BILLING_URL", shared::tls::Link::Https, url.as_str());
    }
    let pool = service.database(&config.database, DATABASE)?;
    // An export statement lives as long as its client reads (a million rows: many
    // seconds), so sqlx's default 1 s slow-statement warning would fire on every
    // download; processing latency is in the consumer metrics anyway.
    pool.set_connect_options(
        (*pool.connect_options())
            .clone()
            .log_slow_statements(LevelFilter::Warn, SLOW_STATEMENT),
    );
    let retention = service.retention(&config.database, RETENTION.to_vec())?;
    let metrics = BillingMetrics::register(service.registry());
    service.consume(
        &config.broker,
        QUEUE,
        BATCHING,
        ReadingHandler {
            pool: pool.clone(),
            billing,
            metrics: metrics.clone(),
            crash: CrashPoint::from_env(),
        },
    )?;
    if let Some(dir) = &config.export_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("EXPORT_DIR {} cannot be created", dir.display()))?;
        let files = PeriodFiles {
            pool: pool.clone(),
            dir: dir.clone(),
            window: config.calendar.window()?,
            metrics: metrics.clone(),
        };
        service.task("period files", move |stop| files.run(stop));
        let (dir, days) = (dir.clone(), config.database.retention_days);
        service.task("period files retention", move |stop| {
            export::files::expire_daily(dir, days, retention, stop)
        });
    }
    if config.export_token.is_none() {
        tracing::warn!("EXPORT_TOKEN not set: every export answers 503 until it is");
    }
    service.routes(export::http::router(ExportState {
        pool,
        zone: config.calendar.timezone(),
        metrics,
        slots: Arc::new(Semaphore::new(export_slots(&config))),
        tokens: config.export_token.clone().map(Arc::new),
        timeout: config.export_timeout(),
    }));
    service.run(listener, shutdown).await
}
