//! A Telegram `Update` (core.telegram.org/bots/api#update) read into what the bot
//! uses: a message, or an edited message, in a private chat. Only the fields read
//! here are declared; serde ignores the rest, so a field Telegram adds tomorrow
//! changes nothing.

use serde::Deserialize;
use shared::events::{Channel, SharedContact};

use super::{ChatMessage, NotRead, Update, bounded_id, own_phone, unix_time};

#[derive(Debug, Deserialize)]
struct TelegramUpdate {
    message: Option<Message>,
    edited_message: Option<Message>,
}

#[derive(Debug, Deserialize)]
struct Message {
    message_id: i64,
    /// Absent for messages sent on behalf of a channel or an anonymous group admin.
    from: Option<User>,
    chat: Chat,
    /// Unix time, seconds.
    date: i64,
    edit_date: Option<i64>,
    text: Option<String>,
    /// The text under a photo or a document: readings typed under a picture of the
    /// meter count like a text.
    caption: Option<String>,
    contact: Option<Contact>,
}

#[derive(Debug, Deserialize)]
struct User {
    id: i64,
    #[serde(default)]
    is_bot: bool,
}

#[derive(Debug, Deserialize)]
struct Chat {
    id: i64,
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Debug, Deserialize)]
struct Contact {
    phone_number: String,
    /// The contact's own Telegram user, when the contact is a Telegram user.
    user_id: Option<i64>,
}

/// Reads a webhook body. `NotAnUpdate` when it has no `update_id` (Telegram never
/// sends such a body); `Unreadable` when it has one but the message in it does not
/// read.
pub(super) fn read(body: &[u8]) -> Result<Update, NotRead> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| NotRead::NotAnUpdate(format!("not JSON: {e}")))?;
    let Some(update_id) = value.get("update_id").and_then(serde_json::Value::as_i64) else {
        return Err(NotRead::NotAnUpdate(
            "not a Telegram Update: no integer `update_id`".into(),
        ));
    };
    let update: TelegramUpdate =
        serde_json::from_value(value).map_err(|e| NotRead::Unreadable {
            update: update_id.to_string(),
            error: e.to_string(),
        })?;
    let (message, edited) = match (update.message, update.edited_message) {
        (Some(m), _) => (m, false),
        (None, Some(m)) => (m, true),
        (None, None) => return Ok(Update::Unused("update type")),
    };
    if message.chat.kind != "private" {
        return Ok(Update::Unused("not a private chat"));
    }
    let Some(from) = message.from else {
        return Ok(Update::Unused("no sender"));
    };
    if from.is_bot {
        return Ok(Update::Unused("a bot's message"));
    }
    let chat = message.chat.id.to_string();
    // Telegram numbers messages per chat; an edit keeps the number, so it is told
    // apart by its time (a retry of the same edit has the same one).
    let mut id = format!("telegram-{chat}-{}", message.message_id);
    let sent = if edited {
        let at = message.edit_date.unwrap_or(message.date);
        id.push_str(&format!("-e{at}"));
        at
    } else {
        message.date
    };
    let contact = message.contact.map(|c| SharedContact {
        phone: own_phone(&c.phone_number, c.user_id == Some(from.id)),
    });
    Ok(Update::Message(ChatMessage {
        channel: Channel::Telegram,
        message_id: bounded_id(id),
        user: from.id.to_string(),
        chat,
        text: message.text.or(message.caption).unwrap_or_default(),
        contact,
        sent_at: unix_time(sent, 1),
    }))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, FixedOffset};

    use super::*;

    fn at(secs: i64) -> Option<DateTime<FixedOffset>> {
        unix_time(secs, 1)
    }

    fn message(extra: serde_json::Value) -> Vec<u8> {
        let mut m = serde_json::json!({
            "message_id": 41,
            "from": {"id": 3527065, "is_bot": false, "first_name": "Иван"},
            "chat": {"id": 3527065, "type": "private", "first_name": "Иван"},
            "date": 1_795_000_000,
        });
        for (k, v) in extra.as_object().expect("object") {
            m[k] = v.clone();
        }
        serde_json::to_vec(&serde_json::json!({"update_id": 9, "message": m})).expect("json")
    }

    fn read_message(body: &[u8]) -> ChatMessage {
        match read(body) {
            Ok(Update::Message(m)) => m,
            other => panic!("a message, not {other:?}"),
        }
    }

    #[test]
    fn a_text_message_keeps_its_chat_sender_and_time() {
        let m = read_message(&message(serde_json::json!({"text": "1000001 45100"})));
        assert_eq!(m.message_id, "telegram-3527065-41");
        assert_eq!((m.user.as_str(), m.chat.as_str()), ("3527065", "3527065"));
        assert_eq!(m.text, "1000001 45100");
        assert_eq!(m.sent_at, at(1_795_000_000));
        assert_eq!(m.contact, None);
    }

    #[test]
    fn a_caption_is_the_text_and_a_sticker_has_none() {
        let m = read_message(&message(serde_json::json!({"caption": "1000001 45100"})));
        assert_eq!(m.text, "1000001 45100");
        let m = read_message(&message(serde_json::json!({"sticker": {"file_id": "x"}})));
        assert_eq!(m.text, "");
    }

    #[test]
    fn only_the_senders_own_contact_carries_its_number() {
        let own = read_message(&message(serde_json::json!({
            "contact": {"phone_number": "79001234567", "first_name": "Иван", "user_id": 3527065}
        })));
        assert_eq!(
            own.contact,
            Some(SharedContact {
                phone: Some("+79001234567".into())
            })
        );
        let foreign = read_message(&message(serde_json::json!({
            "contact": {"phone_number": "+79007654321", "first_name": "Пётр", "user_id": 42}
        })));
        assert_eq!(foreign.contact, Some(SharedContact { phone: None }));
        let not_a_user = read_message(&message(serde_json::json!({
            "contact": {"phone_number": "+79007654321", "first_name": "Пётр"}
        })));
        assert_eq!(not_a_user.contact, Some(SharedContact { phone: None }));
    }

    #[test]
    fn groups_bots_and_other_update_types_are_unused() {
        let group = serde_json::json!({"update_id": 1, "message": {
            "message_id": 1, "from": {"id": 5}, "chat": {"id": -100, "type": "group"},
            "date": 1, "text": "1000001 45100"}});
        let bot = serde_json::json!({"update_id": 1, "message": {
            "message_id": 1, "from": {"id": 5, "is_bot": true}, "chat": {"id": 5, "type": "private"},
            "date": 1, "text": "hi"}});
        let callback = serde_json::json!({"update_id": 1, "callback_query": {"id": "1"}});
        for body in [group, bot, callback] {
            let body = serde_json::to_vec(&body).expect("json");
            assert!(matches!(read(&body), Ok(Update::Unused(_))), "{body:?}");
        }
    }

    #[test]
    fn what_is_no_update_and_what_cannot_be_read_are_told_apart() {
        assert!(matches!(read(b"foo"), Err(NotRead::NotAnUpdate(_))));
        assert!(matches!(read(b"{}"), Err(NotRead::NotAnUpdate(_))));
        assert!(matches!(read(b"[1]"), Err(NotRead::NotAnUpdate(_))));
        let odd = br#"{"update_id": 5, "message": {"message_id": "x", "chat": 1}}"#;
        assert!(
            matches!(read(odd), Err(NotRead::Unreadable { update, .. }) if update == "5"),
            "{:?}",
            read(odd)
        );
    }
}
