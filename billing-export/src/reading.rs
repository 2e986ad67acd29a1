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
/// `std::env`, on purpose not a configuration setting); never set in production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Billing answered 2xx; nothing stored, nothing acked.
    AfterPost,
    /// The reading is stored as delivered; the message is not acked.
    AfterRecord,
}

impl CrashPoint {
    pub fn from_env() -> Option<Self> {
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

    /// Posts one reading and sorts billing's answer; the caller records it.
    async fn post(&self, billing: &Billing, reading: &ReadingAccepted, body: &[u8]) -> Attempt {
        let id = reading.reading_id;
        let span = tracing::info_span!("push", otel.name = "billing push", otel.kind = "client", reading_id = %id);
        let outcome = billing.post(id, body).instrument(span).await;
        if let PushOutcome::Delivered(_) = outcome {
            self.crash_if(CrashPoint::AfterPost, reading);
        }
        Attempt::from(outcome)
    }
}

/// One push attempt's answer, as recorded and as the consumer must act on it.
struct Attempt {
    delivery: Delivery,
    status: Option<u16>,
    error: Option<String>,
    result: PushResult,
}

impl From<PushOutcome> for Attempt {
    fn from(outcome: PushOutcome) -> Self {
        let (delivery, status, error, result) = match outcome {
            PushOutcome::Delivered(status) => (
                Delivery::Delivered,
                Some(status.as_u16()),
                None,
                PushResult::Delivered,
            ),
            PushOutcome::Conflict => (Delivery::Conflict, Some(409), None, PushResult::Conflict),
            PushOutcome::Retry { status, reason } => (
                Delivery::Pending,
                status.map(|s| s.as_u16()),
                Some(reason),
                PushResult::Retried,
            ),
            PushOutcome::Refused { status, reason } => (
                Delivery::Rejected,
                Some(status.as_u16()),
                Some(reason),
                PushResult::DeadLettered,
            ),
        };
        Attempt {
            delivery,
            status,
            error,
            result,
        }
    }
}

impl Attempt {
    /// What the consumer does with the message, given whether the outcome was stored.
    fn verdict(&self, recorded: Result<(), &str>) -> Result<(), HandlerError> {
        if let Err(e) = recorded {
            // Not stored: try again, whatever billing said (a reading billing has is
            // posted again and answered 409; one it refused is refused again, then
            // stored and dead-lettered), so no reading is missing from the exports.
            return Err(HandlerError::transient(anyhow::anyhow!(
                "storing the reading and billing's answer failed: {e}"
            )));
        }
        match self.result {
            PushResult::Delivered | PushResult::Conflict | PushResult::AlreadyDelivered => Ok(()),
            PushResult::Retried => Err(HandlerError::transient(anyhow::anyhow!(
                "{}",
                self.error
                    .as_deref()
                    .unwrap_or("billing cannot take it now")
            ))),
            PushResult::DeadLettered => Err(HandlerError::permanent(anyhow::anyhow!(
                "{}",
                self.error
                    .as_deref()
                    .unwrap_or("billing refused the reading")
            ))),
        }
    }
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
            let stored = store::store(&self.pool, &outcomes).await;
            for (i, _) in &readings {
                results[*i] = Some(match &stored {
                    Ok(()) => Ok(()),
                    Err(e) => Err(HandlerError::transient(anyhow::anyhow!(
                        "storing the reading: {e}"
                    ))),
                });
            }
            return outcomes_or_retry(results);
        };
        let ids: Vec<uuid::Uuid> = firsts.iter().map(|&k| readings[k].1.reading_id).collect();
        let known = match store::states(&self.pool, &ids).await {
            Ok(known) => known,
            Err(e) => {
                let reason = format!("{e}");
                for (i, _) in &readings {
                    results[*i] = Some(Err(HandlerError::transient(anyhow::anyhow!(
                        "looking up the reading: {reason}"
                    ))));
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
                let attempt = self
                    .post(billing, reading, &msg.body)
                    .instrument(msg.span.clone())
                    .await;
                (k, attempt)
            });
        }
        let attempts: Vec<(usize, Attempt)> = futures::stream::iter(posts)
            .buffer_unordered(POSTS_IN_FLIGHT)
            .collect()
            .await;
        let outcomes: Vec<store::Outcome<'_>> = attempts
            .iter()
            .map(|(k, a)| store::Outcome {
                reading: &readings[*k].1,
                delivery: a.delivery,
                attempted: true,
                status: a.status,
                error: a.error.as_deref(),
            })
            .collect();
        let recorded = store::store(&self.pool, &outcomes).await;
        let recorded = recorded.as_ref().map(|_| ()).map_err(|e| format!("{e}"));
        for (k, attempt) in &attempts {
            let reading = &readings[*k].1;
            if attempt.delivery.is_delivered() && recorded.is_ok() {
                self.crash_if(CrashPoint::AfterRecord, reading);
                tracing::info!(reading_id = %reading.reading_id, delivery = attempt.delivery.as_str(), "reading delivered to billing");
            }
            self.metrics.push(attempt.result);
            // Every message of the batch carrying this reading shares its fate.
            for (i, r) in &readings {
                if r.reading_id == reading.reading_id && results[*i].is_none() {
                    results[*i] = Some(
                        attempt.verdict(recorded.as_ref().map(|_| ()).map_err(String::as_str)),
                    );
                }
            }
        }
        outcomes_or_retry(results)
    }
}
