//! validator: the resident-facing heart of the system. It consumes `sms.received`,
//! parses the text (SPEC §2), runs the checks (SPEC §3) against the account registry,
//! keeps an audit row per message, stores accepted readings, and emits
//! `reading.accepted` / `reading.rejected` through a transactional outbox.

pub mod grammar;
pub mod intake;
pub mod outbox;
pub mod registry;
pub mod reply;
pub mod rules;

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use shared::calendar::Calendar;
use shared::config::{BrokerConfig, DatabaseConfig, RuntimeConfig};
use shared::consumer::{BatchHandler, HandlerError, Incoming, Outcomes};
use shared::events::{Event, SmsReceived};
use shared::service::{Batching, Schema, Service};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::intake::{BatchItem, Outcome, Rules};

/// The validator's migrations (schema `validator`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");
pub const SCHEMA: &str = "validator";

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where the operational endpoints listen.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8081")]
    pub http_addr: SocketAddr,

    #[command(flatten)]
    pub calendar: Calendar,

    /// Shortest account number, in digits.
    #[arg(long, env = "ACCOUNT_DIGITS_MIN", default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub account_digits_min: u32,

    /// Longest account number, in digits.
    #[arg(long, env = "ACCOUNT_DIGITS_MAX", default_value_t = 12, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub account_digits_max: u32,

    /// Most kWh a zone may plausibly use in one month.
    #[arg(long, env = "MAX_MONTHLY_KWH", default_value_t = 10_000)]
    pub max_monthly_kwh: u64,

    /// Messages one sender may send in an hour; more are refused without a reply.
    #[arg(long, env = "RATE_LIMIT_PER_HOUR", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit_per_hour: u32,

    #[command(flatten)]
    pub broker: BrokerConfig,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub runtime: RuntimeConfig,
}

impl Config {
    /// Checks what clap cannot check field by field.
    pub fn rules(&self) -> anyhow::Result<Rules> {
        if self.account_digits_min > self.account_digits_max {
            anyhow::bail!(
                "ACCOUNT_DIGITS_MIN ({}) is above ACCOUNT_DIGITS_MAX ({})",
                self.account_digits_min,
                self.account_digits_max
            );
        }
        Ok(Rules {
            window: self.calendar.window()?,
            account_digits: self.account_digits_min as usize..=self.account_digits_max as usize,
            max_monthly_kwh: self.max_monthly_kwh,
            rate_limit_per_hour: self.rate_limit_per_hour,
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
    reason: &'static str,
}

/// Messages by outcome (accepted, rejected by reason, duplicate).
#[derive(Clone)]
struct ValidatorMetrics {
    messages: Family<OutcomeLabels, Counter>,
}

impl ValidatorMetrics {
    fn register(registry: &mut Registry) -> Self {
        let messages = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "messages",
            "Inbound messages by outcome (accepted, rejected, duplicate) and reason code",
            messages.clone(),
        );
        ValidatorMetrics { messages }
    }

    fn count(&self, outcome: &Outcome) {
        let labels = match outcome {
            Outcome::Accepted(_) => OutcomeLabels {
                outcome: "accepted",
                reason: "",
            },
            Outcome::Rejected(r) => OutcomeLabels {
                outcome: "rejected",
                reason: r.reason.as_str(),
            },
            Outcome::Duplicate => OutcomeLabels {
                outcome: "duplicate",
                reason: "",
            },
        };
        self.messages.get_or_create(&labels).inc();
    }
}

/// The `sms.received` handler.
struct Intake {
    pool: PgPool,
    rules: Rules,
    metrics: ValidatorMetrics,
    relay: outbox::Handoff,
    /// Test hook (crash drills): abort right after a commit, before the relay
    /// publishes. Read from `VALIDATOR_CRASH_AFTER_COMMIT`, and only in a build with
    /// the `crash-hooks` feature (never a release image).
    crash_after_commit: bool,
}

/// Deliveries the validator takes into one database transaction (`batch`), and batches
/// in flight at once (each holds one pooled connection).
const BATCHING: Batching = Batching {
    batch: 64,
    batches: 4,
};

impl Intake {
    /// Logs and counts one stored outcome.
    fn record(&self, sms: &SmsReceived, outcome: &Outcome) {
        match outcome {
            Outcome::Accepted(a) => {
                tracing::info!(message_id = %sms.message_id, reading_id = %a.reading_id, "reading accepted")
            }
            Outcome::Rejected(r) => {
                tracing::info!(message_id = %sms.message_id, reason = %r.reason, "message rejected")
            }
            Outcome::Duplicate => {
                tracing::info!(message_id = %sms.message_id, "duplicate delivery ignored")
            }
        }
        self.metrics.count(outcome);
    }
}

/// The message's `sms.received`, or why it can never be processed.
fn decode(msg: &Incoming) -> Result<SmsReceived, HandlerError> {
    match Event::from_json(&msg.body) {
        Ok(Event::SmsReceived(sms)) => Ok(sms),
        Ok(other) => Err(HandlerError::permanent(anyhow::anyhow!(
            "expected sms.received, got {}",
            other.routing_key()
        ))),
        Err(e) => Err(HandlerError::permanent(
            anyhow::Error::new(e).context("undecodable sms.received"),
        )),
    }
}

impl Intake {
    /// Decides and stores `items` in one transaction. When the database refuses the
    /// batch for good (the data: [`shared::db::classify`]), its halves are stored
    /// apart, and so on down ([`shared::db::isolate`]): the messages it takes are
    /// stored in their order, and each one it refuses is dead-lettered alone with the
    /// reason. A transient failure (connection, deadlock, timeout) retries the batch.
    async fn process(
        &self,
        items: &[BatchItem<'_>],
    ) -> (Vec<Result<Outcome, HandlerError>>, Vec<outbox::Pending>) {
        let parts = shared::db::isolate(items, |part| {
            intake::process_batch(&self.pool, &self.rules, part)
        })
        .await;
        let mut outcomes = Vec::with_capacity(items.len());
        let mut pending = Vec::new();
        for (range, stored) in parts {
            match stored {
                Ok((stored, events)) => {
                    outcomes.extend(stored.into_iter().map(Ok));
                    pending.extend(events);
                }
                Err(e) => {
                    let e = Arc::new(e);
                    if shared::db::is_permanent(&e) {
                        for item in &items[range.clone()] {
                            item.span.in_scope(|| {
                                tracing::error!(message_id = %item.sms.message_id, error = %e,
                                    "the database refuses this message for good; dead-lettering it");
                            });
                        }
                    }
                    outcomes.extend(
                        range.map(|_| Err(HandlerError::database(&e, "storing the outcome"))),
                    );
                }
            }
        }
        (outcomes, pending)
    }
}

impl BatchHandler for Intake {
    async fn handle_batch(&self, msgs: &[Incoming]) -> Outcomes {
        let mut results = Outcomes::new(msgs.len());
        let mut decoded: Vec<(usize, SmsReceived)> = Vec::with_capacity(msgs.len());
        for (i, msg) in msgs.iter().enumerate() {
            match decode(msg) {
                Ok(sms) => decoded.push((i, sms)),
                Err(e) => results.set(i, Err(e)),
            }
        }
        if decoded.is_empty() {
            return results;
        }
        let items: Vec<BatchItem<'_>> = decoded
            .iter()
            .map(|(i, sms)| BatchItem {
                sms,
                span: &msgs[*i].span,
            })
            .collect();
        let (outcomes, pending) = self.process(&items).await;
        let mut committed = false;
        for ((i, sms), outcome) in decoded.iter().zip(outcomes) {
            results.set(
                *i,
                outcome.map(|outcome| {
                    committed |= outcome != Outcome::Duplicate;
                    self.record(sms, &outcome);
                }),
            );
        }
        if self.crash_after_commit && committed {
            tracing::error!("VALIDATOR_CRASH_AFTER_COMMIT: aborting between commit and publish");
            std::process::abort();
        }
        self.relay.hand_over(pending).await;
        results
    }
}

/// The validator's tables (schema `validator`).
pub const DATABASE: Schema = Schema {
    name: SCHEMA,
    migrator: &MIGRATOR,
};

/// What ages out after `RETENTION_DAYS` (SPEC §4.7): the audit of each message (its
/// sender and text), and accepted readings — except each meter's latest one, the base
/// the next reading is checked against (its e-mail address is masked already).
pub const RETENTION: [shared::retention::Purge; 2] = [
    shared::retention::Purge {
        table: "messages",
        aged_by: "received_at",
        only_if: "TRUE",
    },
    shared::retention::Purge {
        table: "readings",
        aged_by: "received_at",
        only_if: "r.superseded_by IS NOT NULL OR EXISTS (
            SELECT 1 FROM readings n
            WHERE n.account = r.account AND n.meter = r.meter AND n.period > r.period)",
    },
];

/// The queue the validator consumes.
pub const QUEUE: &str = "validator";

/// Runs the validator until `shutdown` on the service skeleton
/// ([`shared::service`]): consumes `sms.received`; the outbox relay is a drain, so it
/// publishes what the last messages committed before the broker link closes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let rules = config.rules()?;
    let mut service = Service::new("validator", "validator", &config.runtime);
    let pool = service.database(&config.database, DATABASE)?;
    service.retention(&config.database, RETENTION.to_vec())?;
    let publisher = service.publisher(&config.broker, "validator-outbox");
    let metrics = ValidatorMetrics::register(service.registry());
    let (relay_handoff, relay_committed) = outbox::handoff();
    service.consume(
        &config.broker,
        QUEUE,
        BATCHING,
        Intake {
            pool: pool.clone(),
            rules,
            metrics,
            relay: relay_handoff,
            // Off in release images: the hook exists only with the `crash-hooks` feature.
            crash_after_commit: cfg!(feature = "crash-hooks")
                && std::env::var_os("VALIDATOR_CRASH_AFTER_COMMIT").is_some(),
        },
    )?;
    service.drain("outbox relay", move |stop| {
        outbox::relay(pool, publisher, relay_committed, stop)
    });
    service.run(listener, shutdown).await
}
