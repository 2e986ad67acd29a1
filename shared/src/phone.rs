//! Phone numbers: a resident's number in E.164 (`+79001234567`), parsed once at the
//! edge. Russian habits are understood (`8 900 123-45-67`, `79001234567`), the
//! number is checked against libphonenumber's metadata (the `phonenumber` crate).

use std::fmt;

use phonenumber::Mode;
use phonenumber::country::Id;

/// A valid phone number in E.164 form.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("empty phone number")]
    Empty,
    /// What was given, as [`shown`] makes it: never the whole of it (it may be
    /// someone's number, and this error is logged and answered).
    #[error("`{0}` is not a valid phone number (expected the form +7XXXXXXXXXX)")]
    Invalid(String),
}

impl PhoneNumber {
    /// Parses a number as a Russian gateway may send it.
    pub fn parse(raw: &str) -> Result<Self, PhoneError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(PhoneError::Empty);
        }
        let invalid = || PhoneError::Invalid(shown(trimmed));
        if trimmed.len() > 32 {
            return Err(invalid());
        }
        let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
        // `79…` without the plus is how Kannel and many gateways write Russian numbers;
        // libphonenumber would read it as a national number.
        let candidate =
            if !trimmed.starts_with('+') && digits.len() == 11 && digits.starts_with('7') {
                format!("+{digits}")
            } else {
                trimmed.to_owned()
            };
        let number = phonenumber::parse(Some(Id::RU), &candidate).map_err(|_| invalid())?;
        if !number.is_valid() {
            return Err(invalid());
        }
        Ok(PhoneNumber(number.format().mode(Mode::E164).to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The country calling code digits, e.g. `7`.
    pub fn country_code(&self) -> String {
        phonenumber::parse(None, &self.0)
            .map(|n| n.code().value().to_string())
            .unwrap_or_default()
    }

    /// For logs: `+7900***4567`.
    pub fn masked(&self) -> String {
        mask(&self.0)
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Masks the middle of a phone number or the local part of an e-mail for logs.
pub fn mask(s: &str) -> String {
    if let Some((local, domain)) = s.split_once('@') {
        let first: String = local.chars().take(1).collect();
        return format!("{first}***@{domain}");
    }
    let chars: Vec<char> = s.chars().collect();
    if chars.len() <= 6 {
        return "***".to_owned();
    }
    let head: String = chars[..5].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}***{tail}")
}

/// Something given as a phone number that is not a valid one, as a log or an error
/// may show it: its length and its last two characters (`…67, 12 characters`), so an
/// operator can tell inputs apart and no one's number is written down whole.
pub fn shown(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().filter(|c| !c.is_control()).collect();
    let tail: String = chars[chars.len().saturating_sub(2)..].iter().collect();
    format!("…{tail}, {} characters", chars.len())
}

/// The number a resident texted: a phone number in E.164, or a short code (digits).
pub fn service_address(raw: &str) -> Result<String, PhoneError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(PhoneError::Empty);
    }
    if (3..=8).contains(&trimmed.len()) && trimmed.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(trimmed.to_owned());
    }
    PhoneNumber::parse(trimmed).map(|p| p.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn russian_forms_normalise_to_e164() {
        for raw in [
            "+79001234567",
            "79001234567",
            "89001234567",
            "8 900 123-45-67",
            "+7 (900) 123-45-67",
            " +79001234567 ",
        ] {
            assert_eq!(
                PhoneNumber::parse(raw).map(|p| p.0),
                Ok("+79001234567".into()),
                "{raw}"
            );
        }
    }

    #[test]
    fn other_countries_keep_their_code() {
        let p = PhoneNumber::parse("+380441234567").expect("Kyiv landline");
        assert_eq!(p.as_str(), "+380441234567");
        assert_eq!(p.country_code(), "380");
        assert_eq!(
            PhoneNumber::parse("+79001234567")
                .expect("ru")
                .country_code(),
            "7"
        );
    }

    #[test]
    fn junk_is_refused() {
        for raw in [
            "",
            "  ",
            "abc",
            "+7",
            "12",
            "+79001234567890123",
            "☎️",
            "+7900123456x",
        ] {
            assert!(PhoneNumber::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn short_codes_are_service_addresses() {
        assert_eq!(service_address("7377"), Ok("7377".into()));
        assert_eq!(service_address("89037672060"), Ok("+79037672060".into()));
        assert!(service_address("").is_err());
    }

    #[test]
    fn an_invalid_number_is_never_shown_whole() {
        for raw in ["+790012345671234", "+7900123456x", "+7 900 123 45 6"] {
            let Err(e) = PhoneNumber::parse(raw) else {
                panic!("{raw} is not valid");
            };
            let text = e.to_string();
            let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
            let shown_digits: String = text.chars().filter(char::is_ascii_digit).collect();
            assert!(!text.contains(raw), "{text}");
            assert!(
                !shown_digits.contains(&digits[..digits.len() - 2]),
                "{text} shows too much of {raw}"
            );
        }
        assert_eq!(shown("+790012345671234"), "…34, 16 characters");
        assert_eq!(shown("1"), "…1, 1 characters");
    }

    #[test]
    fn masking_hides_the_middle() {
        assert_eq!(mask("+79001234567"), "+7900***4567");
        assert_eq!(mask("ivan.petrov@mail.ru"), "i***@mail.ru");
        assert_eq!(mask("123"), "***");
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = PhoneNumber::parse(&s);
            let _ = service_address(&s);
            let _ = mask(&s);
        }
    }
}
