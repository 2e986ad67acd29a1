//! The broker topology (SPEC §4.2): the topic exchange `meter.events`, one durable
//! quorum queue per consumer, delayed-retry queues that dead-letter back into it, and
//! a dead-letter queue per consumer behind one dead-letter exchange. Declared
//! idempotently by every service at start, so whoever starts first creates it and
//! nothing published before a consumer's first start is unroutable.
//!
//! A consumer can have some of its routing keys *filtered*: the events reach it
//! through a headers exchange that drops those a publisher marked as nothing for it
//! (header `skip-<queue>: yes`) and passes every other, unmarked ones included (an
//! alternate exchange takes what the filter does not match). The notifier's
//! `reading.accepted` is filtered: most accepted readings carry no e-mail address and
//! ask nothing of it, and each event the broker does not deliver is a quorum-queue
//! write, a delivery and an ack saved.
//!
//! ```text
//! meter.events ──reading.accepted──▶ notifier.filter (headers; alternate: notifier.pass)
//!                                      ├─ skip-notifier = yes ──▶ meter.events.discard (no queues)
//!                                      └─ anything else ──▶ notifier.pass (fanout) ──▶ notifier
//! ```

use std::time::Duration;

use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::events::{EXCHANGE, Event, READING_ACCEPTED, READING_REJECTED, SMS_RECEIVED};

/// Where consumers' dead letters go; each consumer's `<queue>.dead` is bound by queue name.
pub const DEAD_LETTER_EXCHANGE: &str = "meter.events.dead";

/// Where filters send the events they drop: an exchange with no queues.
pub const DISCARD_EXCHANGE: &str = "meter.events.discard";

/// The value of a skip header (`skip-<queue>`) that marks an event as nothing for
/// that queue's consumer.
pub const SKIP: &str = "yes";

/// The notifier's queue.
pub const NOTIFIER_QUEUE: &str = "notifier";

/// Redeliveries the broker allows a message (crash loops: a consumer that dies before
/// acking) before it dead-letters it by itself. Declared on every consumer queue as
/// the ceiling, and frozen: RabbitMQ refuses a declaration whose `x-delivery-limit`
/// differs from, or lacks, the existing queue's (PRECONDITION_FAILED, measured on
/// 3.10.8), and on 3.x a quorum queue without one redelivers without end. Where both
/// are set the broker takes the lower of argument and policy (measured), so the
/// [`policies`] may tighten it, never lift it, and a missing policy leaves 20 in force.
pub const DELIVERY_LIMIT: i64 = 20;

/// How long a dead letter stays in its `<queue>.dead` (SPEC §4.7: 14 days). A broker
/// policy, not a queue argument: adding `x-message-ttl` to an existing dead-letter
/// queue's declaration fails with PRECONDITION_FAILED.
pub const DEAD_LETTER_TTL: Duration = Duration::from_secs(14 * 24 * 60 * 60);

/// The delivery limit of the `.dead` queues: none that a look could ever reach (SPEC
/// §4.7). The console reads dead letters with `basic.get` and returns them unacked,
/// and a quorum queue counts each return toward its delivery limit; a `.dead` queue
/// has no dead-letter target, so a letter past the limit would be dropped. RabbitMQ
/// 3.x sets no limit unless asked; from 4.0 every quorum queue without one gets 20,
/// and only a policy or an argument lifts it. 4.x reads a negative value as "none",
/// but 3.x refuses it ("-1 is not a valid delivery limit", measured on 3.10.8; its
/// validator wants an integer ≥ 0), and a refused policy would take the 14-day expiry
/// with it (one policy per queue). So one value that every version accepts and nothing
/// reaches: 2³¹−1 returns, a look a second for 68 years.
pub const DEAD_LETTER_DELIVERY_LIMIT: i64 = i32::MAX as i64;

/// The priority of [`policies`]. RabbitMQ applies one policy per queue (the highest
/// priority that matches), so another policy matching these queues must be above
/// it and carry these keys too (docs/operations.md, "Broker policies").
pub const POLICY_PRIORITY: i64 = 10;

/// One consumer's queue with its bindings and retry schedule.
#[derive(Debug, Clone)]
pub struct QueueSpec {
    pub name: String,
    /// Routing keys bound to the queue directly.
    pub bindings: Vec<String>,
    /// Routing keys that reach the queue through its filter (see the module's notes).
    pub filtered: Vec<String>,
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

    /// The retry queue's delay for a message that must wait `wait`: the longest delay
    /// that does not pass it, or the shortest when `wait` is shorter than every delay.
    /// A message parked again on return (see `consumer`) thus reaches its handler
    /// within the shortest delay after it is due, in a few hops.
    pub fn hop_within(&self, wait: Duration) -> Option<Duration> {
        let fitting = self.delays.iter().filter(|d| **d <= wait).max();
        fitting.or_else(|| self.delays.iter().min()).copied()
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
            filtered: Vec::new(),
            retry,
        }
    }

    /// The same queue with `keys` routed through its filter instead of bound directly.
    pub fn filtering(mut self, keys: &[&str]) -> Self {
        for key in keys {
            self.bindings.retain(|b| b != key);
            self.filtered.push((*key).to_string());
        }
        self
    }

    /// The header that keeps an event from this queue when it is [`SKIP`].
    pub fn skip_header(&self) -> String {
        skip_header(&self.name)
    }

    /// The headers exchange in front of the queue's filtered keys.
    pub fn filter_exchange(&self) -> String {
        format!("{}.filter", self.name)
    }

    /// Where the filter passes what it does not drop (its alternate exchange).
    pub fn pass_exchange(&self) -> String {
        format!("{}.pass", self.name)
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
            NOTIFIER_QUEUE,
            &[READING_ACCEPTED, READING_REJECTED],
            RetryPolicy::standard(),
        )
        .filtering(&[READING_ACCEPTED]),
        QueueSpec::new("billing-export", &[READING_ACCEPTED], billing_retry),
    ]
}

/// A RabbitMQ policy (apply-to `queues`) that the system's queues expect: the settings
/// that may change while queues exist, where a queue argument could not. Applied by
/// deploy/ (messaging-topology-operator `Policy`), scripts/lib.sh (`rabbitmqctl
/// set_policy`) and the test harness, all with these values.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerPolicy {
    pub name: &'static str,
    /// Anchored regular expression over queue names.
    pub pattern: String,
    pub definition: serde_json::Value,
}

/// The policies for `queues`: the delivery limit on the consumer queues (never above
/// [`DELIVERY_LIMIT`], see there), and on their dead letters the 14-day expiry and no
/// delivery limit that looking could use up ([`DEAD_LETTER_DELIVERY_LIMIT`]). The
/// retry queues match neither: their delay is in their name and their arguments.
pub fn policies(queues: &[QueueSpec]) -> Vec<BrokerPolicy> {
    let names: Vec<String> = queues.iter().map(|q| regex_escape(&q.name)).collect();
    let alternatives = names.join("|");
    let ttl_ms = u64::try_from(DEAD_LETTER_TTL.as_millis()).unwrap_or(u64::MAX);
    vec![
        BrokerPolicy {
            name: "meter-consumers",
            pattern: format!("^({alternatives})$"),
            definition: serde_json::json!({ "delivery-limit": DELIVERY_LIMIT }),
        },
        BrokerPolicy {
            name: "meter-dead-letters",
            pattern: format!("^({alternatives})\\.dead$"),
            definition: serde_json::json!({
                "message-ttl": ttl_ms,
                "delivery-limit": DEAD_LETTER_DELIVERY_LIMIT,
            }),
        },
    ]
}

fn regex_escape(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            let special = r"\.^$|?*+()[]{}".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// The header that keeps an event from `queue`'s consumer when it is [`SKIP`]. Not
/// `x-…`: a headers exchange ignores such binding arguments when matching.
pub fn skip_header(queue: &str) -> String {
    format!("skip-{queue}")
}

/// The headers a publisher adds to `event` so that the broker delivers it only to
/// the consumers with something to do: an accepted reading without an e-mail address
/// is nothing for the notifier (it stays silent on correct readings). Publishing
/// without them is correct too, only dearer.
pub fn routing_headers(event: &Event) -> FieldTable {
    let mut headers = FieldTable::default();
    if nothing_for_notifier(event) {
        mark_skip(&mut headers, NOTIFIER_QUEUE);
    }
    headers
}

/// Whether the notifier has nothing to do with `event`.
pub fn nothing_for_notifier(event: &Event) -> bool {
    matches!(event, Event::ReadingAccepted(e) if e.email.is_none())
}

/// Marks `headers` so that `queue`'s filter drops the message.
pub fn mark_skip(headers: &mut FieldTable, queue: &str) {
    headers.insert(
        skip_header(queue).into(),
        AMQPValue::LongString(SKIP.into()),
    );
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

/// Durable, and reachable only through bindings (no client publishes to it).
fn internal() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        internal: true,
        ..ExchangeDeclareOptions::default()
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
    channel
        .exchange_declare(
            short(DISCARD_EXCHANGE),
            ExchangeKind::Fanout,
            internal(),
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
    if !spec.filtered.is_empty() {
        declare_filter(channel, spec).await?;
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

/// The queue's filter (see the module's notes) for its filtered keys.
async fn declare_filter(channel: &Channel, spec: &QueueSpec) -> lapin::Result<()> {
    let filter = spec.filter_exchange();
    let pass = spec.pass_exchange();
    channel
        .exchange_declare(
            short(&pass),
            ExchangeKind::Fanout,
            internal(),
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            short(&spec.name),
            short(&pass),
            short(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut filter_args = FieldTable::default();
    filter_args.insert(
        "alternate-exchange".into(),
        AMQPValue::LongString(pass.as_str().into()),
    );
    channel
        .exchange_declare(
            short(&filter),
            ExchangeKind::Headers,
            internal(),
            filter_args,
        )
        .await?;
    let mut skip = FieldTable::default();
    skip.insert("x-match".into(), AMQPValue::LongString("all".into()));
    mark_skip(&mut skip, &spec.name);
    channel
        .exchange_bind(
            short(DISCARD_EXCHANGE),
            short(&filter),
            short(""),
            ExchangeBindOptions::default(),
            skip,
        )
        .await?;
    for key in &spec.filtered {
        channel
            .exchange_bind(
                short(&filter),
                short(EXCHANGE),
                short(key),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // A topology from before the filter bound the key to the queue directly,
        // which would deliver its events twice; unbinding what is not there is a no-op.
        channel
            .queue_unbind(
                short(&spec.name),
                short(EXCHANGE),
                short(key),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_accepted_readings_without_an_address_skip_the_notifier() {
        let accepted = |email: Option<&str>| {
            Event::from_json(
                serde_json::json!({
                    "schema": "reading.accepted/v1",
                    "reading_id": "00000000-0000-0000-0000-000000000001",
                    "message_id": "m-1",
                    "account": "1234567",
                    "meter": "M-1",
                    "period": "2026-11",
                    "values": [42],
                    "received_at": "2026-11-20T10:00:00+05:00",
                    "channel": "sms",
                    "email": email,
                    "supersedes": null
                })
                .to_string()
                .as_bytes(),
            )
            .expect("accepted event")
        };
        let rejected = Event::from_json(
            serde_json::json!({
                "schema": "reading.rejected/v1",
                "message_id": "m-2",
                "from": "+79001234567",
                "account": null,
                "reason": "format",
                "reply": "Неверный формат",
                "received_at": "2026-11-20T10:00:00+05:00",
                "channel": "sms"
            })
            .to_string()
            .as_bytes(),
        )
        .expect("rejected event");
        let marked = |e: &Event| routing_headers(e).inner().get("skip-notifier").cloned();
        assert_eq!(
            marked(&accepted(None)),
            Some(AMQPValue::LongString("yes".into()))
        );
        assert_eq!(marked(&accepted(Some("a@example.ru"))), None);
        assert_eq!(marked(&rejected), None);
    }

    #[test]
    fn filtering_moves_a_key_from_the_direct_bindings() {
        let notifier = system_queues()
            .into_iter()
            .find(|q| q.name == NOTIFIER_QUEUE)
            .expect("notifier queue");
        assert_eq!(notifier.bindings, [READING_REJECTED]);
        assert_eq!(notifier.filtered, [READING_ACCEPTED]);
        assert_eq!(notifier.skip_header(), "skip-notifier");
        assert_eq!(notifier.filter_exchange(), "notifier.filter");
        assert_eq!(notifier.pass_exchange(), "notifier.pass");
    }

    #[test]
    fn waits_are_covered_by_the_longest_delay_that_fits() {
        let p = RetryPolicy::standard();
        let hop = |ms| p.hop_within(Duration::from_millis(ms)).map(|d| d.as_secs());
        assert_eq!(hop(45_000), Some(30));
        assert_eq!(hop(30_000), Some(30));
        assert_eq!(hop(29_999), Some(5));
        assert_eq!(hop(4_000), Some(1));
        assert_eq!(hop(300), Some(1));
        assert_eq!(hop(3_600_000), Some(300));
        // Hops one after another end within the shortest delay past the due time.
        for wait in [300, 4_000, 29_999, 45_000, 61_500, 3_600_000] {
            let mut left = i64::from(wait);
            let mut hops = 0;
            while left > 0 {
                let d = p
                    .hop_within(Duration::from_millis(left.unsigned_abs()))
                    .expect("hop");
                left -= i64::try_from(d.as_millis()).expect("ms");
                hops += 1;
            }
            assert!(left > -1000, "{wait}: overshoot {left}");
            assert!(hops <= 20, "{wait}: {hops} hops");
        }
    }

    #[test]
    fn policies_cover_the_consumer_queues_and_their_dead_letters_only() {
        let policies = policies(&system_queues());
        let pattern = |name: &str| {
            policies
                .iter()
                .find(|p| p.name == name)
                .map(|p| (p.pattern.clone(), p.definition.clone()))
        };
        assert_eq!(
            pattern("meter-consumers"),
            Some((
                r"^(validator|notifier|billing-export)$".to_owned(),
                serde_json::json!({"delivery-limit": 20})
            ))
        );
        assert_eq!(
            pattern("meter-dead-letters"),
            Some((
                r"^(validator|notifier|billing-export)\.dead$".to_owned(),
                serde_json::json!({
                    "message-ttl": 1_209_600_000_u64,
                    "delivery-limit": 2_147_483_647_i64
                })
            ))
        );
    }

    /// deploy/ and scripts/ write the policies out by hand: they must say the same.
    #[test]
    fn deploy_and_scripts_set_the_same_policies() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let read = |path: &str| {
            std::fs::read_to_string(format!("{root}/{path}"))
                .unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        let deploy = read("deploy/base/infra/rabbitmq-policies.yaml");
        let scripts = read("scripts/lib.sh");
        for p in policies(&system_queues()) {
            let definition = p.definition.to_string();
            for (file, text, expected) in [
                ("deploy", &deploy, format!("  name: {}\n", p.name)),
                ("deploy", &deploy, format!("  pattern: '{}'\n", p.pattern)),
                (
                    "deploy",
                    &deploy,
                    format!("  priority: {POLICY_PRIORITY}\n"),
                ),
                ("deploy", &deploy, format!("  definition: {definition}\n")),
                ("scripts", &scripts, format!("--priority {POLICY_PRIORITY}")),
                (
                    "scripts",
                    &scripts,
                    format!("{} '{}' '{definition}'", p.name, p.pattern),
                ),
            ] {
                assert!(text.contains(&expected), "{file} lacks {expected:?}");
            }
        }
    }

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
        assert_eq!(none.hop_within(Duration::from_secs(3)), None);
    }
}
