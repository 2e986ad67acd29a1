//! notifier: answers refused readings by SMS and confirms accepted ones by e-mail
//! (SPEC §4.3, §4.4). It consumes its own queue (`reading.accepted`,
//! `reading.rejected`), and keeps a ledger of what it sent in its own schema so that
//! each resident is answered once across redeliveries, restarts and replicas (§5).

pub mod bots;
pub mod config;
pub mod confirmation;
pub mod failure;
pub mod gateway;
pub mod handler;
pub mod ledger;
pub mod limits;
pub mod mailer;
pub mod metrics;
pub mod report;

use std::time::Duration;

use shared::service::{Batching, Schema, Service};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// The schema the notifier owns (SPEC §4.7).
pub const SCHEMA: &str = "notifier";
/// The queue it consumes (declared in `shared::topology::system_queues`).
pub const QUEUE: &str = "notifier";

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Events handled together (one claiming transaction, sends side by side
/// ([`handler::SENDS_AT_ONCE`] at a time), one recording transaction), and batches in
/// flight at once.
const BATCHING: Batching = Batching {
    batch: 64,
    batches: 4,
};
/// How often spent reply-quota windows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// What ages out after `RETENTION_DAYS` (SPEC §4.7): the record of whom each reply
/// and confirmation went to. (The reply quotas expire on their own within days.)
pub const RETENTION: [shared::retention::Purge; 1] = [shared::retention::Purge {
    table: "deliveries",
    aged_by: "created_at",
    only_if: "TRUE",
}];

/// The notifier's tables (schema `notifier`).
pub const DATABASE: Schema = Schema {
    name: SCHEMA,
    migrator: &MIGRATOR,
};

/// Runs the notifier until `shutdown` on the service skeleton ([`shared::service`]).
/// Configuration mistakes (gateway, mailer) stop the start before anything is consumed.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let send_timeout = config.send_timeout();
    let gateway = gateway::SmsGateway::from_config(&config.sms, &config.reports, send_timeout)?;
    let mailer = mailer::Mailer::from_config(&config.email, send_timeout).await?;
    tracing::info!(
        gateway = gateway.name(),
        mail = mailer.transport(),
        delivery_reports = gateway.reports(),
        "notifier sends through"
    );
    let mut service = Service::new("notifier", "notifier", &config.runtime);
    for (setting, link, url) in config.links() {
        // Lazy clients: nothing is sent before `run` has checked.
        service.link(setting, link, url);
    }
    let pool = service.database(&config.database, DATABASE)?;
    service.retention(&config.database, RETENTION.to_vec())?;
    let metrics = metrics::NotifierMetrics::register(service.registry());
    let report_metrics = report::ReportMetrics::register(service.registry());
    service.routes(report::router(report::ReportState {
        pool: pool.clone(),
        keys: config.reports.dlr_secret.clone(),
        aggregator_token: config.sms.sms_http_token.clone().map(std::sync::Arc::new),
        metrics: report_metrics,
    }));
    service.consume(
        &config.broker,
        QUEUE,
        BATCHING,
        handler::Notifier {
            pool: pool.clone(),
            gateway,
            mailer,
            limits: limits::ReplyLimits::new(&config.limits, config.zone.timezone),
            email_from: config.email.email_from.clone(),
            timezone: config.zone.timezone,
            send_timeout,
            metrics,
        },
    )?;
    service.task("reply quota pruning", move |stop| {
        limits::prune_periodically(pool, PRUNE_EVERY, stop)
    });
    service.run(listener, shutdown).await
}
