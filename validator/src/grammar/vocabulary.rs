//! The words of the grammar: labels, units and the words residents add, matched
//! the way residents type them — any case, `ё` as `е`, the punctuation of
//! abbreviations dropped (`Л.С.`, `л/с`, `Т-1`, `эл.почта`), and Latin letters
//! that look like Cyrillic ones read as Cyrillic (`T1`, `H`, `Дeнь`, `cчет`).
//!
//! The vocabulary is closed on purpose (SPEC §2): a word not listed here is a
//! `format` error, because guessing what an unknown word means could bill the
//! wrong number.

/// No label, unit or added word is longer than this; longer fields skip the lookup.
const KEYWORD_MAX_CHARS: usize = 12;

/// The tariff zone a reading label names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    T1,
    T2,
    T3,
    /// `день`/`д`: the first zone.
    Day,
    /// `ночь`/`н`: the last zone (T2 of a two-zone meter, T3 of a three-zone one).
    Night,
}

impl Zone {
    /// The reading's place (0-based) among `count` readings: T1 T2 T3 in order, day
    /// first, night last.
    pub fn slot(self, count: usize) -> usize {
        match self {
            Zone::T1 | Zone::Day => 0,
            Zone::T2 => 1,
            Zone::T3 => 2,
            Zone::Night => count.saturating_sub(1),
        }
    }
}

/// What a label stands before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    Account,
    Reading(Zone),
}

/// Lower-cases a short keyword, reads `ё` as `е` and drops the punctuation
/// residents put in abbreviations; with `homoglyphs`, Latin letters that look
/// Cyrillic become Cyrillic. `None` if the text is too long to be a keyword.
fn keyword(text: &str, homoglyphs: bool) -> Option<String> {
    if text.chars().nth(KEYWORD_MAX_CHARS).is_some() {
        return None;
    }
    let key = text
        .chars()
        .filter(|c| !matches!(c, '.' | '/' | '\\' | '-' | '·'))
        .map(|c| if homoglyphs { as_cyrillic(c) } else { c })
        .flat_map(char::to_lowercase)
        .map(|c| if c == 'ё' { 'е' } else { c })
        .collect();
    Some(key)
}

fn as_cyrillic(c: char) -> char {
    match c {
        'A' | 'a' => 'а',
        'B' => 'в',
        'C' | 'c' => 'с',
        'E' | 'e' => 'е',
        'H' | 'h' => 'н',
        'K' | 'k' => 'к',
        'M' | 'm' => 'м',
        'O' | 'o' => 'о',
        'P' | 'p' => 'р',
        'T' | 't' => 'т',
        'X' | 'x' => 'х',
        'Y' | 'y' => 'у',
        other => other,
    }
}

/// The label `text` is, if any (`лс`, `л/с`, `л.с.`, `ls`, `№`; `т1`–`т3`, `день`,
/// `ночь`, `д`, `н`).
pub fn label_kind(text: &str) -> Option<Label> {
    match keyword(text, true)?.as_str() {
        "лс" | "ls" | "№" => Some(Label::Account),
        "т1" => Some(Label::Reading(Zone::T1)),
        "т2" => Some(Label::Reading(Zone::T2)),
        "т3" => Some(Label::Reading(Zone::T3)),
        "день" | "д" => Some(Label::Reading(Zone::Day)),
        "ночь" | "н" => Some(Label::Reading(Zone::Night)),
        _ => None,
    }
}

/// A unit after a reading: `квт`, `кВт·ч`, `kWh`, `kw/h`, …
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Unit,
    /// The `ч` of `квт*ч`, split off by the `*` separator.
    Tail,
}

pub fn unit_kind(text: &str) -> Option<Unit> {
    const UNITS: [&str; 5] = ["квт", "квтч", "квтчас", "kwh", "kw"];
    let plain = keyword(text, false)?;
    let folded = keyword(text, true)?;
    if UNITS.contains(&plain.as_str()) || UNITS.contains(&folded.as_str()) {
        Some(Unit::Unit)
    } else if matches!(folded.as_str(), "ч" | "час") {
        Some(Unit::Tail)
    } else {
        None
    }
}

/// `text` without one trailing `:` (`счёт:`, `e-mail:`).
fn without_colon(text: &str) -> &str {
    text.strip_suffix(':').unwrap_or(text)
}

/// A word residents add before the first reading, which says nothing the
/// grammar needs: `показания`, `показание`, `лицевой`, `счёт`, `счетчик`/`счётчик`,
/// with or without a trailing `:`.
pub fn is_added_word(text: &str) -> bool {
    const WORDS: [&str; 5] = ["показания", "показание", "лицевой", "счет", "счетчик"];
    keyword(without_colon(text), true).is_some_and(|k| WORDS.contains(&k.as_str()))
}

/// A word residents put right before the address: `e-mail`, `email`, `почта`,
/// `эл.почта`, with or without a trailing `:`.
pub fn is_email_word(text: &str) -> bool {
    let text = without_colon(text);
    let latin = keyword(text, false).is_some_and(|k| k == "email");
    let cyrillic = keyword(text, true).is_some_and(|k| k == "почта" || k == "элпочта");
    latin || cyrillic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_in_every_spelling() {
        for (text, label) in [
            ("лс", Label::Account),
            ("Л/С", Label::Account),
            ("л.с.", Label::Account),
            ("LS", Label::Account),
            ("лc", Label::Account), // Latin c
            ("№", Label::Account),
            ("T1", Label::Reading(Zone::T1)),
            ("Т-2", Label::Reading(Zone::T2)),
            ("t3", Label::Reading(Zone::T3)),
            ("Дeнь", Label::Reading(Zone::Day)), // Latin e
            ("д.", Label::Reading(Zone::Day)),
            ("НОЧЬ", Label::Reading(Zone::Night)),
            ("H", Label::Reading(Zone::Night)), // Latin H
        ] {
            assert_eq!(label_kind(text), Some(label), "{text}");
        }
        for text in ["т4", "дн", "л", "счет", "x", "лсс", ""] {
            assert_eq!(label_kind(text), None, "{text}");
        }
    }

    #[test]
    fn added_words_in_every_spelling_and_no_others() {
        for text in [
            "показания",
            "Показания:",
            "ПОКАЗАНИЕ",
            "лицевой",
            "Лицевой:",
            "счёт",
            "СЧЁТ:",
            "счет",
            "cчет", // Latin c
            "счетчик",
            "Счётчик:",
            "пoкaзaния", // Latin o, a
        ] {
            assert!(is_added_word(text), "{text}");
        }
        for text in [
            "показ",
            "показания::",
            "спасибо",
            "счета",
            "лицевого",
            "почта",
            "email",
            "",
        ] {
            assert!(!is_added_word(text), "{text}");
        }
        for text in [
            "e-mail",
            "E-MAIL:",
            "email",
            "Email:",
            "почта",
            "Почта:",
            "эл.почта",
            "ЭЛ.ПОЧТА:",
            "пoчтa", // Latin o, a
        ] {
            assert!(is_email_word(text), "{text}");
        }
        for text in ["mail", "e-mail::", "адрес", "эл", "показания", ""] {
            assert!(!is_email_word(text), "{text}");
        }
    }

    #[test]
    fn night_is_the_last_zone() {
        assert_eq!(Zone::Night.slot(2), 1);
        assert_eq!(Zone::Night.slot(3), 2);
        assert_eq!(Zone::Night.slot(1), 0);
        assert_eq!(Zone::Day.slot(3), 0);
        assert_eq!(Zone::T3.slot(3), 2);
    }
}
