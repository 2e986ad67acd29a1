//! The record of effects: one row per event's SMS or e-mail (`deliveries`), so that a
//! resident is answered once however often the broker delivers the event.
//!
//! A worker *claims* a delivery before sending: the claim turns the row into
//! `sending` under a lease (database time) and bumps `attempts`, which is the lease's
//! fencing token. Outcomes:
//! - a crash before sending leaves `pending`, or a `sending` whose lease runs out: the
//!   redelivered event sends it;
//! - a crash after the peer accepted but before `sent` was written leaves an expired
//!   `sending` whose outcome nobody knows: the channel decides ([`AfterUnknown`]) —
//!   resend with the same idempotency key / Message-ID, or give up rather than
//!   answer twice;
//! - two copies of one event in flight at once: one holds the lease, the other is
//!   told to come back later ([`Claim::Busy`]) and then finds `sent`.

use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;

use crate::limits::{ReplyLimits, Suppressed};
use shared::phone::PhoneNumber;

/// The channel a delivery goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Sms,
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }
}

/// One effect to claim.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `reply:<message_id>` or `email:<reading_id>`.
    pub key: String,
    pub channel: Channel,
    pub recipient: String,
}

/// What to do with an attempt whose outcome is unknown (sent, then no answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterUnknown {
    /// The peer deduplicates (idempotency key, Message-ID): send again.
    Resend,
    /// The peer cannot deduplicate: record `unknown` and never send again.
    GiveUp,
}

/// The reply guards to apply when an event is seen for the first time.
pub struct Quota<'a> {
    pub limits: &'a ReplyLimits,
    pub number: &'a PhoneNumber,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Send now; `attempt` fences this worker's outcome against a later takeover.
    Send { attempt: i32 },
    /// The effect is settled already (`sent`, `suppressed`, `unknown`): nothing to do.
    Settled(String),
    /// A guard refused it just now.
    Suppressed(Suppressed),
    /// Another worker holds a live lease on it.
    Busy,
    /// An earlier attempt's outcome is unknown and the channel cannot resend: now `unknown`.
    GaveUp,
}

/// How an attempt ended.
#[derive(Debug)]
pub enum Outcome<'a> {
    Sent,
    /// Not delivered (or resendable): back to `pending` for the next try.
    Released(&'a str),
    /// Refused by the peer.
    Failed(&'a str),
    /// Sent without an answer, on a channel that cannot resend.
    Unknown(&'a str),
}

/// Claims `delivery` for sending, applying `quota` if the event is new.
pub async fn claim(
    pool: &PgPool,
    delivery: &Delivery,
    quota: Option<Quota<'_>>,
    lease: Duration,
    after_unknown: AfterUnknown,
) -> Result<Claim, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // A concurrent insert of the same key waits here until the other transaction ends.
    let fresh = sqlx::query(
        "INSERT INTO deliveries (key, channel, recipient, state) VALUES ($1, $2, $3, 'pending')
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(&delivery.key)
    .bind(delivery.channel.as_str())
    .bind(&delivery.recipient)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;

    if fresh
        && let Some(q) = quota
        && let Err(reason) = q.limits.reserve(&mut tx, q.number, Utc::now()).await?
    {
        set_state(&mut tx, &delivery.key, "suppressed", Some(reason.as_str())).await?;
        tx.commit().await?;
        return Ok(Claim::Suppressed(reason));
    }

    let (state, leased): (String, bool) = sqlx::query_as(
        "SELECT state, coalesce(lease_until > now(), false) FROM deliveries
         WHERE key = $1 FOR UPDATE",
    )
    .bind(&delivery.key)
    .fetch_one(&mut *tx)
    .await?;

    let claim = match state.as_str() {
        "pending" | "failed" => take_lease(&mut tx, &delivery.key, lease).await?,
        "sending" if leased => Claim::Busy,
        "sending" => match after_unknown {
            AfterUnknown::Resend => take_lease(&mut tx, &delivery.key, lease).await?,
            AfterUnknown::GiveUp => {
                let why = "an earlier attempt was interrupted; the peer may have it";
                set_state(&mut tx, &delivery.key, "unknown", Some(why)).await?;
                Claim::GaveUp
            }
        },
        _ => Claim::Settled(state),
    };
    tx.commit().await?;
    Ok(claim)
}

async fn take_lease(
    tx: &mut sqlx::PgConnection,
    key: &str,
    lease: Duration,
) -> Result<Claim, sqlx::Error> {
    let attempt: i32 = sqlx::query_scalar(
        "UPDATE deliveries
         SET state = 'sending', attempts = attempts + 1,
             lease_until = now() + make_interval(secs => $2), updated_at = now()
         WHERE key = $1
         RETURNING attempts",
    )
    .bind(key)
    .bind(lease.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    Ok(Claim::Send { attempt })
}

async fn set_state(
    tx: &mut sqlx::PgConnection,
    key: &str,
    state: &str,
    detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE deliveries SET state = $2, detail = $3, lease_until = NULL, updated_at = now()
         WHERE key = $1",
    )
    .bind(key)
    .bind(state)
    .bind(detail)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Records an event refused before any counting (number, country) — once: a
/// redelivery finds the row and reports `false`, so it is counted once.
pub async fn suppress(
    pool: &PgPool,
    delivery: &Delivery,
    reason: Suppressed,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO deliveries (key, channel, recipient, state, detail)
         VALUES ($1, $2, $3, 'suppressed', $4)
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(&delivery.key)
    .bind(delivery.channel.as_str())
    .bind(&delivery.recipient)
    .bind(reason.as_str())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// Writes how attempt `attempt` ended. `Sent` is written whatever the lease says (it
/// is the truth); the others only while this attempt still holds the row, so a stale
/// worker cannot undo a newer attempt's state.
pub async fn finish(
    pool: &PgPool,
    key: &str,
    attempt: i32,
    outcome: Outcome<'_>,
) -> Result<(), sqlx::Error> {
    let (state, detail) = match outcome {
        Outcome::Sent => {
            sqlx::query(
                "UPDATE deliveries SET state = 'sent', sent_at = now(), lease_until = NULL,
                     detail = NULL, updated_at = now()
                 WHERE key = $1",
            )
            .bind(key)
            .execute(pool)
            .await?;
            return Ok(());
        }
        Outcome::Released(d) => ("pending", d),
        Outcome::Failed(d) => ("failed", d),
        Outcome::Unknown(d) => ("unknown", d),
    };
    let detail: String = detail.chars().take(500).collect();
    sqlx::query(
        "UPDATE deliveries SET state = $3, detail = $4, lease_until = NULL, updated_at = now()
         WHERE key = $1 AND state = 'sending' AND attempts = $2",
    )
    .bind(key)
    .bind(attempt)
    .bind(state)
    .bind(detail)
    .execute(pool)
    .await?;
    Ok(())
}
