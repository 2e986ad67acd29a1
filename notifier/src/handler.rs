//! What the notifier does with the events on its queue: a refused reading with a reply
//! becomes one SMS to the sender, an accepted reading with an address one e-mail;
//! everything else is acknowledged without effect. Every effect goes through the
//! ledger (claim → send → finish), a batch of deliveries at a time — one transaction
//! claims them all, the sends run side by side, one records how each ended — and every
//! failure ends as the consumer loop's `Transient` (retry later) or `Permanent` (dead
//! letter) for its own message.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use futures::StreamExt as _;
use lettre::Message;
use lettre::message::Mailbox;
use shared::consumer::{BatchHandler, HandlerError, Incoming, Outcomes};
use shared::events::{Event, ReadingAccepted, ReadingRejected};
use shared::phone::mask;
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use crate::confirmation;
use crate::failure::{FailureKind, SendFailure};
use crate::gateway::{Sms, SmsGateway, idempotency_key};
use crate::ledger::{self, AfterUnknown, Channel, Claim, ClaimRequest, Delivery, Finished};
use crate::limits::{ReplyLimits, Suppressed};
use crate::mailer::Mailer;
use crate::metrics::NotifierMetrics;

/// How long past the sends' timeouts a claim's lease lasts: the margin covers the
/// database writes around them, so a live attempt is never taken over.
const LEASE_MARGIN: Duration = Duration::from_secs(20);
/// How long after a lease's end a copy that met it comes back: database and consumer
/// clocks differ a little, and a copy back too early would be told to wait again.
const LEASE_END_MARGIN: Duration = Duration::from_millis(500);
/// Sends to the peers a batch makes at one time.
pub const SENDS_AT_ONCE: usize = 16;

pub struct Notifier {
    pub pool: PgPool,
    pub gateway: SmsGateway,
    pub mailer: Mailer,
    pub limits: ReplyLimits,
    pub email_from: Mailbox,
    pub timezone: Tz,
    /// Bound on one send; the peers' own timeouts are the same, this is the backstop.
    pub send_timeout: Duration,
    pub metrics: NotifierMetrics,
}

impl BatchHandler for Notifier {
    async fn handle_batch(&self, msgs: &[Incoming]) -> Outcomes {
        let mut outcomes = Outcomes::new(msgs.len());
        let mut refused: Vec<(usize, Delivery, Suppressed)> = Vec::new();
        let mut effects: Vec<(usize, Effect)> = Vec::new();
        // Copies of one event in the batch (a redelivery beside the original): the first
        // copy is handled, the others share its fate.
        let mut first_copy: HashMap<String, usize> = HashMap::new();
        let mut copies: Vec<(usize, usize, Channel)> = Vec::new();
        for (i, msg) in msgs.iter().enumerate() {
            let planned = msg.span.in_scope(|| self.plan(msg));
            let key = match &planned {
                Planned::Done(_) => None,
                Planned::Refuse(d, _) => Some((d.key.clone(), d.channel)),
                Planned::Send(e) => Some((e.delivery.key.clone(), e.delivery.channel)),
            };
            if let Some((key, channel)) = key {
                if let Some(&first) = first_copy.get(&key) {
                    copies.push((i, first, channel));
                    continue;
                }
                first_copy.insert(key, i);
            }
            match planned {
                Planned::Done(outcome) => outcomes.set(i, outcome),
                Planned::Refuse(delivery, reason) => refused.push((i, delivery, reason)),
                Planned::Send(effect) => effects.push((i, effect)),
            }
        }
        if !refused.is_empty() || !effects.is_empty() {
            self.carry_out(msgs, &refused, &effects, &mut outcomes)
                .await;
        }
        for (i, first, channel) in copies {
            let outcome = match outcomes.get(first) {
                Some(Ok(())) => {
                    self.metrics.duplicate(channel);
                    Ok(())
                }
                _ => Err(HandlerError::transient(anyhow::anyhow!(
                    "a copy of this event in the same batch is not settled yet"
                ))),
            };
            outcomes.set(i, outcome);
        }
        outcomes
    }
}

/// One message's part in a batch.
enum Planned {
    /// Nothing (more) to do: the outcome is known already.
    Done(Result<(), HandlerError>),
    /// A reply refused before any counting (number, country): recorded, not sent.
    Refuse(Delivery, Suppressed),
    /// An SMS or e-mail to claim, send and record.
    Send(Effect),
}

struct Effect {
    delivery: Delivery,
    what: What,
}

enum What {
    Reply(Sms),
    Email { message: Message, reading_id: Uuid },
}

/// A claimed attempt that has ended: sent, or failed as `failure` says (recipient
/// masked).
struct Ended<'a> {
    msg: usize,
    delivery: &'a Delivery,
    attempt: i32,
    failure: Option<SendFailure>,
}

impl Notifier {
    /// The lease for a batch's claims: long enough for its sends, made
    /// [`SENDS_AT_ONCE`] at a time, and the database writes around them, so that a live
    /// attempt is never taken over.
    fn lease(&self, sends: usize) -> Duration {
        let rounds = u32::try_from(sends.div_ceil(SENDS_AT_ONCE).max(1)).unwrap_or(u32::MAX);
        self.send_timeout.saturating_mul(rounds) + LEASE_MARGIN
    }

    /// What a message asks for; decoding and composing, no I/O.
    fn plan(&self, msg: &Incoming) -> Planned {
        let event = match Event::from_json(&msg.body) {
            Ok(event) => event,
            Err(e) => {
                return Planned::Done(Err(HandlerError::permanent(
                    anyhow::Error::new(e)
                        .context(format!("undecodable `{}` event", msg.routing_key)),
                )));
            }
        };
        match event {
            Event::ReadingRejected(e) => self.plan_reply(&e),
            Event::ReadingAccepted(e) => self.plan_confirmation(&e),
            Event::SmsReceived(e) => Planned::Done(Err(HandlerError::permanent(anyhow::anyhow!(
                "sms.received {} on the notifier queue: not bound here",
                e.message_id
            )))),
        }
    }

    /// SPEC §4.3: the reply, once, to the sender — if the guards allow it.
    fn plan_reply(&self, event: &ReadingRejected) -> Planned {
        let Some(text) = event.reply.as_deref() else {
            tracing::debug!(message_id = %event.message_id, reason = %event.reason, "refusal without a reply");
            return Planned::Done(Ok(()));
        };
        if text.trim().is_empty() {
            return Planned::Done(Err(HandlerError::permanent(anyhow::anyhow!(
                "reading.rejected {} carries an empty reply",
                event.message_id
            ))));
        }
        let key = format!("reply:{}", event.message_id);
        match self.limits.admit(&event.from) {
            Err(reason) => Planned::Refuse(
                Delivery {
                    key,
                    channel: Channel::Sms,
                    recipient: event.from.clone(),
                },
                reason,
            ),
            Ok(number) => Planned::Send(Effect {
                delivery: Delivery {
                    key,
                    channel: Channel::Sms,
                    recipient: number.to_string(),
                },
                what: What::Reply(Sms {
                    to: number,
                    text: text.to_owned(),
                    reply_to: event.message_id.clone(),
                    idempotency_key: idempotency_key(&event.message_id),
                }),
            }),
        }
    }

    /// SPEC §4.4: one confirmation per accepted reading that carried an address.
    fn plan_confirmation(&self, event: &ReadingAccepted) -> Planned {
        let Some(address) = event.email.as_deref() else {
            return Planned::Done(Ok(()));
        };
        match confirmation::compose(event, address, &self.email_from, self.timezone) {
            Ok(message) => Planned::Send(Effect {
                delivery: Delivery {
                    key: format!("email:{}", event.reading_id),
                    channel: Channel::Email,
                    recipient: address.to_owned(),
                },
                what: What::Email {
                    message,
                    reading_id: event.reading_id,
                },
            }),
            Err(e) => {
                self.metrics
                    .send_failed(Channel::Email, FailureKind::Permanent);
                tracing::error!(to = %mask(address), reading_id = %event.reading_id, error = %e, "cannot write the confirmation");
                Planned::Done(Err(HandlerError::permanent(e)))
            }
        }
    }

    /// What to do when an attempt went out without an answer.
    fn after_unknown(&self, effect: &Effect) -> AfterUnknown {
        match effect.what {
            What::Reply(_) => self.gateway.after_unknown(),
            // Resend is safe for e-mail: the same Message-ID lets mail systems drop a copy.
            What::Email { .. } => AfterUnknown::Resend,
        }
    }

    /// Claims the batch's effects in one transaction, sends what was claimed, and
    /// records every attempt's end in another; fills in each message's outcome.
    async fn carry_out(
        &self,
        msgs: &[Incoming],
        refused: &[(usize, Delivery, Suppressed)],
        effects: &[(usize, Effect)],
        outcomes: &mut Outcomes,
    ) {
        let refusals: Vec<(&Delivery, Suppressed)> =
            refused.iter().map(|(_, d, why)| (d, *why)).collect();
        let requests: Vec<ClaimRequest> = effects
            .iter()
            .map(|(_, e)| ClaimRequest {
                delivery: &e.delivery,
                quota: match &e.what {
                    What::Reply(sms) => Some(&sms.to),
                    What::Email { .. } => None,
                },
                after_unknown: self.after_unknown(e),
            })
            .collect();
        let lease = self.lease(effects.len());
        let claims = match ledger::claim_batch(
            &self.pool,
            &refusals,
            &requests,
            &self.limits,
            lease,
        )
        .await
        {
            Ok(claims) => claims,
            Err(e) if shared::db::is_permanent(&e) && refused.len() + effects.len() > 1 => {
                // The database refuses something of the batch for good (the data:
                // `shared::db::classify`): the halves apart, and so on down, until
                // the one it refuses is alone and dead-lettered; the others go out.
                tracing::warn!(error = %e, messages = refused.len() + effects.len(),
                    "the database refuses part of a batch for good; claiming its halves apart");
                let half = (refused.len() + effects.len()) / 2;
                let (r1, r2) = refused.split_at(half.min(refused.len()));
                let (e1, e2) = effects.split_at(half - r1.len());
                Box::pin(self.carry_out(msgs, r1, e1, outcomes)).await;
                Box::pin(self.carry_out(msgs, r2, e2, outcomes)).await;
                return;
            }
            Err(e) => {
                // One cause for every message of the batch: shared, not copied as text.
                let e = Arc::new(e);
                for i in refused
                    .iter()
                    .map(|r| r.0)
                    .chain(effects.iter().map(|e| e.0))
                {
                    outcomes.set(i, Err(HandlerError::database(&e, "notifier database")));
                }
                return;
            }
        };

        for ((i, delivery, reason), new) in refused.iter().zip(&claims.refused_new) {
            if *new {
                self.metrics.reply_suppressed(*reason);
            }
            msgs[*i].span.in_scope(|| {
                tracing::info!(to = %mask(&delivery.recipient), key = %delivery.key, reason = reason.as_str(), "reply suppressed");
            });
            outcomes.set(*i, Ok(()));
        }

        let mut claimed: Vec<(&(usize, Effect), i32)> = Vec::new();
        for (item, claim) in effects.iter().zip(claims.claims) {
            let (i, effect) = item;
            match msgs[*i]
                .span
                .in_scope(|| self.settle_claim(&effect.delivery, claim))
            {
                Ok(Some(attempt)) => claimed.push((item, attempt)),
                Ok(None) => outcomes.set(*i, Ok(())),
                Err(e) => outcomes.set(*i, Err(e)),
            }
        }
        if !claimed.is_empty() {
            self.send_and_record(msgs, &claimed, outcomes).await;
        }
    }

    /// Sends the claimed effects side by side ([`SENDS_AT_ONCE`] at a time), records
    /// how every attempt ended in one transaction, and settles their messages.
    async fn send_and_record(
        &self,
        msgs: &[Incoming],
        claimed: &[(&(usize, Effect), i32)],
        outcomes: &mut Outcomes,
    ) {
        let mut sends = Vec::with_capacity(claimed.len());
        for ((i, effect), _) in claimed {
            sends.push(self.send(effect).instrument(msgs[*i].span.clone()));
        }
        let results: Vec<Result<(), SendFailure>> = futures::stream::iter(sends)
            .buffered(SENDS_AT_ONCE)
            .collect()
            .await;

        let ended: Vec<Ended> = claimed
            .iter()
            .zip(results)
            .map(|(((i, effect), attempt), sent)| Ended {
                msg: *i,
                delivery: &effect.delivery,
                attempt: *attempt,
                failure: sent.err().map(|f| self.failure(&effect.delivery, f)),
            })
            .collect();
        let recorded = self.record(&ended).await.map_err(Arc::new);
        for end in ended {
            let _in_span = msgs[end.msg].span.enter();
            let msg = end.msg;
            outcomes.set(msg, settled(end, &recorded));
        }
    }

    /// One claimed effect out to its peer, within the send timeout.
    async fn send(&self, effect: &Effect) -> Result<(), SendFailure> {
        match &effect.what {
            What::Reply(sms) => {
                let span = tracing::info_span!(
                    "send_sms",
                    otel.name = "sms send",
                    otel.kind = "client",
                    gateway = self.gateway.name()
                );
                let sent = self
                    .bounded(self.gateway.send(sms), self.after_unknown(effect))
                    .instrument(span)
                    .await;
                if sent.is_ok() {
                    self.metrics.reply_sent(self.gateway.name());
                    tracing::info!(to = %sms.to.masked(), message_id = %sms.reply_to, gateway = self.gateway.name(), "reply sent");
                }
                sent
            }
            What::Email {
                message,
                reading_id,
            } => {
                let span = tracing::info_span!(
                    "send_email",
                    otel.name = "email send",
                    otel.kind = "client",
                    transport = self.mailer.transport()
                );
                let sent = self
                    .bounded(
                        self.mailer.send(message, *reading_id),
                        self.after_unknown(effect),
                    )
                    .instrument(span)
                    .await;
                if sent.is_ok() {
                    self.metrics.email_sent(self.mailer.transport());
                    tracing::info!(to = %mask(&effect.delivery.recipient), %reading_id, transport = self.mailer.transport(), "confirmation sent");
                }
                sent
            }
        }
    }

    /// A failed send, counted, with the recipient masked in its cause (it goes to
    /// the ledger, the logs and the dead letter).
    fn failure(&self, d: &Delivery, sent: SendFailure) -> SendFailure {
        self.metrics.send_failed(d.channel, sent.kind);
        sent.masked(&d.recipient)
    }

    /// Records how the batch's attempts ended. A sent message is with the peer now, so
    /// the write is worth a few quick tries: if it never lands, a redelivery finds an
    /// expired lease and resends (or, on Kannel, records `unknown`).
    async fn record(&self, ended: &[Ended<'_>]) -> Result<(), sqlx::Error> {
        let finished: Vec<Finished> = ended
            .iter()
            .map(|end| Finished {
                key: &end.delivery.key,
                attempt: end.attempt,
                failure: end.failure.as_ref(),
            })
            .collect();
        let mut result = Ok(());
        for pause in [0, 200, 1000] {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            result = ledger::finish_batch(&self.pool, &finished).await;
            if result.is_ok() {
                break;
            }
        }
        result
    }

    /// The attempt to make, or `None` when there is nothing to send.
    fn settle_claim(&self, d: &Delivery, claim: Claim) -> Result<Option<i32>, HandlerError> {
        match claim {
            Claim::Send { attempt } => Ok(Some(attempt)),
            Claim::Settled(state) => {
                self.metrics.duplicate(d.channel);
                tracing::info!(key = %d.key, %state, "already settled; nothing to send");
                Ok(None)
            }
            Claim::Suppressed(reason) => {
                self.metrics.reply_suppressed(reason);
                tracing::info!(to = %mask(&d.recipient), key = %d.key, reason = reason.as_str(), "reply suppressed");
                Ok(None)
            }
            // Come back on the schedule (the holder may finish any moment), but no
            // later than the lease's end (a little after, for the clocks): the holder
            // has sent it by then, or died and the lease may be taken over.
            Claim::Busy { remaining } => Err(HandlerError::RetryWithin {
                within: remaining + LEASE_END_MARGIN,
                error: anyhow::anyhow!(
                    "{} is being sent by another worker for {remaining:.1?} more",
                    d.key
                ),
            }),
            Claim::GaveUp => {
                self.metrics.send_failed(d.channel, FailureKind::Unknown);
                tracing::error!(to = %mask(&d.recipient), key = %d.key,
                    "an earlier attempt may have been sent; not resending, so as never to answer twice");
                Ok(None)
            }
        }
    }

    /// `send` within the send timeout; past it, unanswered, as the peer's `after` says.
    async fn bounded(
        &self,
        send: impl Future<Output = Result<(), SendFailure>>,
        after: AfterUnknown,
    ) -> Result<(), SendFailure> {
        tokio::time::timeout(self.send_timeout, send)
            .await
            .unwrap_or_else(|_| {
                Err(SendFailure::unanswered(
                    after,
                    anyhow::anyhow!("no answer within {:?}", self.send_timeout),
                ))
            })
    }
}

/// A message's outcome from how its attempt ended and whether that was recorded.
fn settled(end: Ended<'_>, recorded: &Result<(), Arc<sqlx::Error>>) -> Result<(), HandlerError> {
    let d = end.delivery;
    let Some(failure) = end.failure else {
        return recorded.as_ref().map(|_| ()).map_err(|e| {
            HandlerError::Transient(
                anyhow::Error::new(Arc::clone(e))
                    .context(format!("sent {}, but cannot record it", d.key)),
            )
        });
    };
    if let Err(e) = recorded {
        // The lease runs out and the next attempt takes over.
        tracing::warn!(key = %d.key, error = %e, "cannot record the failed attempt");
    }
    let SendFailure {
        kind,
        retry_after,
        cause,
    } = failure;
    match kind {
        FailureKind::Permanent => {
            tracing::error!(to = %mask(&d.recipient), key = %d.key, error = %format!("{cause:#}"), "refused by the peer; dead-lettering");
            Err(HandlerError::Permanent(cause))
        }
        FailureKind::Unknown => {
            tracing::error!(to = %mask(&d.recipient), key = %d.key, error = %format!("{cause:#}"),
                "sent without an answer; not resending, so as never to answer twice");
            Ok(())
        }
        FailureKind::Transient => Err(match retry_after {
            Some(after) => HandlerError::RetryAfter {
                after,
                error: cause,
            },
            None => HandlerError::Transient(cause),
        }),
    }
}
