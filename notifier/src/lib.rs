//! notifier: answers refused readings by SMS and confirms accepted ones by e-mail
//! (SPEC §4.3, §4.4). It consumes its own queue (`reading.accepted`,
//! `reading.rejected`), and keeps a ledger of what it sent in its own schema so that
//! each resident is answered once across redeliveries, restarts and replicas (§5).

pub mod config;
pub mod confirmation;
pub mod failure;
pub mod gateway;
pub mod handler;
pub mod ledger;
pub mod limits;
pub mod mailer;
pub mod metrics;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::registry::Registry;
use shared::broker::ReadyFlag;
use shared::config::DatabaseConfig;
use shared::consumer::ConsumerConfig;
use shared::metrics::ConsumerMetrics;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::Config;

/// The schema the notifier owns (SPEC §4.7).
pub const SCHEMA: &str = "notifier";
/// The queue it consumes (declared in `shared::topology::system_queues`).
pub const QUEUE: &str = "notifier";

pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Events handled together: one claiming transaction, sends side by side
/// ([`handler::SENDS_AT_ONCE`] at a time), one recording transaction.
const BATCH: usize = 64;
/// Batches in flight at once.
const BATCHES: usize = 4;
/// How often spent reply-quota windows are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Applies the notifier's migrations and returns (`notifier migrate`).
pub async fn migrate(
    database: &DatabaseConfig,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    shared::cli::migrate_schema(database, SCHEMA, &MIGRATOR, shutdown).await
}

/// Runs the notifier until `shutdown`: serves the ops endpoints at once (so liveness
/// holds while the database is still coming up), migrates, consumes; on shutdown the
/// messages in hand are finished and acked within the grace period.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let send_timeout = config.send_timeout();
    // Configuration mistakes stop the start, before anything is consumed.
    let gateway = gateway::SmsGateway::from_config(&config.sms, send_timeout)?;
    let mailer = mailer::Mailer::from_config(&config.email, send_timeout).await?;
    let queue = shared::topology::system_queues()
        .into_iter()
        .find(|q| q.name == QUEUE)
        .context("the broker topology has no `notifier` queue")?;
    let pool = shared::db::pool(&config.database, SCHEMA)?;

    let mut registry = Registry::with_prefix("notifier");
    let consumer_metrics = ConsumerMetrics::register(&mut registry);
    let metrics = metrics::NotifierMetrics::register(&mut registry);
    let ready = ReadyFlag::default();
    let ops = shared::http::Ops {
        registry: Arc::new(registry),
        broker_links: vec![ready.clone()],
        database: Some(pool.clone()),
    };
    tracing::info!(addr = %listener.local_addr()?, gateway = gateway.name(), mail = mailer.transport(), "notifier listening");
    let http_stop = shutdown.child_token();
    let http = tokio::spawn(shared::http::serve(
        listener,
        shared::http::router(ops),
        http_stop.clone(),
    ));

    if let Err(e) = shared::db::migrate(&pool, SCHEMA, &MIGRATOR, &shutdown).await {
        http_stop.cancel();
        let _ = http.await;
        return Err(e);
    }

    let handler = Arc::new(handler::Notifier {
        pool: pool.clone(),
        gateway,
        mailer,
        limits: limits::ReplyLimits::new(&config.limits, config.timezone),
        email_from: config.email.email_from.clone(),
        timezone: config.timezone,
        send_timeout,
        metrics,
    });
    let tracker = TaskTracker::new();
    let consumer_config = ConsumerConfig {
        batch: BATCH,
        concurrency: BATCHES,
        prefetch: u16::try_from(BATCH * BATCHES).unwrap_or(u16::MAX),
        ..ConsumerConfig::new(
            config.broker.url(),
            queue,
            shared::topology::system_queues(),
        )
    };
    tracker.spawn(shared::consumer::run_batched(
        consumer_config,
        handler,
        consumer_metrics,
        ready,
        shutdown.clone(),
    ));
    tracker.spawn(limits::prune_periodically(
        pool.clone(),
        PRUNE_EVERY,
        shutdown.clone(),
    ));
    tracker.close();

    shutdown.cancelled().await;
    if tokio::time::timeout(config.runtime.grace(), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight messages not finished within the grace period; the broker will redeliver them"
        );
    }
    let served = http.await.context("HTTP server task")?;
    pool.close().await;
    served.context("HTTP server")?;
    tracing::info!("notifier stopped");
    Ok(())
}
