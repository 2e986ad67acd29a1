//! Messages in one transaction — the one path every message takes, a single message
//! being a batch of one: one statement per step for the whole batch, and one commit.
//! The decisions themselves are the parent module's pure functions; this module
//! reads what they need and stores what they decide.
//!
//! Messages that touch each other — the same `message_id`, sender or account — must see
//! each other's effects in order (a redelivery is a duplicate, a second reading of a
//! meter supersedes the first, the rate limit counts the earlier message). The batch is
//! therefore cut into *rounds*: a message goes into the round after the last one holding
//! a message it shares any of those with, so no two messages of a round touch each other
//! and each round's statements see everything earlier rounds wrote. Under real traffic
//! almost every batch is one round.
//!
//! Locks are taken up front, in one statement and one order for everyone: advisory
//! locks on the accounts a reading may be stored for, sorted by key, then on the
//! senders, sorted by key — so concurrent batches (and replicas) cannot deadlock.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use shared::events::{Event, Period, SmsReceived};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{
    Accepted, AcceptedReading, AuditFields, MeterRow, Outcome, Refused, Rules, meter_checked,
    outcome_of, parse_checked, reading_checked,
};
use crate::grammar::ParsedMessage;
use crate::outbox::{Outgoing, Pending};
use crate::reply::Refusal;

/// One message of a batch and the consumer span it is handled in.
pub struct BatchItem<'a> {
    pub sms: &'a SmsReceived,
    pub span: &'a tracing::Span,
}

/// Where a message stands while its batch is decided.
enum Stage {
    /// Passed the text checks; the meters are next.
    Parsed(ParsedMessage, Period),
    /// Passed the meter checks; the previous reading and the rate limit are next.
    Metered(ParsedMessage, Period, MeterRow),
    Decided(Result<Accepted, Refused>),
    Duplicate,
}

/// Checks and stores every message of `items` in one transaction; returns their
/// outcomes in order and the events committed to the outbox. An error (database only)
/// leaves nothing stored.
pub async fn process_batch(
    pool: &PgPool,
    rules: &Rules,
    items: &[BatchItem<'_>],
) -> Result<(Vec<Outcome>, Vec<Pending>), sqlx::Error> {
    let mut stages: Vec<Stage> = items
        .iter()
        .map(|item| {
            let _entered = item.span.enter();
            let _validate = tracing::info_span!("validate", otel.name = "validate").entered();
            match parse_checked(rules, item.sms) {
                Ok((parsed, period)) => Stage::Parsed(parsed, period),
                Err(refused) => Stage::Decided(Err(refused)),
            }
        })
        .collect();
    let rounds = rounds(items, &stages);
    // One "store" span per message, open for as long as the shared transaction runs.
    let store_spans: Vec<tracing::Span> = items
        .iter()
        .map(|item| {
            tracing::info_span!(parent: item.span, "store", otel.name = "store", db.system = "postgresql")
        })
        .collect();

    let mut tx = shared::db::begin_batch(pool).await?;
    let meters = read_meters(&mut tx, &stages).await?;
    lock_accounts_and_senders(&mut tx, &stages, &meters, items).await?;
    let mut outcomes: Vec<Option<Outcome>> = (0..items.len()).map(|_| None).collect();
    let mut pending = Vec::new();
    for round in rounds {
        decide_round(&mut tx, rules, items, &mut stages, &meters, &round).await?;
        store_round(
            &mut tx,
            items,
            &mut stages,
            &round,
            &mut outcomes,
            &mut pending,
        )
        .await?;
    }
    tx.commit().await?;
    drop(store_spans);
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Duplicate))
        .collect();
    Ok((outcomes, pending))
}

/// Takes the round's messages through the checks that need the database, in SPEC
/// §3's order: seen before (a duplicate), the meters, the previous reading, the
/// sender's rate. Every message of the round ends `Decided` or `Duplicate`.
async fn decide_round(
    tx: &mut PgConnection,
    rules: &Rules,
    items: &[BatchItem<'_>],
    stages: &mut [Stage],
    meters: &HashMap<String, Vec<MeterRow>>,
    round: &[usize],
) -> Result<(), sqlx::Error> {
    let seen = seen(tx, items, round).await?;
    for &i in round {
        if seen.contains(items[i].sms.message_id.as_str()) {
            stages[i] = Stage::Duplicate;
            continue;
        }
        if let Stage::Parsed(..) = stages[i] {
            let Stage::Parsed(parsed, period) = std::mem::replace(&mut stages[i], Stage::Duplicate)
            else {
                continue;
            };
            let rows = meters
                .get(parsed.account.as_str())
                .cloned()
                .unwrap_or_default();
            stages[i] = match meter_checked(&parsed, rows) {
                Ok(meter) => Stage::Metered(parsed, period, meter),
                Err(refused) => Stage::Decided(Err(refused)),
            };
        }
    }
    let mut previous = previous_readings(tx, stages, round).await?;
    let mut passed = Vec::new();
    for &i in round {
        if let Stage::Metered(parsed, period, meter) = &stages[i] {
            match reading_checked(rules, parsed, meter, *period, previous.remove(&i)) {
                Ok(()) => passed.push(i),
                Err(refused) => stages[i] = Stage::Decided(Err(refused)),
            }
        }
    }
    let counts = sender_counts(tx, items, &passed).await?;
    for &i in &passed {
        let Stage::Metered(parsed, period, meter) =
            std::mem::replace(&mut stages[i], Stage::Duplicate)
        else {
            continue;
        };
        let count = counts.get(&i).copied().unwrap_or(0);
        stages[i] = Stage::Decided(if count >= i64::from(rules.rate_limit_per_hour) {
            Err(Refused::new(
                Refusal::RateLimited,
                Some(parsed.account.as_str()),
            ))
        } else {
            Ok(Accepted {
                parsed,
                meter: meter.meter,
                period,
            })
        });
    }
    Ok(())
}

/// The rounds of a batch (see the module's documentation), as indexes into `items`.
fn rounds(items: &[BatchItem<'_>], stages: &[Stage]) -> Vec<Vec<usize>> {
    let mut last_by_id: HashMap<&str, usize> = HashMap::new();
    let mut last_by_sender: HashMap<&str, usize> = HashMap::new();
    let mut last_by_account: HashMap<&str, usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let account = match &stages[i] {
            Stage::Parsed(parsed, _) => Some(parsed.account.as_str()),
            _ => None,
        };
        let after = |map: &HashMap<&str, usize>, key: Option<&str>| {
            key.and_then(|k| map.get(k)).map_or(0, |r| r + 1)
        };
        let round = after(&last_by_id, Some(item.sms.message_id.as_str()))
            .max(after(&last_by_sender, Some(item.sms.from.as_str())))
            .max(after(&last_by_account, account));
        last_by_id.insert(item.sms.message_id.as_str(), round);
        last_by_sender.insert(item.sms.from.as_str(), round);
        if let Some(account) = account {
            last_by_account.insert(account, round);
        }
        if rounds.len() <= round {
            rounds.resize_with(round + 1, Vec::new);
        }
        rounds[round].push(i);
    }
    rounds
}

/// Reads the meters of every account the batch names.
async fn read_meters(
    tx: &mut PgConnection,
    stages: &[Stage],
) -> Result<HashMap<String, Vec<MeterRow>>, sqlx::Error> {
    let mut accounts: Vec<&str> = stages
        .iter()
        .filter_map(|s| match s {
            Stage::Parsed(parsed, _) => Some(parsed.account.as_str()),
            _ => None,
        })
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    let mut meters: HashMap<String, Vec<MeterRow>> = HashMap::new();
    if accounts.is_empty() {
        return Ok(meters);
    }
    let rows: Vec<MeterRow> = sqlx::query_as(
        "SELECT account, meter, zones, digits, status = 'active' AS active, baseline_period, baseline_values
         FROM meters WHERE account = ANY($1) ORDER BY account, meter",
    )
    .bind(&accounts)
    .fetch_all(&mut *tx)
    .await?;
    for row in rows {
        meters.entry(row.account.clone()).or_default().push(row);
    }
    Ok(meters)
}

/// Takes the batch's locks, in one statement and one order for everyone: an advisory
/// lock per account a reading may be stored for — where the meter checks pass for at
/// least one of the batch's messages — then one per sender, each group sorted by key,
/// the order every transaction takes them in. The account locks serialise
/// messages for one account across batches and replicas, so supersession and the
/// comparison base cannot race; an account that refuses every message (unknown,
/// closed, two meters, wrong zones) is not locked, so a popular wrong account does not
/// serialise the batches that name it. The sender locks make the rate limit's count
/// exact. Advisory locks write nothing (locking the meter rows dirtied registry pages
/// and wrote WAL on every batch).
async fn lock_accounts_and_senders(
    tx: &mut PgConnection,
    stages: &[Stage],
    meters: &HashMap<String, Vec<MeterRow>>,
    items: &[BatchItem<'_>],
) -> Result<(), sqlx::Error> {
    let storing: Vec<&str> = stages
        .iter()
        .filter_map(|s| match s {
            Stage::Parsed(parsed, _) => {
                let rows = meters.get(parsed.account.as_str())?.clone();
                meter_checked(parsed, rows)
                    .ok()
                    .map(|_| parsed.account.as_str())
            }
            _ => None,
        })
        .collect();
    let senders: Vec<&str> = items.iter().map(|i| i.sms.from.as_str()).collect();
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k) FROM (
             SELECT 0 AS class, hashtextextended(a, $3) AS k FROM unnest($1::text[]) AS a
             UNION
             SELECT 1, hashtextextended(s, $4) FROM unnest($2::text[]) AS s
         ) AS keys ORDER BY class, k",
    )
    .bind(&storing)
    .bind(&senders)
    .bind(super::ACCOUNT_LOCK_SEED)
    .bind(super::SENDER_LOCK_SEED)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The round's message ids already in the audit.
async fn seen(
    tx: &mut PgConnection,
    items: &[BatchItem<'_>],
    round: &[usize],
) -> Result<HashSet<String>, sqlx::Error> {
    let ids: Vec<&str> = round
        .iter()
        .map(|&i| items[i].sms.message_id.as_str())
        .collect();
    let rows: Vec<String> =
        sqlx::query_scalar("SELECT message_id FROM messages WHERE message_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
    Ok(rows.into_iter().collect())
}

/// A message's previous reading, as the batch query returns it.
#[derive(sqlx::FromRow)]
struct PreviousOf {
    /// The message's index in the batch.
    i: i64,
    #[sqlx(flatten)]
    reading: AcceptedReading,
}

/// For each metered message of the round, the latest accepted reading of an earlier
/// period (by the message's index).
async fn previous_readings(
    tx: &mut PgConnection,
    stages: &[Stage],
    round: &[usize],
) -> Result<HashMap<usize, AcceptedReading>, sqlx::Error> {
    let mut index = Vec::new();
    let mut accounts = Vec::new();
    let mut meters = Vec::new();
    let mut periods = Vec::new();
    for &i in round {
        if let Stage::Metered(parsed, period, meter) = &stages[i] {
            index.push(i64::try_from(i).unwrap_or(i64::MAX));
            accounts.push(parsed.account.as_str());
            meters.push(meter.meter.as_str());
            periods.push(period.to_string());
        }
    }
    if index.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<PreviousOf> = sqlx::query_as(
        // LATERAL … LIMIT 1: a parameterised probe of readings_meter_period per message
        // (a join of the batch against readings may be planned as a scan of the table).
        "SELECT q.i, p.period, p.readings
         FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[]) AS q(i, account, meter, period)
         CROSS JOIN LATERAL (
             SELECT r.period, r.readings FROM readings r
             WHERE r.account = q.account AND r.meter = q.meter AND r.period < q.period AND r.superseded_by IS NULL
             ORDER BY r.period DESC, r.accepted_at DESC LIMIT 1
         ) AS p",
    )
    .bind(&index)
    .bind(&accounts)
    .bind(&meters)
    .bind(&periods)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((usize::try_from(row.i).ok()?, row.reading)))
        .collect())
}

/// For each message given, how many messages its sender sent in the hour before it.
async fn sender_counts(
    tx: &mut PgConnection,
    items: &[BatchItem<'_>],
    which: &[usize],
) -> Result<HashMap<usize, i64>, sqlx::Error> {
    if which.is_empty() {
        return Ok(HashMap::new());
    }
    let index: Vec<i64> = which
        .iter()
        .map(|&i| i64::try_from(i).unwrap_or(i64::MAX))
        .collect();
    let senders: Vec<&str> = which.iter().map(|&i| items[i].sms.from.as_str()).collect();
    let at: Vec<DateTime<Utc>> = which
        .iter()
        .map(|&i| items[i].sms.received_at.with_timezone(&Utc))
        .collect();
    #[derive(sqlx::FromRow)]
    struct Count {
        /// The message's index in the batch.
        i: i64,
        sent: i64,
    }
    let rows: Vec<Count> = sqlx::query_as(
        "SELECT q.i, (SELECT count(*) FROM messages m
                      WHERE m.sender = q.sender AND m.received_at > q.at - interval '1 hour' AND m.received_at <= q.at) AS sent
         FROM unnest($1::int8[], $2::text[], $3::timestamptz[]) AS q(i, sender, at)",
    )
    .bind(&index)
    .bind(&senders)
    .bind(&at)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|row| Some((usize::try_from(row.i).ok()?, row.sent)))
        .collect())
}

/// Writes the round's decided messages: audit rows, accepted readings (superseding
/// earlier ones of the same meter and period) and their events.
async fn store_round(
    tx: &mut PgConnection,
    items: &[BatchItem<'_>],
    stages: &mut [Stage],
    round: &[usize],
    outcomes: &mut [Option<Outcome>],
    pending: &mut Vec<Pending>,
) -> Result<(), sqlx::Error> {
    let mut decided: Vec<(usize, Outcome, Option<Uuid>)> = Vec::new();
    for &i in round {
        if let Stage::Decided(_) = stages[i] {
            let Stage::Decided(decision) = std::mem::replace(&mut stages[i], Stage::Duplicate)
            else {
                continue;
            };
            let (outcome, reading_id) = outcome_of(items[i].sms, decision);
            decided.push((i, outcome, reading_id));
        }
    }
    if decided.is_empty() {
        return Ok(());
    }

    // The audit rows first: their primary key settles a concurrent duplicate delivery.
    let mut audit = AuditColumns::default();
    for (i, outcome, reading_id) in &decided {
        audit.push(items[*i].sms, outcome, *reading_id);
    }
    let inserted: HashSet<String> = sqlx::query_scalar(
        "INSERT INTO messages (message_id, sender, recipient, body, received_at, channel, outcome, reason, account, reading_id, reply)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[], $7::text[], $8::text[], $9::text[], $10::uuid[], $11::text[])
         ON CONFLICT (message_id) DO NOTHING RETURNING message_id",
    )
    .bind(&audit.message_id)
    .bind(&audit.sender)
    .bind(&audit.recipient)
    .bind(&audit.body)
    .bind(&audit.received_at)
    .bind(&audit.channel)
    .bind(&audit.outcome)
    .bind(&audit.reason)
    .bind(&audit.account)
    .bind(&audit.reading_id)
    .bind(&audit.reply)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    decided.retain(|(i, _, _)| inserted.contains(items[*i].sms.message_id.as_str()));

    store_readings(tx, &mut decided).await?;

    let mut outgoing = Vec::with_capacity(decided.len());
    for (i, outcome, _) in &decided {
        let event = match outcome {
            Outcome::Accepted(e) => Event::ReadingAccepted(e.clone()),
            Outcome::Rejected(e) => Event::ReadingRejected(e.clone()),
            Outcome::Duplicate => continue,
        };
        let _entered = items[*i].span.enter();
        outgoing.push(Outgoing::current(event));
    }
    pending.extend(crate::outbox::enqueue(&mut *tx, &outgoing).await?);
    for (i, outcome, _) in decided {
        outcomes[i] = Some(outcome);
    }
    Ok(())
}

/// The accepted readings of a round: each supersedes the meter's current reading of
/// its period, if there is one (no two messages of a round share an account).
async fn store_readings(
    tx: &mut PgConnection,
    decided: &mut [(usize, Outcome, Option<Uuid>)],
) -> Result<(), sqlx::Error> {
    let accepted: Vec<&mut shared::events::ReadingAccepted> = decided
        .iter_mut()
        .filter_map(|(_, outcome, _)| match outcome {
            Outcome::Accepted(a) => Some(a),
            _ => None,
        })
        .collect();
    if accepted.is_empty() {
        return Ok(());
    }
    let index: Vec<i64> = (0..accepted.len())
        .map(|i| i64::try_from(i).unwrap_or(i64::MAX))
        .collect();
    let accounts: Vec<String> = accepted.iter().map(|a| a.account.clone()).collect();
    let meters: Vec<String> = accepted.iter().map(|a| a.meter.clone()).collect();
    let periods: Vec<String> = accepted.iter().map(|a| a.period.to_string()).collect();
    #[derive(sqlx::FromRow)]
    struct Current {
        /// The reading's index in `accepted`.
        i: i64,
        reading_id: Uuid,
    }
    let current: Vec<Current> = sqlx::query_as(
        "SELECT q.i, c.reading_id
         FROM unnest($1::int8[], $2::text[], $3::text[], $4::text[]) AS q(i, account, meter, period)
         CROSS JOIN LATERAL (
             SELECT r.reading_id FROM readings r
             WHERE r.account = q.account AND r.meter = q.meter AND r.period = q.period AND r.superseded_by IS NULL
             ORDER BY r.accepted_at DESC LIMIT 1 FOR UPDATE
         ) AS c",
    )
    .bind(&index)
    .bind(&accounts)
    .bind(&meters)
    .bind(&periods)
    .fetch_all(&mut *tx)
    .await?;
    let mut supersedes: HashMap<usize, Uuid> = HashMap::new();
    for row in current {
        if let Ok(i) = usize::try_from(row.i) {
            // Rows come newest first per message: keep the first.
            supersedes.entry(i).or_insert(row.reading_id);
        }
    }

    let mut ids = Vec::with_capacity(accepted.len());
    let mut message_ids = Vec::with_capacity(accepted.len());
    let mut values = Vec::with_capacity(accepted.len());
    let mut received = Vec::with_capacity(accepted.len());
    let mut emails = Vec::with_capacity(accepted.len());
    let mut previous = Vec::with_capacity(accepted.len());
    for (i, a) in accepted.into_iter().enumerate() {
        a.supersedes = supersedes.get(&i).copied();
        ids.push(a.reading_id);
        message_ids.push(a.message_id.clone());
        values.push(shared::db::bigint_array_literal(
            a.values
                .iter()
                .map(|v| i64::try_from(*v).unwrap_or(i64::MAX)),
        ));
        received.push(a.received_at.with_timezone(&Utc));
        // The event carries the address to the notifier, which sends the
        // confirmation; the validator never needs it again, so it keeps it masked
        // (SPEC §4.7).
        emails.push(a.email.as_deref().map(shared::phone::mask));
        previous.push(a.supersedes);
    }
    sqlx::query(
        "INSERT INTO readings (reading_id, message_id, account, meter, period, readings, received_at, email, supersedes, accepted_at)
         SELECT id, mid, acc, met, per, vals::bigint[], at, email, sup, clock_timestamp()
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::text[], $9::uuid[])
              AS t(id, mid, acc, met, per, vals, at, email, sup)",
    )
    .bind(&ids)
    .bind(&message_ids)
    .bind(&accounts)
    .bind(&meters)
    .bind(&periods)
    .bind(&values)
    .bind(&received)
    .bind(&emails)
    .bind(&previous)
    .execute(&mut *tx)
    .await?;
    let (new, old): (Vec<Uuid>, Vec<Uuid>) = ids
        .iter()
        .zip(&previous)
        .filter_map(|(new, old)| old.map(|old| (*new, old)))
        .unzip();
    if !new.is_empty() {
        sqlx::query(
            "UPDATE readings r SET superseded_by = u.new FROM unnest($1::uuid[], $2::uuid[]) AS u(new, old) WHERE r.reading_id = u.old",
        )
        .bind(&new)
        .bind(&old)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// The audit rows of a round, column by column.
#[derive(Default)]
struct AuditColumns {
    message_id: Vec<String>,
    sender: Vec<String>,
    recipient: Vec<String>,
    body: Vec<String>,
    received_at: Vec<DateTime<Utc>>,
    channel: Vec<&'static str>,
    outcome: Vec<&'static str>,
    reason: Vec<Option<&'static str>>,
    account: Vec<Option<String>>,
    reading_id: Vec<Option<Uuid>>,
    reply: Vec<Option<String>>,
}

impl AuditColumns {
    fn push(&mut self, sms: &SmsReceived, outcome: &Outcome, reading_id: Option<Uuid>) {
        let Some(AuditFields {
            status,
            reason,
            account,
            reply,
        }) = AuditFields::of(outcome)
        else {
            return;
        };
        self.message_id.push(sms.message_id.clone());
        self.sender.push(sms.from.clone());
        self.recipient.push(sms.to.clone());
        // Decided on the text as received (a NUL is a separator to the grammar);
        // audited with each NUL shown as `␀`, which a text column can store, and —
        // when the address goes out with the event for its confirmation — with the
        // e-mail address masked, as in `readings` (SPEC §4.7).
        let body = shared::db::storable_text(&sms.text);
        let confirmed = matches!(outcome, Outcome::Accepted(a) if a.email.is_some());
        self.body.push(if confirmed {
            masked_addresses(&body)
        } else {
            body.into_owned()
        });
        self.received_at.push(sms.received_at.with_timezone(&Utc));
        self.channel.push(sms.channel.as_str());
        self.outcome.push(status);
        self.reason.push(reason);
        self.account.push(account);
        self.reading_id.push(reading_id);
        self.reply.push(reply);
    }
}

/// `text` with every field that holds an `@` masked (`ivan@mail.ru` → `i***@mail.ru`),
/// the separators between fields kept as they were.
fn masked_addresses(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut field = String::new();
    let flush = |field: &mut String, out: &mut String| {
        if field.contains('@') {
            out.push_str(&shared::phone::mask(field));
        } else {
            out.push_str(field);
        }
        field.clear();
    };
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() || matches!(c, '#' | '*' | ';' | '\u{2400}') {
            flush(&mut field, &mut out);
            out.push(c);
        } else {
            field.push(c);
        }
    }
    flush(&mut field, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::masked_addresses;

    #[test]
    fn addresses_in_a_text_are_masked_and_nothing_else_changes() {
        assert_eq!(
            masked_addresses("1000001 45100\tivan.petrov@mail.ru."),
            "1000001 45100\ti***@mail.ru."
        );
        assert_eq!(
            masked_addresses("лс 1000001;45100 e-mail: a@b.ru"),
            "лс 1000001;45100 e-mail: a***@b.ru"
        );
        assert_eq!(masked_addresses("1000001 45100"), "1000001 45100");
    }
}
