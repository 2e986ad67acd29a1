//! The transactional outbox: events are written to `outbox` in the transaction that
//! stores the outcome, and a relay publishes them to RabbitMQ with confirms, deleting
//! each row only after the broker confirmed it. A crash between commit and publish
//! leaves the row, and the relay publishes it on restart; a crash after the confirm
//! but before the delete publishes it again (consumers are idempotent by id).

use std::time::Duration;

use futures::future::join_all;
use lapin::types::{AMQPValue, FieldTable};
use shared::broker::Publisher;
use shared::events::{EXCHANGE, Event};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Rows published per round: one batch of pipelined confirms.
const BATCH: i64 = 500;

/// Adds an event to the outbox inside the caller's transaction.
pub async fn enqueue(tx: &mut PgConnection, event: &Event) -> Result<(), sqlx::Error> {
    let body = String::from_utf8(event.to_json()).unwrap_or_default();
    sqlx::query(
        "INSERT INTO outbox (routing_key, message_id, body, traceparent) VALUES ($1, $2, $3, $4)",
    )
    .bind(event.routing_key())
    .bind(event.message_id())
    .bind(body)
    .bind(shared::tracecontext::current_traceparent())
    .execute(tx)
    .await?;
    Ok(())
}

/// Publishes the outbox until `shutdown`, woken by `wake` after each commit and every
/// second otherwise (rows left by a crashed replica, or a broker outage).
pub async fn relay(
    pool: PgPool,
    publisher: Publisher,
    wake: std::sync::Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        match drain(&pool, &publisher).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %format!("{e:#}"), "outbox relay paused"),
        }
        if shutdown.is_cancelled() {
            break;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    // One last round for what the final messages committed.
    if let Err(e) = drain(&pool, &publisher).await {
        tracing::warn!(error = %format!("{e:#}"), "outbox not fully drained at shutdown; the next start publishes the rest");
    }
}

/// Publishes everything in the outbox now; returns how many rows were published.
pub async fn drain(pool: &PgPool, publisher: &Publisher) -> anyhow::Result<u64> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        // SKIP LOCKED: several replicas relay side by side without publishing a row twice.
        let rows: Vec<(i64, String, String, String, Option<String>)> = sqlx::query_as(
            "SELECT id, routing_key, message_id, body, traceparent FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(total);
        }
        let publishes = rows
            .iter()
            .map(|(id, key, message_id, body, traceparent)| async move {
                let mut headers = FieldTable::default();
                if let Some(tp) = traceparent {
                    headers.insert(
                        "traceparent".into(),
                        AMQPValue::LongString(tp.as_str().into()),
                    );
                }
                let result = publisher
                    .publish_to(EXCHANGE, key, body.as_bytes(), message_id, headers)
                    .await;
                (*id, result)
            });
        let results = join_all(publishes).await;
        let confirmed: Vec<i64> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(id, _)| *id)
            .collect();
        let failed = results.into_iter().find_map(|(_, r)| r.err());
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
