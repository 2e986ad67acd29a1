//! The validator's part of the test harness: a registry, the validator in-process
//! (`shared::testing::Service`) on its own vhost and database, and a queue of our own
//! bound to `meter.events` (`shared::testing::Broker::capture`) that captures every
//! reading event, as a third party would.

#![allow(dead_code)]

use shared::config::{BrokerConfig, LogFormat, RuntimeConfig};
use shared::events::{Channel, Event, SmsReceived};
pub use shared::testing::WAIT;
use shared::testing::{Broker, Service, TestEnv, eventually};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Our own queue of every `reading.*` event.
const CAPTURE: &str = "capture";

pub const REGISTRY: &str = "\
account,meter,zones,digits,status,last_period,last_t1,last_t2,last_t3,normative_kwh
1000001,M1,1,5,active,2026-10,45000,,,100
1000002,M2,2,6,active,2026-10,045000,012000,,150
1000003,M3,3,6,active,,,,,
1000004,M4,1,5,closed,,,,,
1000005,M5a,1,5,active,,,,,
1000005,M5b,1,5,active,,,,,
1000006,M6,1,5,active,2026-10,99950,,,
0000007,M7,1,5,active,,,,,
";

pub const IN_WINDOW: &str = "2026-11-20T10:00:00+05:00";

pub struct Harness {
    pub env: TestEnv,
    pub pool: PgPool,
    /// Publishes with confirms; reads the capture queue and the dead letters.
    pub broker: Broker,
    app: Option<Service>,
    aside: tokio::sync::Mutex<Vec<Event>>,
}

pub fn config(env: &TestEnv, addr: std::net::SocketAddr) -> validator::Config {
    validator::Config {
        http_addr: addr,
        calendar: shared::calendar::Calendar::default(),
        account_digits_min: 6,
        account_digits_max: 12,
        max_monthly_kwh: 10_000,
        rate_limit_per_hour: 3,
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

impl Harness {
    /// Registry loaded, capture queue bound, validator NOT started yet.
    pub async fn prepared() -> Harness {
        let env = TestEnv::new().await;
        let pool = shared::db::pool(&env.database(), validator::SCHEMA).expect("pool");
        validator::DATABASE
            .apply(&pool, &CancellationToken::new())
            .await
            .expect("migrate");
        let report = validator::registry::import(&pool, REGISTRY.as_bytes())
            .await
            .expect("import");
        assert_eq!(report.rows_rejected, 0, "{:?}", report.errors);

        let broker = Broker::connect(&env).await;
        broker.capture(CAPTURE, "reading.*").await;
        Harness {
            env,
            pool,
            broker,
            app: None,
            aside: Default::default(),
        }
    }

    pub async fn started() -> Harness {
        let mut h = Harness::prepared().await;
        h.start().await;
        h
    }

    pub async fn start(&mut self) {
        let env = &self.env;
        let app = Service::start("validator", |addr| config(env, addr), validator::run).await;
        self.app = Some(app);
    }

    /// One sample of the running validator's metrics (`0` while never counted).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match &self.app {
            Some(app) => app.metric(name, labels).await,
            None => panic!("the validator is not running"),
        }
    }

    pub async fn stop_app(&mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }

    pub async fn send(&self, id: &str, from: &str, text: &str, at: &str) {
        let sms = SmsReceived {
            message_id: id.into(),
            from: from.into(),
            to: "7377".into(),
            text: text.into(),
            received_at: chrono::DateTime::parse_from_rfc3339(at).expect("time"),
            channel: Channel::Sms,
            chat: None,
            contact: None,
        };
        self.broker.publish(&Event::SmsReceived(sms)).await;
    }

    /// The next captured event, waiting up to the deadline.
    pub async fn next_event(&self) -> Event {
        eventually("an event", WAIT, || async {
            Some(self.broker.take(CAPTURE).await?.event())
        })
        .await
    }

    /// The captured event for a message id; events of other messages are kept aside
    /// for their own `event_for`.
    pub async fn event_for(&self, id: &str) -> Event {
        eventually(&format!("the event of {id}"), WAIT, || async {
            let mut aside = self.aside.lock().await;
            while let Some(got) = self.broker.take(CAPTURE).await {
                aside.push(got.event());
            }
            let pos = aside.iter().position(|e| e.message_id() == id)?;
            Some(aside.remove(pos))
        })
        .await
    }

    pub async fn captured_now(&self) -> Vec<Event> {
        let mut out = std::mem::take(&mut *self.aside.lock().await);
        while let Some(got) = self.broker.take(CAPTURE).await {
            out.push(got.event());
        }
        out
    }

    pub async fn audit(&self, id: &str) -> Option<(String, Option<String>)> {
        sqlx::query_as("SELECT outcome, reason FROM messages WHERE message_id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .expect("query")
    }

    pub async fn finish(mut self) {
        self.stop_app().await;
        self.broker.close().await;
        self.pool.close().await;
        self.env.cleanup().await;
    }
}

/// Waits until the validator has counted `n` rows of `table` purged.
pub async fn eventually_metric(h: &Harness, table: &str, n: f64) {
    eventually(&format!("{table} purged"), WAIT, || async {
        let got = h
            .metric("validator_retention_purged_rows_total", &[("table", table)])
            .await;
        (got == n).then_some(())
    })
    .await;
}
