//! One inbound SMS, from `sms.received` to a stored outcome: the checks of SPEC §3 in
//! their order, the audit row, the accepted reading (superseding an earlier one of the
//! same meter and period) and the event, all in one transaction. The event goes to
//! the outbox table, so it exists if and only if the outcome was committed; the
//! caller hands the returned [`Pending`] events to the relay after the commit.

use std::ops::RangeInclusive;

use chrono::{DateTime, FixedOffset};
use shared::events::{Event, Period, ReadingAccepted, ReadingRejected, RejectReason, SmsReceived};
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;
use uuid::Uuid;

mod batch;

pub use batch::{BatchItem, process_batch};

use crate::grammar::{self, ParseError, ParsedMessage};
use crate::outbox::{Outgoing, Pending};
use crate::reply::Refusal;
use crate::rules::{self, Previous, Window};

/// Seeds of the `hashtextextended` keys of the transaction-scoped advisory locks: one
/// per account a reading may be stored for, one per sender. Every transaction takes
/// its account locks first, then its sender locks, each sorted by key.
const ACCOUNT_LOCK_SEED: i64 = 11;
const SENDER_LOCK_SEED: i64 = 7;

/// Namespace of reading ids: a reading's id is derived from its message's id, so a
/// redelivered message can never make a second reading.
const READING_NAMESPACE: Uuid = Uuid::from_u128(0x7265_6164_696e_672d_6964_2d6e_616d_6531);

/// The knobs of the checks (SPEC §4 configuration).
#[derive(Debug, Clone)]
pub struct Rules {
    pub window: Window,
    pub account_digits: RangeInclusive<usize>,
    pub max_monthly_kwh: u64,
    pub rate_limit_per_hour: u32,
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Accepted(ReadingAccepted),
    Rejected(ReadingRejected),
    /// Seen before (same `message_id`): nothing changed, nothing emitted.
    Duplicate,
}

/// A refusal decided by the checks, owned (the reply is rendered before storing).
struct Refused {
    reason: RejectReason,
    reply: Option<String>,
    account: Option<String>,
}

impl Refused {
    fn new(refusal: Refusal<'_>, account: Option<&str>) -> Self {
        Refused {
            reason: refusal.reason(),
            reply: refusal.text(),
            account: account.map(str::to_owned),
        }
    }
}

struct Accepted {
    parsed: ParsedMessage,
    meter: String,
    period: Period,
}

#[derive(Clone)]
struct MeterRow {
    account: String,
    meter: String,
    zones: i16,
    digits: i16,
    active: bool,
    baseline_period: Option<String>,
    baseline_values: Option<Vec<i64>>,
}

/// Checks and stores one message. Errors are database errors only (retry later).
pub async fn process(
    pool: &PgPool,
    rules: &Rules,
    sms: &SmsReceived,
) -> Result<(Outcome, Vec<Pending>), sqlx::Error> {
    let mut tx = shared::db::begin_batch(pool).await?;
    let seen: Option<i32> = sqlx::query_scalar("SELECT 1 FROM messages WHERE message_id = $1")
        .bind(&sms.message_id)
        .fetch_optional(&mut *tx)
        .await?;
    if seen.is_some() {
        return Ok((Outcome::Duplicate, Vec::new()));
    }
    let decision = decide(&mut tx, rules, sms)
        .instrument(tracing::info_span!("validate", otel.name = "validate"))
        .await?;
    let (outcome, reading_id) = outcome_of(sms, decision);
    record(tx, sms, outcome, reading_id)
        .instrument(tracing::info_span!(
            "store",
            otel.name = "store",
            db.system = "postgresql"
        ))
        .await
}

/// The outcome a decision makes of a message (the event before it is stored), and the
/// reading's id if it was accepted.
fn outcome_of(sms: &SmsReceived, decision: Result<Accepted, Refused>) -> (Outcome, Option<Uuid>) {
    match decision {
        Err(refused) => (
            Outcome::Rejected(ReadingRejected {
                message_id: sms.message_id.clone(),
                from: sms.from.clone(),
                account: refused.account,
                reason: refused.reason,
                reply: refused.reply,
                received_at: sms.received_at,
                channel: sms.channel,
            }),
            None,
        ),
        Ok(accepted) => {
            let reading_id = Uuid::new_v5(&READING_NAMESPACE, sms.message_id.as_bytes());
            (
                Outcome::Accepted(ReadingAccepted {
                    reading_id,
                    message_id: sms.message_id.clone(),
                    account: accepted.parsed.account.as_str().to_owned(),
                    meter: accepted.meter,
                    period: accepted.period,
                    values: accepted.parsed.readings.iter().map(|r| r.value()).collect(),
                    received_at: sms.received_at,
                    channel: sms.channel,
                    email: accepted.parsed.email.map(|e| e.as_str().to_owned()),
                    supersedes: None,
                }),
                Some(reading_id),
            )
        }
    }
}

/// What the audit row says of an outcome (a duplicate has no row of its own).
struct AuditFields {
    status: &'static str,
    reason: Option<&'static str>,
    account: Option<String>,
    reply: Option<String>,
}

impl AuditFields {
    fn of(outcome: &Outcome) -> Option<Self> {
        Some(match outcome {
            Outcome::Accepted(a) => AuditFields {
                status: "accepted",
                reason: None,
                account: Some(a.account.clone()),
                reply: None,
            },
            Outcome::Rejected(r) => AuditFields {
                status: "rejected",
                reason: Some(r.reason.as_str()),
                account: r.account.clone(),
                reply: r.reply.clone(),
            },
            Outcome::Duplicate => return None,
        })
    }
}

/// Stores the outcome: the audit row, the reading and the event, then commits.
async fn record(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    sms: &SmsReceived,
    outcome: Outcome,
    reading_id: Option<Uuid>,
) -> Result<(Outcome, Vec<Pending>), sqlx::Error> {
    // The audit row first: its primary key settles a concurrent duplicate delivery.
    let Some(AuditFields {
        status,
        reason,
        account,
        reply,
    }) = AuditFields::of(&outcome)
    else {
        return Ok((Outcome::Duplicate, Vec::new()));
    };
    let inserted = sqlx::query(
        "INSERT INTO messages (message_id, sender, recipient, body, received_at, channel, outcome, reason, account, reading_id, reply)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(&sms.message_id)
    .bind(&sms.from)
    .bind(&sms.to)
    .bind(&sms.text)
    .bind(sms.received_at)
    .bind(sms.channel.as_str())
    .bind(status)
    .bind(reason)
    .bind(account)
    .bind(reading_id)
    .bind(reply)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        return Ok((Outcome::Duplicate, Vec::new()));
    }

    let outcome = match outcome {
        Outcome::Accepted(mut event) => {
            event.supersedes = store_reading(&mut tx, &event).await?;
            Outcome::Accepted(event)
        }
        other => other,
    };
    let event = match &outcome {
        Outcome::Accepted(e) => Event::ReadingAccepted(e.clone()),
        Outcome::Rejected(e) => Event::ReadingRejected(e.clone()),
        Outcome::Duplicate => return Ok((Outcome::Duplicate, Vec::new())),
    };
    let pending = crate::outbox::enqueue(&mut tx, &[Outgoing::current(event)]).await?;
    tx.commit().await?;
    Ok((outcome, pending))
}

/// Stores an accepted reading; returns the reading it supersedes, if any.
async fn store_reading(
    tx: &mut PgConnection,
    event: &ReadingAccepted,
) -> Result<Option<Uuid>, sqlx::Error> {
    let period = event.period.to_string();
    let previous: Option<Uuid> = sqlx::query_scalar(
        "SELECT reading_id FROM readings WHERE account = $1 AND meter = $2 AND period = $3 AND superseded_by IS NULL
         ORDER BY accepted_at DESC LIMIT 1 FOR UPDATE",
    )
    .bind(&event.account)
    .bind(&event.meter)
    .bind(&period)
    .fetch_optional(&mut *tx)
    .await?;
    let values: Vec<i64> = event
        .values
        .iter()
        .map(|v| i64::try_from(*v).unwrap_or(i64::MAX))
        .collect();
    sqlx::query(
        "INSERT INTO readings (reading_id, message_id, account, meter, period, readings, received_at, email, supersedes)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(event.reading_id)
    .bind(&event.message_id)
    .bind(&event.account)
    .bind(&event.meter)
    .bind(&period)
    .bind(&values)
    .bind(event.received_at)
    .bind(&event.email)
    .bind(previous)
    .execute(&mut *tx)
    .await?;
    if let Some(previous) = previous {
        sqlx::query("UPDATE readings SET superseded_by = $1 WHERE reading_id = $2")
            .bind(event.reading_id)
            .bind(previous)
            .execute(&mut *tx)
            .await?;
    }
    Ok(previous)
}

/// The checks of SPEC §3, in order; the first failure is the reason.
async fn decide(
    tx: &mut PgConnection,
    rules: &Rules,
    sms: &SmsReceived,
) -> Result<Result<Accepted, Refused>, sqlx::Error> {
    let (parsed, period) = match parse_checked(rules, sms) {
        Ok(p) => p,
        Err(refused) => return Ok(Err(refused)),
    };
    let meters: Vec<MeterRow> = sqlx::query_as::<_, MeterRecord>(
        "SELECT account, meter, zones, digits, status, baseline_period, baseline_values FROM meters WHERE account = $1 ORDER BY meter",
    )
    .bind(parsed.account.as_str())
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(MeterRow::from)
    .collect();
    let meter = match meter_checked(&parsed, meters) {
        Ok(m) => m,
        Err(refused) => return Ok(Err(refused)),
    };
    // Locking the account serialises messages for one account across batches and
    // replicas, so supersession and the comparison base cannot race. The first of the
    // two locks a transaction takes (the sender's is the second), as in a batch.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, $2))")
        .bind(parsed.account.as_str())
        .bind(ACCOUNT_LOCK_SEED)
        .execute(&mut *tx)
        .await?;
    let accepted: Option<(String, Vec<i64>)> = sqlx::query_as(
        "SELECT period, readings FROM readings WHERE account = $1 AND meter = $2 AND period < $3 AND superseded_by IS NULL
         ORDER BY period DESC, accepted_at DESC LIMIT 1",
    )
    .bind(parsed.account.as_str())
    .bind(&meter.meter)
    .bind(period.to_string())
    .fetch_optional(&mut *tx)
    .await?;
    if let Err(refused) = reading_checked(rules, &parsed, &meter, period, accepted) {
        return Ok(Err(refused));
    }
    if rate_limited(tx, rules, &sms.from, sms.received_at).await? {
        return Ok(Err(Refused::new(
            Refusal::RateLimited,
            Some(parsed.account.as_str()),
        )));
    }
    Ok(Ok(Accepted {
        parsed,
        meter: meter.meter,
        period,
    }))
}

/// A `meters` row as selected.
type MeterRecord = (
    String,
    String,
    i16,
    i16,
    String,
    Option<String>,
    Option<Vec<i64>>,
);

impl From<MeterRecord> for MeterRow {
    fn from(
        (account, meter, zones, digits, status, baseline_period, baseline_values): MeterRecord,
    ) -> Self {
        MeterRow {
            account,
            meter,
            zones,
            digits,
            active: status == "active",
            baseline_period,
            baseline_values,
        }
    }
}

/// The checks that need only the text and the time: format, e-mail, window.
fn parse_checked(rules: &Rules, sms: &SmsReceived) -> Result<(ParsedMessage, Period), Refused> {
    let parsed = match grammar::parse(&sms.text, rules.account_digits.clone()) {
        Ok(p) => p,
        Err(ParseError::Format(problem)) => {
            return Err(Refused::new(Refusal::Format(&problem), None));
        }
        Err(ParseError::InvalidEmail(email)) => {
            return Err(Refused::new(Refusal::InvalidEmail(&email), None));
        }
    };
    if !rules.window.contains(sms.received_at) {
        return Err(Refused::new(
            Refusal::OutsideWindow {
                start_day: rules.window.start_day,
                end_day: rules.window.end_day,
            },
            Some(parsed.account.as_str()),
        ));
    }
    let period = rules.window.period_of(sms.received_at);
    Ok((parsed, period))
}

/// The checks against the account's meters: known, open, one meter, zones, digits.
fn meter_checked(parsed: &ParsedMessage, meters: Vec<MeterRow>) -> Result<MeterRow, Refused> {
    let account = parsed.account.as_str();
    let refuse = |r: Refusal<'_>| Err(Refused::new(r, Some(account)));
    if meters.is_empty() {
        return refuse(Refusal::UnknownAccount(account));
    }
    let mut active = meters.into_iter().filter(|m| m.active);
    let Some(meter) = active.next() else {
        return refuse(Refusal::AccountClosed(account));
    };
    if active.next().is_some() {
        return refuse(Refusal::MultipleMeters(account));
    }
    let zones = u8::try_from(meter.zones).unwrap_or(0);
    if parsed.readings.len() != usize::from(zones) {
        return refuse(Refusal::ZoneMismatch { zones });
    }
    let digits = u8::try_from(meter.digits).unwrap_or(0);
    if let Some(long) = parsed
        .readings
        .iter()
        .find(|r| r.digits() > u32::from(digits))
    {
        return refuse(Refusal::TooManyDigits {
            value: long.value(),
            digits,
        });
    }
    Ok(meter)
}

/// The check against the previous reading: `accepted` is the latest accepted reading
/// of an earlier period, if any.
fn reading_checked(
    rules: &Rules,
    parsed: &ParsedMessage,
    meter: &MeterRow,
    period: Period,
    accepted: Option<(String, Vec<i64>)>,
) -> Result<(), Refused> {
    let values: Vec<u64> = parsed.readings.iter().map(|r| r.value()).collect();
    let digits = u32::try_from(meter.digits).unwrap_or(0);
    let checked = previous_reading(accepted, meter, period).map_or(Ok(()), |previous| {
        rules::check_against(&previous, period, &values, digits, rules.max_monthly_kwh)
    });
    checked
        .map_err(|problem| Refused::new(Refusal::Reading(&problem), Some(parsed.account.as_str())))
}

/// The reading a new one is compared with: the latest accepted one of an earlier
/// period, else the registry's last known reading. A correction within the same
/// period is compared with the earlier period, not with the reading it corrects.
fn previous_reading(
    accepted: Option<(String, Vec<i64>)>,
    meter: &MeterRow,
    period: Period,
) -> Option<Previous> {
    let baseline = match (&meter.baseline_period, &meter.baseline_values) {
        (Some(p), Some(v)) => Some((p.clone(), v.clone())),
        _ => None,
    };
    let candidates = accepted.into_iter().chain(baseline);
    candidates
        .filter_map(|(p, v)| {
            let p: Period = p.parse().ok()?;
            let values = v
                .into_iter()
                .map(|x| u64::try_from(x).unwrap_or(0))
                .collect();
            (p <= period).then_some(Previous { period: p, values })
        })
        .max_by_key(|prev| prev.period)
}

/// More than the allowed messages from this sender in the hour before this one.
async fn rate_limited(
    tx: &mut PgConnection,
    rules: &Rules,
    sender: &str,
    at: DateTime<FixedOffset>,
) -> Result<bool, sqlx::Error> {
    // Two messages of one sender handled at once would both count the other as not yet
    // there; a per-sender lock for the rest of the transaction makes the count exact.
    // It is the last lock a transaction takes, so it cannot take part in a deadlock.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, $2))")
        .bind(sender)
        .bind(SENDER_LOCK_SEED)
        .execute(&mut *tx)
        .await?;
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM messages WHERE sender = $1 AND received_at > $2 - interval '1 hour' AND received_at <= $2",
    )
    .bind(sender)
    .bind(at)
    .fetch_one(&mut *tx)
    .await?;
    Ok(count >= i64::from(rules.rate_limit_per_hour))
}
