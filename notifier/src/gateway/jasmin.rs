//! Jasmin's HTTP API (SPEC §4.3, `SMS_GATEWAY=jasmin`): a form POST to `/send` with the
//! user's `username`/`password`, `coding=8` (UCS-2) and the text as `hex-content`, its
//! UTF-16BE bytes in hex. (`content` with `coding=8` is handed on as is — UTF-8 bytes
//! read as UCS-2, garbled; with `coding=0` Jasmin recodes to GSM 03.38, which has no
//! Cyrillic.) Jasmin splits a long text itself (`http_long_content`, UDH).
//!
//! Jasmin 0.11.1 answers (`jasmin/protocols/http/endpoints/send.py`, `errors.py`):
//! `200 Success "<msgid>"` once the message is queued for its connector; `400` for an
//! argument or credential check (`Error "Argument [to] has an invalid value…"`,
//! `Authorization failed…`); `403` for a wrong password or a failed charge — and for
//! `User throughput exceeded`, which passes; `412` for no route (or, on a failover
//! route, no bound connector, which passes too); `500`/`503` when it cannot queue it.
//!
//! `/send` has no idempotency key: two requests are two SMS. So a request that went
//! out without an answer is not repeated ([`AfterUnknown::GiveUp`](crate::ledger::AfterUnknown)).

use reqwest::StatusCode;
use secrecy::ExposeSecret;

use super::{Sms, UserLink};
use crate::failure::{SendFailure, excerpt, from_reqwest};
use crate::ledger::AfterUnknown;
use crate::report::JASMIN_DLR_LEVEL;

/// Jasmin checks `username` and `password` against `^.{1,16}$`.
const MAX_CREDENTIAL: usize = 16;

#[derive(Debug, Clone)]
pub struct JasminGateway {
    link: UserLink,
}

impl JasminGateway {
    /// Refuses credentials Jasmin would refuse on every request.
    pub(super) fn new(link: UserLink) -> anyhow::Result<Self> {
        let chars = |s: &str| s.chars().count();
        anyhow::ensure!(
            (1..=MAX_CREDENTIAL).contains(&chars(&link.user)),
            "JASMIN_USER must be 1–{MAX_CREDENTIAL} characters (Jasmin refuses longer ones)"
        );
        anyhow::ensure!(
            (1..=MAX_CREDENTIAL).contains(&chars(link.password.expose_secret())),
            "JASMIN_PASSWORD must be 1–{MAX_CREDENTIAL} characters (Jasmin refuses longer ones)"
        );
        Ok(JasminGateway { link })
    }

    pub fn reports(&self) -> bool {
        self.link.reports.is_some()
    }

    pub async fn send(&self, sms: &Sms) -> Result<(), SendFailure> {
        let response = self
            .link
            .client
            .post(self.link.url.clone())
            .form(&self.form(sms))
            .send()
            .await
            .map_err(|e| from_reqwest(e, AfterUnknown::GiveUp))?;
        let status = response.status();
        let body = shared::peer::error_body(response).await;
        match classify(status, &body) {
            Ok(msgid) => {
                tracing::debug!(reply_to = %sms.reply_to, jasmin_id = %msgid, "Jasmin queued the reply");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The `/send` form: in the body, so the password stays out of access logs.
    fn form(&self, sms: &Sms) -> Vec<(&'static str, String)> {
        let mut form = vec![
            ("username", self.link.user.clone()),
            ("password", self.link.password.expose_secret().to_owned()),
            ("to", sms.to.as_str().to_owned()),
            ("coding", "8".to_owned()),
            ("hex-content", ucs2_hex(&sms.text)),
        ];
        if let Some(from) = &self.link.from {
            form.push(("from", from.clone()));
        }
        match &self.link.reports {
            Some(reports) => {
                form.push(("dlr", "yes".to_owned()));
                form.push(("dlr-level", JASMIN_DLR_LEVEL.to_owned()));
                form.push(("dlr-method", "POST".to_owned()));
                form.push(("dlr-url", reports.jasmin_url(&sms.reply_to)));
            }
            None => form.push(("dlr", "no".to_owned())),
        }
        form
    }
}

/// The text as UTF-16BE, in hex (Jasmin's `hex-content` for `coding=8`).
fn ucs2_hex(text: &str) -> String {
    let bytes: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    shared::hex::encode(&bytes)
}

/// Jasmin's answer: its message id, or what the failure means.
fn classify(status: StatusCode, body: &str) -> Result<String, SendFailure> {
    let what = || anyhow::anyhow!("Jasmin /send answered {status}: {}", excerpt(body));
    let text = body.trim();
    if status.is_success() {
        // `Success "<msgid>"` is the only success Jasmin writes; anything else at 200 is
        // not Jasmin's answer (a proxy?), and the SMS may or may not be queued.
        return match text
            .strip_prefix("Success \"")
            .and_then(|rest| rest.strip_suffix('"'))
        {
            Some(msgid) => Ok(msgid.to_owned()),
            None => Err(SendFailure::unanswered(AfterUnknown::GiveUp, what())),
        };
    }
    let passes = text.contains("throughput exceeded") || text.contains("no bound connector");
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || passes {
        // Not queued: a retry cannot double it.
        Err(SendFailure::retry(what()))
    } else {
        Err(SendFailure::refused(what()))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::failure::FailureKind;

    #[test]
    fn cyrillic_goes_as_utf16be_hex() {
        assert_eq!(ucs2_hex("Пр 1"), "041f044000200031");
        // Outside the BMP: a surrogate pair, as UCS-2 handsets show it.
        assert_eq!(ucs2_hex("😀"), "d83dde00");
    }

    #[test]
    fn jasmin_answers() {
        let ok = classify(
            StatusCode::OK,
            "Success \"5c6426e7-ed1a-4707-8dfb-25764376cea3\"",
        );
        assert_eq!(
            ok.ok().as_deref(),
            Some("5c6426e7-ed1a-4707-8dfb-25764376cea3")
        );
        let kind = |code: u16, body: &str| {
            classify(StatusCode::from_u16(code).expect("status"), body)
                .err()
                .map(|e| e.kind)
        };
        // What a running Jasmin 0.11.1 answered (scripts/jasmin.py, see docs/channels.md).
        assert_eq!(
            kind(400, "Error \"Argument [to] has an invalid value: [abc].\""),
            Some(FailureKind::Permanent)
        );
        assert_eq!(
            kind(
                403,
                "Error \"Authentication failure for username:notifier\""
            ),
            Some(FailureKind::Permanent)
        );
        // From Jasmin's errors.py.
        assert_eq!(
            kind(412, "Error \"No route found\""),
            Some(FailureKind::Permanent)
        );
        assert_eq!(
            kind(403, "Error \"User throughput exceeded\""),
            Some(FailureKind::Transient)
        );
        assert_eq!(
            kind(412, "Error \"Failover route has no bound connectors\""),
            Some(FailureKind::Transient)
        );
        assert_eq!(
            kind(
                500,
                "Error \"Cannot send submit_sm, check SMPPClientManagerPB log file for details\""
            ),
            Some(FailureKind::Transient)
        );
        assert_eq!(
            kind(503, "Error \"InterceptorPB not connected !\""),
            Some(FailureKind::Transient)
        );
        assert_eq!(kind(200, "<html>proxy</html>"), Some(FailureKind::Unknown));
    }

    #[test]
    fn credentials_longer_than_jasmin_takes_are_refused_at_start() {
        let url: reqwest::Url = "http://jasmin:1401/send".parse().expect("url");
        let gw = |user: &str, password: &str| {
            let link = UserLink::new(
                url.clone(),
                user.into(),
                password.to_owned().into(),
                None,
                None,
                Duration::from_secs(5),
            )
            .expect("a link");
            JasminGateway::new(link)
        };
        assert!(gw("notifier", "secret").is_ok());
        assert!(gw("a-user-name-of-17", "secret").is_err());
        assert!(gw("notifier", "").is_err());
    }
}
