//! Paper slips from the information boxes (SPEC §4.8): an operator types the account
//! and the readings, and the slip is published exactly as ingest publishes an SMS —
//! an `sms.received` with `channel: "paper"` — so it passes the same validation and
//! is billed and exported like any reading.
//!
//! The slip's sender is its own id (`paper-…`), not the operator: the validator's
//! per-sender rate limit is for phones, and an operator types hundreds of slips an
//! hour. No reply SMS can go anywhere (the notifier records it as suppressed: not a
//! phone number); the operator reads the decision on the screen. Who typed the slip is
//! in the console's audit. The form carries the slip's id from the moment it is shown,
//! so a double submit publishes the same message twice, which the validator takes once.

use chrono::Utc;
use shared::broker::{PublishError, Publisher};
use shared::events::{Channel, Event, SmsReceived};

/// The recipient recorded for paper slips (an SMS has the number it was sent to).
pub const RECIPIENT: &str = "paper";
/// Readings on one slip at most (three tariff zones).
pub const MAX_ZONES: usize = 3;

/// A slip as typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slip {
    pub id: String,
    pub account: String,
    pub values: Vec<String>,
}

/// A new slip's id.
pub fn new_id() -> String {
    format!("paper-{}", uuid::Uuid::now_v7())
}

impl Slip {
    /// Checks what the form can check; the rest is the validator's, as for an SMS.
    pub fn parse(id: &str, account: &str, values: &[&str]) -> Result<Slip, String> {
        let id = id.trim();
        let id_ok = id
            .strip_prefix("paper-")
            .is_some_and(|u| uuid::Uuid::parse_str(u).is_ok());
        if !id_ok {
            return Err("форма устарела: откройте её заново".into());
        }
        let account = account.trim();
        if account.is_empty() {
            return Err("укажите лицевой счёт".into());
        }
        if account.len() > 18 || !account.chars().all(|c| c.is_ascii_digit()) {
            return Err("лицевой счёт — только цифры".into());
        }
        let values: Vec<String> = values
            .iter()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect();
        if values.is_empty() {
            return Err("укажите хотя бы одно показание".into());
        }
        if values.len() > MAX_ZONES {
            return Err("не больше трёх показаний".into());
        }
        if let Some(bad) = values
            .iter()
            .find(|v| v.len() > 18 || !v.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(format!(
                "показание «{}» — только цифры до запятой",
                bad.chars().take(20).collect::<String>()
            ));
        }
        Ok(Slip {
            id: id.to_owned(),
            account: account.to_owned(),
            values,
        })
    }

    /// The text the validator reads: the canonical SMS form (SPEC §2).
    pub fn text(&self) -> String {
        let mut text = self.account.clone();
        for v in &self.values {
            text.push(' ');
            text.push_str(v);
        }
        text
    }

    pub fn event(&self) -> Event {
        Event::SmsReceived(SmsReceived {
            message_id: self.id.clone(),
            from: self.id.clone(),
            to: RECIPIENT.to_owned(),
            text: self.text(),
            received_at: Utc::now().fixed_offset(),
            channel: Channel::Paper,
            chat: None,
            contact: None,
        })
    }

    /// Publishes the slip; `Ok` once the broker confirmed it as persisted.
    pub async fn publish(&self, publisher: &Publisher) -> Result<(), PublishError> {
        publisher.publish(&self.event()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slip_becomes_the_canonical_text_on_the_paper_channel() {
        let id = new_id();
        let slip = Slip::parse(&id, " 0001000001 ", &["45100", " 21100 ", ""]).expect("valid");
        assert_eq!(slip.text(), "0001000001 45100 21100");
        let Event::SmsReceived(sms) = slip.event() else {
            panic!("an sms.received");
        };
        assert_eq!(sms.channel, Channel::Paper);
        assert_eq!(sms.message_id, id);
        assert_eq!(sms.from, id);
        let json = String::from_utf8(slip.event().to_json()).expect("utf-8");
        assert!(json.contains(r#""channel":"paper""#), "{json}");
        assert!(json.contains(r#""schema":"sms.received/v1""#), "{json}");
    }

    #[test]
    fn what_the_form_can_tell_is_refused_with_a_reason() {
        let id = new_id();
        assert!(Slip::parse(&id, "", &["1"]).is_err());
        assert!(Slip::parse(&id, "12a", &["1"]).is_err());
        assert!(Slip::parse(&id, "1000001", &["", ""]).is_err());
        assert!(Slip::parse(&id, "1000001", &["1", "2", "3", "4"]).is_err());
        assert!(Slip::parse(&id, "1000001", &["12,5"]).is_err());
        assert!(Slip::parse("forged", "1000001", &["1"]).is_err());
    }
}
