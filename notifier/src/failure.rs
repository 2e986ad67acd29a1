//! How a send to a peer (SMS gateway, SMTP server, mail directory) can fail. Each
//! peer's answer is mapped once, where it is received (`gateway/`, `mailer.rs`), to a
//! [`FailureKind`] — *retry later*, *never succeeds*, *fate unknown* — by what the peer
//! may now hold and whether it can tell a second copy from a first. That one verdict
//! then decides, unchanged, the ledger state, the metric's label and the consumer's
//! outcome (ack, retry, dead letter).

use std::time::Duration;

use crate::ledger::AfterUnknown;

/// What a failed send means for the effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The peer does not have it, or may have it but recognises a second copy
    /// (idempotency key, Message-ID): sent again later (ledger `pending`).
    Transient,
    /// The peer refused it for good: trying again cannot help; dead-lettered (`failed`).
    Permanent,
    /// The request went out, no answer came, and the peer cannot recognise a second
    /// copy: never sent again, so as never to answer twice (`unknown`).
    Unknown,
}

impl FailureKind {
    /// The `kind` label of `notifier_send_failures_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Transient => "transient",
            FailureKind::Permanent => "permanent",
            FailureKind::Unknown => "unknown",
        }
    }
}

/// A failed send: its verdict and its cause.
#[derive(Debug, thiserror::Error)]
#[error("{}: {cause:#}", describe(*kind))]
pub struct SendFailure {
    pub kind: FailureKind,
    /// When the peer said it can take the message again (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// What the peer answered, or what went wrong on the way to it.
    pub cause: anyhow::Error,
}

fn describe(kind: FailureKind) -> &'static str {
    match kind {
        FailureKind::Transient => "retry later",
        FailureKind::Permanent => "refused",
        FailureKind::Unknown => "outcome unknown",
    }
}

impl SendFailure {
    /// The peer does not have it (refused connection, 5xx, SMTP 4xx).
    pub fn retry(cause: anyhow::Error) -> Self {
        SendFailure {
            kind: FailureKind::Transient,
            retry_after: None,
            cause,
        }
    }

    /// The peer refused it for good (4xx, SMTP 5xx).
    pub fn refused(cause: anyhow::Error) -> Self {
        SendFailure {
            kind: FailureKind::Permanent,
            retry_after: None,
            cause,
        }
    }

    /// The request went out but no answer came (timeout, connection lost mid-way):
    /// the peer may or may not have it. Whether that is worth another try is the
    /// peer's property: `after` says whether it recognises a second copy.
    pub fn unanswered(after: AfterUnknown, cause: anyhow::Error) -> Self {
        match after {
            AfterUnknown::Resend => SendFailure::retry(
                cause.context("no answer; sent again, the peer recognises a second copy"),
            ),
            AfterUnknown::GiveUp => SendFailure {
                kind: FailureKind::Unknown,
                retry_after: None,
                cause,
            },
        }
    }

    /// Not before `after`, as the peer asked.
    pub fn not_before(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    /// The same failure with the recipient masked in its cause (see [`masked`]).
    pub fn masked(self, recipient: &str) -> Self {
        SendFailure {
            cause: masked(self.cause, recipient),
            ..self
        }
    }
}

/// Cuts a peer's answer to a length fit for a log line and a database column.
pub fn excerpt(body: &str) -> String {
    const MAX: usize = 200;
    let trimmed = body.trim();
    if trimmed.chars().count() <= MAX {
        return trimmed.to_owned();
    }
    let mut cut: String = trimmed.chars().take(MAX).collect();
    cut.push('…');
    cut
}

/// Classifies a reqwest error: a failed connect (refused, connect timeout) never
/// reached the peer, so *retry later*; a request that cannot even be built never will,
/// so *refused*; anything after the request was on the wire is unanswered, which the
/// peer's `after` decides.
/// The URL is stripped: Kannel's carries the password in its query.
pub fn from_reqwest(e: reqwest::Error, after: AfterUnknown) -> SendFailure {
    let (connect, builder) = (e.is_connect(), e.is_builder());
    let e = anyhow::Error::new(e.without_url());
    if connect {
        SendFailure::retry(e)
    } else if builder {
        SendFailure::refused(e)
    } else {
        SendFailure::unanswered(after, e)
    }
}

/// The error with the recipient masked wherever it appears: peers echo addresses in
/// their answers ("550 <ivan@…>: no such user"), and the text goes to logs, the ledger
/// and the dead letter's `x-last-error`. Only rewritten (to its rendered chain) when
/// the recipient actually occurs in it.
pub fn masked(error: anyhow::Error, recipient: &str) -> anyhow::Error {
    let text = format!("{error:#}");
    if recipient.is_empty() || !text.contains(recipient) {
        return error;
    }
    anyhow::anyhow!(text.replace(recipient, &shared::phone::mask(recipient)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unanswered_send_is_retried_only_where_the_peer_knows_a_second_copy() {
        let e = || anyhow::anyhow!("no answer within 10s");
        let resend = SendFailure::unanswered(AfterUnknown::Resend, e());
        assert_eq!(resend.kind, FailureKind::Transient);
        let give_up = SendFailure::unanswered(AfterUnknown::GiveUp, e());
        assert_eq!(give_up.kind, FailureKind::Unknown);
        assert_eq!(give_up.to_string(), "outcome unknown: no answer within 10s");
    }

    #[test]
    fn recipients_are_masked_in_errors() {
        let e = anyhow::anyhow!("550 <ivan@example.ru>: no such user").context("SMTP delivery");
        let m = format!("{:#}", masked(e, "ivan@example.ru"));
        assert_eq!(m, "SMTP delivery: 550 <i***@example.ru>: no such user");
        let e = anyhow::anyhow!("answered 400: bad number");
        assert_eq!(
            format!("{:#}", masked(e, "+79001234567")),
            "answered 400: bad number"
        );
    }

    #[test]
    fn excerpts_are_short_and_cut_on_characters() {
        assert_eq!(excerpt("  ok \n"), "ok");
        let long = "ё".repeat(300);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), 201);
        assert!(cut.ends_with('…'));
    }
}
