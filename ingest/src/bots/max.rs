//! A MAX `Update` (dev.max.ru/docs-api/objects/Update) read into what the bot uses:
//! `message_created` and `message_edited` in a dialog, and `bot_started` (the
//! resident pressed Start), which is read as the text `/start` so that both platforms'
//! greeting is one command downstream. Times are Unix milliseconds. Only the fields
//! read here are declared.

use serde::Deserialize;
use shared::events::{Channel, SharedContact};

use super::{ChatMessage, NotRead, Update, bounded_id, own_phone, unix_time};

#[derive(Debug, Deserialize)]
struct MessageUpdate {
    /// When the event happened (an edit: when it was edited).
    timestamp: i64,
    message: Message,
}

#[derive(Debug, Deserialize)]
struct BotStarted {
    timestamp: i64,
    chat_id: i64,
    user: User,
    /// A deep link's `start` parameter.
    payload: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Message {
    sender: Option<User>,
    recipient: Recipient,
    timestamp: i64,
    /// `null` for a message that only forwards another.
    body: Option<Body>,
}

#[derive(Debug, Deserialize)]
struct User {
    user_id: i64,
    #[serde(default)]
    is_bot: bool,
}

#[derive(Debug, Deserialize)]
struct Recipient {
    chat_id: Option<i64>,
    /// `dialog` (a private chat with the bot), `chat` (a group), `channel`.
    chat_type: String,
}

#[derive(Debug, Deserialize)]
struct Body {
    mid: String,
    text: Option<String>,
    attachments: Option<Vec<serde_json::Value>>,
}

/// A `contact` attachment's payload: a vCard and, for a MAX user, that user.
#[derive(Debug, Deserialize)]
struct ContactPayload {
    vcf_info: Option<String>,
    max_info: Option<User>,
    /// The same user under the field's older name.
    tam_info: Option<User>,
}

/// Reads a webhook body. `NotAnUpdate` without a string `update_type` (MAX never
/// sends such a body); `Unreadable` when the update's fields do not read.
pub(super) fn read(body: &[u8]) -> Result<Update, NotRead> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| NotRead::NotAnUpdate(format!("not JSON: {e}")))?;
    let Some(kind) = value
        .get("update_type")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
    else {
        return Err(NotRead::NotAnUpdate(
            "not a MAX Update: no string `update_type`".into(),
        ));
    };
    let unreadable = |e: serde_json::Error| NotRead::Unreadable {
        update: format!(
            "{kind} {}",
            value.get("timestamp").unwrap_or(&serde_json::Value::Null)
        ),
        error: e.to_string(),
    };
    match kind.as_str() {
        "message_created" | "message_edited" => {
            let update: MessageUpdate =
                serde_json::from_value(value.clone()).map_err(unreadable)?;
            message(update, kind == "message_edited").map_err(unreadable)
        }
        "bot_started" => {
            let started: BotStarted = serde_json::from_value(value.clone()).map_err(unreadable)?;
            Ok(start(started))
        }
        _ => Ok(Update::Unused("update type")),
    }
}

fn message(update: MessageUpdate, edited: bool) -> Result<Update, serde_json::Error> {
    let message = update.message;
    if message.recipient.chat_type != "dialog" {
        return Ok(Update::Unused("not a private chat"));
    }
    let (Some(chat), Some(sender), Some(body)) =
        (message.recipient.chat_id, message.sender, message.body)
    else {
        return Ok(Update::Unused("no chat, sender or body"));
    };
    if sender.is_bot {
        return Ok(Update::Unused("a bot's message"));
    }
    // An edit keeps the message's `mid`; it is told apart by when it was edited (a
    // retry of the same update has the same time).
    let (id, sent) = if edited {
        (
            format!("max-{}-e{}", body.mid, update.timestamp),
            update.timestamp,
        )
    } else {
        (format!("max-{}", body.mid), message.timestamp)
    };
    let contact = match body
        .attachments
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.get("type").and_then(serde_json::Value::as_str) == Some("contact"))
    {
        None => None,
        Some(attachment) => {
            let payload: ContactPayload = serde_json::from_value(
                attachment
                    .get("payload")
                    .cloned()
                    .unwrap_or(serde_json::Value::Null),
            )?;
            let owner = payload.max_info.or(payload.tam_info).map(|u| u.user_id);
            let number = payload.vcf_info.as_deref().and_then(vcard_phone);
            Some(SharedContact {
                phone: number.and_then(|n| own_phone(n, owner == Some(sender.user_id))),
            })
        }
    };
    Ok(Update::Message(ChatMessage {
        channel: Channel::Max,
        message_id: bounded_id(id),
        user: sender.user_id.to_string(),
        chat: chat.to_string(),
        text: body.text.unwrap_or_default(),
        contact,
        sent_at: unix_time(sent, 1000),
    }))
}

/// `bot_started`: the greeting's command, as Telegram's Start button sends it.
fn start(started: BotStarted) -> Update {
    if started.user.is_bot {
        return Update::Unused("a bot's message");
    }
    let text = match started.payload.as_deref().map(str::trim) {
        Some(payload) if !payload.is_empty() => format!("/start {payload}"),
        _ => "/start".to_owned(),
    };
    Update::Message(ChatMessage {
        channel: Channel::Max,
        message_id: bounded_id(format!(
            "max-start-{}-{}",
            started.chat_id, started.timestamp
        )),
        user: started.user.user_id.to_string(),
        chat: started.chat_id.to_string(),
        text,
        contact: None,
        sent_at: unix_time(started.timestamp, 1000),
    })
}

/// The number of a vCard's first `TEL` line (`TEL;TYPE=cell:+79001234567`).
fn vcard_phone(vcard: &str) -> Option<&str> {
    vcard.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        let name = name.split(';').next()?.trim();
        // A grouped property (`item1.TEL`) counts too.
        let name = name.rsplit('.').next()?;
        name.eq_ignore_ascii_case("TEL").then_some(value.trim())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(message: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "update_type": "message_created",
            "timestamp": 1_795_000_000_500_i64,
            "message": message,
        }))
        .expect("json")
    }

    fn dialog(body: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "sender": {"user_id": 123456789, "first_name": "Иван", "is_bot": false},
            "recipient": {"chat_id": 182182182, "chat_type": "dialog", "user_id": 229229229},
            "timestamp": 1_795_000_000_000_i64,
            "body": body,
        })
    }

    fn read_message(body: &[u8]) -> ChatMessage {
        match read(body) {
            Ok(Update::Message(m)) => m,
            other => panic!("a message, not {other:?}"),
        }
    }

    #[test]
    fn a_text_in_a_dialog_is_a_message_of_its_chat() {
        let m = read_message(&created(dialog(serde_json::json!({
            "mid": "mid.000000000adf429c", "seq": 1, "text": "1000001 45100"
        }))));
        assert_eq!(m.message_id, "max-mid.000000000adf429c");
        assert_eq!(
            (m.user.as_str(), m.chat.as_str()),
            ("123456789", "182182182")
        );
        assert_eq!(m.text, "1000001 45100");
        assert_eq!(m.sent_at, unix_time(1_795_000_000, 1));
    }

    #[test]
    fn the_senders_own_contact_is_read_from_its_vcard() {
        let contact = |owner: i64| {
            dialog(serde_json::json!({
                "mid": "mid.c", "seq": 2, "text": null,
                "attachments": [{"type": "contact", "payload": {
                    "vcf_info": "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:Иван\r\nTEL;TYPE=cell:79001234567\r\nEND:VCARD\r\n",
                    "max_info": {"user_id": owner, "first_name": "Иван", "is_bot": false}
                }}]
            }))
        };
        let own = read_message(&created(contact(123456789)));
        assert_eq!(
            own.contact,
            Some(SharedContact {
                phone: Some("+79001234567".into())
            })
        );
        assert_eq!(own.text, "");
        let foreign = read_message(&created(contact(42)));
        assert_eq!(foreign.contact, Some(SharedContact { phone: None }));
    }

    #[test]
    fn bot_started_is_the_start_command() {
        let body = serde_json::json!({
            "update_type": "bot_started", "timestamp": 1_775_025_604_499_i64,
            "chat_id": 182182182, "user": {"user_id": 123456789, "first_name": "John"},
            "user_locale": "ru"
        });
        let m = read_message(&serde_json::to_vec(&body).expect("json"));
        assert_eq!(m.text, "/start");
        assert_eq!(m.message_id, "max-start-182182182-1775025604499");
        assert_eq!(m.chat, "182182182");
    }

    #[test]
    fn groups_and_other_update_types_are_unused_and_odd_fields_unreadable() {
        let group = created(serde_json::json!({
            "sender": {"user_id": 1}, "recipient": {"chat_id": -70801090403050_i64, "chat_type": "chat"},
            "timestamp": 1, "body": {"mid": "mid.g", "seq": 1, "text": "1000001 45100"}
        }));
        assert!(matches!(read(&group), Ok(Update::Unused(_))));
        let stopped =
            br#"{"update_type":"bot_stopped","timestamp":1,"chat_id":1,"user":{"user_id":1}}"#;
        assert!(matches!(read(stopped), Ok(Update::Unused(_))));
        assert!(matches!(
            read(b"{\"timestamp\":1}"),
            Err(NotRead::NotAnUpdate(_))
        ));
        let odd = br#"{"update_type":"message_created","timestamp":1,"message":{"body":7}}"#;
        assert!(matches!(read(odd), Err(NotRead::Unreadable { .. })));
    }

    #[test]
    fn vcard_numbers() {
        assert_eq!(
            vcard_phone("TEL:+7 900 123-45-67"),
            Some("+7 900 123-45-67")
        );
        assert_eq!(
            vcard_phone("item1.TEL;type=CELL:79001234567"),
            Some("79001234567")
        );
        assert_eq!(vcard_phone("FN:Иван\nEMAIL:a@b.ru"), None);
    }
}
