//! What the console reads, all from the owners' published views (SPEC §4.7):
//! `validator.console_messages`, `validator.console_readings`,
//! `validator.console_registry`, `notifier.console_deliveries` and
//! `billing.console_deliveries`. Nothing here writes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::search::Query;

/// Messages shown for one search or one account at most.
pub const LIST_LIMIT: i64 = 100;

/// An inbound message and its decision (the validator's audit).
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct Message {
    pub message_id: String,
    pub sender: String,
    pub recipient: String,
    pub body: String,
    pub received_at: DateTime<Utc>,
    pub channel: String,
    pub processed_at: DateTime<Utc>,
    pub outcome: String,
    pub reason: Option<String>,
    pub account: Option<String>,
    pub reading_id: Option<Uuid>,
    pub reply: Option<String>,
}

const MESSAGE_COLUMNS: &str = "message_id, sender, recipient, body, received_at, channel, \
     processed_at, outcome, reason, account, reading_id, reply";

/// An accepted reading.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct Reading {
    pub reading_id: Uuid,
    pub message_id: String,
    pub account: String,
    pub meter: String,
    pub period: String,
    pub vals: Vec<i64>,
    pub received_at: DateTime<Utc>,
    pub with_email: bool,
    pub supersedes: Option<Uuid>,
    pub superseded_by: Option<Uuid>,
    pub accepted_at: DateTime<Utc>,
}

const READING_COLUMNS: &str = "reading_id, message_id, account, meter, period, vals, \
     received_at, with_email, supersedes, superseded_by, accepted_at";

/// A reply or an e-mail, as the notifier recorded it.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct Delivery {
    pub key: String,
    pub channel: String,
    pub recipient: String,
    pub state: String,
    pub attempts: i32,
    pub detail: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// What the network reported afterwards (`delivered`, `failed`), for SMS replies
    /// through a gateway that sends delivery reports; `None` until then.
    pub report: Option<String>,
    pub report_detail: Option<String>,
    pub reported_at: Option<DateTime<Utc>>,
}

/// Billing's answer to a reading, as billing-export recorded it.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct Billing {
    pub reading_id: Uuid,
    pub delivery: String,
    pub attempts: i32,
    pub last_status: Option<i16>,
    pub last_error: Option<String>,
    pub stored_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A meter of the registry.
#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct Meter {
    pub account: String,
    pub meter: String,
    pub zones: i16,
    pub digits: i16,
    pub status: String,
    pub baseline_period: Option<String>,
    pub baseline_values: Option<Vec<i64>>,
}

/// What a search found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Found {
    pub queries: Vec<Query>,
    /// Accounts of the registry that match.
    pub accounts: Vec<String>,
    /// Messages, newest first.
    pub messages: Vec<Message>,
}

pub async fn search(pool: &PgPool, queries: Vec<Query>) -> Result<Found, sqlx::Error> {
    let mut found = Found::default();
    for q in &queries {
        match q {
            Query::Phone(phone) => {
                let rows: Vec<Message> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {MESSAGE_COLUMNS} FROM validator.console_messages
                     WHERE sender = $1 ORDER BY received_at DESC LIMIT $2"
                )))
                .bind(phone)
                .bind(LIST_LIMIT)
                .fetch_all(pool)
                .await?;
                found.messages.extend(rows);
            }
            Query::Account(account) => {
                let known: Option<String> = sqlx::query_scalar(
                    "SELECT account FROM validator.console_registry WHERE account = $1 LIMIT 1",
                )
                .bind(account)
                .fetch_optional(pool)
                .await?;
                found.accounts.extend(known);
                found
                    .messages
                    .extend(messages_of_account(pool, account, None).await?);
            }
            Query::MessageId(id) => found.messages.extend(message(pool, id).await?),
        }
    }
    found
        .messages
        .sort_by_key(|m| std::cmp::Reverse(m.received_at));
    found.messages.dedup_by(|a, b| a.message_id == b.message_id);
    found.messages.truncate(LIST_LIMIT as usize);
    found.queries = queries;
    Ok(found)
}

pub async fn message(pool: &PgPool, id: &str) -> Result<Option<Message>, sqlx::Error> {
    // No stored id holds a NUL (ingest refuses one; a `text` cannot hold it), and
    // PostgreSQL refuses it as a parameter: such an id is not found, not an error.
    if id.contains('\0') {
        return Ok(None);
    }
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM validator.console_messages WHERE message_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn messages(pool: &PgPool, ids: &[String]) -> Result<Vec<Message>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM validator.console_messages WHERE message_id = ANY($1)"
    )))
    .bind(ids)
    .fetch_all(pool)
    .await
}

/// An account's messages, newest first, since `since` if given.
pub async fn messages_of_account(
    pool: &PgPool,
    account: &str,
    since: Option<DateTime<Utc>>,
) -> Result<Vec<Message>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {MESSAGE_COLUMNS} FROM validator.console_messages
         WHERE account = $1 AND received_at >= $2 ORDER BY received_at DESC LIMIT $3"
    )))
    .bind(account)
    .bind(since.unwrap_or(DateTime::<Utc>::UNIX_EPOCH))
    .bind(LIST_LIMIT)
    .fetch_all(pool)
    .await
}

/// Everything that became of one message.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub message: Message,
    pub reading: Option<Reading>,
    /// The reading that replaced this one later in the period, if any.
    pub superseded_by: Option<Reading>,
    pub reply: Option<Delivery>,
    pub email: Option<Delivery>,
    pub billing: Option<Billing>,
    /// Who typed it in, for a paper slip (the console's own audit).
    pub entered_by: Option<String>,
}

pub async fn timeline(pool: &PgPool, id: &str) -> Result<Option<Timeline>, sqlx::Error> {
    let Some(message) = message(pool, id).await? else {
        return Ok(None);
    };
    let reading = match message.reading_id {
        Some(r) => reading(pool, r).await?,
        None => None,
    };
    let superseded_by = match reading.as_ref().and_then(|r| r.superseded_by) {
        Some(r) => self::reading(pool, r).await?,
        None => None,
    };
    let reply = delivery(pool, &format!("reply:{}", message.message_id)).await?;
    let (email, billing) = match message.reading_id {
        Some(r) => (
            delivery(pool, &format!("email:{r}")).await?,
            sqlx::query_as(
                "SELECT reading_id, delivery, attempts, last_status, last_error, stored_at, delivered_at
                 FROM billing.console_deliveries WHERE reading_id = $1",
            )
            .bind(r)
            .fetch_optional(pool)
            .await?,
        ),
        None => (None, None),
    };
    let entered_by = sqlx::query_scalar(
        "SELECT login FROM audit WHERE subject = $1 AND action = 'paper_slip' LIMIT 1",
    )
    .bind(&message.message_id)
    .fetch_optional(pool)
    .await?;
    Ok(Some(Timeline {
        message,
        reading,
        superseded_by,
        reply,
        email,
        billing,
        entered_by,
    }))
}

async fn reading(pool: &PgPool, id: Uuid) -> Result<Option<Reading>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {READING_COLUMNS} FROM validator.console_readings WHERE reading_id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

async fn delivery(pool: &PgPool, key: &str) -> Result<Option<Delivery>, sqlx::Error> {
    sqlx::query_as(
        "SELECT key, channel, recipient, state, attempts, detail, created_at, updated_at, sent_at,
                report, report_detail, reported_at
         FROM notifier.console_deliveries WHERE key = $1",
    )
    .bind(key)
    .fetch_optional(pool)
    .await
}

pub async fn meters(pool: &PgPool, account: &str) -> Result<Vec<Meter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT account, meter, zones, digits, status, baseline_period, baseline_values
         FROM validator.console_registry WHERE account = $1 ORDER BY meter",
    )
    .bind(account)
    .fetch_all(pool)
    .await
}

/// An account's accepted readings from `since_period` on, newest first.
pub async fn readings_of_account(
    pool: &PgPool,
    account: &str,
    since_period: &str,
) -> Result<Vec<Reading>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {READING_COLUMNS} FROM validator.console_readings
         WHERE account = $1 AND period >= $2 ORDER BY period DESC, received_at DESC LIMIT $3"
    )))
    .bind(account)
    .bind(since_period)
    .bind(LIST_LIMIT)
    .fetch_all(pool)
    .await
}

/// The latest reading in force per meter of an account (any period).
pub async fn current_readings(pool: &PgPool, account: &str) -> Result<Vec<Reading>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT ON (meter) {READING_COLUMNS} FROM validator.console_readings
         WHERE account = $1 AND superseded_by IS NULL
         ORDER BY meter, period DESC, received_at DESC"
    )))
    .bind(account)
    .fetch_all(pool)
    .await
}
