//! Dead letters (SPEC §4.8, supervisors): what lies in each `<queue>.dead`
//! (`shared::topology`), why and when it failed, and the re-queue.
//!
//! A letter is read with `basic.get` without ack and returned when the channel
//! closes: a look changes nothing but the order of the dead queue. A re-queue
//! publishes the letter to its own queue (the default exchange, by the queue's name:
//! only the consumer that failed gets it again, not every consumer of
//! `meter.events`), awaits the broker's confirm, then acks the dead copy, inside a
//! transaction that records the letter's key in `console.requeued`. A second click,
//! another tab or another replica finds the key (or no longer finds the letter) and
//! re-queues nothing. Each re-queued copy carries a new `x-requeue-id`, so if it dies
//! again it is a new letter with a new key. A crash between the confirm and the ack
//! leaves the letter in the dead queue as well: re-queued again, the consumers'
//! idempotency by message id keeps it to one effect.

use std::time::Duration;

use chrono::{DateTime, TimeZone as _, Utc};
use lapin::options::{BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use shared::broker::{close_quietly, header_int};
use shared::consumer::{ATTEMPT_HEADER, ERROR_HEADER, FAILED_AT_HEADER, ROUTING_KEY_HEADER};
use shared::topology::{QueueSpec, system_queues};
use shared::tracecontext::header_str;
use sqlx::PgPool;

/// Letters read from one dead queue at most (the page shows the oldest this many).
pub const READ_LIMIT: usize = 500;
/// The header a re-queued copy carries: a fresh id per re-queue.
pub const REQUEUE_HEADER: &str = "x-requeue-id";
/// Time allowed for the broker to answer one step.
const BROKER_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum DeadError {
    #[error("the broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker did not answer in time")]
    Timeout,
    #[error("the re-queued copy: {0}")]
    NotConfirmed(#[source] shared::broker::PublishError),
    #[error("the database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("no such queue: {0}")]
    UnknownQueue(String),
}

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct Letter {
    /// Stable for this letter, new for a re-queued copy that died again.
    pub key: String,
    pub message_id: Option<String>,
    pub routing_key: Option<String>,
    /// Why: the consumer's last error, or the broker's reason (`x-death`).
    pub error: Option<String>,
    pub attempts: Option<i64>,
    /// When it failed, where known.
    pub failed_at: Option<DateTime<Utc>>,
    /// The body, as text (it is JSON).
    pub body: String,
}

/// The consumer queues whose dead letters the console shows.
pub fn queues() -> Vec<QueueSpec> {
    system_queues()
}

fn spec(queue: &str) -> Result<QueueSpec, DeadError> {
    queues()
        .into_iter()
        .find(|q| q.name == queue)
        .ok_or_else(|| DeadError::UnknownQueue(queue.chars().take(64).collect()))
}

async fn timed<T, E: Into<DeadError>>(
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, DeadError> {
    tokio::time::timeout(BROKER_TIMEOUT, f)
        .await
        .map_err(|_| DeadError::Timeout)?
        .map_err(Into::into)
}

async fn open(url: &str) -> Result<(Connection, Channel), DeadError> {
    let conn = timed(shared::broker::connect(
        url,
        "console-dead-letters",
        &queues(),
    ))
    .await?;
    let channel = timed(conn.create_channel()).await?;
    Ok((conn, channel))
}

async fn close(conn: Connection, channel: Channel) {
    close_quietly(channel.close(200, "done".into())).await;
    close_quietly(conn.close(200, "done".into())).await;
}

/// Letters in each dead queue: (queue, count).
pub async fn depths(url: &str) -> Result<Vec<(String, u32)>, DeadError> {
    let (conn, channel) = open(url).await?;
    let mut out = Vec::new();
    for q in queues() {
        let dead = q.dead_letter_queue();
        let declared = timed(channel.queue_declare(
            dead.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        ))
        .await?;
        out.push((q.name.clone(), declared.message_count()));
    }
    close(conn, channel).await;
    Ok(out)
}

fn letter(queue: &str, delivery: &lapin::message::BasicGetMessage) -> Letter {
    let empty = FieldTable::default();
    let props = &delivery.delivery.properties;
    let headers = props.headers().as_ref().unwrap_or(&empty);
    let message_id = props.message_id().as_ref().map(|m| m.as_str().to_owned());
    let death = first_death(headers);
    let error = header_str(headers, ERROR_HEADER)
        .map(str::to_owned)
        .or_else(|| death.as_ref().and_then(|d| d.0.clone()));
    let failed_at = header_int(headers, FAILED_AT_HEADER)
        .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
        .or_else(|| death.and_then(|d| d.1));
    let body = String::from_utf8_lossy(&delivery.delivery.data).into_owned();
    let mut hash = Sha256::new();
    for part in [
        queue,
        message_id.as_deref().unwrap_or(""),
        header_str(headers, REQUEUE_HEADER).unwrap_or(""),
        &header_int(headers, ATTEMPT_HEADER).unwrap_or(0).to_string(),
        error.as_deref().unwrap_or(""),
        &failed_at
            .map(|t| t.timestamp_millis())
            .unwrap_or(0)
            .to_string(),
        &body,
    ] {
        hash.update(part.as_bytes());
        hash.update([0u8]);
    }
    let key = hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Letter {
        key,
        message_id,
        routing_key: header_str(headers, ROUTING_KEY_HEADER).map(str::to_owned),
        error,
        attempts: header_int(headers, ATTEMPT_HEADER),
        failed_at,
        body,
    }
}

/// The broker's own dead-lettering (a delivery limit reached): `x-death`'s first
/// entry, its reason and time.
fn first_death(headers: &FieldTable) -> Option<(Option<String>, Option<DateTime<Utc>>)> {
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    let reason = header_str(first, "reason").map(|r| format!("брокер: {r}"));
    let time = match first.inner().get("time") {
        Some(AMQPValue::Timestamp(t)) => Utc.timestamp_opt(*t as i64, 0).single(),
        _ => None,
    };
    Some((reason, time))
}

/// Reads up to [`READ_LIMIT`] letters of `queue`'s dead queue, oldest first, and
/// leaves them there.
pub async fn list(url: &str, queue: &str) -> Result<Vec<Letter>, DeadError> {
    let spec = spec(queue)?;
    let (conn, channel) = open(url).await?;
    let result = read(&channel, &spec, |_| false, |_, _| async { Ok(false) }).await;
    close(conn, channel).await;
    result.map(|(letters, _)| letters)
}

/// Re-queues the letter with `key`, or every letter when `key` is `None`. Returns the
/// letters re-queued now (not those another click already took).
pub async fn requeue(
    url: &str,
    pool: &PgPool,
    queue: &str,
    key: Option<&str>,
    login: &str,
) -> Result<Vec<Letter>, DeadError> {
    let spec = spec(queue)?;
    let (conn, channel) = open(url).await?;
    timed(channel.confirm_select(ConfirmSelectOptions::default())).await?;
    let wanted = |l: &Letter| key.is_none_or(|k| k == l.key);
    let result = read(&channel, &spec, wanted, |letter, delivery| {
        let channel = channel.clone();
        let spec = spec.clone();
        let pool = pool.clone();
        let login = login.to_owned();
        async move { send_back(&channel, &pool, &spec, &letter, delivery, &login).await }
    })
    .await;
    close(conn, channel).await;
    result.map(|(_, taken)| taken)
}

/// Reads the dead queue; each letter `wanted` is handed to `act`, which returns
/// whether it took it (acked). What is left unacked returns to the queue when the
/// channel closes.
async fn read<W, A, Fut>(
    channel: &Channel,
    spec: &QueueSpec,
    wanted: W,
    act: A,
) -> Result<(Vec<Letter>, Vec<Letter>), DeadError>
where
    W: Fn(&Letter) -> bool,
    A: Fn(Letter, lapin::message::BasicGetMessage) -> Fut,
    Fut: std::future::Future<Output = Result<bool, DeadError>>,
{
    let dead = spec.dead_letter_queue();
    let mut seen = Vec::new();
    let mut taken = Vec::new();
    while seen.len() < READ_LIMIT {
        let got = timed(channel.basic_get(dead.as_str().into(), BasicGetOptions { no_ack: false }))
            .await?;
        let Some(delivery) = got else { break };
        let letter = letter(&spec.name, &delivery);
        seen.push(letter.clone());
        if wanted(&letter) && act(letter.clone(), delivery).await? {
            taken.push(letter);
        }
    }
    Ok((seen, taken))
}

async fn send_back(
    channel: &Channel,
    pool: &PgPool,
    spec: &QueueSpec,
    letter: &Letter,
    delivery: lapin::message::BasicGetMessage,
    login: &str,
) -> Result<bool, DeadError> {
    let mut tx = pool.begin().await?;
    let fresh = sqlx::query(
        "INSERT INTO requeued (key, queue, message_id, login) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO NOTHING",
    )
    .bind(&letter.key)
    .bind(&spec.name)
    .bind(letter.message_id.as_deref().unwrap_or(""))
    .bind(login)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        return Ok(false);
    }
    let props = delivery.delivery.properties.clone();
    let mut headers: std::collections::BTreeMap<_, _> = props
        .headers()
        .as_ref()
        .map(|h| h.inner().clone())
        .unwrap_or_default();
    // A fresh start: the consumer's attempts count again from one.
    headers.remove(ATTEMPT_HEADER);
    headers.remove("x-death");
    headers.insert(
        REQUEUE_HEADER.into(),
        AMQPValue::LongString(uuid::Uuid::new_v4().to_string().into()),
    );
    let props = props.with_headers(headers.into()).with_delivery_mode(2);
    shared::broker::publish_confirmed(
        channel,
        "",
        &spec.name,
        &delivery.delivery.data,
        props,
        BROKER_TIMEOUT,
    )
    .await
    .map_err(DeadError::NotConfirmed)?;
    timed(delivery.delivery.acker.ack(BasicAckOptions::default())).await?;
    tx.commit().await?;
    Ok(true)
}
