//! Delivery reports (SPEC §4.3): what became of a reply after the gateway took it.
//! A reply is `sent` in the ledger when the gateway accepted it; the network's report
//! then makes it `delivered` or `failed` (the `report` column, migration 0004).
//!
//! - **Kannel** is asked for reports with `dlr-mask=3` (delivered to the phone, not
//!   delivered) and a `dlr-url` back to `GET /v1/dlr/kannel` that names the reply:
//!   `reply=<hex of the message id>&sig=<HMAC>&status=%d`. The id travels as hex
//!   because Kannel reads every `%` in a dlr-url as one of its escape codes; the
//!   signature (HMAC-SHA256 under `DLR_SECRET`, truncated to 128 bits) means a stranger
//!   who can reach the notifier cannot report on a reply, and a leaked URL speaks for
//!   that one reply only. With `dlr-mask=3` Kannel 1.4.5 also reports `16` (refused by
//!   the SMSC, e.g. no route) — read as `failed`; `4` and `8` (buffered, taken by the
//!   SMSC), which a wider mask would ask for, change nothing.
//! - **Jasmin** is asked for reports with `dlr=yes`, `dlr-level=3` (the SMSC's answer
//!   to the submit_sm, and the handset's receipt), `dlr-method=POST` and a `dlr-url` back
//!   to `POST /v1/dlr/jasmin?reply=<hex>&sig=<HMAC>`, signed as Kannel's is. Jasmin's DLR
//!   thrower posts its form (`id`, `level`, `message_status`, …) there and throws it again
//!   until the answer is exactly `ACK/Jasmin`. Level 1 `ESME_ROK` (the SMSC took it)
//!   changes nothing; any other `ESME_*` at level 1 (the SMSC refused the submit_sm —
//!   after `/send` had answered `Success`, so the ledger says `sent`) is `failed`; level 2
//!   `DELIVRD` is `delivered`, `UNDELIV`, `EXPIRED`, `DELETED`, `REJECTD` are `failed`,
//!   `ACCEPTD` and `UNKNOWN` are progress.
//! - **The HTTP aggregator** posts `{"reply_to", "status"}` to `POST /v1/dlr` with its
//!   `SMS_HTTP_TOKEN`.
//!
//! Every well-formed, authentic report is answered `200`, whatever it says about a
//! reply we do not know, a report we already have, or one that arrives out of order
//! (delivered before the gateway's answer was recorded; failed after delivered): each
//! such case is counted (`notifier_delivery_reports_total{outcome}`), so a gateway is
//! never made to retry what retrying cannot change. A failed reply is counted, never
//! re-sent by itself: the ledger's sending state is not touched.

mod routes;

use std::fmt;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use sqlx::PgPool;

pub use routes::{JASMIN_ACK, ReportMetrics, ReportState, router};

use crate::ledger::State;

/// What the network said about a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It reached the phone (final).
    Delivered,
    /// It will not reach the phone (final).
    Failed,
    /// On its way (buffered, taken by the SMSC): nothing to record.
    Progress,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::Failed => "failed",
            Status::Progress => "progress",
        }
    }

    /// Kannel's `%d`: 1 delivered to the phone, 2 not delivered, 4 queued on the SMSC,
    /// 8 delivered to the SMSC, 16 refused by the SMSC (Kannel's own docs, and what
    /// 1.4.5 sent with its fake SMSC: 1; with no route: 16).
    pub fn from_kannel(code: u32) -> Option<Status> {
        match code {
            1 => Some(Status::Delivered),
            2 | 16 => Some(Status::Failed),
            4 | 8 => Some(Status::Progress),
            _ => None,
        }
    }

    /// Jasmin's `message_status`: an SMPP command status at level 1 (`ESME_ROK`: the
    /// SMSC took it; another: it refused it, and no receipt follows), a receipt's
    /// `stat` (SMPP 3.4 Appendix B) at level 2. (Jasmin 0.11.1 sends only these: its
    /// `DLRContentForHttpapi` refuses any other value.)
    ///
    /// Four refusals Jasmin submits again by itself (its default `[sm-listener]
    /// submit_error_retrial`: `ESME_RSYSERR`, `ESME_RTHROTTLED`, `ESME_RMSGQFUL`,
    /// `ESME_RINVSCHED`) are reported at level 1 on every attempt: not a final fate, so
    /// progress. (Jasmin drops its report request at that first report: the fate of
    /// such a message is never reported, and the reply stays `sent`.)
    pub fn from_jasmin(message_status: &str) -> Option<Status> {
        match message_status {
            "ESME_ROK" => Some(Status::Progress),
            "ESME_RSYSERR" | "ESME_RTHROTTLED" | "ESME_RMSGQFUL" | "ESME_RINVSCHED" => {
                Some(Status::Progress)
            }
            s if s.starts_with("ESME_") && s.len() > 5 => Some(Status::Failed),
            "DELIVRD" => Some(Status::Delivered),
            "UNDELIV" | "EXPIRED" | "DELETED" | "REJECTD" => Some(Status::Failed),
            "ACCEPTD" | "UNKNOWN" => Some(Status::Progress),
            _ => None,
        }
    }

    /// The aggregator's `status` field.
    pub fn from_aggregator(s: &str) -> Option<Status> {
        match s {
            "delivered" => Some(Status::Delivered),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }

    fn parse_final(s: &str) -> Option<Status> {
        match s {
            "delivered" => Some(Status::Delivered),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

/// What a report did to the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The reply's fate is now known.
    Recorded,
    /// Recorded, but it came before the ledger said `sent` (the gateway's answer not
    /// written yet, or lost): the report is the better news, so it stands.
    Early,
    /// The same final report again (a gateway retry): nothing changed.
    Duplicate,
    /// A final report that contradicts the one recorded (failed after delivered):
    /// the first one stands.
    Conflicting,
    /// An intermediate report (buffered, taken by the SMSC): nothing to record.
    Progress,
    /// No reply of ours by that id (or one we never sent: suppressed).
    UnknownReply,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Recorded => "recorded",
            Outcome::Early => "early",
            Outcome::Duplicate => "duplicate",
            Outcome::Conflicting => "conflicting",
            Outcome::Progress => "progress",
            Outcome::UnknownReply => "unknown_reply",
        }
    }
}

/// The decision for one report on a reply found in `state` with `report` recorded
/// (`None`: no such reply). Pure, so every order of events is tested in one place.
pub fn decide(found: Option<(State, Option<Status>)>, status: Status) -> Outcome {
    let Some((state, recorded)) = found else {
        return Outcome::UnknownReply;
    };
    if state == State::Suppressed {
        return Outcome::UnknownReply;
    }
    if status == Status::Progress {
        return Outcome::Progress;
    }
    match recorded {
        Some(first) if first == status => Outcome::Duplicate,
        Some(_) => Outcome::Conflicting,
        None => match state {
            // The gateway took it: the normal order. `unknown` (sent, no answer) and
            // `failed` (a gateway refusal, e.g. Kannel's 403 "Not routable", which
            // also reports 16) are settled by the report too.
            State::Sent | State::Unknown | State::Failed => Outcome::Recorded,
            // The report overtook the gateway's answer: it was sent.
            State::Pending | State::Sending => Outcome::Early,
            State::Suppressed => Outcome::UnknownReply,
        },
    }
}

/// Records `status` for the reply to `message_id` (ledger key `reply:<message_id>`),
/// in one transaction that locks the row, and says what it did.
pub async fn record(
    pool: &PgPool,
    message_id: &str,
    status: Status,
    detail: &str,
) -> Result<Outcome, sqlx::Error> {
    let key = format!("reply:{message_id}");
    let mut tx = pool.begin().await?;
    #[derive(sqlx::FromRow)]
    struct Row {
        state: String,
        report: Option<String>,
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT state, report FROM deliveries WHERE key = $1 AND channel = 'sms' FOR UPDATE",
    )
    .bind(&key)
    .fetch_optional(&mut *tx)
    .await?;
    let found = match row {
        None => None,
        Some(row) => {
            let state = State::parse(&row.state).ok_or_else(|| {
                sqlx::Error::Decode(format!("delivery {key}: unknown state {:?}", row.state).into())
            })?;
            let report = match row.report.as_deref() {
                None => None,
                Some(r) => Some(Status::parse_final(r).ok_or_else(|| {
                    sqlx::Error::Decode(format!("delivery {key}: unknown report {r:?}").into())
                })?),
            };
            Some((state, report))
        }
    };
    let outcome = decide(found, status);
    if matches!(outcome, Outcome::Recorded | Outcome::Early) {
        sqlx::query(
            "UPDATE deliveries
             SET report = $2, report_detail = $3, reported_at = now(), updated_at = now()
             WHERE key = $1",
        )
        .bind(&key)
        .bind(status.as_str())
        .bind(detail.chars().take(200).collect::<String>())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(outcome)
}

/// The keys of `DLR_SECRET`: the first signs, every one verifies.
#[derive(Clone)]
pub struct SigningKeys(Vec<SecretString>);

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKeys({} keys)", self.0.len())
    }
}

/// Bytes of the HMAC kept in a URL: 128 bits, beyond guessing.
const SIGNATURE_BYTES: usize = 16;

type HmacSha256 = Hmac<Sha256>;

impl SigningKeys {
    /// A comma-separated list, each key at least 16 characters.
    pub fn parse(list: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for (i, key) in list.split(',').map(str::trim).enumerate() {
            if key.chars().count() < shared::token::MIN_LEN {
                return Err(format!(
                    "key {} is shorter than {} characters",
                    i + 1,
                    shared::token::MIN_LEN
                ));
            }
            keys.push(SecretString::from(key.to_owned()));
        }
        Ok(SigningKeys(keys))
    }

    fn mac(key: &SecretString, message_id: &str) -> HmacSha256 {
        // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(key.expose_secret().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(b"reply:");
        mac.update(message_id.as_bytes());
        mac
    }

    /// The signature of the reply to `message_id`, as hex.
    pub fn sign(&self, message_id: &str) -> String {
        let Some(key) = self.0.first() else {
            return String::new();
        };
        let tag = Self::mac(key, message_id).finalize().into_bytes();
        hex(&tag[..SIGNATURE_BYTES])
    }

    /// Whether `signature` (hex) is one of the keys' signature of `message_id`;
    /// constant-time in the signature's content, every key tried.
    pub fn verify(&self, message_id: &str, signature: &str) -> bool {
        let Some(presented) = unhex(signature) else {
            return false;
        };
        if presented.len() != SIGNATURE_BYTES {
            return false;
        }
        let mut ok = false;
        for key in &self.0 {
            ok |= Self::mac(key, message_id)
                .verify_truncated_left(&presented)
                .is_ok();
        }
        ok
    }
}

/// Where a gateway is to send its reports for one reply (`DLR_BASE_URL`), signed with
/// `DLR_SECRET`.
#[derive(Debug, Clone)]
pub struct DlrCallback {
    base: reqwest::Url,
    keys: SigningKeys,
}

/// Kannel's `dlr-mask`: delivered to the phone (1) + not delivered (2), SPEC §4.3.
pub const KANNEL_DLR_MASK: &str = "3";

/// Jasmin's `dlr-level`: the SMSC's answer (1) and the terminal receipt (2).
pub const JASMIN_DLR_LEVEL: &str = "3";

impl DlrCallback {
    pub fn new(base: reqwest::Url, keys: SigningKeys) -> Self {
        DlrCallback { base, keys }
    }

    /// `reply=<hex>&sig=<hex>` for the reply to `message_id`.
    fn reply_query(&self, message_id: &str) -> String {
        format!(
            "reply={}&sig={}",
            hex(message_id.as_bytes()),
            self.keys.sign(message_id)
        )
    }

    fn base(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// Kannel's `dlr-url` for the reply to `message_id`; `%d` is Kannel's status code.
    pub fn kannel_url(&self, message_id: &str) -> String {
        format!(
            "{}/v1/dlr/kannel?{}&status=%d",
            self.base(),
            self.reply_query(message_id)
        )
    }

    /// Jasmin's `dlr-url` for the reply to `message_id` (the report comes as a form).
    pub fn jasmin_url(&self, message_id: &str) -> String {
        format!(
            "{}/v1/dlr/jasmin?{}",
            self.base(),
            self.reply_query(message_id)
        )
    }
}

use shared::hex::{decode as unhex, encode as hex};

/// The message id a Kannel report names (`reply=` hex), if it is one.
pub fn reply_from_hex(s: &str) -> Option<String> {
    String::from_utf8(unhex(s)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &str) -> SigningKeys {
        SigningKeys::parse(list).expect("keys")
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        // Key "Jefe", data "what do ya want for nothing?" — the mac() prefix aside.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex(&mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn signatures_verify_only_for_their_reply_and_keys() {
        let k = keys("0123456789abcdef-one");
        let sig = k.sign("kannel-42");
        assert_eq!(sig.len(), 32);
        assert!(k.verify("kannel-42", &sig));
        assert!(!k.verify("kannel-43", &sig));
        assert!(!k.verify("kannel-42", &sig[..30]));
        assert!(!k.verify("kannel-42", "zz"));
        assert!(!keys("another-key-of-16-chars").verify("kannel-42", &sig));
        // Rotation: a new key first, the old one still accepted.
        let rotated = keys("new-key-0123456789, 0123456789abcdef-one");
        assert!(rotated.verify("kannel-42", &sig));
        assert_ne!(rotated.sign("kannel-42"), sig);
        assert!(SigningKeys::parse("short").is_err());
        assert!(SigningKeys::parse("0123456789abcdef,x").is_err());
    }

    #[test]
    fn the_dlr_url_names_the_reply_without_a_percent_sign() {
        let cb = DlrCallback::new(
            "http://notifier:8082/".parse().expect("url"),
            keys("0123456789abcdef-one"),
        );
        let id = "kannel-id/with spaces&%2F";
        let url = cb.kannel_url(id);
        let query = url
            .strip_prefix("http://notifier:8082/v1/dlr/kannel?reply=")
            .expect("prefix");
        let (reply, rest) = query.split_once("&sig=").expect("sig");
        assert_eq!(reply_from_hex(reply).as_deref(), Some(id));
        let (sig, status) = rest.split_once('&').expect("status");
        assert!(cb.keys.verify(id, sig));
        assert_eq!(status, "status=%d");
        // The only `%` is Kannel's own escape.
        assert_eq!(url.matches('%').count(), 1);
        assert_eq!(reply_from_hex("zz"), None);
        assert_eq!(reply_from_hex("ff"), None, "not UTF-8");
        // Jasmin's names the same reply with the same signature, and no status.
        let jasmin = cb.jasmin_url(id);
        assert_eq!(
            jasmin,
            format!("http://notifier:8082/v1/dlr/jasmin?reply={reply}&sig={sig}")
        );
    }

    #[test]
    fn jasmin_statuses() {
        assert_eq!(Status::from_jasmin("ESME_ROK"), Some(Status::Progress));
        assert_eq!(Status::from_jasmin("ESME_RINVDSTADR"), Some(Status::Failed));
        assert_eq!(Status::from_jasmin("ESME_RINVDSTADR"), Some(Status::Failed));
        assert_eq!(
            Status::from_jasmin("ESME_RSUBMITFAIL"),
            Some(Status::Failed)
        );
        // Submitted again by Jasmin itself: not final.
        assert_eq!(
            Status::from_jasmin("ESME_RTHROTTLED"),
            Some(Status::Progress)
        );
        assert_eq!(Status::from_jasmin("ESME_RMSGQFUL"), Some(Status::Progress));
        assert_eq!(Status::from_jasmin("DELIVRD"), Some(Status::Delivered));
        for failed in ["UNDELIV", "EXPIRED", "DELETED", "REJECTD"] {
            assert_eq!(
                Status::from_jasmin(failed),
                Some(Status::Failed),
                "{failed}"
            );
        }
        assert_eq!(Status::from_jasmin("ACCEPTD"), Some(Status::Progress));
        assert_eq!(Status::from_jasmin("UNKNOWN"), Some(Status::Progress));
        for bad in ["", "ESME_", "delivrd", "DELIVERED", "1"] {
            assert_eq!(Status::from_jasmin(bad), None, "{bad}");
        }
    }

    #[test]
    fn kannel_codes() {
        assert_eq!(Status::from_kannel(1), Some(Status::Delivered));
        assert_eq!(Status::from_kannel(2), Some(Status::Failed));
        assert_eq!(Status::from_kannel(16), Some(Status::Failed));
        assert_eq!(Status::from_kannel(8), Some(Status::Progress));
        assert_eq!(Status::from_kannel(4), Some(Status::Progress));
        assert_eq!(Status::from_kannel(3), None);
        assert_eq!(
            Status::from_aggregator("delivered"),
            Some(Status::Delivered)
        );
        assert_eq!(Status::from_aggregator("DELIVRD"), None);
    }

    #[test]
    fn every_order_of_reports() {
        use Outcome::*;
        use Status::{Delivered, Failed, Progress};
        assert_eq!(decide(None, Delivered), UnknownReply);
        assert_eq!(
            decide(Some((State::Suppressed, None)), Delivered),
            UnknownReply
        );
        assert_eq!(decide(Some((State::Sent, None)), Delivered), Recorded);
        assert_eq!(decide(Some((State::Sent, None)), Failed), Recorded);
        assert_eq!(decide(Some((State::Unknown, None)), Delivered), Recorded);
        assert_eq!(decide(Some((State::Failed, None)), Failed), Recorded);
        assert_eq!(decide(Some((State::Sending, None)), Delivered), Early);
        assert_eq!(decide(Some((State::Pending, None)), Failed), Early);
        assert_eq!(
            decide(Some((State::Sent, Some(Delivered))), Delivered),
            Duplicate
        );
        assert_eq!(
            decide(Some((State::Sent, Some(Delivered))), Failed),
            Conflicting
        );
        assert_eq!(
            decide(Some((State::Sent, Some(Failed))), Delivered),
            Conflicting
        );
        assert_eq!(
            decide(Some((State::Sent, None)), Progress),
            Outcome::Progress
        );
        assert_eq!(
            decide(Some((State::Sent, Some(Failed))), Progress),
            Outcome::Progress
        );
    }
}
