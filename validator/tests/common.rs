//! Test harness for the validator: a registry, the validator running in-process on
//! its own vhost and database, and a queue of our own bound to `meter.events` that
//! captures every reading event (as a third party would).

#![allow(dead_code)]

use std::time::Duration;

use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use shared::broker::Publisher;
use shared::config::{BrokerConfig, LogFormat, RuntimeConfig};
use shared::events::{Channel, Event, SmsReceived};
use shared::testing::{TestEnv, eventually};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
pub const WAIT: Duration = Duration::from_secs(20);

pub struct Harness {
    pub env: TestEnv,
    pub pool: PgPool,
    pub publisher: Publisher,
    tracker: TaskTracker,
    publisher_stop: CancellationToken,
    pub capture: lapin::Channel,
    capture_conn: Connection,
    app: Option<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
    pub base: String,
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
            shutdown_grace_seconds: 5,
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

        let capture_conn = Connection::connect(&env.amqp_url, ConnectionProperties::default())
            .await
            .expect("connect");
        let capture = capture_conn.create_channel().await.expect("channel");
        shared::topology::declare(&capture, &shared::topology::system_queues())
            .await
            .expect("topology");
        capture
            .queue_declare(
                "capture".into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("capture queue");
        capture
            .queue_bind(
                "capture".into(),
                "meter.events".into(),
                "reading.*".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");

        let tracker = TaskTracker::new();
        let publisher_stop = CancellationToken::new();
        let publisher = Publisher::start(
            env.amqp_url.clone(),
            "test".into(),
            vec![],
            &tracker,
            publisher_stop.clone(),
        );
        eventually("test publisher", WAIT, || async {
            publisher.ready().get().then_some(())
        })
        .await;
        Harness {
            env,
            pool,
            publisher,
            tracker,
            publisher_stop,
            capture,
            capture_conn,
            app: None,
            base: String::new(),
            aside: Default::default(),
        }
    }

    pub async fn started() -> Harness {
        let mut h = Harness::prepared().await;
        h.start().await;
        h
    }

    pub async fn start(&mut self) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        self.base = format!("http://{addr}");
        let stop = CancellationToken::new();
        let task = tokio::spawn(validator::run(
            config(&self.env, addr),
            listener,
            stop.clone(),
        ));
        self.app = Some((stop, task));
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.base);
        eventually("validator ready", WAIT, || async {
            let r = client.get(&url).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    pub async fn stop_app(&mut self) {
        if let Some((stop, task)) = self.app.take() {
            stop.cancel();
            task.await.expect("no panic").expect("clean exit");
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
        };
        self.publisher
            .publish(&Event::SmsReceived(sms))
            .await
            .expect("published");
    }

    /// The next captured event, waiting up to the deadline.
    pub async fn next_event(&self) -> Event {
        eventually("an event", WAIT, || async {
            let got = self
                .capture
                .basic_get("capture".into(), BasicGetOptions { no_ack: true })
                .await
                .ok()??;
            Some(Event::from_json(&got.delivery.data).expect("valid event"))
        })
        .await
    }

    /// The captured event for a message id; events of other messages are kept aside
    /// for their own `event_for`.
    pub async fn event_for(&self, id: &str) -> Event {
        eventually(&format!("the event of {id}"), WAIT, || async {
            let mut aside = self.aside.lock().await;
            while let Ok(Some(got)) = self
                .capture
                .basic_get("capture".into(), BasicGetOptions { no_ack: true })
                .await
            {
                aside.push(Event::from_json(&got.delivery.data).expect("valid event"));
            }
            let pos = aside.iter().position(|e| e.message_id() == id)?;
            Some(aside.remove(pos))
        })
        .await
    }

    pub async fn captured_now(&self) -> Vec<Event> {
        let mut out = std::mem::take(&mut *self.aside.lock().await);
        while let Ok(Some(got)) = self
            .capture
            .basic_get("capture".into(), BasicGetOptions { no_ack: true })
            .await
        {
            out.push(Event::from_json(&got.delivery.data).expect("valid event"));
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
        self.publisher_stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        self.capture_conn.close(200, "bye".into()).await.ok();
        self.pool.close().await;
        self.env.cleanup().await;
    }
}
