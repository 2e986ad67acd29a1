//! What the notifier does with each event on its queue: a refused reading with a reply
//! becomes one SMS to the sender, an accepted reading with an address one e-mail;
//! everything else is acknowledged without effect. Every effect goes through the
//! ledger (claim → send → finish), and every failure ends as the consumer loop's
//! `Transient` (retry later) or `Permanent` (dead letter).

use std::time::Duration;
use tracing::Instrument;

use chrono_tz::Tz;
use lettre::message::Mailbox;
use shared::consumer::{Handler, HandlerError, Incoming};
use shared::events::{Event, ReadingAccepted, ReadingRejected};
use shared::phone::mask;
use sqlx::PgPool;

use crate::confirmation;
use crate::failure::{SendFailure, masked};
use crate::gateway::{Sms, SmsGateway, idempotency_key};
use crate::ledger::{self, AfterUnknown, Channel, Claim, Delivery, Outcome, Quota};
use crate::limits::ReplyLimits;
use crate::mailer::Mailer;
use crate::metrics::{FailureKind, NotifierMetrics};

/// How long past the send timeout a claim's lease lasts: the margin covers the
/// database writes around the send, so a live attempt is never taken over.
const LEASE_MARGIN: Duration = Duration::from_secs(20);

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

impl Handler for Notifier {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        let event = Event::from_json(&msg.body).map_err(|e| {
            HandlerError::permanent(
                anyhow::Error::new(e).context(format!("undecodable `{}` event", msg.routing_key)),
            )
        })?;
        match event {
            Event::ReadingRejected(e) => self.reply(&e).await,
            Event::ReadingAccepted(e) => self.confirm(&e).await,
            Event::SmsReceived(e) => Err(HandlerError::permanent(anyhow::anyhow!(
                "sms.received {} on the notifier queue: not bound here",
                e.message_id
            ))),
        }
    }
}

impl Notifier {
    fn lease(&self) -> Duration {
        self.send_timeout + LEASE_MARGIN
    }

    /// SPEC §4.3: the reply, once, to the sender — if the guards allow it.
    async fn reply(&self, event: &ReadingRejected) -> Result<(), HandlerError> {
        let Some(text) = event.reply.as_deref() else {
            tracing::debug!(message_id = %event.message_id, reason = %event.reason, "refusal without a reply");
            return Ok(());
        };
        if text.trim().is_empty() {
            return Err(HandlerError::permanent(anyhow::anyhow!(
                "reading.rejected {} carries an empty reply",
                event.message_id
            )));
        }
        let mut delivery = Delivery {
            key: format!("reply:{}", event.message_id),
            channel: Channel::Sms,
            recipient: event.from.clone(),
        };
        let number = match self.limits.admit(&event.from) {
            Ok(number) => number,
            Err(reason) => {
                if ledger::suppress(&self.pool, &delivery, reason)
                    .await
                    .map_err(database)?
                {
                    self.metrics.reply_suppressed(reason);
                }
                tracing::info!(to = %mask(&event.from), message_id = %event.message_id, reason = reason.as_str(), "reply suppressed");
                return Ok(());
            }
        };
        delivery.recipient = number.to_string();
        let quota = Quota {
            limits: &self.limits,
            number: &number,
        };
        let claim = ledger::claim(
            &self.pool,
            &delivery,
            Some(quota),
            self.lease(),
            self.gateway.after_unknown(),
        )
        .await
        .map_err(database)?;
        let attempt = match self.settle_claim(&delivery, claim)? {
            Some(attempt) => attempt,
            None => return Ok(()),
        };
        let sms = Sms {
            to: number,
            text: text.to_owned(),
            reply_to: event.message_id.clone(),
            idempotency_key: idempotency_key(&event.message_id),
        };
        let span = tracing::info_span!(
            "send_sms",
            otel.name = "sms send",
            otel.kind = "client",
            gateway = self.gateway.name()
        );
        let sent = self.bounded(self.gateway.send(&sms)).instrument(span).await;
        if sent.is_ok() {
            self.metrics.reply_sent(self.gateway.name());
            tracing::info!(to = %sms.to.masked(), message_id = %event.message_id, gateway = self.gateway.name(), "reply sent");
        }
        self.finish(&delivery, attempt, sent, self.gateway.after_unknown())
            .await
    }

    /// SPEC §4.4: one confirmation per accepted reading that carried an address.
    async fn confirm(&self, event: &ReadingAccepted) -> Result<(), HandlerError> {
        let Some(address) = event.email.as_deref() else {
            return Ok(());
        };
        let delivery = Delivery {
            key: format!("email:{}", event.reading_id),
            channel: Channel::Email,
            recipient: address.to_owned(),
        };
        let message = confirmation::compose(event, address, &self.email_from, self.timezone)
            .map_err(|e| {
                self.metrics
                    .send_failed(Channel::Email, FailureKind::Permanent);
                tracing::error!(to = %mask(address), reading_id = %event.reading_id, error = %e, "cannot write the confirmation");
                HandlerError::permanent(e)
            })?;
        let claim = ledger::claim(
            &self.pool,
            &delivery,
            None,
            self.lease(),
            AfterUnknown::Resend,
        )
        .await
        .map_err(database)?;
        let attempt = match self.settle_claim(&delivery, claim)? {
            Some(attempt) => attempt,
            None => return Ok(()),
        };
        let span = tracing::info_span!(
            "send_email",
            otel.name = "email send",
            otel.kind = "client",
            transport = self.mailer.transport()
        );
        let sent = self
            .bounded(self.mailer.send(&message, event.reading_id))
            .instrument(span)
            .await;
        if sent.is_ok() {
            self.metrics.email_sent(self.mailer.transport());
            tracing::info!(to = %mask(address), reading_id = %event.reading_id, transport = self.mailer.transport(), "confirmation sent");
        }
        // Resend is safe for e-mail: the same Message-ID lets mail systems drop a copy.
        self.finish(&delivery, attempt, sent, AfterUnknown::Resend)
            .await
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
            Claim::Busy => Err(HandlerError::transient(anyhow::anyhow!(
                "{} is being sent by another worker",
                d.key
            ))),
            Claim::GaveUp => {
                self.metrics.send_failed(d.channel, FailureKind::Unknown);
                tracing::error!(to = %mask(&d.recipient), key = %d.key,
                    "an earlier attempt may have been sent; not resending, so as never to answer twice");
                Ok(None)
            }
        }
    }

    async fn bounded(
        &self,
        send: impl Future<Output = Result<(), SendFailure>>,
    ) -> Result<(), SendFailure> {
        tokio::time::timeout(self.send_timeout, send)
            .await
            .unwrap_or_else(|_| {
                Err(SendFailure::Unknown(anyhow::anyhow!(
                    "no answer within {:?}",
                    self.send_timeout
                )))
            })
    }

    /// Records the attempt's outcome and turns it into the consumer's verdict.
    async fn finish(
        &self,
        d: &Delivery,
        attempt: i32,
        sent: Result<(), SendFailure>,
        after_unknown: AfterUnknown,
    ) -> Result<(), HandlerError> {
        let failure = match sent {
            Ok(()) => return self.record_sent(d, attempt).await,
            Err(SendFailure::Retry(e)) => SendFailure::Retry(masked(e, &d.recipient)),
            Err(SendFailure::Refused(e)) => SendFailure::Refused(masked(e, &d.recipient)),
            Err(SendFailure::Unknown(e)) => SendFailure::Unknown(masked(e, &d.recipient)),
        };
        let (kind, outcome_text) = match &failure {
            SendFailure::Refused(_) => (FailureKind::Permanent, format!("{failure}")),
            SendFailure::Unknown(_) if after_unknown == AfterUnknown::GiveUp => {
                (FailureKind::Unknown, format!("{failure}"))
            }
            SendFailure::Retry(_) | SendFailure::Unknown(_) => {
                (FailureKind::Transient, format!("{failure}"))
            }
        };
        self.metrics.send_failed(d.channel, kind);
        let outcome = match kind {
            FailureKind::Permanent => Outcome::Failed(&outcome_text),
            FailureKind::Unknown => Outcome::Unknown(&outcome_text),
            FailureKind::Transient => Outcome::Released(&outcome_text),
        };
        // If this write fails the lease runs out and the next attempt takes over.
        if let Err(e) = ledger::finish(&self.pool, &d.key, attempt, outcome).await {
            tracing::warn!(key = %d.key, error = %e, "cannot record the failed attempt");
        }
        let error = match failure {
            SendFailure::Retry(e) | SendFailure::Refused(e) | SendFailure::Unknown(e) => e,
        };
        match kind {
            FailureKind::Permanent => {
                tracing::error!(to = %mask(&d.recipient), key = %d.key, error = %format!("{error:#}"), "refused by the peer; dead-lettering");
                Err(HandlerError::Permanent(error))
            }
            FailureKind::Unknown => {
                tracing::error!(to = %mask(&d.recipient), key = %d.key, error = %format!("{error:#}"),
                    "sent without an answer; not resending, so as never to answer twice");
                Ok(())
            }
            FailureKind::Transient => Err(HandlerError::Transient(error)),
        }
    }

    /// Marks the delivery sent. The peer has it now, so the write is worth a few quick
    /// tries: if it never lands, a redelivery finds an expired lease and resends (or,
    /// on Kannel, records `unknown`).
    async fn record_sent(&self, d: &Delivery, attempt: i32) -> Result<(), HandlerError> {
        let mut last = None;
        for pause in [0, 200, 1000] {
            tokio::time::sleep(Duration::from_millis(pause)).await;
            match ledger::finish(&self.pool, &d.key, attempt, Outcome::Sent).await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
        }
        let e = last
            .map(anyhow::Error::new)
            .unwrap_or_else(|| anyhow::anyhow!("unknown"));
        Err(HandlerError::Transient(
            e.context(format!("sent {}, but cannot record it", d.key)),
        ))
    }
}

fn database(e: sqlx::Error) -> HandlerError {
    HandlerError::Transient(anyhow::Error::new(e).context("notifier database"))
}
