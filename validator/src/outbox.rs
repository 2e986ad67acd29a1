//! The transactional outbox: events are written to `outbox` in the transaction that
//! stores the outcome, so an event exists if and only if its outcome was committed.
//!
//! After the commit the handler hands the events (with their row ids) to the relay,
//! which publishes them from memory with pipelined confirms and then deletes their
//! rows: the database sees the insert and the delete, nothing else. Rows older than
//! [`ADOPT_AFTER`] are everybody's: a sweep publishes what a crash, a broker outage or
//! a failed delete left behind (several replicas sweep side by side without taking
//! one row twice: `FOR UPDATE SKIP LOCKED`). Every path may publish a row twice (a
//! crash between the confirm and the delete, a sweep that overtakes a slow relay);
//! consumers are idempotent by id, and no path publishes a row never.

use std::time::Duration;

use futures::future::join_all;
use lapin::types::{AMQPValue, FieldTable};
use shared::broker::Publisher;
use shared::events::{EXCHANGE, Event};
use sqlx::{PgConnection, PgPool};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Rows the sweep publishes per round: one batch of pipelined confirms.
const SWEEP_BATCH: i64 = 500;
/// Events the relay publishes per round at most (the hand-overs waiting are joined).
const ROUND: usize = 1000;
/// Hand-overs waiting for the relay before a handler waits too (back-pressure).
const HANDOFF_CAPACITY: usize = 64;
/// From this age a row is the sweep's: its committer had time to publish it.
pub const ADOPT_AFTER: Duration = Duration::from_secs(5);
/// How often the sweep looks for such rows.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// An event committed to the outbox, waiting to be published.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub routing_key: String,
    pub message_id: String,
    pub body: String,
    pub traceparent: Option<String>,
    /// The notifier has nothing to do with it ([`shared::topology::routing_headers`]).
    /// Not stored: a row the sweep publishes goes to the notifier too, which ignores it.
    pub skip_notifier: bool,
}

impl Pending {
    fn headers(&self) -> FieldTable {
        let mut headers = FieldTable::default();
        if let Some(tp) = &self.traceparent {
            headers.insert(
                shared::tracecontext::TRACEPARENT.into(),
                AMQPValue::LongString(tp.as_str().into()),
            );
        }
        if self.skip_notifier {
            shared::topology::mark_skip(&mut headers, shared::topology::NOTIFIER_QUEUE);
        }
        headers
    }
}

/// One event for [`enqueue`]: the event and the trace it belongs to.
pub struct Outgoing {
    pub event: Event,
    pub traceparent: Option<String>,
}

impl Outgoing {
    /// The event, in the current span's trace.
    pub fn current(event: Event) -> Outgoing {
        Outgoing {
            event,
            traceparent: shared::tracecontext::current_traceparent(),
        }
    }
}

/// Adds events to the outbox inside the caller's transaction; returns them as rows to
/// hand to the relay once the transaction has committed.
pub async fn enqueue(
    tx: &mut PgConnection,
    events: &[Outgoing],
) -> Result<Vec<Pending>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut pending: Vec<Pending> = events
        .iter()
        .map(|o| Pending {
            id: 0,
            routing_key: o.event.routing_key().to_owned(),
            message_id: o.event.message_id().to_owned(),
            body: String::from_utf8(o.event.to_json()).unwrap_or_default(),
            traceparent: o.traceparent.clone(),
            skip_notifier: shared::topology::nothing_for_notifier(&o.event),
        })
        .collect();
    let keys: Vec<&str> = pending.iter().map(|p| p.routing_key.as_str()).collect();
    let ids: Vec<&str> = pending.iter().map(|p| p.message_id.as_str()).collect();
    let bodies: Vec<&str> = pending.iter().map(|p| p.body.as_str()).collect();
    let traces: Vec<Option<&str>> = pending.iter().map(|p| p.traceparent.as_deref()).collect();
    #[derive(sqlx::FromRow)]
    struct Inserted {
        id: i64,
        message_id: String,
    }
    let rows: Vec<Inserted> = sqlx::query_as(
        "INSERT INTO outbox (routing_key, message_id, body, traceparent)
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[])
         RETURNING id, message_id",
    )
    .bind(&keys)
    .bind(&ids)
    .bind(&bodies)
    .bind(&traces)
    .fetch_all(&mut *tx)
    .await?;
    // The rows come back in the order given (PostgreSQL inserts an unnest in order);
    // should they ever not, the events are left to the sweep rather than guessed at.
    let in_order = rows.len() == pending.len()
        && rows
            .iter()
            .zip(&pending)
            .all(|(row, p)| row.message_id == p.message_id);
    if !in_order {
        tracing::warn!(
            events = pending.len(),
            "outbox ids came back out of order; the sweep publishes these events"
        );
        return Ok(Vec::new());
    }
    for (row, p) in rows.into_iter().zip(&mut pending) {
        p.id = row.id;
    }
    Ok(pending)
}

/// The handlers' side of the relay: committed events go in here.
#[derive(Clone)]
pub struct Handoff(mpsc::Sender<Vec<Pending>>);

impl Handoff {
    /// Hands committed events to the relay; waits while it is [`HANDOFF_CAPACITY`]
    /// hand-overs behind. If the relay is gone the rows stay for the sweep.
    pub async fn hand_over(&self, pending: Vec<Pending>) {
        if !pending.is_empty() {
            let _ = self.0.send(pending).await;
        }
    }
}

/// A hand-off and the relay's end of it.
pub fn handoff() -> (Handoff, mpsc::Receiver<Vec<Pending>>) {
    let (tx, rx) = mpsc::channel(HANDOFF_CAPACITY);
    (Handoff(tx), rx)
}

/// Publishes what is handed over, and sweeps rows older than [`ADOPT_AFTER`] every
/// [`SWEEP_EVERY`], until `shutdown`; then publishes what is still handed over.
pub async fn relay(
    pool: PgPool,
    publisher: Publisher,
    mut committed: mpsc::Receiver<Vec<Pending>>,
    shutdown: CancellationToken,
) {
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            handed = committed.recv() => {
                let Some(mut round) = handed else { break };
                while round.len() < ROUND {
                    match committed.try_recv() {
                        Ok(more) => round.extend(more),
                        Err(_) => break,
                    }
                }
                publish_committed(&pool, &publisher, round).await;
            }
            _ = sweep.tick() => {
                if let Err(e) = sweep_old(&pool, &publisher, ADOPT_AFTER).await {
                    tracing::warn!(error = %format!("{e:#}"), "outbox sweep paused");
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    // The handlers have stopped: what they committed is all here.
    committed.close();
    let mut rest = Vec::new();
    while let Some(more) = committed.recv().await {
        rest.extend(more);
    }
    if !rest.is_empty() {
        publish_committed(&pool, &publisher, rest).await;
    }
}

/// Publishes handed-over events, then deletes the rows of those the broker confirmed.
/// What fails stays in the outbox for the sweep.
async fn publish_committed(pool: &PgPool, publisher: &Publisher, round: Vec<Pending>) {
    let (confirmed, failed) = publish(publisher, &round).await;
    if let Some(e) = failed {
        tracing::warn!(
            error = %format!("{e:#}"),
            unpublished = round.len() - confirmed.len(),
            "publishing events failed; the outbox sweep retries them"
        );
    }
    if confirmed.is_empty() {
        return;
    }
    if let Err(e) = sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
        .bind(&confirmed)
        .execute(pool)
        .await
    {
        tracing::warn!(error = %e, rows = confirmed.len(), "deleting published outbox rows failed; the sweep publishes them again");
    }
}

/// Publishes `rows` with pipelined confirms; the ids confirmed and the first failure.
async fn publish(
    publisher: &Publisher,
    rows: &[Pending],
) -> (Vec<i64>, Option<shared::broker::PublishError>) {
    let results = join_all(rows.iter().map(|p| async move {
        let result = publisher
            .publish_to(
                EXCHANGE,
                &p.routing_key,
                p.body.as_bytes(),
                &p.message_id,
                p.headers(),
            )
            .await;
        (p.id, result)
    }))
    .await;
    let mut confirmed = Vec::with_capacity(results.len());
    let mut failed = None;
    for (id, result) in results {
        match result {
            Ok(()) => confirmed.push(id),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    (confirmed, failed)
}

/// An `outbox` row as the sweep reads it.
#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    routing_key: String,
    message_id: String,
    body: String,
    traceparent: Option<String>,
}

/// Publishes every row at least `age` old; returns how many were published.
pub async fn sweep_old(pool: &PgPool, publisher: &Publisher, age: Duration) -> anyhow::Result<u64> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(
            "SELECT id, routing_key, message_id, body, traceparent FROM outbox
             WHERE created_at <= now() - make_interval(secs => $2)
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(SWEEP_BATCH)
        .bind(age.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(total);
        }
        let rows: Vec<Pending> = rows
            .into_iter()
            .map(|row| Pending {
                id: row.id,
                routing_key: row.routing_key,
                message_id: row.message_id,
                body: row.body,
                traceparent: row.traceparent,
                skip_notifier: false,
            })
            .collect();
        let (confirmed, failed) = publish(publisher, &rows).await;
        sqlx::query("DELETE FROM outbox WHERE id = ANY($1)")
            .bind(&confirmed)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        total += confirmed.len() as u64;
        if let Some(e) = failed {
            return Err(anyhow::Error::new(e).context("publishing the outbox"));
        }
    }
}
