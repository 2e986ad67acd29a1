//! The system's codes in the words an operator reads to a caller.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// A refusal's reason (SPEC §3) in words.
pub fn reason(code: &str) -> &'static str {
    match code {
        "format" => "текст не разобран (неверный формат)",
        "invalid_email" => "неверный адрес e-mail",
        "outside_window" => "прислано вне дней приёма показаний",
        "unknown_account" => "нет такого лицевого счёта",
        "account_closed" => "лицевой счёт закрыт",
        "multiple_meters" => "у счёта несколько счётчиков: SMS не принимаются",
        "zone_mismatch" => "число показаний не равно числу тарифных зон",
        "too_many_digits" => "в показании больше цифр, чем у счётчика",
        "reading_decreased" => "показание меньше предыдущего",
        "implausible" => "неправдоподобно большой расход",
        "rate_limited" => "слишком много сообщений с номера за час",
        _ => "причина не указана",
    }
}

pub fn outcome(outcome: &str) -> &'static str {
    match outcome {
        "accepted" => "принято",
        "rejected" => "отклонено",
        _ => "неизвестно",
    }
}

pub fn channel(channel: &str) -> &'static str {
    match channel {
        "sms" => "SMS",
        "paper" => "бумажный бланк",
        "web" => "форма на сайте",
        "cabinet" => "личный кабинет",
        "telegram" => "Telegram",
        "max" => "MAX",
        _ => "другой канал",
    }
}

/// A reply's or an e-mail's state (notifier).
pub fn delivery(state: &str) -> &'static str {
    match state {
        "pending" => "в очереди на отправку",
        "sending" => "отправляется",
        "sent" => "отправлено",
        "delivered" => "доставлено",
        "failed" => "не отправлено: ошибка",
        "suppressed" => "не отправлялось (ограничение)",
        "unknown" => "отправлено, ответ шлюза не получен",
        _ => "состояние неизвестно",
    }
}

/// What the network reported about a sent reply (notifier's delivery reports).
pub fn report(report: &str) -> &'static str {
    match report {
        "delivered" => "доставлено на телефон",
        "failed" => "не доставлено: сеть сообщила об ошибке",
        _ => "отчёт о доставке непонятен",
    }
}

/// Billing's answer (billing-export).
pub fn billing(delivery: &str) -> &'static str {
    match delivery {
        "pending" => "ожидает передачи в биллинг",
        "delivered" => "передано в биллинг",
        "conflict" => "биллинг уже имел это показание",
        "rejected" => "биллинг отклонил",
        "not_pushed" => "не передаётся (биллинг не подключён)",
        _ => "состояние неизвестно",
    }
}

/// Names of a meter's zones, in the order of its values.
pub fn zones(count: usize) -> &'static [&'static str] {
    match count {
        1 => &["показание"],
        2 => &["день", "ночь"],
        _ => &["T1 пик", "T2 полупик", "T3 ночь"],
    }
}

/// A time as staff read it: the company's zone, day first.
pub fn time(at: DateTime<Utc>, zone: Tz) -> String {
    at.with_timezone(&zone)
        .format("%d.%m.%Y %H:%M:%S")
        .to_string()
}

#[cfg(test)]
mod tests {
    use shared::events::Channel;

    #[test]
    fn every_channel_has_its_words() {
        for c in Channel::ALL {
            assert_ne!(super::channel(c.as_str()), "другой канал", "{c:?}");
        }
    }
}
