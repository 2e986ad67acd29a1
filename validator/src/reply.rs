//! The SMS sent back for each refusal (SPEC §3): Russian, the fix first, then what
//! is wrong, in one SMS segment (70 UCS-2 characters) — for the longest input too,
//! except an account number longer than 15 digits in `account_closed` — and never
//! over two. A resident with a basic phone reads these on a small screen: plain
//! words, the example in the form they must type, no jargon.
//!
//! A reply repeats only what the sender typed, never what the system holds (the
//! previous reading, a consumption, the register's size, the meter): anyone can
//! text any account number. `docs/replies.md` lists every reply with its length;
//! a test keeps it and this module in agreement.

use shared::events::RejectReason;

use crate::grammar::FormatProblem;
use crate::rules::ReadingProblem;

pub mod segments;

pub use segments::ucs2_len;

/// Two concatenated UCS-2 parts of 67 characters: no reply is ever longer.
pub const TWO_SEGMENTS: usize = 134;

/// How much of what the sender typed (a field, an address) a reply repeats, in
/// UTF-16 code units: enough to recognise it, short enough for one segment.
const ECHO_MAX: usize = 16;
/// The example every format reply ends with.
const EXAMPLE: &str = "Пример: 1234567 45100";

/// What a reply needs to know about the refusal: what the sender typed and what
/// the rule found, nothing else.
#[derive(Debug, Clone)]
pub enum Refusal<'a> {
    Format(&'a FormatProblem),
    InvalidEmail(&'a str),
    OutsideWindow {
        start_day: u32,
        end_day: u32,
    },
    UnknownAccount(&'a str),
    AccountClosed(&'a str),
    MultipleMeters,
    ZoneMismatch {
        zones: u8,
    },
    /// `value`: the reading typed, with more digits than the register has.
    TooManyDigits {
        value: u64,
    },
    Reading(&'a ReadingProblem),
    RateLimited,
}

impl Refusal<'_> {
    pub fn reason(&self) -> RejectReason {
        match self {
            Refusal::Format(_) => RejectReason::Format,
            Refusal::InvalidEmail(_) => RejectReason::InvalidEmail,
            Refusal::OutsideWindow { .. } => RejectReason::OutsideWindow,
            Refusal::UnknownAccount(_) => RejectReason::UnknownAccount,
            Refusal::AccountClosed(_) => RejectReason::AccountClosed,
            Refusal::MultipleMeters => RejectReason::MultipleMeters,
            Refusal::ZoneMismatch { .. } => RejectReason::ZoneMismatch,
            Refusal::TooManyDigits { .. } => RejectReason::TooManyDigits,
            Refusal::Reading(ReadingProblem::Decreased { .. }) => RejectReason::ReadingDecreased,
            Refusal::Reading(ReadingProblem::Implausible { .. }) => RejectReason::Implausible,
            Refusal::RateLimited => RejectReason::RateLimited,
        }
    }

    /// The reply SMS, or `None` where none is sent (rate limited: answering a flood
    /// would cost money and feed it).
    pub fn text(&self) -> Option<String> {
        let text = match self {
            Refusal::Format(problem) => format_reply(problem),
            Refusal::InvalidEmail(email) => {
                format!("Исправьте e-mail {} или пришлите SMS без него", clip(email))
            }
            Refusal::OutsideWindow { start_day, end_day } => {
                format!(
                    "Пришлите показания с {start_day} по {end_day} число месяца: сейчас приём закрыт"
                )
            }
            Refusal::UnknownAccount(account) => {
                format!("Проверьте номер лицевого счёта: {account} не найден")
            }
            Refusal::AccountClosed(account) => {
                format!("Проверьте номер: счёт {account} закрыт, показания не принимаются")
            }
            Refusal::MultipleMeters => {
                "Передайте на сайте или по телефону: у счёта несколько счётчиков".to_owned()
            }
            Refusal::ZoneMismatch { zones: 1 } => {
                format!("Пришлите одно показание: счётчик однотарифный. {EXAMPLE}")
            }
            Refusal::ZoneMismatch { zones: 2 } => {
                "Пришлите два показания, день и ночь. Пример: 1234567 45100 12000".to_owned()
            }
            Refusal::ZoneMismatch { .. } => {
                "Пришлите три показания: Т1 Т2 Т3. Пример: 1234567 45100 20000 12000".to_owned()
            }
            // A value that saturated is not what the sender typed: not repeated.
            Refusal::TooManyDigits { value: u64::MAX } => {
                "Пришлите только цифры до запятой: в показании лишние цифры".to_owned()
            }
            Refusal::TooManyDigits { value } => {
                format!("Пришлите только цифры до запятой: в {value} лишние цифры")
            }
            Refusal::Reading(ReadingProblem::Decreased { new, .. }) => {
                format!("Проверьте показание {new}: оно меньше прежнего")
            }
            Refusal::Reading(ReadingProblem::Implausible { new, .. }) => {
                format!("Проверьте показание {new}: расход слишком большой")
            }
            Refusal::RateLimited => return None,
        };
        Some(fit(text))
    }
}

fn format_reply(problem: &FormatProblem) -> String {
    match problem {
        // An empty message and one that does not start with the account need the
        // same fix: one reply.
        FormatProblem::Empty | FormatProblem::NoAccount => {
            format!("Напишите номер лицевого счёта, потом показания. {EXAMPLE}")
        }
        FormatProblem::AccountLength { found } => {
            format!(
                "Проверьте номер счёта: в нём {found} {}. {EXAMPLE}",
                digits_word(*found)
            )
        }
        FormatProblem::NoReading => {
            format!("Напишите показания после номера счёта. {EXAMPLE}")
        }
        FormatProblem::TooManyReadings { .. } => {
            "Пришлите не больше трёх показаний. Пример: 1234567 45100 12000".to_owned()
        }
        FormatProblem::BadField(field) => {
            format!("Исправьте «{}» и пришлите снова. {EXAMPLE}", clip(field))
        }
    }
}

/// `цифра`, `цифры` or `цифр`, as Russian says it after the number `n`.
fn digits_word(n: usize) -> &'static str {
    match (n % 10, n % 100) {
        (_, 11..=14) => "цифр",
        (1, _) => "цифра",
        (2..=4, _) => "цифры",
        _ => "цифр",
    }
}

/// Resident-supplied text as a reply repeats it: control characters dropped, at
/// most [`ECHO_MAX`] UTF-16 code units (an emoji counts two), then `…`.
fn clip(s: &str) -> String {
    let mut out = String::new();
    let mut units = 0;
    for c in s.chars().filter(|c| !c.is_control()) {
        if units + c.len_utf16() > ECHO_MAX {
            out.push('…');
            return out;
        }
        units += c.len_utf16();
        out.push(c);
    }
    out
}

/// Never more than two segments, whatever went into the text.
fn fit(text: String) -> String {
    if ucs2_len(&text) <= TWO_SEGMENTS {
        return text;
    }
    let mut out = String::new();
    for c in text.chars() {
        if ucs2_len(&out) + c.len_utf16() > TWO_SEGMENTS - 1 {
            break;
        }
        out.push(c);
    }
    out.push('…');
    out
}

#[cfg(test)]
mod tests;
