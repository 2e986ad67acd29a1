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
use shared::consumer::{BatchHandler, HandlerError, Incoming, Outcomes};
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
        // stored and dead-lettered), so no reading is missing from the exports —
        // unless the database refuses the reading itself for good: then it is
        // dead-lettered at once, for an operator to see.
        return Err(HandlerError::database(
            e,
            "storing the reading and billing's answer failed",
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

/// A batch's readings, each once: the messages that decoded (by their index in the
/// batch) and, for each reading, the first message carrying it. Copies of a reading
/// in one batch (a redelivery beside the original) share the first one's fate.
struct Readings {
    messages: Vec<(usize, ReadingAccepted)>,
    /// Index into `messages` of the first message of each reading.
    firsts: Vec<usize>,
}

impl Readings {
    /// Decodes the batch; a message that can never be processed gets its outcome now.
    fn decode(msgs: &[Incoming], results: &mut Outcomes) -> Readings {
        let mut messages: Vec<(usize, ReadingAccepted)> = Vec::with_capacity(msgs.len());
        for (i, msg) in msgs.iter().enumerate() {
            match decode(msg).and_then(|r| match store::checked_values(&r) {
                Ok(_) => Ok(r),
                Err(why) => Err(HandlerError::permanent(anyhow::anyhow!(
                    "reading {}: {why}",
                    r.reading_id
                ))),
            }) {
                Ok(r) => messages.push((i, r)),
                Err(e) => results.set(i, Err(e)),
            }
        }
        let mut firsts: Vec<usize> = Vec::new();
        for (k, (_, reading)) in messages.iter().enumerate() {
            if !firsts
                .iter()
                .any(|&f| messages[f].1.reading_id == reading.reading_id)
            {
                firsts.push(k);
            }
        }
        Readings { messages, firsts }
    }

    fn first(&self, k: usize) -> &ReadingAccepted {
        &self.messages[k].1
    }

    /// Every message carrying `reading` (not settled yet) gets `outcome`.
    fn settle(
        &self,
        reading: uuid::Uuid,
        results: &mut Outcomes,
        outcome: impl Fn() -> Result<(), HandlerError>,
    ) {
        for (i, r) in &self.messages {
            if r.reading_id == reading && !results.is_settled(*i) {
                results.set(*i, outcome());
            }
        }
    }

    /// Every message gets `outcome` (a failure of the whole batch).
    fn settle_all(&self, results: &mut Outcomes, outcome: impl Fn() -> Result<(), HandlerError>) {
        for (i, _) in &self.messages {
            results.set(*i, outcome());
        }
    }
}

impl ReadingHandler {
    /// Without `BILLING_URL`: stores the readings as not pushed.
    async fn store_only(&self, readings: &Readings, results: &mut Outcomes) {
        let outcomes: Vec<store::Outcome<'_>> = readings
            .firsts
            .iter()
            .map(|&k| store::Outcome {
                reading: readings.first(k),
                delivery: Delivery::NotPushed,
                attempted: false,
                status: None,
                error: None,
            })
            .collect();
        let stored = store::store_each(&self.pool, &outcomes).await;
        for (o, stored) in outcomes.iter().zip(stored) {
            readings.settle(o.reading.reading_id, results, || match &stored {
                Ok(()) => Ok(()),
                Err(e) => Err(HandlerError::database(e, "storing the reading")),
            });
        }
    }

    /// The readings not yet recorded as delivered (indexes into `readings.messages`);
    /// the messages of those already delivered are settled as done.
    async fn not_yet_delivered(
        &self,
        readings: &Readings,
        results: &mut Outcomes,
    ) -> Result<Vec<usize>, Arc<sqlx::Error>> {
        let ids: Vec<uuid::Uuid> = readings
            .firsts
            .iter()
            .map(|&k| readings.first(k).reading_id)
            .collect();
        let known = store::states(&self.pool, &ids).await.map_err(Arc::new)?;
        let mut to_post = Vec::with_capacity(readings.firsts.len());
        for &k in &readings.firsts {
            let reading = readings.first(k);
            if known
                .get(&reading.reading_id)
                .is_some_and(|d| d.is_delivered())
            {
                tracing::info!(reading_id = %reading.reading_id, "already delivered to billing; not posting again");
                self.metrics.push(PushResult::AlreadyDelivered);
                readings.settle(reading.reading_id, results, || Ok(()));
            } else {
                to_post.push(k);
            }
        }
        Ok(to_post)
    }

    /// Posts the readings (several at once), stores each with billing's answer in one
    /// statement, and settles their messages by the answer.
    async fn push_and_store(
        &self,
        billing: &Billing,
        msgs: &[Incoming],
        readings: &Readings,
        to_post: &[usize],
        results: &mut Outcomes,
    ) {
        // Collected first: a lazy `map` over borrowed indexes makes the future not `Send`.
        let mut posts = Vec::with_capacity(to_post.len());
        for &k in to_post {
            let (i, reading) = &readings.messages[k];
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
                reading: readings.first(*k),
                delivery: o.delivery(),
                attempted: true,
                status: o.status().map(|s| s.as_u16()),
                error: detail.as_deref(),
            })
            .collect();
        let recorded = store::store_each(&self.pool, &outcomes).await;
        for ((k, outcome), recorded) in pushed.iter().zip(&recorded) {
            let reading = readings.first(*k);
            let delivery = outcome.delivery();
            if delivery.is_delivered() && recorded.is_ok() {
                self.crash_if(CrashPoint::AfterRecord, reading);
                tracing::info!(reading_id = %reading.reading_id, delivery = delivery.as_str(), "reading delivered to billing");
            }
            self.metrics.push(outcome.result());
            readings.settle(reading.reading_id, results, || verdict(outcome, recorded));
        }
    }
}

impl BatchHandler for ReadingHandler {
    /// Looks up the batch's readings (one statement), posts those not yet delivered
    /// (each reading once, however often it is in the batch), stores every reading
    /// with its answer (one statement), then lets the consumer ack.
    async fn handle_batch(&self, msgs: &[Incoming]) -> Outcomes {
        let mut results = Outcomes::new(msgs.len());
        let readings = Readings::decode(msgs, &mut results);
        let Some(billing) = &self.billing else {
            self.store_only(&readings, &mut results).await;
            return results;
        };
        match self.not_yet_delivered(&readings, &mut results).await {
            Ok(to_post) => {
                self.push_and_store(billing, msgs, &readings, &to_post, &mut results)
                    .await
            }
            Err(e) => readings.settle_all(&mut results, || {
                Err(HandlerError::Transient(
                    anyhow::Error::new(Arc::clone(&e)).context("looking up the reading"),
                ))
            }),
        }
        results
    }
}
