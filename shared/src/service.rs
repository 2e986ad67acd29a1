//! The service skeleton: how every service starts and stops, written once.
//!
//! A service states only what is its own — its database schema, the publishers and
//! consumers it needs, its background tasks and its HTTP routes — on a [`Service`],
//! then hands over with [`Service::run`]. The skeleton then, in this order:
//!
//! 0. **refuses to start** when `REQUIRE_TLS=true` and a link it was given (broker,
//!    database, or one the service names with [`Service::link`]) is not verified TLS,
//!    or when the bundle in `SSL_CERT_FILE` cannot be read (`shared::tls`) — before
//!    anything is served or connected;
//! 1. **serves HTTP at once**: `/healthz` answers, `/readyz` says "starting", and the
//!    service's own routes answer `503` with `Retry-After` — so a slow database never
//!    fails a liveness probe, and no request meets unmigrated tables;
//! 2. **applies the migrations** of the service's schema (retrying while the database
//!    is unreachable, until shutdown);
//! 3. **starts the consumers and background tasks** and opens the service's routes;
//!    `/readyz` now reports the broker links and the database.
//!
//! It runs until `shutdown` (SIGTERM, Ctrl-C) — or until a consumer ends on its own,
//! which is a failure: `/readyz` fails at once and `run` returns an error, so the
//! process exits non-zero and is restarted rather than staying "ready" while doing
//! nothing (SPEC §5). Shutdown, also in one order:
//!
//! 1. the HTTP server stops accepting and finishes the requests in flight, while the
//!    consumers finish and ack the messages in hand and the background tasks stop;
//! 2. then the *drains* run to the end (the validator's outbox relay publishes what
//!    the last messages committed);
//! 3. then the broker links close (publishers outlive every request and message that
//!    may still publish);
//! 4. then the database pool closes.
//!
//! Steps 1–3 share the grace period (`SHUTDOWN_GRACE_SECONDS`); whatever is still
//! unacked then is redelivered by the broker to another instance.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt as _;
use futures::future::FusedFuture as _;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Publisher, ReadyFlag};
use crate::config::{BrokerConfig, DatabaseConfig, RuntimeConfig};
use crate::consumer::{self, BatchHandler, ConsumerConfig};
use crate::metrics::ConsumerMetrics;
use crate::topology::QueueSpec;

/// A service's own tables: its schema and the migrations that build it (SPEC §4.7).
#[derive(Clone, Copy)]
pub struct Schema {
    pub name: &'static str,
    pub migrator: &'static Migrator,
}

impl Schema {
    /// A pool on the schema, its migrations applied (retrying while the database is
    /// unreachable, until `shutdown`): what a one-off command such as an import needs.
    pub async fn open(
        self,
        database: &DatabaseConfig,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<PgPool> {
        let pool = crate::db::pool(database, self.name)?;
        self.apply(&pool, shutdown).await?;
        Ok(pool)
    }

    /// Applies the migrations through `pool` (whose connections use the schema).
    pub async fn apply(self, pool: &PgPool, shutdown: &CancellationToken) -> anyhow::Result<()> {
        crate::db::migrate(pool, self.name, self.migrator, shutdown).await
    }

    /// The `migrate` subcommand (a Kubernetes Job): applies the migrations and returns.
    pub async fn migrate(
        self,
        database: &DatabaseConfig,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        self.open(database, shutdown).await?.close().await;
        tracing::info!(schema = self.name, "migrations applied");
        Ok(())
    }
}

/// How many deliveries a consumer takes at once.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Most deliveries handed to the handler at once (one transaction, say).
    pub batch: usize,
    /// Batches in flight at once (each may hold a pooled connection).
    pub batches: usize,
}

impl Batching {
    /// One message at a time, several side by side.
    pub const ONE_BY_ONE: Batching = Batching {
        batch: 1,
        batches: 16,
    };
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;
type TaskFn = Box<dyn FnOnce(CancellationToken) -> Task + Send>;

/// A service being put together (see the module's documentation).
pub struct Service {
    name: &'static str,
    runtime: RuntimeConfig,
    registry: Registry,
    database: Option<(PgPool, Schema)>,
    /// Every broker link `/readyz` waits for.
    links: Vec<ReadyFlag>,
    /// Publishers' supervisors; closed after everything that may publish has ended.
    broker_tracker: TaskTracker,
    broker_shutdown: CancellationToken,
    consumers: Vec<(String, TaskFn)>,
    tasks: Vec<(&'static str, TaskFn)>,
    drains: Vec<(&'static str, TaskFn)>,
    routes: Router,
    topology: Vec<QueueSpec>,
    /// Why links are not verified TLS, when `REQUIRE_TLS=true` (`run` then refuses).
    plaintext: Vec<String>,
}

impl Service {
    /// `name` is the service's name in logs; `metrics_prefix` prefixes its metrics.
    pub fn new(name: &'static str, metrics_prefix: &str, runtime: &RuntimeConfig) -> Service {
        // `run_main` did this for a binary; a test that calls `run` directly has not.
        crate::tls::install_provider();
        Service {
            name,
            runtime: runtime.clone(),
            registry: Registry::with_prefix(metrics_prefix),
            database: None,
            links: Vec::new(),
            broker_tracker: TaskTracker::new(),
            broker_shutdown: CancellationToken::new(),
            consumers: Vec::new(),
            tasks: Vec::new(),
            drains: Vec::new(),
            routes: Router::new(),
            topology: crate::topology::system_queues(),
            plaintext: Vec::new(),
        }
    }

    /// A link the service opens, named by its setting: with `REQUIRE_TLS=true`, `run`
    /// refuses to start if it is not verified TLS (`shared::tls::plaintext`). The broker
    /// and database links are checked by the skeleton itself.
    /// Returns whether the link is refused.
    pub fn link(&mut self, setting: &str, link: crate::tls::Link, url: &str) -> bool {
        if !self.runtime.require_tls {
            return false;
        }
        let Some(reason) = crate::tls::plaintext(setting, link, url) else {
            return false;
        };
        if !self.plaintext.contains(&reason) {
            self.plaintext.push(reason);
        }
        true
    }

    /// The service owns `schema`: returns its pool (connections are made lazily; the
    /// migrations are applied by [`Service::run`] before anything else touches it).
    pub fn database(&mut self, config: &DatabaseConfig, schema: Schema) -> anyhow::Result<PgPool> {
        // The pool is lazy: nothing connects before `run` has checked.
        self.link("DATABASE_URL", crate::tls::Link::Database, config.url());
        let pool = crate::db::pool(config, schema.name)
            .with_context(|| format!("DATABASE_URL (schema {})", schema.name))?;
        self.database = Some((pool.clone(), schema));
        Ok(pool)
    }

    /// Where the service registers its own metrics.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// A publisher with confirms to `meter.events`; it connects in the background at
    /// once and stays open until every consumer, drain and request has finished.
    pub fn publisher(&mut self, broker: &BrokerConfig, connection_name: &str) -> Publisher {
        // A refused link is never opened, not even once before `run` refuses: its
        // supervisor starts stopped.
        let shutdown = if self.link("AMQP_URL", crate::tls::Link::Broker, broker.url()) {
            let stopped = CancellationToken::new();
            stopped.cancel();
            stopped
        } else {
            self.broker_shutdown.clone()
        };
        let publisher = Publisher::start(
            broker.url().to_owned(),
            connection_name.to_owned(),
            self.topology.clone(),
            &self.broker_tracker,
            shutdown,
        );
        self.links.push(publisher.ready());
        publisher
    }

    /// Consumes `queue` (one of `shared::topology::system_queues`) with `handler`,
    /// from the end of the start-up until shutdown.
    pub fn consume<H: BatchHandler>(
        &mut self,
        broker: &BrokerConfig,
        queue: &str,
        batching: Batching,
        handler: H,
    ) -> anyhow::Result<()> {
        // Consumers connect only in `run`, after the check.
        self.link("AMQP_URL", crate::tls::Link::Broker, broker.url());
        let spec = self
            .topology
            .iter()
            .find(|q| q.name == queue)
            .cloned()
            .with_context(|| format!("the broker topology has no `{queue}` queue"))?;
        let config = ConsumerConfig {
            batch: batching.batch,
            concurrency: batching.batches,
            prefetch: u16::try_from(batching.batch * batching.batches).unwrap_or(u16::MAX),
            ..ConsumerConfig::new(broker.url(), spec, self.topology.clone())
        };
        let metrics = ConsumerMetrics::register(&mut self.registry);
        let ready = ReadyFlag::default();
        self.links.push(ready.clone());
        let handler = Arc::new(handler);
        self.consumers.push((
            queue.to_owned(),
            Box::new(move |shutdown| {
                Box::pin(consumer::run_batched(
                    config, handler, metrics, ready, shutdown,
                ))
            }),
        ));
        Ok(())
    }

    /// A background task, started with the consumers and told to stop (through its
    /// token) when shutdown begins.
    pub fn task<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks
            .push((name, Box::new(move |stop| Box::pin(task(stop)))));
    }

    /// Purges the service's rows older than `RETENTION_DAYS` (from `database`), at
    /// start and daily, as a background task ([`crate::retention`]). Returns the
    /// purge's metrics, for what else the service expires (files).
    pub fn retention(
        &mut self,
        database: &DatabaseConfig,
        purges: Vec<crate::retention::Purge>,
    ) -> anyhow::Result<crate::retention::RetentionMetrics> {
        let (pool, _) = self
            .database
            .as_ref()
            .context("retention purges the service's own tables: call `database` first")?;
        let pool = pool.clone();
        let metrics = crate::retention::RetentionMetrics::register(&mut self.registry);
        let days = database.retention_days;
        let task_metrics = metrics.clone();
        self.task("retention", move |stop| {
            crate::retention::run(pool, purges, days, task_metrics, stop)
        });
        Ok(metrics)
    }

    /// A task that must outlive the consumers: told to stop only once every consumer
    /// has finished its messages, so it can finish what they left (the outbox relay).
    pub fn drain<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.drains
            .push((name, Box::new(move |stop| Box::pin(task(stop)))));
    }

    /// The service's own HTTP routes, served beside the operational endpoints.
    pub fn routes(&mut self, routes: Router) {
        self.routes = std::mem::take(&mut self.routes).merge(routes);
    }

    /// Runs the service until `shutdown`, in the order of the module's documentation.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let Service {
            name,
            runtime,
            registry,
            database,
            links,
            broker_tracker,
            broker_shutdown,
            consumers,
            tasks,
            drains,
            routes,
            topology: _,
            plaintext,
        } = self;
        // Before anything is served or opened: a link that would cross in clear, or a
        // bundle of trusted certificates that cannot be read, stops the start-up.
        if !plaintext.is_empty() {
            return Err(crate::tls::refusal(&plaintext));
        }
        crate::tls::check_trust()?;
        let state = State::default();
        let mut registry = registry;
        let http_metrics = crate::http::HttpMetrics::register(&mut registry);
        let ops = crate::http::Ops {
            registry: Arc::new(registry),
            broker_links: links,
            database: database.as_ref().map(|(pool, _)| pool.clone()),
            started: state.started.clone(),
            failed: state.failed.clone(),
        };
        let app = gated(routes, state.started.clone()).merge(crate::http::router(ops));
        let addr = listener
            .local_addr()
            .context("the HTTP listener's address")?;
        tracing::info!(%addr, "{name} listening");
        let mut http = tokio::spawn(crate::http::serve(
            listener,
            app,
            runtime.http.clone(),
            http_metrics,
            shutdown.child_token(),
        ))
        .fuse();

        let outcome = async {
            if !migrated(database.as_ref(), &shutdown).await? {
                return Ok(());
            }
            let mut running = Running::start(consumers, tasks, drains, &shutdown);
            state.started.store(true, Ordering::Release);
            tracing::info!("{name} started");
            let ended = running.until_stopped(&mut http, &state, &shutdown).await;
            running.finish(runtime.grace()).await;
            ended
        }
        .await;

        // The HTTP server stops accepting when `shutdown` is cancelled (its token is a
        // child); requests in flight finish before it returns.
        shutdown.cancel();
        let served = if http.is_terminated() {
            None
        } else {
            tokio::time::timeout(runtime.grace(), &mut http).await.ok()
        };
        broker_shutdown.cancel();
        broker_tracker.close();
        if tokio::time::timeout(Duration::from_secs(10), broker_tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("broker links not closed within 10 s");
        }
        if let Some((pool, _)) = database {
            pool.close().await;
        }
        outcome?;
        if let Some(served) = served {
            served.context("HTTP server task")?.context("HTTP server")?;
        }
        tracing::info!("{name} stopped");
        Ok(())
    }
}

/// What `/readyz` and the gate read.
#[derive(Default)]
struct State {
    /// Start-up has finished: the service's own routes are open.
    started: Arc<AtomicBool>,
    /// Something the service cannot run without has stopped: never ready again.
    failed: Arc<AtomicBool>,
}

/// The service's own routes, answering [`starting`] until `open`.
fn gated(routes: Router, open: Arc<AtomicBool>) -> Router {
    routes.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let open = open.load(Ordering::Acquire);
            async move {
                if open {
                    next.run(req).await
                } else {
                    starting()
                }
            }
        },
    ))
}

/// Applies the migrations, if the service owns a schema. `Ok(false)`: shutdown came
/// first (a SIGTERM while the database is still away is a stop, not a failure).
async fn migrated(
    database: Option<&(PgPool, Schema)>,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    if let Some((pool, schema)) = database {
        match schema.apply(pool, shutdown).await {
            Ok(()) => {}
            Err(e) if shutdown.is_cancelled() => {
                tracing::warn!(error = %format!("{e:#}"), "shut down before the migrations were applied");
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(!shutdown.is_cancelled())
}

type Http = futures::future::Fuse<tokio::task::JoinHandle<std::io::Result<()>>>;

/// The consumers, background tasks and drains of a started service.
struct Running {
    consumers: JoinSet<()>,
    queues: HashMap<tokio::task::Id, String>,
    background: TaskTracker,
    drains: TaskTracker,
    drain_stop: CancellationToken,
}

impl Running {
    fn start(
        consumers: Vec<(String, TaskFn)>,
        tasks: Vec<(&'static str, TaskFn)>,
        drains: Vec<(&'static str, TaskFn)>,
        shutdown: &CancellationToken,
    ) -> Running {
        let mut running = Running {
            consumers: JoinSet::new(),
            queues: HashMap::new(),
            background: TaskTracker::new(),
            drains: TaskTracker::new(),
            drain_stop: CancellationToken::new(),
        };
        for (queue, start) in consumers {
            let task = running.consumers.spawn(start(shutdown.clone()));
            running.queues.insert(task.id(), queue);
        }
        for (task_name, start) in tasks {
            let task = start(shutdown.clone());
            running.background.spawn(async move {
                task.await;
                tracing::debug!(task = task_name, "background task ended");
            });
        }
        running.background.close();
        for (_, start) in drains {
            running.drains.spawn(start(running.drain_stop.clone()));
        }
        running.drains.close();
        running
    }

    /// Until shutdown — or a consumer that ends, or the HTTP server failing: then
    /// readiness fails for good, shutdown begins, and the cause is the error.
    async fn until_stopped(
        &mut self,
        http: &mut Http,
        state: &State,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        tokio::select! {
            // Shutdown first: the HTTP server also ends at shutdown (its token is a
            // child), and that is no failure.
            biased;
            _ = shutdown.cancelled() => Ok(()),
            Some(ended) = self.consumers.join_next_with_id() => {
                state.failed.store(true, Ordering::Release);
                let (id, cause) = match ended {
                    Ok((id, ())) => (id, "returned".to_owned()),
                    Err(e) => (e.id(), e.to_string()),
                };
                let queue = self.queues.get(&id).map_or("?", String::as_str);
                tracing::error!(queue, cause, "a consumer stopped on its own; shutting down");
                shutdown.cancel();
                Err(anyhow::anyhow!("the consumer of `{queue}` stopped on its own ({cause})"))
            }
            served = &mut *http, if !http.is_terminated() => {
                let stopping = shutdown.is_cancelled();
                state.failed.store(!stopping, Ordering::Release);
                shutdown.cancel();
                match served {
                    Ok(Ok(())) if stopping => Ok(()),
                    Ok(Ok(())) => Err(anyhow::anyhow!("the HTTP server stopped on its own")),
                    Ok(Err(e)) => Err(anyhow::Error::new(e).context("HTTP server")),
                    Err(e) => Err(anyhow::Error::new(e).context("HTTP server task")),
                }
            }
        }
    }

    /// Consumers finish what they hold and tasks stop, then the drains run out — all
    /// within `grace`; what is unacked then is redelivered by the broker.
    async fn finish(mut self, grace: Duration) {
        let in_hand = async {
            while self.consumers.join_next().await.is_some() {}
            self.background.wait().await;
            self.drain_stop.cancel();
            self.drains.wait().await;
        };
        if tokio::time::timeout(grace, in_hand).await.is_err() {
            tracing::warn!(
                "in-flight messages not finished within the grace period; the broker will redeliver them"
            );
        }
    }
}

/// What the service's own routes answer while it starts.
fn starting() -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        "starting: the service is not ready yet",
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}
