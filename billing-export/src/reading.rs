//! One `reading.accepted` delivery: unless the reading is recorded as delivered
//! already, post it to billing, then store it (once, by `reading_id`) with billing's
//! answer — one statement, one commit — before the consumer loop acks.
//!
//! Exactly-once in effect: a crash after billing's 2xx but before the ack makes the
//! broker redeliver; if the outcome was stored, the stored state stops a second
//! POST; if the crash came before the store, the second POST carries the same
//! `Idempotency-Key` and billing answers 409, which counts as delivered. A reading is
//! stored whatever billing answered (a failed push as `pending`), so the exports have
//! it while billing is down.

use std::sync::Arc;

use futures::StreamExt;
use shared::consumer::{BatchHandler, HandlerError, Incoming, outcomes_or_retry};
use shared::events::{Event, ReadingAccepted};
use sqlx::PgPool;
use tracing::Instrument;

use crate::metrics::{BillingMetrics, PushResult};
use crate::push::{Billing, PushOutcome};
use crate::store::{self, Delivery};

/// Test hook for crash drills: the process aborts at this point of a successful
/// push, as `kill -9` would. Read from `BILLING_EXPORT_CRASH_AT` by `run` (with
/// `std::env`, on purpose not a configuration setting), and only in a build with the
/// `crash-hooks` feature: a release image ignores the variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Billing answered 2xx; nothing stored, nothing acked.
    AfterPost,
    /// The reading is stored as delivered; the message is not acked.
    AfterRecord,
}

impl CrashPoint {
    pub fn from_env() -> Option<Self> {
        if !cfg!(feature = "crash-hooks") {
            return None;
        }
        match std::env::var("BILLING_EXPORT_CRASH_AT").ok()?.as_str() {
            "after_post" => Some(CrashPoint::AfterPost),
            "after_record" => Some(CrashPoint::AfterRecord),
            _ => None,
        }
    }
}

/// The `reading.accepted` handler.
pub struct ReadingHandler {
    pub pool: PgPool,
    /// `None` without `BILLING_URL`: readings are stored, not pushed.
    pub billing: Option<Billing>,
    pub metrics: BillingMetrics,
    pub crash: Option<CrashPoint>,
}

impl ReadingHandler {
    fn crash_if(&self, point: CrashPoint, reading: &ReadingAccepted) {
        if self.crash == Some(point) {
            tracing::error!(reading_id = %reading.reading_id, ?point, "BILLING_EXPORT_CRASH_AT: aborting");
            std::process::abort();
        }
    }

    /// Posts one reading; the caller records billing's answer.
    async fn post(&self, billing: &Billing, reading: &ReadingAccepted, body: &[u8]) -> PushOutcome {
        let id = reading.reading_id;
        let span = tracing::info_span!("push", otel.name = "billing push", otel.kind = "client", reading_id = %id);
        let outcome = billing.post(id, body).instrument(span).await;
        match &outcome {
            PushOutcome::Delivered(_) => self.crash_if(CrashPoint::AfterPost, reading),
            PushOutcome::Retry(f) if f.credentials_refused() => {
                self.metrics.credentials_refused();
                tracing::error!(reading_id = %id, error = %f,
                    "billing refuses our credentials: BILLING_TOKEN is wrong or was rotated on billing's side; fix the Secret and roll billing-export (docs/operations.md, Rotating secrets). The reading is retried until billing accepts it");
            }
            _ => {}
        }
        outcome
    }
}

/// What the consumer does with a message whose push ended as `outcome`, given whether
/// the outcome was stored.
fn verdict(
    outcome: &PushOutcome,
    recorded: &Result<(), Arc<sqlx::Error>>,
) -> Result<(), HandlerError> {
    if let Err(e) = recorded {
        // Not stored: try again, whatever billing said (a reading billing has is
        // posted again and answered 409; one it refused is refused again, then
        // stored and dead-lettered), so no reading is missing from the exports.
        return Err(HandlerError::Transient(
            anyhow::Error::new(Arc::clone(e))
                .context("storing the reading and billing's answer failed"),
        ));
    }
    outcome.verdict()
}

/// Readings posted to billing at once, per batch.
const POSTS_IN_FLIGHT: usize = 16;

/// The message's `reading.accepted`, or why it can never be processed.
fn decode(msg: &Incoming) -> Result<ReadingAccepted, HandlerError> {
    match Event::from_json(&msg.body) {
        Ok(Event::ReadingAccepted(r)) => Ok(r),
        Ok(other) => Err(HandlerError::permanent(anyhow::anyhow!(
            "expected reading.accepted, got {}",
            other.routing_key()
        ))),
        Err(e) => Err(HandlerError::permanent(
            anyhow::Error::new(e).context("undecodable reading.accepted"),
        )),
    }
}

impl BatchHandler for ReadingHandler {
    /// Looks up the batch's readings (one statement), posts those not yet delivered
    /// (each reading once, however often it is in the batch), stores every reading
    /// with its answer (one statement), then lets the consumer ack.
    async fn handle_batch(&self, msgs: &[Incoming]) -> Vec<Result<(), HandlerError>> {
        let mut results: Vec<Option<Result<(), HandlerError>>> =
            msgs.iter().map(|_| None).collect();
        let mut readings: Vec<(usize, ReadingAccepted)> = Vec::with_capacity(msgs.len());
        for (i, msg) in msgs.iter().enumerate() {
            match decode(msg).and_then(|r| match store::checked_values(&r) {
                Ok(_) => Ok(r),
                Err(why) => Err(HandlerError::permanent(anyhow::anyhow!(
                    "reading {}: {why}",
                    r.reading_id
                ))),
            }) {
                Ok(r) => readings.push((i, r)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        // Each reading once: the index (in `readings`) of its first message.
        let mut firsts: Vec<usize> = Vec::new();
        for (k, (_, reading)) in readings.iter().enumerate() {
            if !firsts
                .iter()
                .any(|&f| readings[f].1.reading_id == reading.reading_id)
            {
                firsts.push(k);
            }
        }
        let Some(billing) = &self.billing else {
            let outcomes: Vec<store::Outcome<'_>> = firsts
                .iter()
                .map(|&k| store::Outcome {
                    reading: &readings[k].1,
                    delivery: Delivery::NotPushed,
                    attempted: false,
                    status: None,
                    error: None,
                })
                .collect();
            let stored = store::store(&self.pool, &outcomes).await.map_err(Arc::new);
            for (i, _) in &readings {
                results[*i] = Some(match &stored {
                    Ok(()) => Ok(()),
                    Err(e) => Err(HandlerError::Transient(
                        anyhow::Error::new(Arc::clone(e)).context("storing the reading"),
                    )),
                });
            }
            return outcomes_or_retry(results);
        };
        let ids: Vec<uuid::Uuid> = firsts.iter().map(|&k| readings[k].1.reading_id).collect();
        let known = match store::states(&self.pool, &ids).await {
            Ok(known) => known,
            Err(e) => {
                let e = Arc::new(e);
                for (i, _) in &readings {
                    results[*i] = Some(Err(HandlerError::Transient(
                        anyhow::Error::new(Arc::clone(&e)).context("looking up the reading"),
                    )));
                }
                return outcomes_or_retry(results);
            }
        };
        let mut to_post: Vec<usize> = Vec::with_capacity(firsts.len());
        for &k in &firsts {
            let reading = &readings[k].1;
            if known
                .get(&reading.reading_id)
                .is_some_and(|d| d.is_delivered())
            {
                tracing::info!(reading_id = %reading.reading_id, "already delivered to billing; not posting again");
                self.metrics.push(PushResult::AlreadyDelivered);
                for (i, r) in &readings {
                    if r.reading_id == reading.reading_id {
                        results[*i] = Some(Ok(()));
                    }
                }
            } else {
                to_post.push(k);
            }
        }
        let mut posts = Vec::with_capacity(to_post.len());
        for &k in &to_post {
            let (i, reading) = &readings[k];
            let msg = &msgs[*i];
            posts.push(async move {
                let outcome = self
                    .post(billing, reading, &msg.body)
                    .instrument(msg.span.clone())
                    .await;
                (k, outcome)
            });
        }
        let pushed: Vec<(usize, PushOutcome)> = futures::stream::iter(posts)
            .buffer_unordered(POSTS_IN_FLIGHT)
            .collect()
            .await;
        let details: Vec<Option<String>> = pushed
            .iter()
            .map(|(_, o)| o.failure().map(|f| f.detail()))
            .collect();
        let outcomes: Vec<store::Outcome<'_>> = pushed
            .iter()
            .zip(&details)
            .map(|((k, o), detail)| store::Outcome {
                reading: &readings[*k].1,
                delivery: o.delivery(),
                attempted: true,
                status: o.status().map(|s| s.as_u16()),
                error: detail.as_deref(),
            })
            .collect();
        let recorded = store::store(&self.pool, &outcomes).await.map_err(Arc::new);
        for (k, outcome) in &pushed {
            let reading = &readings[*k].1;
            let delivery = outcome.delivery();
            if delivery.is_delivered() && recorded.is_ok() {
                self.crash_if(CrashPoint::AfterRecord, reading);
                tracing::info!(reading_id = %reading.reading_id, delivery = delivery.as_str(), "reading delivered to billing");
            }
            self.metrics.push(outcome.result());
            // Every message of the batch carrying this reading shares its fate.
            for (i, r) in &readings {
                if r.reading_id == reading.reading_id && results[*i].is_none() {
                    results[*i] = Some(verdict(outcome, &recorded));
                }
            }
        }
        outcomes_or_retry(results)
    }
}
