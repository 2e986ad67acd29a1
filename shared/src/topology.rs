//! The broker topology (SPEC §4.2): the topic exchange `meter.events`, one durable
//! quorum queue per consumer, delayed-retry queues that dead-letter back into it, and
//! a dead-letter queue per consumer behind one dead-letter exchange. Declared
//! idempotently by every service at start, so whoever starts first creates it and
//! nothing published before a consumer's first start is unroutable.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::events::{EXCHANGE, READING_ACCEPTED, READING_REJECTED, SMS_RECEIVED};

/// Where consumers' dead letters go; each consumer's `<queue>.dead` is bound by queue name.
pub const DEAD_LETTER_EXCHANGE: &str = "meter.events.dead";

/// Redeliveries the broker allows a message (crash loops: a consumer that dies before
/// acking) before it dead-letters it by itself.
const DELIVERY_LIMIT: i64 = 20;

/// One consumer's queue with its bindings and retry schedule.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    pub bindings: Vec<String>,
    pub retry: RetryPolicy,
}

/// When a *retry later* message comes back, and how often.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Delay before the n-th retry; the last one repeats. Each delay is its own
    /// TTL queue, so a short delay never waits behind a long one.
    pub delays: Vec<Duration>,
    /// Total attempts (first delivery included) before a dead letter; `None` retries
    /// forever at the last delay (billing: a reading is never given up).
    pub max_attempts: Option<u32>,
}

impl RetryPolicy {
    pub fn standard() -> Self {
        RetryPolicy {
            delays: [1, 5, 30, 120, 300].map(Duration::from_secs).to_vec(),
            max_attempts: Some(8),
        }
    }

    /// The delay before retry number `attempt` (1 = after the first failure).
    pub fn delay_for(&self, attempt: u32) -> Option<Duration> {
        let idx = (attempt.max(1) as usize - 1).min(self.delays.len().checked_sub(1)?);
        self.delays.get(idx).copied()
    }

    /// Whether a message that has now failed `attempt` times gets another try.
    pub fn allows_retry_after(&self, attempt: u32) -> bool {
        !self.delays.is_empty() && self.max_attempts.is_none_or(|max| attempt < max)
    }
}

impl QueueSpec {
    pub fn new(name: impl Into<String>, bindings: &[&str], retry: RetryPolicy) -> Self {
        QueueSpec {
            name: name.into(),
            bindings: bindings.iter().map(|b| (*b).to_string()).collect(),
            retry,
        }
    }

    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead", self.name)
    }

    pub fn retry_queue(&self, delay: Duration) -> String {
        format!("{}.retry.{}ms", self.name, delay.as_millis())
    }
}

/// The system's consumer queues, as every service declares them.
pub fn system_queues() -> Vec<QueueSpec> {
    let billing_retry = RetryPolicy {
        max_attempts: None,
        ..RetryPolicy::standard()
    };
    vec![
        QueueSpec::new("validator", &[SMS_RECEIVED], RetryPolicy::standard()),
        QueueSpec::new(
            "notifier",
            &[READING_ACCEPTED, READING_REJECTED],
            RetryPolicy::standard(),
        ),
        QueueSpec::new("billing-export", &[READING_ACCEPTED], billing_retry),
    ]
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    // At-least-once dead-lettering (RabbitMQ ≥ 3.10) needs reject-publish overflow.
    args.insert(
        "x-dead-letter-strategy".into(),
        AMQPValue::LongString("at-least-once".into()),
    );
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    args
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn short(s: &str) -> ShortString {
    s.into()
}

/// Declares the exchanges and the given queues. Safe to call any number of times.
pub async fn declare(channel: &Channel, queues: &[QueueSpec]) -> lapin::Result<()> {
    let exchange_options = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    channel
        .exchange_declare(
            short(EXCHANGE),
            ExchangeKind::Topic,
            exchange_options,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            short(DEAD_LETTER_EXCHANGE),
            ExchangeKind::Direct,
            exchange_options,
            FieldTable::default(),
        )
        .await?;
    for spec in queues {
        declare_queue(channel, spec).await?;
    }
    Ok(())
}

async fn declare_queue(channel: &Channel, spec: &QueueSpec) -> lapin::Result<()> {
    let dead = spec.dead_letter_queue();
    channel
        .queue_declare(short(&dead), durable(), quorum_args())
        .await?;
    channel
        .queue_bind(
            short(&dead),
            short(DEAD_LETTER_EXCHANGE),
            short(&spec.name),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let mut main_args = quorum_args();
    main_args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(DEAD_LETTER_EXCHANGE.into()),
    );
    main_args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(spec.name.as_str().into()),
    );
    main_args.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(DELIVERY_LIMIT),
    );
    channel
        .queue_declare(short(&spec.name), durable(), main_args)
        .await?;
    for key in &spec.bindings {
        channel
            .queue_bind(
                short(&spec.name),
                short(EXCHANGE),
                short(key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }

    for delay in &spec.retry.delays {
        let mut args = quorum_args();
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        // The default exchange routes by queue name: expiry sends it home.
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString("".into()),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(spec.name.as_str().into()),
        );
        channel
            .queue_declare(short(&spec.retry_queue(*delay)), durable(), args)
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_schedule_repeats_last_delay_and_stops_at_max() {
        let p = RetryPolicy {
            delays: vec![Duration::from_millis(10), Duration::from_millis(50)],
            max_attempts: Some(3),
        };
        assert_eq!(p.delay_for(1), Some(Duration::from_millis(10)));
        assert_eq!(p.delay_for(2), Some(Duration::from_millis(50)));
        assert_eq!(p.delay_for(9), Some(Duration::from_millis(50)));
        assert!(p.allows_retry_after(1));
        assert!(p.allows_retry_after(2));
        assert!(!p.allows_retry_after(3));
        let forever = RetryPolicy {
            max_attempts: None,
            ..p
        };
        assert!(forever.allows_retry_after(10_000));
        let none = RetryPolicy {
            delays: vec![],
            max_attempts: None,
        };
        assert!(!none.allows_retry_after(1));
        assert_eq!(none.delay_for(1), None);
    }
}
