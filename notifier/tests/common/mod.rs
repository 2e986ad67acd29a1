//! Test harness: the notifier runs in-process on port 0 against the test's own RabbitMQ
//! vhost and PostgreSQL database (`TestEnv`); events are published straight onto
//! `meter.events` with publisher confirms; what it did is read back from its metrics,
//! its ledger and its dead-letter queue.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use std::time::Duration;

use chrono::DateTime;
use lapin::options::{BasicGetOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use notifier::config::{CountryCodes, EmailConfig, GatewayKind, LimitsConfig, SmsConfig};
use shared::config::{BrokerConfig, LogFormat, RuntimeConfig};
use shared::events::{Channel, Event, Period, ReadingAccepted, ReadingRejected, RejectReason};
use shared::testing::{TestEnv, eventually};
use shared::tracecontext::header_str;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const WAIT: Duration = Duration::from_secs(30);

/// The notifier's configuration for a test: log gateway, e-mails into `scratch`,
/// the default guards. Tests change what they exercise.
pub fn config(env: &TestEnv, scratch: &tempfile::TempDir) -> notifier::Config {
    notifier::Config {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        zone: shared::calendar::CompanyZone::default(),
        send_timeout_seconds: 5,
        sms: SmsConfig {
            sms_gateway: GatewayKind::Log,
            sms_sender: Some("7377".into()),
            sms_http_url: None,
            sms_http_token: None,
            kannel_sendsms_url: None,
            kannel_user: None,
            kannel_password: None,
        },
        email: EmailConfig {
            smtp_url: None,
            email_from: "Показания счётчиков <noreply@energo.example>"
                .parse()
                .expect("from"),
            email_dir: scratch.path().join("mail"),
        },
        limits: LimitsConfig {
            reply_country_codes: "7".parse::<CountryCodes>().expect("codes"),
            reply_daily_cap_per_number: 5,
            reply_hourly_budget: 2000,
        },
        broker: BrokerConfig {
            amqp_url: env.amqp_url.clone().into(),
        },
        database: env.database(),
        runtime: RuntimeConfig {
            log_format: LogFormat::Text,
            shutdown_grace_seconds: 10,
        },
    }
}

/// Points the configuration at an HTTP SMS gateway double.
pub fn use_http_gateway(config: &mut notifier::Config, url: &str) {
    config.sms.sms_gateway = GatewayKind::Http;
    config.sms.sms_http_url = Some(url.parse().expect("gateway url"));
    config.sms.sms_http_token = Some("gw-token-123".to_owned().into());
}

/// A running notifier.
pub struct App {
    pub base: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    http: reqwest::Client,
}

impl App {
    /// Starts the notifier and waits until it consumes.
    pub async fn spawn(config: notifier::Config) -> App {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(notifier::run(config, listener, shutdown.clone()));
        let app = App {
            base,
            shutdown,
            task,
            http: reqwest::Client::new(),
        };
        eventually("notifier ready", WAIT, || async {
            let r = app
                .http
                .get(format!("{}/readyz", app.base))
                .send()
                .await
                .ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
        app
    }

    /// Shuts down gracefully and checks it exited cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("notifier did not panic")
            .expect("notifier exited cleanly");
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics reachable")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one sample (`0` while it has never been counted).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        sample(&self.metrics().await, name, labels)
    }

    /// Waits until a sample reaches `value`.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        let what = format!("{name}{labels:?} = {value}");
        eventually(&what, WAIT, || async {
            (self.metric(name, labels).await >= value).then_some(())
        })
        .await;
        let now = self.metric(name, labels).await;
        assert_eq!(now, value, "{what}, got {now}");
    }

    /// Waits until `n` messages were settled by the consumer loop (acked, retried or
    /// dead-lettered), i.e. the notifier is done with them.
    pub async fn wait_settled(&self, outcome: &str, n: f64) {
        self.wait_metric(
            "notifier_consumer_messages_total",
            &[("queue", "notifier"), ("outcome", outcome)],
            n,
        )
        .await;
    }
}

/// One sample of the Prometheus text format: `name{a="x",b="y"} value`.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|(_, value)| value.parse::<f64>().ok())
        .fold(0.0, |a, b| a + b)
}

/// A confirming publisher onto `meter.events`, and a reader of the dead letters.
pub struct Broker {
    conn: lapin::Connection,
    channel: lapin::Channel,
}

/// A message taken from a queue.
pub struct Taken {
    pub body: Vec<u8>,
    pub headers: FieldTable,
}

impl Taken {
    pub fn header(&self, key: &str) -> Option<String> {
        header_str(&self.headers, key).map(str::to_owned)
    }
}

impl Broker {
    pub async fn connect(env: &TestEnv) -> Broker {
        let conn = shared::broker::connect(
            &env.amqp_url,
            "test-publisher",
            &shared::topology::system_queues(),
        )
        .await
        .expect("broker");
        let channel = conn.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        Broker { conn, channel }
    }

    pub async fn publish(&self, event: &Event) {
        shared::broker::publish_confirmed(
            &self.channel,
            shared::events::EXCHANGE,
            event.routing_key(),
            &event.to_json(),
            shared::broker::persistent_json(event.message_id(), FieldTable::default()),
            Duration::from_secs(5),
        )
        .await
        .expect("published and confirmed");
    }

    /// Publishes raw bytes under a routing key (poison messages).
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        shared::broker::publish_confirmed(
            &self.channel,
            shared::events::EXCHANGE,
            routing_key,
            body,
            shared::broker::persistent_json("poison", FieldTable::default()),
            Duration::from_secs(5),
        )
        .await
        .expect("published and confirmed");
    }

    /// Takes one message from `queue`, if any.
    pub async fn take(&self, queue: &str) -> Option<Taken> {
        let got = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")?;
        Some(Taken {
            body: got.delivery.data.clone(),
            headers: got
                .delivery
                .properties
                .headers()
                .clone()
                .unwrap_or_default(),
        })
    }

    /// Waits for a dead letter of the notifier.
    pub async fn dead_letter(&self) -> Taken {
        eventually("a message in notifier.dead", WAIT, || {
            self.take("notifier.dead")
        })
        .await
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "bye".into()).await;
    }
}

/// The notifier's ledger, read as the service sees it (its own schema).
pub fn ledger(env: &TestEnv) -> PgPool {
    shared::db::pool(&env.database(), notifier::SCHEMA).expect("pool")
}

/// The state of one delivery, e.g. `reply:gw-1` → `sent`.
pub async fn state(pool: &PgPool, key: &str) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM deliveries WHERE key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
        .expect("ledger query")
}

pub async fn wait_state(pool: &PgPool, key: &str, expected: &str) {
    eventually(&format!("{key} is {expected}"), WAIT, || async {
        (state(pool, key).await.as_deref() == Some(expected)).then_some(())
    })
    .await;
}

pub fn rejected(message_id: &str, from: &str, reply: Option<&str>) -> Event {
    Event::ReadingRejected(ReadingRejected {
        message_id: message_id.into(),
        from: from.into(),
        account: Some("1000001".into()),
        reason: RejectReason::Format,
        reply: reply.map(str::to_owned),
        received_at: DateTime::parse_from_rfc3339("2026-11-20T10:00:00+05:00").expect("time"),
        channel: Channel::Sms,
    })
}

pub fn accepted(reading_id: Uuid, email: Option<&str>, values: Vec<u64>) -> Event {
    Event::ReadingAccepted(ReadingAccepted {
        reading_id,
        message_id: format!("gw-{reading_id}"),
        account: "001234567".into(),
        meter: "M-1".into(),
        period: Period::new(2026, 11).expect("period"),
        values,
        // 05:30 UTC is 10:30 in Yekaterinburg.
        received_at: DateTime::parse_from_rfc3339("2026-11-20T05:30:00Z").expect("time"),
        channel: Channel::Sms,
        email: email.map(str::to_owned),
        supersedes: None,
    })
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
