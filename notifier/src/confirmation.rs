//! The confirmation e-mail of an accepted reading (SPEC §4.4): Russian, plain text and
//! HTML alternatives, with the account, the period, the readings and the time of
//! receipt in the company's zone. Its `Message-ID` is derived from the reading, so a
//! resend after a lost SMTP answer is recognisably the same message.
//!
//! An internationalised domain (`ivan@почта.рф`, valid by SPEC §2) is sent in its
//! IDNA form (`ivan@xn--80a1acny.xn--p1ai`), in the envelope and the `To:` header:
//! left in Unicode, lettre would need the server's SMTPUTF8, which most relays do
//! not offer, and the confirmation would never leave.

use chrono_tz::Tz;
use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use shared::events::{Period, ReadingAccepted};

/// Why a confirmation cannot be written.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("the resident's address is not a valid e-mail address")]
    InvalidAddress(#[source] lettre::address::AddressError),
    #[error("the resident's address has a domain with no IDNA form")]
    InvalidDomain(#[source] idna::Errors),
    #[error("cannot build the message")]
    Build(#[source] lettre::error::Error),
}

/// The `Message-ID` of a reading's confirmation: `<reading-id.confirmation@sender-domain>`.
pub fn message_id(reading: &ReadingAccepted, from: &Mailbox) -> String {
    format!(
        "<{}.confirmation@{}>",
        reading.reading_id,
        from.email.domain()
    )
}

/// Builds the message to `to`, the only recipient.
pub fn compose(
    reading: &ReadingAccepted,
    to: &str,
    from: &Mailbox,
    timezone: Tz,
) -> Result<Message, ComposeError> {
    let to: Mailbox = ascii_domain(to.trim())?
        .parse()
        .map_err(ComposeError::InvalidAddress)?;
    let facts = Facts::of(reading, timezone);
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(format!(
            "Показания приняты: лицевой счёт {}, {}",
            reading.account, facts.period
        ))
        .message_id(Some(message_id(reading, from)))
        .multipart(MultiPart::alternative_plain_html(
            facts.plain(),
            facts.html(),
        ))
        .map_err(ComposeError::Build)
}

/// `address` with its domain in IDNA (ASCII) form; the local part as it is.
fn ascii_domain(address: &str) -> Result<String, ComposeError> {
    match address.rsplit_once('@') {
        Some((local, domain)) if !domain.is_ascii() => {
            let domain = idna::domain_to_ascii(domain).map_err(ComposeError::InvalidDomain)?;
            Ok(format!("{local}@{domain}"))
        }
        _ => Ok(address.to_owned()),
    }
}

/// What the e-mail says, in display form.
struct Facts {
    account: String,
    meter: String,
    period: String,
    /// (label, value) per tariff zone.
    readings: Vec<(String, u64)>,
    received: String,
    supersedes: bool,
}

impl Facts {
    fn of(r: &ReadingAccepted, timezone: Tz) -> Self {
        let local = r.received_at.with_timezone(&timezone);
        Facts {
            account: r.account.clone(),
            meter: r.meter.clone(),
            period: period_name(r.period),
            readings: r
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| (zone_label(i, r.values.len()), *v))
                .collect(),
            received: format!(
                "{} (UTC{})",
                local.format("%d.%m.%Y %H:%M"),
                local.format("%:z")
            ),
            supersedes: r.supersedes.is_some(),
        }
    }

    fn plain(&self) -> String {
        let mut s = String::from("Здравствуйте!\n\nВаши показания приняты.\n\n");
        s += &format!("Лицевой счёт: {}\n", self.account);
        s += &format!("Прибор учёта: {}\n", self.meter);
        s += &format!("Расчётный период: {}\n", self.period);
        s += "Показания:\n";
        for (label, value) in &self.readings {
            s += &format!("  {label}: {value} кВт·ч\n");
        }
        s += &format!("Получены: {}\n", self.received);
        if self.supersedes {
            s += "\nЭти показания заменяют переданные ранее за этот период.\n";
        }
        s += "\nПисьмо отправлено автоматически, отвечать на него не нужно.\n";
        s
    }

    fn html(&self) -> String {
        let rows: String = self
            .readings
            .iter()
            .map(|(label, value)| {
                format!("<tr><td>{}</td><td>{value} кВт·ч</td></tr>", escape(label))
            })
            .collect();
        let supersedes = if self.supersedes {
            "<p>Эти показания заменяют переданные ранее за этот период.</p>"
        } else {
            ""
        };
        format!(
            "<!DOCTYPE html>\n<html lang=\"ru\"><head><meta charset=\"utf-8\">\
             <title>Показания приняты</title></head><body>\
             <p>Здравствуйте!</p><p>Ваши показания приняты.</p>\
             <table>\
             <tr><td>Лицевой счёт</td><td>{account}</td></tr>\
             <tr><td>Прибор учёта</td><td>{meter}</td></tr>\
             <tr><td>Расчётный период</td><td>{period}</td></tr>\
             {rows}\
             <tr><td>Получены</td><td>{received}</td></tr>\
             </table>{supersedes}\
             <p><small>Письмо отправлено автоматически, отвечать на него не нужно.</small></p>\
             </body></html>\n",
            account = escape(&self.account),
            meter = escape(&self.meter),
            period = escape(&self.period),
            received = escape(&self.received),
        )
    }
}

/// The name of tariff zone `i` of `zones`: day and night for two-tariff meters (how
/// residents were told to write them), T1–T3 otherwise.
fn zone_label(i: usize, zones: usize) -> String {
    match (zones, i) {
        (1, _) => "Показание".to_owned(),
        (2, 0) => "День (T1)".to_owned(),
        (2, 1) => "Ночь (T2)".to_owned(),
        (3, 0) => "T1 (пик)".to_owned(),
        (3, 1) => "T2 (полупик)".to_owned(),
        (3, 2) => "T3 (ночь)".to_owned(),
        _ => format!("T{}", i + 1),
    }
}

fn period_name(p: Period) -> String {
    const MONTHS: [&str; 12] = [
        "январь",
        "февраль",
        "март",
        "апрель",
        "май",
        "июнь",
        "июль",
        "август",
        "сентябрь",
        "октябрь",
        "ноябрь",
        "декабрь",
    ];
    let month = usize::try_from(p.month())
        .ok()
        .and_then(|m| m.checked_sub(1))
        .and_then(|i| MONTHS.get(i))
        .copied()
        .unwrap_or("?");
    format!("{month} {}", p.year())
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use shared::events::Channel;
    use uuid::Uuid;

    fn reading(values: Vec<u64>) -> ReadingAccepted {
        ReadingAccepted {
            reading_id: Uuid::from_u128(42),
            message_id: "gw-1".into(),
            account: "001234567".into(),
            meter: "M<1>".into(),
            period: Period::new(2026, 11).expect("period"),
            values,
            received_at: DateTime::parse_from_rfc3339("2026-11-20T05:00:00Z").expect("time"),
            channel: Channel::Sms,
            email: Some("ivan@example.ru".into()),
            supersedes: None,
            from: None,
            chat: None,
        }
    }

    fn from() -> Mailbox {
        "Показания <noreply@energo.example>".parse().expect("from")
    }

    #[test]
    fn two_zone_reading_reads_day_and_night_in_company_time() {
        let f = Facts::of(&reading(vec![45100, 12000]), chrono_tz::Asia::Yekaterinburg);
        let text = f.plain();
        assert!(text.contains("Лицевой счёт: 001234567"), "{text}");
        assert!(text.contains("Расчётный период: ноябрь 2026"), "{text}");
        assert!(text.contains("День (T1): 45100"), "{text}");
        assert!(text.contains("Ночь (T2): 12000"), "{text}");
        assert!(text.contains("20.11.2026 10:00 (UTC+05:00)"), "{text}");
        let html = f.html();
        assert!(html.contains("M&lt;1&gt;"), "meter escaped: {html}");
        assert!(html.contains("Ночь (T2)"), "{html}");
    }

    #[test]
    fn zone_labels() {
        assert_eq!(zone_label(0, 1), "Показание");
        assert_eq!(zone_label(2, 3), "T3 (ночь)");
        assert_eq!(zone_label(3, 4), "T4");
    }

    #[test]
    fn message_has_one_recipient_and_a_stable_id() {
        let r = reading(vec![1]);
        let m = compose(&r, "ivan@example.ru", &from(), chrono_tz::UTC).expect("composes");
        let to: Vec<String> = m.envelope().to().iter().map(|a| a.to_string()).collect();
        assert_eq!(to, vec!["ivan@example.ru".to_owned()]);
        let raw = String::from_utf8_lossy(&m.formatted()).into_owned();
        assert!(
            raw.contains(
                "Message-ID: <00000000-0000-0000-0000-00000000002a.confirmation@energo.example>"
            ),
            "{raw}"
        );
        assert!(raw.contains("multipart/alternative"), "{raw}");
        assert_eq!(message_id(&r, &from()), message_id(&r, &from()));
    }

    #[test]
    fn an_internationalised_domain_goes_in_idna_form() {
        let r = reading(vec![1]);
        let m = compose(&r, "ivan@Почта.РФ", &from(), chrono_tz::UTC).expect("composes");
        let to: Vec<String> = m.envelope().to().iter().map(|a| a.to_string()).collect();
        assert_eq!(to, vec!["ivan@xn--80a1acny.xn--p1ai".to_owned()]);
        let raw = String::from_utf8_lossy(&m.formatted()).into_owned();
        assert!(raw.contains("To: ivan@xn--80a1acny.xn--p1ai"), "{raw}");
        let ascii = compose(&r, "ivan@example.ru", &from(), chrono_tz::UTC).expect("composes");
        let to: Vec<String> = ascii
            .envelope()
            .to()
            .iter()
            .map(|a| a.to_string())
            .collect();
        assert_eq!(to, vec!["ivan@example.ru".to_owned()], "ASCII unchanged");
    }

    #[test]
    fn invalid_address_is_refused() {
        let r = reading(vec![1]);
        assert!(matches!(
            compose(&r, "not an address", &from(), chrono_tz::UTC),
            Err(ComposeError::InvalidAddress(_))
        ));
    }
}
