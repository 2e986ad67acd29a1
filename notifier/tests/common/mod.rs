//! The notifier's part of the test harness: its configuration for a test (log
//! gateway, e-mails into a scratch directory), the notifier in-process through
//! `shared::testing::Service`, its ledger, and the events the tests publish through
//! `shared::testing::Broker`.

// Each test binary uses a different part of the harness.
#![allow(dead_code)]

use chrono::DateTime;
use notifier::config::{
    CountryCodes, EmailConfig, GatewayKind, LimitsConfig, ReportConfig, SmsConfig,
};
use shared::config::{BrokerConfig, LogFormat, RuntimeConfig};
use shared::events::{Channel, Event, Period, ReadingAccepted, ReadingRejected, RejectReason};
pub use shared::testing::{Broker, WAIT};
use shared::testing::{Service, TestEnv, eventually};
use sqlx::PgPool;
use uuid::Uuid;

/// The notifier's configuration for a test: log gateway, e-mails into `scratch`,
/// the default guards. Tests change what they exercise.
pub fn config(env: &TestEnv, scratch: &tempfile::TempDir) -> notifier::Config {
    notifier::Config {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        zone: shared::calendar::CompanyZone::default(),
        // The longest one gateway or SMTP request may take: generous, since the peers
        // are local doubles and a timeout on a busy machine would mean a second
        // attempt that the tests' `expect(1)` counts. No test here waits out a lease
        // the notifier took itself (that would be send timeout + 20 s per round).
        send_timeout_seconds: 30,
        sms: SmsConfig {
            sms_gateway: GatewayKind::Log,
            sms_sender: Some("7377".into()),
            sms_http_url: None,
            sms_http_token: None,
            kannel_sendsms_url: None,
            kannel_user: None,
            kannel_password: None,
            jasmin_send_url: None,
            jasmin_user: None,
            jasmin_password: None,
        },
        reports: ReportConfig::default(),
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
        bots: notifier::bots::BotConfig::default(),
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

/// Points the configuration at an HTTP SMS gateway double.
pub fn use_http_gateway(config: &mut notifier::Config, url: &str) {
    config.sms.sms_gateway = GatewayKind::Http;
    config.sms.sms_http_url = Some(url.parse().expect("gateway url"));
    config.sms.sms_http_token = Some("gw-token-123".to_owned().into());
}

/// A running notifier.
pub struct App(Service);

impl App {
    /// Starts the notifier on port 0 and waits until it is ready (consuming).
    pub async fn spawn(config: notifier::Config) -> App {
        let config = move |http_addr| notifier::Config {
            http_addr,
            ..config
        };
        App(Service::start("notifier", config, notifier::run).await)
    }

    /// Starts the notifier with Kannel's delivery reports pointed at itself
    /// (`DLR_BASE_URL` = its own address; `DLR_SECRET` from `config`).
    pub async fn spawn_with_reports(config: notifier::Config) -> App {
        let config = move |http_addr: std::net::SocketAddr| {
            let mut config = notifier::Config {
                http_addr,
                ..config
            };
            config.reports.dlr_base_url =
                Some(format!("http://{http_addr}").parse().expect("base url"));
            config
        };
        App(Service::start("notifier", config, notifier::run).await)
    }

    /// Shuts down gracefully and checks it exited cleanly.
    pub async fn stop(self) {
        self.0.stop().await;
    }

    /// `http://<its address>` + `path`.
    pub fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    /// The address it listens on.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.0.addr()
    }

    /// The value of one sample (`0` while it has never been counted).
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0.metric(name, labels).await
    }

    /// Waits until a sample reaches `value`, then checks it did not go past it.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.wait_metric(name, labels, value).await;
        let now = self.metric(name, labels).await;
        assert_eq!(now, value, "{name}{labels:?} = {value}, got {now}");
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

/// Waits for a dead letter of the notifier.
pub async fn dead_letter(broker: &Broker) -> shared::testing::Taken {
    broker.wait_take("notifier.dead").await
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
        chat: None,
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
        from: None,
        chat: None,
    })
}
