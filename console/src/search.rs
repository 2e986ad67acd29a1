//! What a person types into the search box, read as what it can be: a phone number
//! in any form (`8 900 444-55-66`, `+7 (900) 4445566`, normalised by
//! [`shared::phone`]), an account number, or a message id. A string of digits may be
//! both a phone and an account (`79004445566`); both are searched.

use shared::phone::PhoneNumber;

/// Longest search text taken; anything longer is no phone, account or id.
pub const MAX_QUERY: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Query {
    Phone(String),
    Account(String),
    MessageId(String),
}

/// Every reading of `raw` worth searching, most likely first.
pub fn classify(raw: &str) -> Vec<Query> {
    let q = raw.trim();
    if q.is_empty() || q.chars().count() > MAX_QUERY {
        return Vec::new();
    }
    let mut found = Vec::new();
    let phone_like = q
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, '+' | '(' | ')' | '-' | ' ' | '\u{a0}'));
    let digits = q.chars().filter(char::is_ascii_digit).count();
    if phone_like
        && digits >= 10
        && let Ok(phone) = PhoneNumber::parse(q)
    {
        found.push(Query::Phone(phone.as_str().to_owned()));
    }
    if q.chars().all(|c| c.is_ascii_digit()) && (1..=18).contains(&q.len()) {
        // Leading zeros are significant: the account as typed.
        found.push(Query::Account(q.to_owned()));
    }
    if !q.chars().any(char::is_control) {
        found.push(Query::MessageId(q.to_owned()));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(s: &str) -> Query {
        Query::Phone(s.to_owned())
    }

    #[test]
    fn phones_are_read_in_the_forms_people_type() {
        for typed in [
            "8 900 444-55-66",
            "+7 (900) 4445566",
            "89004445566",
            "+79004445566",
            " 8 (900) 444 55 66 ",
        ] {
            assert_eq!(
                classify(typed).first(),
                Some(&phone("+79004445566")),
                "{typed}"
            );
        }
    }

    #[test]
    fn digits_alone_are_also_an_account() {
        let found = classify("79004445566");
        assert!(found.contains(&phone("+79004445566")));
        assert!(found.contains(&Query::Account("79004445566".into())));
        assert_eq!(
            classify("0001000001"),
            vec![
                Query::Account("0001000001".into()),
                Query::MessageId("0001000001".into())
            ]
        );
    }

    #[test]
    fn anything_else_is_a_message_id() {
        assert_eq!(classify("gw-123"), vec![Query::MessageId("gw-123".into())]);
        assert!(classify("   ").is_empty());
        assert!(classify(&"x".repeat(MAX_QUERY + 1)).is_empty());
    }
}
