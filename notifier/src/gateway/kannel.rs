//! Kannel's `sendsms` (SPEC §4.3, `SMS_GATEWAY=kannel`): a GET with the
//! `sendsms-user` credentials, `charset=UTF-8` and `coding=2` (UCS-2; without it
//! Cyrillic arrives as question marks). Kannel answers `202` when it queued the
//! message, `4xx` for a bad request, `503` when it cannot take it now.
//!
//! sendsms has no idempotency key: two requests are two SMS. So a request that went
//! out without an answer is not repeated ([`AfterUnknown::GiveUp`](crate::ledger::AfterUnknown)).

use reqwest::StatusCode;
use secrecy::ExposeSecret;

use super::{Sms, UserLink};
use crate::failure::{SendFailure, excerpt, from_reqwest};
use crate::ledger::AfterUnknown;
use crate::report::KANNEL_DLR_MASK;

#[derive(Debug, Clone)]
pub struct KannelGateway {
    link: UserLink,
}

impl KannelGateway {
    pub(super) fn new(link: UserLink) -> Self {
        KannelGateway { link }
    }

    pub fn reports(&self) -> bool {
        self.link.reports.is_some()
    }

    pub async fn send(&self, sms: &Sms) -> Result<(), SendFailure> {
        let dlr_url = self
            .link
            .reports
            .as_ref()
            .map(|r| r.kannel_url(&sms.reply_to));
        let mut query: Vec<(&str, &str)> = vec![
            ("username", &self.link.user),
            ("password", self.link.password.expose_secret()),
            ("to", sms.to.as_str()),
            ("text", &sms.text),
            ("charset", "UTF-8"),
            ("coding", "2"),
        ];
        if let Some(from) = &self.link.from {
            query.push(("from", from));
        }
        if let Some(url) = &dlr_url {
            query.push(("dlr-mask", KANNEL_DLR_MASK));
            query.push(("dlr-url", url));
        }
        let response = self
            .link
            .client
            .get(self.link.url.clone())
            .query(&query)
            .send()
            .await
            .map_err(|e| from_reqwest(e, AfterUnknown::GiveUp))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = shared::peer::error_body(response).await;
        Err(classify(status, &body))
    }
}

/// Kannel's answers: any 5xx means it did not queue the message (503: queue full or
/// no SMSC), so a retry cannot double it; a 4xx is our request's fault.
fn classify(status: StatusCode, body: &str) -> SendFailure {
    let what = || anyhow::anyhow!("Kannel sendsms answered {status}: {}", excerpt(body));
    if status.is_server_error() {
        SendFailure::retry(what())
    } else {
        SendFailure::refused(what())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::FailureKind;

    #[test]
    fn kannel_answers() {
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE, "Queue full").kind,
            FailureKind::Transient
        );
        assert_eq!(
            classify(StatusCode::FORBIDDEN, "Authorization failed for sendsms").kind,
            FailureKind::Permanent
        );
    }
}
