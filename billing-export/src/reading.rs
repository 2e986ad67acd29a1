//! One `reading.accepted` delivery: store the reading (once, by `reading_id`), then,
//! unless it is already delivered, post it to billing and record the answer before
//! the consumer loop acks.
//!
//! Exactly-once in effect: a crash after billing's 2xx but before the ack makes the
//! broker redeliver; if the outcome was recorded, the stored state stops a second
//! POST; if the crash came before the record, the second POST carries the same
//! `Idempotency-Key` and billing answers 409, which counts as delivered.

use shared::consumer::{Handler, HandlerError, Incoming};
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

    async fn push(
        &self,
        billing: &Billing,
        reading: &ReadingAccepted,
        body: &[u8],
    ) -> Result<(), HandlerError> {
        let id = reading.reading_id;
        let span = tracing::info_span!("push", otel.name = "billing push", otel.kind = "client", reading_id = %id);
        let outcome = billing.post(id, body).instrument(span).await;
        let (delivery, status, error, result) = match &outcome {
            PushOutcome::Delivered(status) => {
                self.crash_if(CrashPoint::AfterPost, reading);
                (
                    Delivery::Delivered,
                    Some(status.as_u16()),
                    None,
                    PushResult::Delivered,
                )
            }
            PushOutcome::Conflict => (Delivery::Conflict, Some(409), None, PushResult::Conflict),
            PushOutcome::Retry { status, reason } => (
                Delivery::Pending,
                status.map(|s| s.as_u16()),
                Some(reason.as_str()),
                PushResult::Retried,
            ),
            PushOutcome::Refused { status, reason } => (
                Delivery::Rejected,
                Some(status.as_u16()),
                Some(reason.as_str()),
                PushResult::DeadLettered,
            ),
        };
        let recorded = store::record_attempt(&self.pool, id, delivery, status, error).await;
        if let Err(e) = recorded {
            if delivery.is_delivered() {
                // Billing has it but we could not write that down: the retry posts
                // again, and billing answers 409 for the known key.
                return Err(HandlerError::transient(
                    anyhow::Error::new(e)
                        .context("billing has the reading, but recording it failed"),
                ));
            }
            // Not delivered anyway: the broker's retry or dead letter is what counts.
            tracing::warn!(reading_id = %id, error = %e, "could not record a failed push");
        }
        if delivery.is_delivered() {
            self.crash_if(CrashPoint::AfterRecord, reading);
        }
        self.metrics.push(result);
        match outcome {
            PushOutcome::Delivered(_) | PushOutcome::Conflict => {
                tracing::info!(reading_id = %id, delivery = delivery.as_str(), "reading delivered to billing");
                Ok(())
            }
            PushOutcome::Retry { reason, .. } => {
                Err(HandlerError::transient(anyhow::anyhow!(reason)))
            }
            PushOutcome::Refused { reason, .. } => {
                Err(HandlerError::permanent(anyhow::anyhow!(reason)))
            }
        }
    }
}

impl Handler for ReadingHandler {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        let reading = match Event::from_json(&msg.body) {
            Ok(Event::ReadingAccepted(r)) => r,
            Ok(other) => {
                return Err(HandlerError::permanent(anyhow::anyhow!(
                    "expected reading.accepted, got {}",
                    other.routing_key()
                )));
            }
            Err(e) => {
                return Err(HandlerError::permanent(
                    anyhow::Error::new(e).context("undecodable reading.accepted"),
                ));
            }
        };
        let initial = if self.billing.is_some() {
            Delivery::Pending
        } else {
            Delivery::NotPushed
        };
        let state = match store::store(&self.pool, &reading, initial).await {
            Ok(state) => state,
            Err(StoreError::Invalid(why)) => {
                return Err(HandlerError::permanent(anyhow::anyhow!(
                    "reading {}: {why}",
                    reading.reading_id
                )));
            }
            Err(e) => {
                return Err(HandlerError::transient(
                    anyhow::Error::new(e).context("storing the reading"),
                ));
            }
        };
        let Some(billing) = &self.billing else {
            return Ok(());
        };
        if state.is_delivered() {
            tracing::info!(reading_id = %reading.reading_id, "already delivered to billing; not posting again");
            self.metrics.push(PushResult::AlreadyDelivered);
            return Ok(());
        }
        self.push(billing, &reading, &msg.body).await
    }
}
