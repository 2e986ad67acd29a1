//! The one path (`intake::process_batch`, what the consumer runs) against recorded
//! expectations: for the same messages in the same order, in batches of any size
//! (one included), it must decide the outcomes and leave the rows that the former
//! one-message path did — including batches where messages share an account
//! (supersession), a sender (the rate limit) or an id (a redelivery). And concurrent batches over the same accounts and senders must not
//! deadlock, and concurrent batches naming one meter from different senders must leave
//! one current reading (the account locks; it fails without them: checked).

mod common;

use common::{Harness, config};
use shared::events::Event;
use shared::events::{Channel, SmsReceived};
use validator::intake::{self, BatchItem, Outcome, Rules};
use validator::outbox as intake_pending;

/// A deterministic pseudo-random sequence (xorshift), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[(self.next() % from.len() as u64) as usize]
    }
}

/// `n` messages over few accounts, senders and ids, so they collide a lot.
fn messages(n: usize, seed: u64) -> Vec<SmsReceived> {
    let mut rng = Rng(seed);
    let texts = [
        "1000001 45100",
        "1000001 45050",
        "лс 1000001 показания 46000",
        "1000001 44000",
        "1000002 45100 12500",
        "1000002 45100",
        "1000003 1 2 3",
        "1000003 100 200 300 a@example.org",
        "1000004 100",
        "1000005 100",
        "1000006 00020",
        "0000007 12",
        "0000007 12 bad@",
        "9999999 100",
        "hello",
        "1000001 9999999",
    ];
    let senders = [
        "+79000000001",
        "+79000000002",
        "+79000000003",
        "+79000000004",
        "+79000000005",
        "+79000000006",
        "+79000000007",
        "+79000000008",
    ];
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-20T00:00:00+05:00").expect("time");
    (0..n)
        .map(|i| {
            // One message in ten is a redelivery of an earlier one.
            let id = if i > 0 && rng.next().is_multiple_of(10) {
                format!("m{}", rng.next() % i as u64)
            } else {
                format!("m{i}")
            };
            // About two messages per sender an hour: now and then more than three.
            let at = start + chrono::Duration::minutes(4 * i as i64);
            SmsReceived {
                message_id: id,
                from: rng.pick(&senders).to_owned(),
                to: "7377".into(),
                text: rng.pick(&texts).to_owned(),
                received_at: at,
                channel: Channel::Sms,
                chat: None,
                contact: None,
            }
        })
        .collect()
}

fn rules(h: &Harness) -> Rules {
    let addr = "127.0.0.1:0".parse().expect("addr");
    config(&h.env, addr).rules().expect("rules")
}

type Rows = (
    Vec<(
        String,
        String,
        Option<String>,
        Option<String>,
        Option<uuid::Uuid>,
        Option<String>,
    )>,
    Vec<(
        uuid::Uuid,
        String,
        String,
        Vec<i64>,
        Option<uuid::Uuid>,
        Option<uuid::Uuid>,
        Option<String>,
    )>,
    Vec<(String, String, String)>,
);

async fn rows(h: &Harness) -> Rows {
    let messages = sqlx::query_as(
        "SELECT message_id, outcome, reason, account, reading_id, reply FROM messages ORDER BY message_id",
    )
    .fetch_all(&h.pool)
    .await
    .expect("messages");
    let readings = sqlx::query_as(
        "SELECT reading_id, message_id, period, readings, supersedes, superseded_by, email FROM readings ORDER BY reading_id",
    )
    .fetch_all(&h.pool)
    .await
    .expect("readings");
    let outbox =
        sqlx::query_as("SELECT routing_key, message_id, body FROM outbox ORDER BY message_id")
            .fetch_all(&h.pool)
            .await
            .expect("outbox");
    (messages, readings, outbox)
}

/// What the messages decided and left, as JSON: outcome per message (the event, or
/// `"duplicate"`) and the rows of `messages`, `readings` and `outbox`.
fn expectations(outcomes: &[Outcome], (messages, readings, outbox): Rows) -> serde_json::Value {
    let outcomes: Vec<serde_json::Value> =
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Duplicate => serde_json::json!("duplicate"),
                Outcome::Accepted(a) => serde_json::to_value(Event::ReadingAccepted(a.clone()))
                    .expect("accepted as JSON"),
                Outcome::Rejected(r) => serde_json::to_value(Event::ReadingRejected(r.clone()))
                    .expect("rejected as JSON"),
            })
            .collect();
    serde_json::json!({"outcomes": outcomes, "messages": messages, "readings": readings, "outbox": outbox})
}

const EXPECTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/expected/batch-240.json");

/// Runs the messages through the batch path in batches of the given sizes (cycled).
async fn run_in_batches(
    h: &Harness,
    rules: &Rules,
    msgs: &[SmsReceived],
    sizes: &[usize],
) -> (Vec<Outcome>, Vec<intake_pending::Pending>) {
    let span = tracing::Span::none();
    let mut got = Vec::new();
    let mut handed_over = Vec::new();
    let mut start = 0;
    for &size in sizes.iter().cycle() {
        if start >= msgs.len() {
            break;
        }
        let end = (start + size).min(msgs.len());
        let items: Vec<BatchItem<'_>> = msgs[start..end]
            .iter()
            .map(|sms| BatchItem { sms, span: &span })
            .collect();
        let (outcomes, pending) = intake::process_batch(&h.pool, rules, &items)
            .await
            .expect("batch");
        got.extend(outcomes);
        handed_over.extend(pending);
        start = end;
    }
    (got, handed_over)
}

/// The reference: what the one-message path (removed since; a message is now a batch
/// of one) decided and stored for these 240 messages, recorded at commit ba00039.
/// A rule change that changes it must change this file in the same commit: run with
/// `UPDATE_EXPECTED=1` and read the diff as the change's effect on residents.
fn expected() -> serde_json::Value {
    let text = std::fs::read_to_string(EXPECTED).expect("the recorded expectations");
    serde_json::from_str(&text).expect("the recorded expectations as JSON")
}

/// Message by message, so a failure names the first message that differs.
fn assert_matches_expected(got: &serde_json::Value, msgs: &[SmsReceived], what: &str) {
    if std::env::var_os("UPDATE_EXPECTED").is_some() {
        let text = serde_json::to_string_pretty(got).expect("JSON");
        std::fs::write(EXPECTED, text + "\n").expect("write the expectations");
        return;
    }
    let expected = expected();
    for (i, (g, e)) in got["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .zip(expected["outcomes"].as_array().expect("recorded outcomes"))
        .enumerate()
    {
        assert_eq!(g, e, "{what}: message {i} ({})", msgs[i].text);
    }
    for table in ["outcomes", "messages", "readings", "outbox"] {
        assert_eq!(got[table], expected[table], "{what}: table {table}");
    }
}

#[tokio::test]
async fn batches_decide_and_store_what_was_recorded() {
    let msgs = messages(240, 0x5eed);
    let expected = expected();
    // The mix exercises every path: duplicates, supersession, the rate limit, refusals.
    let outcomes = expected["outcomes"].as_array().expect("outcomes");
    assert_eq!(outcomes.len(), msgs.len());
    let count = |f: &dyn Fn(&serde_json::Value) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let mix = [
        count(&|o| o == "duplicate"),
        count(&|o| o.get("supersedes").is_some_and(|s| !s.is_null())),
        count(&|o| o["reason"] == "rate_limited"),
        count(&|o| o["schema"] == "reading.rejected/v1"),
    ];
    assert!(
        mix[0] > 5 && mix[1] > 5 && mix[2] > 5 && mix[3] > 20,
        "duplicates, superseding, rate-limited, rejected: {mix:?}"
    );

    // Batches of assorted sizes, as the consumer hands them over; and one by one
    // (a single message is a batch of one).
    for sizes in [&[1, 2, 7, 64, 30, 64, 40, 32][..], &[1][..]] {
        let h = Harness::prepared().await;
        let rules = rules(&h);
        let (got, handed_over) = run_in_batches(&h, &rules, &msgs, sizes).await;
        assert_eq!(got.len(), msgs.len());
        let what = format!("batches of {sizes:?}");
        assert_matches_expected(&expectations(&got, rows(&h).await), &msgs, &what);
        assert_handed_over_is_the_outbox(&h, &handed_over).await;
        h.finish().await;
    }
}

/// What the batches hand to the relay is exactly the outbox, each row by its id; only
/// accepted readings without an address are marked as nothing for the notifier.
async fn assert_handed_over_is_the_outbox(h: &Harness, handed_over: &[intake_pending::Pending]) {
    let mut outbox: Vec<(i64, String, String, String)> =
        sqlx::query_as("SELECT id, routing_key, message_id, body FROM outbox ORDER BY id")
            .fetch_all(&h.pool)
            .await
            .expect("outbox");
    let mut handed: Vec<(i64, String, String, String)> = handed_over
        .iter()
        .map(|p| {
            (
                p.id,
                p.routing_key.clone(),
                p.message_id.clone(),
                p.body.clone(),
            )
        })
        .collect();
    outbox.sort();
    handed.sort();
    assert!(!handed.is_empty());
    assert_eq!(handed, outbox);
    for p in handed_over {
        let event = Event::from_json(p.body.as_bytes()).expect("event");
        assert_eq!(
            p.skip_notifier,
            matches!(&event, Event::ReadingAccepted(a) if a.email.is_none()),
            "{}",
            p.body
        );
    }
}

/// Each list of messages in batches of `batch`, all lists at the same time; the
/// outcomes per list.
async fn concurrently(
    h: &Harness,
    rules: &Rules,
    all: &[Vec<SmsReceived>],
    batch: usize,
) -> Vec<Result<Vec<Outcome>, sqlx::Error>> {
    let tasks = all.iter().map(|msgs| {
        let pool = h.pool.clone();
        let rules = rules.clone();
        async move {
            let span = tracing::Span::none();
            let mut outcomes = Vec::new();
            for chunk in msgs.chunks(batch) {
                let items: Vec<BatchItem<'_>> = chunk
                    .iter()
                    .map(|sms| BatchItem { sms, span: &span })
                    .collect();
                outcomes.extend(intake::process_batch(&pool, &rules, &items).await?.0);
            }
            Ok::<_, sqlx::Error>(outcomes)
        }
    });
    futures::future::join_all(tasks).await
}

#[tokio::test]
async fn concurrent_batches_over_the_same_accounts_do_not_deadlock() {
    let h = Harness::prepared().await;
    let mut rules = rules(&h);
    rules.rate_limit_per_hour = 10_000;
    let all: Vec<Vec<SmsReceived>> = (0..4)
        .map(|t| {
            messages(200, 0xabc + t)
                .into_iter()
                .map(|mut m| {
                    m.message_id = format!("t{t}-{}", m.message_id);
                    m
                })
                .collect()
        })
        .collect();
    let results = concurrently(&h, &rules, &all, 50).await;
    let mut stored = 0;
    for r in results {
        let outcomes = r.expect("no deadlock, no error");
        stored += outcomes
            .iter()
            .filter(|o| !matches!(o, Outcome::Duplicate))
            .count();
    }
    let audit: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
        .fetch_one(&h.pool)
        .await
        .expect("count");
    assert_eq!(audit as usize, stored);
    // Per meter and period, exactly one reading is current.
    let current: Vec<(String, i64)> = sqlx::query_as(
        "SELECT account, count(*) FROM readings WHERE superseded_by IS NULL GROUP BY account, meter, period HAVING count(*) <> 1",
    )
    .fetch_all(&h.pool)
    .await
    .expect("current");
    assert!(current.is_empty(), "{current:?}");
    h.finish().await;
}

#[tokio::test]
async fn concurrent_batches_from_other_senders_keep_one_current_reading_per_meter() {
    // Readings of the same meters in concurrent batches whose senders all differ: only
    // the account locks order them (no sender lock is shared). Each meter and period
    // must end with exactly one current reading, every other one superseded.
    let h = Harness::prepared().await;
    let rules = rules(&h);
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-20T00:00:00+05:00").expect("time");
    let all: Vec<Vec<SmsReceived>> = (0..6)
        .map(|t| {
            (0..60)
                .map(|i| SmsReceived {
                    message_id: format!("c{t}-{i}"),
                    from: format!("+790010{t:02}{i:03}"),
                    to: "7377".into(),
                    text: "1000001 45100".into(),
                    received_at: start + chrono::Duration::minutes(i as i64),
                    channel: Channel::Sms,
                    chat: None,
                    contact: None,
                })
                .collect()
        })
        .collect();
    let results = concurrently(&h, &rules, &all, 10).await;
    let mut accepted = 0;
    for r in results {
        let outcomes = r.expect("no deadlock, no error");
        accepted += outcomes
            .iter()
            .filter(|o| matches!(o, Outcome::Accepted(_)))
            .count();
    }
    assert_eq!(accepted, 360, "every reading is accepted");
    let (readings, current, superseded): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE superseded_by IS NULL), count(supersedes) FROM readings",
    )
    .fetch_one(&h.pool)
    .await
    .expect("counts");
    assert_eq!(readings, 360);
    assert_eq!(current, 1, "one current reading of the meter");
    assert_eq!(superseded, 359, "each later reading supersedes one earlier");
    h.finish().await;
}
