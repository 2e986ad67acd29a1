//! How a send to a peer (SMS gateway, SMTP server, mail directory) can fail. The
//! split is by what the peer may now hold, because that decides between retrying,
//! dead-lettering, and the once-only rule.

/// A failed send.
#[derive(Debug, thiserror::Error)]
pub enum SendFailure {
    /// The peer does not have it (refused connection, 5xx, 503 "cannot now", SMTP 4xx):
    /// try again later.
    #[error("not delivered, retry later: {0:#}")]
    Retry(anyhow::Error),
    /// The peer refused it for good (4xx, SMTP 5xx): trying again cannot help.
    #[error("refused: {0:#}")]
    Refused(anyhow::Error),
    /// The request went out but no answer came (timeout, connection lost mid-way):
    /// the peer may or may not have it.
    #[error("outcome unknown: {0:#}")]
    Unknown(anyhow::Error),
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
/// reached the peer, so `Retry`; a request that cannot even be built never will, so
/// `Refused`; anything after the request was on the wire is `Unknown`.
/// The URL is stripped: Kannel's carries the password in its query.
pub fn from_reqwest(e: reqwest::Error) -> SendFailure {
    let (connect, builder) = (e.is_connect(), e.is_builder());
    let e = anyhow::Error::new(e.without_url());
    if connect {
        SendFailure::Retry(e)
    } else if builder {
        SendFailure::Refused(e)
    } else {
        SendFailure::Unknown(e)
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
