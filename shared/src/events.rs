//! The events on the `meter.events` exchange (SPEC §4.2). Each body carries
//! `"schema": "<routing key>/v1"`; the enum tag is that field, so a consumer that
//! binds several routing keys decodes into one type and an unknown schema is a
//! decoding error (and so a dead letter), never a silent misreading.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, FixedOffset};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The topic exchange every event is published to (fixed by the contract).
pub const EXCHANGE: &str = "meter.events";

pub const SMS_RECEIVED: &str = "sms.received";
pub const READING_ACCEPTED: &str = "reading.accepted";
pub const READING_REJECTED: &str = "reading.rejected";

/// Every event of the system, tagged by its versioned schema name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "schema")]
pub enum Event {
    #[serde(rename = "sms.received/v1")]
    SmsReceived(SmsReceived),
    #[serde(rename = "reading.accepted/v1")]
    ReadingAccepted(ReadingAccepted),
    #[serde(rename = "reading.rejected/v1")]
    ReadingRejected(ReadingRejected),
}

impl Event {
    /// The routing key the event is published with.
    pub fn routing_key(&self) -> &'static str {
        match self {
            Event::SmsReceived(_) => SMS_RECEIVED,
            Event::ReadingAccepted(_) => READING_ACCEPTED,
            Event::ReadingRejected(_) => READING_REJECTED,
        }
    }

    /// The inbound message this event is about: the key for idempotent effects.
    pub fn message_id(&self) -> &str {
        match self {
            Event::SmsReceived(e) => &e.message_id,
            Event::ReadingAccepted(e) => &e.message_id,
            Event::ReadingRejected(e) => &e.message_id,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail: no maps with non-string keys,
        // no custom serializers that return errors.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(body: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(body)
    }
}

/// How a message reached the system: an SMS (Kannel or an aggregator's webhook), a
/// paper slip from an information box that an operator typed into the console
/// (SPEC §4.8), the resident web form or the retailer's personal cabinet on ingest,
/// or a message in a Telegram or MAX bot's chat (SPEC §4.9). All pass the same
/// validation; billing can tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Sms,
    Paper,
    Web,
    Cabinet,
    Telegram,
    Max,
}

impl Channel {
    /// Every channel (`e2e/tests/docs/contract.rs` holds the list to the enum with an
    /// exhaustive `match`).
    pub const ALL: [Channel; 6] = [
        Channel::Sms,
        Channel::Paper,
        Channel::Web,
        Channel::Cabinet,
        Channel::Telegram,
        Channel::Max,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Paper => "paper",
            Channel::Web => "web",
            Channel::Cabinet => "cabinet",
            Channel::Telegram => "telegram",
            Channel::Max => "max",
        }
    }

    /// A bot's channel: its events carry the `chat` the answer goes back to.
    pub fn is_chat(self) -> bool {
        matches!(self, Channel::Telegram | Channel::Max)
    }
}

/// `sms.received`: an inbound SMS, as ingest accepted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmsReceived {
    pub message_id: String,
    /// E.164, e.g. `+79001234567`.
    pub from: String,
    /// The number the resident texted (E.164 or a short code).
    pub to: String,
    pub text: String,
    pub received_at: DateTime<FixedOffset>,
    pub channel: Channel,
    /// A bot's chat the message came from (SPEC §4.9), for the answer; `None` on
    /// every other channel (and then absent from the JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<String>,
    /// A phone number shared in the chat with the platform's contact button.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<SharedContact>,
}

/// A contact a resident shared in a bot's chat (SPEC §4.9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedContact {
    /// The number in E.164 — only when the contact is the sender's own (the
    /// platform says whose it is): someone else's number is never published, and only
    /// the sender's own binds the chat. `None`: another person's contact, or one
    /// without a valid number.
    pub phone: Option<String>,
}

/// `reading.accepted`: a reading that passed every check and is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingAccepted {
    pub reading_id: Uuid,
    pub message_id: String,
    pub account: String,
    pub meter: String,
    pub period: Period,
    /// One value per tariff zone: T1 (day / peak), T2, T3.
    pub values: Vec<u64>,
    pub received_at: DateTime<FixedOffset>,
    pub channel: Channel,
    pub email: Option<String>,
    /// The earlier reading of the same meter and period that this one replaces.
    pub supersedes: Option<Uuid>,
    /// Who sent it, as `sms.received` says (SPEC §4.2); absent in events written
    /// before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// A bot's chat, for the acceptance answer (SPEC §4.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<String>,
}

/// `reading.rejected`: a message refused, with the reason and the reply to send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingRejected {
    pub message_id: String,
    pub from: String,
    pub account: Option<String>,
    pub reason: RejectReason,
    /// The SMS to send back; `None` where no reply is due (`rate_limited`).
    pub reply: Option<String>,
    pub received_at: DateTime<FixedOffset>,
    pub channel: Channel,
    /// A bot's chat, for the answer (SPEC §4.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<String>,
}

/// The reason codes of SPEC §3, in the order the checks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    Format,
    InvalidEmail,
    OutsideWindow,
    UnknownAccount,
    AccountClosed,
    MultipleMeters,
    ZoneMismatch,
    TooManyDigits,
    ReadingDecreased,
    Implausible,
    RateLimited,
}

impl RejectReason {
    pub const ALL: [RejectReason; 11] = [
        RejectReason::Format,
        RejectReason::InvalidEmail,
        RejectReason::OutsideWindow,
        RejectReason::UnknownAccount,
        RejectReason::AccountClosed,
        RejectReason::MultipleMeters,
        RejectReason::ZoneMismatch,
        RejectReason::TooManyDigits,
        RejectReason::ReadingDecreased,
        RejectReason::Implausible,
        RejectReason::RateLimited,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Format => "format",
            RejectReason::InvalidEmail => "invalid_email",
            RejectReason::OutsideWindow => "outside_window",
            RejectReason::UnknownAccount => "unknown_account",
            RejectReason::AccountClosed => "account_closed",
            RejectReason::MultipleMeters => "multiple_meters",
            RejectReason::ZoneMismatch => "zone_mismatch",
            RejectReason::TooManyDigits => "too_many_digits",
            RejectReason::ReadingDecreased => "reading_decreased",
            RejectReason::Implausible => "implausible",
            RejectReason::RateLimited => "rate_limited",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RejectReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RejectReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown reason code `{s}`"))
    }
}

/// A billing period: one calendar month, written `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    year: i32,
    month: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a period: expected YYYY-MM with a month 01–12")]
pub struct PeriodError(String);

impl Period {
    pub fn new(year: i32, month: u32) -> Result<Self, PeriodError> {
        if (1..=12).contains(&month) && (1900..=9999).contains(&year) {
            Ok(Period { year, month })
        } else {
            Err(PeriodError(format!("{year:04}-{month:02}")))
        }
    }

    /// The period a moment falls in, in the moment's own offset.
    pub fn of<Tz: chrono::TimeZone>(at: &DateTime<Tz>) -> Self {
        Period {
            year: at.year(),
            month: at.month(),
        }
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }

    /// Months from `self` to `later` (0 for the same period, negative if earlier).
    pub fn months_until(self, later: Period) -> i64 {
        (i64::from(later.year) - i64::from(self.year)) * 12 + i64::from(later.month)
            - i64::from(self.month)
    }

    pub fn previous(self) -> Period {
        if self.month == 1 {
            Period {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Period {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    pub fn next(self) -> Period {
        if self.month == 12 {
            Period {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Period {
                year: self.year,
                month: self.month + 1,
            }
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Period {
    type Err = PeriodError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PeriodError(s.chars().take(32).collect());
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let year = y.parse().map_err(|_| bad())?;
        let month = m.parse().map_err(|_| bad())?;
        Period::new(year, month).map_err(|_| bad())
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<FixedOffset> {
        DateTime::parse_from_rfc3339(s).expect("test timestamp")
    }

    fn samples() -> Vec<Event> {
        vec![
            Event::SmsReceived(SmsReceived {
                message_id: "gw-123".into(),
                from: "+79001234567".into(),
                to: "+79037672060".into(),
                text: "1234567 12345".into(),
                received_at: at("2026-11-20T10:00:00+05:00"),
                channel: Channel::Sms,
                chat: None,
                contact: None,
            }),
            Event::ReadingAccepted(ReadingAccepted {
                reading_id: Uuid::nil(),
                message_id: "gw-123".into(),
                account: "001234567".into(),
                meter: "M-1".into(),
                period: Period::new(2026, 11).expect("period"),
                values: vec![45100, 12000],
                received_at: at("2026-11-20T10:00:00+05:00"),
                channel: Channel::Sms,
                email: Some("a+b@example.ru".into()),
                supersedes: Some(Uuid::from_u128(7)),
                from: None,
                chat: None,
            }),
            Event::ReadingRejected(ReadingRejected {
                message_id: "gw-124".into(),
                from: "+79001234567".into(),
                account: None,
                reason: RejectReason::Format,
                reply: Some("Неверный формат".into()),
                received_at: at("2026-11-20T10:00:00Z"),
                channel: Channel::Sms,
                chat: None,
            }),
        ]
    }

    #[test]
    fn events_round_trip_through_json() {
        for event in samples() {
            let json = event.to_json();
            let back = Event::from_json(&json).expect("decodes");
            assert_eq!(back, event);
        }
    }

    #[test]
    fn schema_field_names_routing_key_and_version() {
        for event in samples() {
            let value: serde_json::Value = serde_json::from_slice(&event.to_json()).expect("json");
            assert_eq!(
                value["schema"],
                format!("{}/v1", event.routing_key()),
                "{value}"
            );
        }
    }

    #[test]
    fn wire_format_matches_the_contract() {
        let value: serde_json::Value =
            serde_json::from_slice(&samples()[1].to_json()).expect("json");
        assert_eq!(value["period"], "2026-11");
        assert_eq!(value["values"], serde_json::json!([45100, 12000]));
        assert_eq!(value["account"], "001234567");
        assert_eq!(value["channel"], "sms");
        assert_eq!(value["received_at"], "2026-11-20T10:00:00+05:00");
        assert_eq!(value["reading_id"], "00000000-0000-0000-0000-000000000000");
        let rejected: serde_json::Value =
            serde_json::from_slice(&samples()[2].to_json()).expect("json");
        assert_eq!(rejected["reason"], "format");
        assert_eq!(rejected["account"], serde_json::Value::Null);
    }

    #[test]
    fn chat_fields_are_absent_unless_set_and_read_back_when_set() {
        // An SMS's events are what they were before the bot channels: no `chat`, no
        // `contact`, no `from` on an accepted reading that has none.
        for event in samples() {
            let value: serde_json::Value = serde_json::from_slice(&event.to_json()).expect("json");
            for field in ["chat", "contact"] {
                assert!(value.get(field).is_none(), "{field} in {value}");
            }
        }
        let Event::SmsReceived(mut sms) = samples()[0].clone() else {
            unreachable!("the first sample is an sms.received")
        };
        sms.channel = Channel::Telegram;
        sms.from = "telegram:111".into();
        sms.chat = Some("111".into());
        sms.contact = Some(SharedContact {
            phone: Some("+79001234567".into()),
        });
        let event = Event::SmsReceived(sms);
        let value: serde_json::Value = serde_json::from_slice(&event.to_json()).expect("json");
        assert_eq!(value["channel"], "telegram");
        assert_eq!(value["chat"], "111");
        assert_eq!(value["contact"]["phone"], "+79001234567");
        assert_eq!(Event::from_json(&event.to_json()).expect("decodes"), event);
        // A foreign contact's number is never written: `phone` is null.
        let foreign = serde_json::to_value(SharedContact { phone: None }).expect("json");
        assert_eq!(foreign, serde_json::json!({"phone": null}));
        // An event written before `from` and `chat` existed still decodes.
        let mut old: serde_json::Value =
            serde_json::from_slice(&samples()[1].to_json()).expect("json");
        old.as_object_mut().expect("object").remove("from");
        let back = Event::from_json(old.to_string().as_bytes()).expect("decodes");
        assert_eq!(back, samples()[1]);
        for channel in Channel::ALL {
            assert_eq!(
                serde_json::from_value::<Channel>(serde_json::Value::String(
                    channel.as_str().into()
                ))
                .ok(),
                Some(channel)
            );
            assert_eq!(
                serde_json::to_value(channel).expect("json"),
                serde_json::Value::String(channel.as_str().into())
            );
        }
        assert!(Channel::Max.is_chat() && !Channel::Cabinet.is_chat());
    }

    #[test]
    fn unknown_schema_is_an_error() {
        let body = br#"{"schema":"sms.received/v9","message_id":"x"}"#;
        assert!(Event::from_json(body).is_err());
        assert!(Event::from_json(b"not json").is_err());
    }

    #[test]
    fn reason_codes_parse_back() {
        for r in RejectReason::ALL {
            assert_eq!(r.as_str().parse::<RejectReason>(), Ok(r));
            assert_eq!(
                serde_json::to_value(r).expect("json"),
                serde_json::Value::String(r.as_str().into())
            );
        }
        assert!("nope".parse::<RejectReason>().is_err());
    }

    #[test]
    fn period_parsing() {
        assert_eq!(
            "2026-01".parse::<Period>().map(|p| p.to_string()),
            Ok("2026-01".into())
        );
        for bad in [
            "2026-13",
            "2026-00",
            "2026-1",
            "26-01",
            "2026_01",
            "",
            "２０２６-01",
            "2026-01x",
        ] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
        let jan = Period::new(2026, 1).expect("p");
        assert_eq!(jan.previous().to_string(), "2025-12");
        assert_eq!(jan.previous().next(), jan);
        assert_eq!(Period::new(2025, 11).expect("p").months_until(jan), 2);
    }

    proptest! {
        #[test]
        fn period_display_parse_round_trip(year in 1900i32..=9999, month in 1u32..=12) {
            let p = Period::new(year, month).expect("valid");
            prop_assert_eq!(p.to_string().parse::<Period>(), Ok(p));
        }

        #[test]
        fn period_parse_never_panics(s in "\\PC{0,12}") {
            let _ = s.parse::<Period>();
        }
    }
}
