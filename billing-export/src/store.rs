//! The `billing.readings` table: every accepted reading once (by `reading_id`), with
//! the state of its push. The state is what makes a redelivered event harmless: a
//! reading recorded as delivered is never posted again.

use std::collections::HashMap;

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

/// Why a reading cannot be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The event breaks the contract (SPEC §4.2): never storable.
    #[error("invalid reading: {0}")]
    Invalid(String),
    /// A concurrent copy of the same event committed the row a moment ago, after
    /// this statement's snapshot: trying again sees it.
    #[error("a concurrent copy of the reading was being stored")]
    Concurrent,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
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

/// Stores each reading unless it is already there (one statement for all); returns
/// the delivery state of each reading id (the stored one for a reading seen before).
/// A reading id missing from the answer was being inserted by a concurrent copy not
/// yet visible to this statement: [`StoreError::Concurrent`], ask again later.
pub async fn store_many(
    pool: &PgPool,
    readings: &[&ReadingAccepted],
    initial: Delivery,
) -> Result<HashMap<Uuid, Delivery>, StoreError> {
    if readings.is_empty() {
        return Ok(HashMap::new());
    }
    let mut ids = Vec::with_capacity(readings.len());
    let mut message_ids = Vec::with_capacity(readings.len());
    let mut accounts = Vec::with_capacity(readings.len());
    let mut meters = Vec::with_capacity(readings.len());
    let mut periods = Vec::with_capacity(readings.len());
    let mut values = Vec::with_capacity(readings.len());
    let mut received = Vec::with_capacity(readings.len());
    let mut channels = Vec::with_capacity(readings.len());
    let mut supersedes = Vec::with_capacity(readings.len());
    for r in readings {
        let vals = checked_values(r).map_err(StoreError::Invalid)?;
        ids.push(r.reading_id);
        message_ids.push(r.message_id.as_str());
        accounts.push(r.account.as_str());
        meters.push(r.meter.as_str());
        periods.push(r.period.to_string());
        values.push(shared::db::bigint_array_literal(vals));
        received.push(r.received_at.with_timezone(&Utc));
        channels.push(r.channel.as_str());
        supersedes.push(r.supersedes);
    }
    // One statement: insert, or read back the existing rows' state, atomically enough
    // for a concurrent duplicate (the loser of the insert reads the winner's row).
    let rows: Vec<(Uuid, String)> = sqlx::query_as(
        "WITH input AS (
             SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::text[], $9::uuid[])
                 AS t(reading_id, message_id, account, meter, period, vals, received_at, channel, supersedes)
         ), inserted AS (
             INSERT INTO readings (reading_id, message_id, account, meter, period, vals, received_at, channel, supersedes, delivery)
             SELECT reading_id, message_id, account, meter, period, vals::bigint[], received_at, channel, supersedes, $10 FROM input
             ON CONFLICT (reading_id) DO NOTHING
             RETURNING reading_id, delivery
         )
         SELECT reading_id, delivery FROM inserted
         UNION ALL
         SELECT r.reading_id, r.delivery FROM readings r
         WHERE r.reading_id = ANY($1) AND NOT EXISTS (SELECT 1 FROM inserted i WHERE i.reading_id = r.reading_id)",
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
    .bind(initial.as_str())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|(id, s)| {
            Delivery::parse(&s).map(|d| (id, d)).ok_or_else(|| {
                StoreError::Invalid(format!("unknown delivery state `{s}` in the table"))
            })
        })
        .collect()
}

/// The outcome of one push attempt, to record.
pub struct AttemptRecord<'a> {
    pub reading_id: Uuid,
    pub delivery: Delivery,
    pub status: Option<u16>,
    pub error: Option<&'a str>,
}

/// Records the outcomes of push attempts, in one statement.
pub async fn record_attempts(
    pool: &PgPool,
    attempts: &[AttemptRecord<'_>],
) -> Result<(), sqlx::Error> {
    if attempts.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = attempts.iter().map(|a| a.reading_id).collect();
    let deliveries: Vec<&str> = attempts.iter().map(|a| a.delivery.as_str()).collect();
    let statuses: Vec<Option<i16>> = attempts
        .iter()
        .map(|a| a.status.and_then(|s| i16::try_from(s).ok()))
        .collect();
    let errors: Vec<Option<String>> = attempts
        .iter()
        .map(|a| a.error.map(|e| e.chars().take(1000).collect::<String>()))
        .collect();
    sqlx::query(
        "UPDATE readings r SET
             delivery = u.delivery,
             attempts = r.attempts + 1,
             last_status = u.status,
             last_error = u.error,
             delivered_at = CASE WHEN u.delivery IN ('delivered', 'conflict') THEN now() ELSE r.delivered_at END
         FROM unnest($1::uuid[], $2::text[], $3::int2[], $4::text[]) AS u(reading_id, delivery, status, error)
         WHERE r.reading_id = u.reading_id",
    )
    .bind(&ids)
    .bind(&deliveries)
    .bind(&statuses)
    .bind(&errors)
    .execute(pool)
    .await?;
    Ok(())
}
