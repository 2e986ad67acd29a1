//! The `billing.readings` table: every accepted reading once (by `reading_id`), with
//! the state of its push. The state is what makes a redelivered event harmless: a
//! reading recorded as delivered is never posted again.

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

/// Stores a reading unless it is already there; returns its delivery state (the
/// stored one for a reading seen before).
pub async fn store(
    pool: &PgPool,
    reading: &ReadingAccepted,
    initial: Delivery,
) -> Result<Delivery, StoreError> {
    if !(1..=3).contains(&reading.values.len()) {
        return Err(StoreError::Invalid(format!(
            "{} values; a meter has 1 to 3 zones",
            reading.values.len()
        )));
    }
    let values = reading
        .values
        .iter()
        .map(|v| i64::try_from(*v))
        .collect::<Result<Vec<i64>, _>>()
        .map_err(|_| StoreError::Invalid("a value exceeds the 18-digit register range".into()))?;
    // One statement: insert, or read back the existing row's state, atomically
    // enough for a concurrent duplicate (the loser of the insert reads the winner's row).
    let state: Option<String> = sqlx::query_scalar(
        "WITH inserted AS (
             INSERT INTO readings (reading_id, message_id, account, meter, period, vals, received_at, channel, supersedes, delivery)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (reading_id) DO NOTHING
             RETURNING delivery
         )
         SELECT delivery FROM inserted
         UNION ALL
         SELECT delivery FROM readings WHERE reading_id = $1 AND NOT EXISTS (SELECT 1 FROM inserted)",
    )
    .bind(reading.reading_id)
    .bind(&reading.message_id)
    .bind(&reading.account)
    .bind(&reading.meter)
    .bind(reading.period.to_string())
    .bind(&values)
    .bind(reading.received_at)
    .bind(reading.channel.as_str())
    .bind(reading.supersedes)
    .bind(initial.as_str())
    .fetch_optional(pool)
    .await?;
    match state {
        Some(s) => Delivery::parse(&s).ok_or_else(|| {
            StoreError::Invalid(format!("unknown delivery state `{s}` in the table"))
        }),
        // A concurrent insert committed between our statement's snapshot and its
        // conflict check: the row exists, we just cannot see it yet. Ask again later.
        None => Err(StoreError::Concurrent),
    }
}

/// Records the outcome of one push attempt.
pub async fn record_attempt(
    pool: &PgPool,
    reading_id: Uuid,
    delivery: Delivery,
    status: Option<u16>,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    let status = status.and_then(|s| i16::try_from(s).ok());
    let error = error.map(|e| e.chars().take(1000).collect::<String>());
    sqlx::query(
        "UPDATE readings SET
             delivery = $2,
             attempts = attempts + 1,
             last_status = $3,
             last_error = $4,
             delivered_at = CASE WHEN $2 IN ('delivered', 'conflict') THEN now() ELSE delivered_at END
         WHERE reading_id = $1",
    )
    .bind(reading_id)
    .bind(delivery.as_str())
    .bind(status)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}
