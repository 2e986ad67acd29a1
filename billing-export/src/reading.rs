//! One `reading.accepted` delivery: store the reading (once, by `reading_id`), then,
//! unless it is already delivered, post it to billing and record the answer before
//! the consumer loop acks.
//!
//! Exactly-once in effect: a crash after billing's 2xx but before the ack makes the
//! broker redeliver; if the outcome was recorded, the stored state stops a second
//! POST; if the crash came before the record, the second POST carries the same
//! `Idempotency-Key` and billing answers 409, which counts as delivered.

use futures::StreamExt;
use shared::consumer::{BatchHandler, HandlerError, Incoming, outcomes_or_retry};
use shared::events::{Event, ReadingAccepted};
use sqlx::PgPool;
use tracing::Instrument;

use crate::metrics::{BillingMetrics, PushResult};
use crate::push::{Billing, PushOutcome};
use crate::store::{self, Delivery, StoreError};

/// Test hook for crash drills: the process aborts at this point of a successful
/// push, as `kill -9` would. Read from `BILLING_EXPORT_CRASH_AT` by `run` (with
/// `std::env`, on purpose not a configuration setting); never set in production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Billing answered 2xx; nothing recorded, nothing acked.
    AfterPost,
    /// The delivery is recorded; the message is not acked.
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
    /// What the consumer does with the message, given whether the record was written.
    fn verdict(&self, recorded: Result<(), &str>) -> Result<(), HandlerError> {
        if let Err(e) = recorded {
            if self.delivery.is_delivered() {
                // Billing has the reading but we could not write that down: the retry
                // posts again, and billing answers 409 for the known key.
                return Err(HandlerError::transient(anyhow::anyhow!(
                    "billing has the reading, but recording it failed: {e}"
                )));
            }
            // Not delivered anyway: the broker's retry or dead letter is what counts.
            tracing::warn!(error = %e, "could not record a failed push");
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
    /// Stores the batch's readings in one statement, posts those not yet delivered
    /// (each reading once, however often it is in the batch), records every answer
    /// in one statement, then lets the consumer ack.
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
        let initial = if self.billing.is_some() {
            Delivery::Pending
        } else {
            Delivery::NotPushed
        };
        let stored: Vec<&ReadingAccepted> = readings.iter().map(|(_, r)| r).collect();
        let states = match store::store_many(&self.pool, &stored, initial).await {
            Ok(states) => states,
            Err(e) => {
                let reason = format!("{e}");
                for (i, _) in &readings {
                    results[*i] = Some(Err(HandlerError::transient(anyhow::anyhow!(
                        "storing the reading: {reason}"
                    ))));
                }
                return outcomes_or_retry(results);
            }
        };
        // Each reading to post, once: the index of its first message in the batch.
        let mut to_post: Vec<usize> = Vec::new();
        for (k, (i, reading)) in readings.iter().enumerate() {
            match states.get(&reading.reading_id) {
                // A concurrent copy being stored by another consumer: ask again later.
                None => {
                    results[*i] = Some(Err(HandlerError::transient(anyhow::anyhow!(
                        "{}",
                        StoreError::Concurrent
                    ))))
                }
                Some(_) if self.billing.is_none() => results[*i] = Some(Ok(())),
                Some(state) if state.is_delivered() => {
                    tracing::info!(reading_id = %reading.reading_id, "already delivered to billing; not posting again");
                    self.metrics.push(PushResult::AlreadyDelivered);
                    results[*i] = Some(Ok(()));
                }
                Some(_) => {
                    if !to_post
                        .iter()
                        .any(|&p| readings[p].1.reading_id == reading.reading_id)
                    {
                        to_post.push(k);
                    }
                }
            }
        }
        let Some(billing) = &self.billing else {
            return outcomes_or_retry(results);
        };
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
        let records: Vec<store::AttemptRecord<'_>> = attempts
            .iter()
            .map(|(k, a)| store::AttemptRecord {
                reading_id: readings[*k].1.reading_id,
                delivery: a.delivery,
                status: a.status,
                error: a.error.as_deref(),
            })
            .collect();
        let recorded = store::record_attempts(&self.pool, &records).await;
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
