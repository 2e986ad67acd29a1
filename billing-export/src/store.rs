//! The `billing.readings` table: every accepted reading once (by `reading_id`), with
//! the state of its push, written after the push in one statement. The state is what
//! makes a redelivered event harmless: a reading recorded as delivered is never posted
//! again.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use shared::events::ReadingAccepted;
use sqlx::PgPool;
use uuid::Uuid;

/// Where a reading's push stands (the `delivery` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Not delivered yet: first try, or billing has been failing.
    Pending,
    /// Billing answered 2xx.
    Delivered,
    /// Billing answered 409: it already had the reading. Delivered too.
    Conflict,
    /// Billing refused it (another 4xx); the event went to the dead-letter queue.
    Rejected,
    /// `BILLING_URL` was not set when the reading arrived.
    NotPushed,
}

impl Delivery {
    pub fn as_str(self) -> &'static str {
        match self {
            Delivery::Pending => "pending",
            Delivery::Delivered => "delivered",
            Delivery::Conflict => "conflict",
            Delivery::Rejected => "rejected",
            Delivery::NotPushed => "not_pushed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Delivery::Pending,
            Delivery::Delivered,
            Delivery::Conflict,
            Delivery::Rejected,
            Delivery::NotPushed,
        ]
        .into_iter()
        .find(|d| d.as_str() == s)
    }

    /// Billing has the reading: never post it again.
    pub fn is_delivered(self) -> bool {
        matches!(self, Delivery::Delivered | Delivery::Conflict)
    }
}

/// The reading's values as stored, or why they cannot be (SPEC §4.2).
pub fn checked_values(reading: &ReadingAccepted) -> Result<Vec<i64>, String> {
    if !(1..=3).contains(&reading.values.len()) {
        return Err(format!(
            "{} values; a meter has 1 to 3 zones",
            reading.values.len()
        ));
    }
    reading
        .values
        .iter()
        .map(|v| i64::try_from(*v))
        .collect::<Result<Vec<i64>, _>>()
        .map_err(|_| "a value exceeds the 18-digit register range".to_owned())
}

/// The stored delivery state of each of `ids` that is in the table.
pub async fn states(pool: &PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, Delivery>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    #[derive(sqlx::FromRow)]
    struct Stored {
        reading_id: Uuid,
        delivery: String,
    }
    let rows: Vec<Stored> =
        sqlx::query_as("SELECT reading_id, delivery FROM readings WHERE reading_id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        // An unknown state (a newer version's) is not "delivered": the push goes ahead
        // and billing's idempotency key answers for it.
        .filter_map(|r| Delivery::parse(&r.delivery).map(|d| (r.reading_id, d)))
        .collect())
}

/// A reading with how its push ended (or that it was not pushed), to store.
pub struct Outcome<'a> {
    pub reading: &'a ReadingAccepted,
    pub delivery: Delivery,
    /// Whether a push was attempted (counted in `attempts`).
    pub attempted: bool,
    pub status: Option<u16>,
    pub error: Option<&'a str>,
}

/// Stores `outcomes` as [`store`] does, and when the database refuses them for good
/// (the data: [`shared::db::classify`]) stores the others without the reading it
/// refuses ([`shared::db::isolate`]). Returns each outcome's result, in order: a
/// refused reading's error never becomes its batch-mates'.
pub async fn store_each(
    pool: &PgPool,
    outcomes: &[Outcome<'_>],
) -> Vec<Result<(), Arc<sqlx::Error>>> {
    let mut results = Vec::with_capacity(outcomes.len());
    for (range, stored) in shared::db::isolate(outcomes, |part| store(pool, part)).await {
        let stored = stored.map_err(Arc::new);
        results.extend(range.map(|_| stored.clone()));
    }
    results
}

/// Stores readings with the outcomes of their pushes, in one statement and one commit:
/// a reading not in the table yet is inserted with its state; one stored by an earlier
/// attempt gets this attempt recorded — unless it is recorded as delivered already,
/// which no later answer undoes. Each reading id at most once in `outcomes`.
pub async fn store(pool: &PgPool, outcomes: &[Outcome<'_>]) -> Result<(), sqlx::Error> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let n = outcomes.len();
    let mut ids = Vec::with_capacity(n);
    let mut message_ids = Vec::with_capacity(n);
    let mut accounts = Vec::with_capacity(n);
    let mut meters = Vec::with_capacity(n);
    let mut periods = Vec::with_capacity(n);
    let mut values = Vec::with_capacity(n);
    let mut received = Vec::with_capacity(n);
    let mut channels = Vec::with_capacity(n);
    let mut supersedes = Vec::with_capacity(n);
    let mut deliveries = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut statuses: Vec<Option<i16>> = Vec::with_capacity(n);
    let mut errors: Vec<Option<String>> = Vec::with_capacity(n);
    for o in outcomes {
        let r = o.reading;
        // Checked before the push (`checked_values`); an invalid one is never stored.
        let Ok(vals) = checked_values(r) else {
            continue;
        };
        ids.push(r.reading_id);
        message_ids.push(r.message_id.as_str());
        accounts.push(r.account.as_str());
        meters.push(r.meter.as_str());
        periods.push(r.period.to_string());
        values.push(shared::db::bigint_array_literal(vals));
        received.push(r.received_at.with_timezone(&Utc));
        channels.push(r.channel.as_str());
        supersedes.push(r.supersedes);
        deliveries.push(o.delivery.as_str());
        attempts.push(i32::from(o.attempted));
        statuses.push(o.status.and_then(|s| i16::try_from(s).ok()));
        // Billing's own words: a NUL in them must not make the reading unstorable.
        errors.push(
            o.error
                .map(|e| shared::db::storable_text(e).chars().take(1000).collect()),
        );
    }
    sqlx::query(
        "INSERT INTO readings AS r (reading_id, message_id, account, meter, period, vals, received_at, channel, supersedes,
                                   delivery, attempts, last_status, last_error, delivered_at)
         SELECT reading_id, message_id, account, meter, period, vals::bigint[], received_at, channel, supersedes,
                delivery, attempts, status, error,
                CASE WHEN delivery IN ('delivered', 'conflict') THEN now() END
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::text[], $9::uuid[],
                     $10::text[], $11::int4[], $12::int2[], $13::text[])
             AS t(reading_id, message_id, account, meter, period, vals, received_at, channel, supersedes,
                  delivery, attempts, status, error)
         ON CONFLICT (reading_id) DO UPDATE SET
             delivery = EXCLUDED.delivery,
             attempts = r.attempts + EXCLUDED.attempts,
             last_status = EXCLUDED.last_status,
             last_error = EXCLUDED.last_error,
             delivered_at = EXCLUDED.delivered_at
         WHERE r.delivery NOT IN ('delivered', 'conflict')",
    )
    .bind(&ids)
    .bind(&message_ids)
    .bind(&accounts)
    .bind(&meters)
    .bind(&periods)
    .bind(&values)
    .bind(&received)
    .bind(&channels)
    .bind(&supersedes)
    .bind(&deliveries)
    .bind(&attempts)
    .bind(&statuses)
    .bind(&errors)
    .execute(pool)
    .await?;
    Ok(())
}
