//! Test harness (feature `testing`): every test gets its own RabbitMQ vhost and its own
//! PostgreSQL database on the real servers, so tests run in parallel and leave nothing
//! behind. Names carry the process id; leftovers of dead test processes (a test that
//! panicked before `cleanup`) are swept when the next run starts.
//!
//! Servers come from `TEST_AMQP_BASE` (default `amqp://guest:guest@127.0.0.1:5672`),
//! `TEST_RABBITMQ_API` (default `http://127.0.0.1:15672`, the management plugin) and
//! `TEST_POSTGRES_BASE` (default `postgres://postgres@127.0.0.1:5432`). A test on the
//! project's own three-node cluster (`scripts/cluster.sh`) takes
//! [`TestEnv::on`]`(`[`TestBroker::cluster`]`())`: its vhost is made through the
//! management API of whichever node answers, and its `amqp_url` lists all three.
//!
//! Beside the environment, one way of doing what every service's tests do:
//! [`Service`] runs a service's `run(config, listener, shutdown)` in-process on
//! port 0, waits for `/readyz`, reads `/metrics` ([`Metrics`], the one parser of
//! the text format) and stops it; [`Broker`] publishes with confirms and takes
//! from queues; [`PortLease`] and [`listening_port`] give peers that run as
//! processes their ports without a bind-and-release race.
//!
//! Deadlines are for a busy machine (CI runs every test binary in parallel on two
//! cores): they bound how long a failing test hangs, and a passing test never waits
//! for them, so they are generous. Wait on a condition with [`eventually`], never
//! on a fixed sleep.

pub mod bots;
mod broker;
#[cfg(feature = "browser")]
pub mod browser;
mod logs;
mod metrics;
mod ports;
mod service;

pub use broker::{Broker, Taken};
pub use logs::CapturedLogs;
pub use metrics::{Metrics, Sample};
pub use ports::{PortLease, listening_port, listening_ports, with_leases};
pub use service::Service;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use sqlx::{Connection, Executor, PgConnection};
use tokio::sync::OnceCell;

use crate::config::DatabaseConfig;

/// How long a test waits for a condition that crosses the broker or the database.
pub const WAIT: Duration = Duration::from_secs(60);
/// How long a service (in-process or a child process) may take to become ready: its
/// migrations, its broker link and topology. Two minutes: on a 2-core machine at a
/// load average of 16-25 the machine's broker took over 30 s to answer a connection
/// and then refused a quorum queue declaration (`cluster_not_formed`), and two
/// console services were not ready within 60 s (a fresh-clone CI run, 2026-12-02).
pub const READY_WAIT: Duration = Duration::from_secs(120);
/// How long a service may take to finish after its shutdown started.
pub const STOP_WAIT: Duration = Duration::from_secs(60);
/// How long a test publish waits for the broker's confirm.
pub const CONFIRM_WAIT: Duration = Duration::from_secs(30);

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEPT: OnceCell<()> = OnceCell::const_new();

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| default.to_owned())
}

fn amqp_base() -> String {
    env_or("TEST_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
}

/// The RabbitMQ a test runs on: its AMQP bases (one per node, no vhost) and the
/// management APIs that answer for it (any one will do).
#[derive(Debug, Clone)]
pub struct TestBroker {
    pub amqp: Vec<String>,
    pub api: Vec<String>,
}

impl TestBroker {
    /// The machine's broker (`TEST_AMQP_BASE`, `TEST_RABBITMQ_API`).
    pub fn machine() -> TestBroker {
        TestBroker {
            amqp: vec![amqp_base()],
            api: vec![env_or("TEST_RABBITMQ_API", "http://127.0.0.1:15672")],
        }
    }

    /// The project's own three-node cluster (`scripts/cluster.sh start`):
    /// `TEST_CLUSTER_AMQP_BASES` and `TEST_CLUSTER_APIS`, comma-separated, default
    /// ports 5701-5703 and 15701-15703.
    pub fn cluster() -> TestBroker {
        let list = |key: &str, default: &str| -> Vec<String> {
            env_or(key, default)
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        TestBroker {
            amqp: list(
                "TEST_CLUSTER_AMQP_BASES",
                "amqp://guest:guest@127.0.0.1:5701,amqp://guest:guest@127.0.0.1:5702,amqp://guest:guest@127.0.0.1:5703",
            ),
            api: list(
                "TEST_CLUSTER_APIS",
                "http://127.0.0.1:15701,http://127.0.0.1:15702,http://127.0.0.1:15703",
            ),
        }
    }

    /// `AMQP_URL` for `vhost`: every node, comma-separated.
    fn url(&self, vhost: &str) -> String {
        self.amqp
            .iter()
            .map(|base| format!("{base}/{vhost}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Sends the request `build` makes for each management API in turn until one
    /// answers (a node of a cluster may be down); `None` if none did.
    pub async fn api(
        &self,
        http: &reqwest::Client,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Option<reqwest::Response> {
        for base in &self.api {
            if let Ok(resp) = build(http, base)
                .basic_auth("guest", Some("guest"))
                .send()
                .await
            {
                return Some(resp);
            }
        }
        None
    }
}

fn pg_base() -> String {
    env_or("TEST_POSTGRES_BASE", "postgres://postgres@127.0.0.1:5432")
}

const PREFIX: &str = "mtest_";

/// A vhost and a database of one's own.
pub struct TestEnv {
    pub name: String,
    /// The vhost on every node of the broker, comma-separated (one URL on the
    /// machine's broker).
    pub amqp_url: String,
    pub database_url: String,
    pub broker: TestBroker,
    http: reqwest::Client,
}

impl TestEnv {
    /// On the machine's broker.
    pub async fn new() -> TestEnv {
        TestEnv::on(TestBroker::machine()).await
    }

    /// On `broker` (e.g. [`TestBroker::cluster`]).
    pub async fn on(broker: TestBroker) -> TestEnv {
        crate::telemetry::init_for_tests();
        let http = reqwest::Client::new();
        let machine = TestBroker::machine();
        SWEPT.get_or_init(|| sweep(&http, &machine)).await;
        if broker.api != machine.api {
            // A cluster's leftovers are not the machine's: swept on every start.
            sweep(&http, &broker).await;
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "{PREFIX}{}_{n}_{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let name: String = name.chars().take(60).collect();

        let resp = broker
            .api(&http, |h, api| h.put(format!("{api}/api/vhosts/{name}")))
            .await
            .expect(
                "RabbitMQ management API reachable (rabbitmq-plugins enable rabbitmq_management; a cluster: scripts/cluster.sh start)",
            );
        assert!(
            resp.status().is_success(),
            "create vhost: {}",
            resp.status()
        );
        let resp = broker
            .api(&http, |h, api| {
                h.put(format!("{api}/api/permissions/{name}/guest"))
                    .json(&serde_json::json!({"configure": ".*", "write": ".*", "read": ".*"}))
            })
            .await
            .expect("set permissions");
        assert!(
            resp.status().is_success(),
            "set permissions: {}",
            resp.status()
        );

        set_policies(&http, &broker, &name).await;

        let mut admin = PgConnection::connect(&format!("{}/postgres", pg_base()))
            .await
            .expect("PostgreSQL reachable");
        admin
            .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CREATE DATABASE \"{name}\""
            ))))
            .await
            .expect("create test database");

        TestEnv {
            amqp_url: broker.url(&name),
            database_url: format!("{}/{name}", pg_base()),
            name,
            broker,
            http,
        }
    }

    pub fn database(&self) -> DatabaseConfig {
        DatabaseConfig {
            database_url: secrecy::SecretString::from(self.database_url.clone()),
            database_max_connections: 5,
            retention_days: crate::config::DEFAULT_RETENTION_DAYS,
        }
    }

    /// Messages in a queue of this vhost (ready + unacked), via the management API.
    /// The API refreshes its statistics every few seconds; poll with a deadline.
    pub async fn queue_depth(&self, queue: &str) -> Option<u64> {
        self.management(&format!("queues/{{vhost}}/{queue}"))
            .await?["messages"]
            .as_u64()
    }

    /// The management API's answer at `/api/<path>`, where `{vhost}` in `path` stands
    /// for this test's vhost (e.g. `consumers/{vhost}`); `None` if it did not answer.
    pub async fn management(&self, path: &str) -> Option<serde_json::Value> {
        let path = path.replace("{vhost}", &self.name);
        let resp = self
            .broker
            .api(&self.http, |h, api| h.get(format!("{api}/api/{path}")))
            .await?;
        resp.json().await.ok()
    }

    /// Makes this vhost treat our queues as RabbitMQ 4 would, on a 3.x broker too: from
    /// 4.0 a quorum queue whose argument and policy set no `delivery-limit` has
    /// [`RABBITMQ4_DEFAULT_DELIVERY_LIMIT`], and a message returned more often is
    /// dropped or dead-lettered. Each of our policies is set again with that limit
    /// added where it sets none itself; a policy that sets one keeps its own. On a 4.x
    /// broker this changes nothing.
    pub async fn emulate_rabbitmq4_delivery_limit(&self) {
        set_policies_with(&self.http, &self.broker, &self.name, |definition| {
            if let Some(map) = definition.as_object_mut() {
                map.entry("delivery-limit")
                    .or_insert(RABBITMQ4_DEFAULT_DELIVERY_LIMIT.into());
            }
        })
        .await;
    }

    /// Drops the vhost and the database.
    pub async fn cleanup(self) {
        drop_env(&self.http, &self.broker, &self.name).await;
    }
}

async fn drop_env(http: &reqwest::Client, broker: &TestBroker, name: &str) {
    let _ = broker
        .api(http, |h, api| h.delete(format!("{api}/api/vhosts/{name}")))
        .await;
    if let Ok(mut admin) = PgConnection::connect(&format!("{}/postgres", pg_base())).await {
        let _ = admin
            .execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            ))))
            .await;
    }
}

fn owner_alive(name: &str) -> bool {
    let pid = name
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split('_').next())
        .and_then(|p| p.parse::<u32>().ok());
    match pid {
        Some(pid) => {
            pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists()
        }
        None => true,
    }
}

async fn sweep(http: &reqwest::Client, broker: &TestBroker) {
    let mut stale = Vec::new();
    if let Some(resp) = broker
        .api(http, |h, api| h.get(format!("{api}/api/vhosts")))
        .await
        && let Ok(list) = resp.json::<Vec<serde_json::Value>>().await
    {
        stale.extend(
            list.iter()
                .filter_map(|v| v["name"].as_str())
                .filter(|n| n.starts_with(PREFIX) && !owner_alive(n))
                .map(str::to_owned),
        );
    }
    if let Ok(mut admin) = PgConnection::connect(&format!("{}/postgres", pg_base())).await
        && let Ok(rows) = sqlx::query_scalar::<_, String>(
            "SELECT datname FROM pg_database WHERE datname LIKE 'mtest\\_%'",
        )
        .fetch_all(&mut admin)
        .await
    {
        stale.extend(rows.into_iter().filter(|n| !owner_alive(n)));
    }
    stale.sort();
    stale.dedup();
    for name in stale {
        drop_env(http, broker, &name).await;
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Serves `app` on loopback, on a port the kernel picks, until the returned token is
/// cancelled: an in-process double of a peer we cannot have (billing, an SMS
/// aggregator, a messenger's API). Returns its `http://127.0.0.1:<port>`.
pub async fn serve_double(app: axum::Router) -> (String, tokio_util::sync::CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a peer's double");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = tokio_util::sync::CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(until.cancelled_owned())
            .await;
    });
    (url, stop)
}
/// The delivery limit RabbitMQ 4 gives a quorum queue whose argument and policy set
/// none (3.x gives none).
pub const RABBITMQ4_DEFAULT_DELIVERY_LIMIT: i64 = 20;

/// The broker policies production has (`topology::policies`, as deploy/ and
/// scripts/lib.sh set them), on a test's vhost, so tests run against the same
/// effective queue settings.
async fn set_policies(http: &reqwest::Client, broker: &TestBroker, vhost: &str) {
    set_policies_with(http, broker, vhost, |_| {}).await;
}

/// [`set_policies`] with each definition changed by `change` first.
async fn set_policies_with(
    http: &reqwest::Client,
    broker: &TestBroker,
    vhost: &str,
    change: impl Fn(&mut serde_json::Value),
) {
    let queues = crate::topology::system_queues();
    for mut policy in crate::topology::policies(&queues) {
        change(&mut policy.definition);
        let resp = broker
            .api(http, |h, api| {
                h.put(format!("{api}/api/policies/{vhost}/{}", policy.name))
                    .json(&serde_json::json!({
                        "pattern": policy.pattern,
                        "definition": policy.definition,
                        "priority": crate::topology::POLICY_PRIORITY,
                        "apply-to": "queues",
                    }))
            })
            .await
            .expect("set policy");
        assert!(
            resp.status().is_success(),
            "set policy {}: {}",
            policy.name,
            resp.status()
        );
    }
}
