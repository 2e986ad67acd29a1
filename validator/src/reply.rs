//! The SMS sent back for each refusal: Russian, naming the problem and the fix, in one
//! SMS segment (70 UCS-2 characters) wherever possible and never over two (134).
//! A resident with a basic phone reads these on a small screen: short words, the
//! example in the form they must type, no jargon.

use shared::events::RejectReason;

use crate::grammar::FormatProblem;
use crate::rules::ReadingProblem;

/// One UCS-2 segment; two concatenated segments carry 67 characters each.
pub const ONE_SEGMENT: usize = 70;
pub const TWO_SEGMENTS: usize = 134;

/// Length as the phone network counts it (UTF-16 code units).
pub fn ucs2_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// What a reply needs to know about the refusal.
#[derive(Debug, Clone)]
pub enum Refusal<'a> {
    Format(&'a FormatProblem),
    InvalidEmail(&'a str),
    OutsideWindow { start_day: u32, end_day: u32 },
    UnknownAccount(&'a str),
    AccountClosed(&'a str),
    MultipleMeters(&'a str),
    ZoneMismatch { zones: u8 },
    TooManyDigits { value: u64, digits: u8 },
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
            Refusal::MultipleMeters(_) => RejectReason::MultipleMeters,
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
                let e = clip(email, 20);
                format!("Неверный e-mail {e}. Исправьте и пришлите снова")
            }
            Refusal::OutsideWindow { start_day, end_day } => {
                format!(
                    "Показания принимаются с {start_day} по {end_day} число месяца. Пришлите их в эти дни"
                )
            }
            Refusal::UnknownAccount(account) => {
                format!("Лицевой счёт {account} не найден. Проверьте номер и пришлите снова")
            }
            Refusal::AccountClosed(account) => {
                format!("Лицевой счёт {account} закрыт, показания по нему не принимаются")
            }
            Refusal::MultipleMeters(account) => {
                format!("У счёта {account} несколько счётчиков: передайте через сайт или звонком")
            }
            Refusal::ZoneMismatch { zones: 1 } => {
                "Счётчик однотарифный: нужно одно показание. Пример: 1234567 45100".to_owned()
            }
            Refusal::ZoneMismatch { zones: 2 } => {
                "Счётчик двухтарифный: нужны день и ночь. Пример: 1234567 45100 12000".to_owned()
            }
            Refusal::ZoneMismatch { zones } => {
                format!("Нужны {zones} показания (Т1 Т2 Т3). Пример: 1234567 45100 20000 12000")
            }
            Refusal::TooManyDigits { value, digits } => {
                format!(
                    "В показании {} больше {digits} цифр. Пришлите цифры до запятой",
                    clip(&value.to_string(), 20)
                )
            }
            Refusal::Reading(ReadingProblem::Decreased { previous, new, .. }) => {
                format!("Показание {new} меньше прежнего {previous}. Проверьте и пришлите снова")
            }
            Refusal::Reading(ReadingProblem::Implausible { consumption, .. }) => {
                format!("Расход {consumption} кВт·ч — слишком много. Проверьте и пришлите снова")
            }
            Refusal::RateLimited => return None,
        };
        Some(fit(text))
    }
}

fn format_reply(problem: &FormatProblem) -> String {
    const EXAMPLE: &str = "Пример: 1234567 45100";
    match problem {
        FormatProblem::Empty => format!("Пустое SMS. Пришлите счёт и показания. {EXAMPLE}"),
        FormatProblem::NoAccount => {
            format!("Сначала номер лицевого счёта, потом показания. {EXAMPLE}")
        }
        FormatProblem::AccountLength { found } => {
            format!("Неверный номер счёта ({found} цифр). {EXAMPLE}")
        }
        FormatProblem::NoReading => {
            format!("Нет показаний: цифры до запятой после счёта. {EXAMPLE}")
        }
        FormatProblem::TooManyReadings { .. } => {
            "Больше 3 показаний. Пример: 1234567 45100 или 1234567 45100 12000".to_owned()
        }
        FormatProblem::BadField(field) => format!("Не понятно: «{}». {EXAMPLE}", clip(field, 16)),
    }
}

/// Shortens resident-supplied text that goes into a reply.
fn clip(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().count() > max {
        out.push('…');
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
mod tests {
    use super::*;

    /// Every refusal, with realistic values (`extreme` = the longest inputs possible).
    fn all(extreme: bool) -> Vec<Refusal<'static>> {
        static DEC: [ReadingProblem; 2] = [
            ReadingProblem::Decreased {
                zone: 0,
                previous: 45_100,
                new: 45_000,
            },
            ReadingProblem::Decreased {
                zone: 0,
                previous: 999_999_999_999_999_999,
                new: 999_999_999_999_999_998,
            },
        ];
        static IMP: [ReadingProblem; 2] = [
            ReadingProblem::Implausible {
                zone: 0,
                consumption: 15_000,
                limit: 10_000,
            },
            ReadingProblem::Implausible {
                zone: 0,
                consumption: 999_999_999_999_999_999,
                limit: 10_000,
            },
        ];
        static FORMATS: [FormatProblem; 6] = [
            FormatProblem::Empty,
            FormatProblem::NoAccount,
            FormatProblem::AccountLength { found: 13 },
            FormatProblem::NoReading,
            FormatProblem::TooManyReadings { found: 4 },
            FormatProblem::BadField(String::new()),
        ];
        let i = usize::from(extreme);
        let account = if extreme { "123456789012" } else { "1234567" };
        let mut v: Vec<Refusal<'static>> = FORMATS.iter().map(Refusal::Format).collect();
        v.extend([
            Refusal::InvalidEmail(if extreme {
                "very.long.address.with.typo@@example-domain.ru"
            } else {
                "ivan@@mail.ru"
            }),
            Refusal::OutsideWindow {
                start_day: 15,
                end_day: 25,
            },
            Refusal::UnknownAccount(account),
            Refusal::AccountClosed(account),
            Refusal::MultipleMeters(account),
            Refusal::ZoneMismatch { zones: 1 },
            Refusal::ZoneMismatch { zones: 2 },
            Refusal::ZoneMismatch { zones: 3 },
            Refusal::TooManyDigits {
                value: if extreme { u64::MAX } else { 1_234_567 },
                digits: if extreme { 18 } else { 6 },
            },
            Refusal::Reading(&DEC[i]),
            Refusal::Reading(&IMP[i]),
        ]);
        v
    }

    #[test]
    fn realistic_replies_fit_one_segment() {
        for r in all(false) {
            let text = r.text().expect("a reply");
            println!("{:3} {:?} {text}", ucs2_len(&text), r.reason());
            assert!(
                ucs2_len(&text) <= ONE_SEGMENT,
                "{} > 70: {text}",
                ucs2_len(&text)
            );
        }
    }

    #[test]
    fn every_reply_fits_two_segments_whatever_the_input() {
        for r in all(true) {
            let text = r.text().expect("a reply");
            assert!(
                ucs2_len(&text) <= TWO_SEGMENTS,
                "{}: {text}",
                ucs2_len(&text)
            );
        }
    }

    #[test]
    fn replies_name_the_problem() {
        let window = Refusal::OutsideWindow {
            start_day: 15,
            end_day: 25,
        }
        .text()
        .expect("text");
        assert!(window.contains("с 15 по 25"), "{window}");
        let unknown = Refusal::UnknownAccount("1000001").text().expect("text");
        assert!(unknown.contains("1000001"), "{unknown}");
        let dec = ReadingProblem::Decreased {
            zone: 0,
            previous: 45_100,
            new: 45_000,
        };
        let text = Refusal::Reading(&dec).text().expect("text");
        assert!(text.contains("45000") && text.contains("45100"), "{text}");
        assert_eq!(Refusal::RateLimited.text(), None);
    }

    #[test]
    fn resident_text_is_clipped() {
        let long = "ж".repeat(500);
        let text = Refusal::Format(&FormatProblem::BadField(long))
            .text()
            .expect("text");
        assert!(ucs2_len(&text) <= ONE_SEGMENT, "{text}");
        assert!(ucs2_len(&fit("я".repeat(400))) <= TWO_SEGMENTS);
    }
}
