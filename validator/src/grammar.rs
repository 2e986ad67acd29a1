//! The SMS message grammar of SPEC §2: turns what a resident typed into an
//! account number, one to three readings and an optional e-mail address, or
//! says precisely what is wrong so that the reply SMS can tell them.
//!
//! Canonical form: `<account> <reading> [<reading> [<reading>]] [<e-mail>]`.
//!
//! The parser is forgiving where the intent is unambiguous and strict where a
//! guess could bill the wrong number. Decisions where SPEC §2 is silent:
//!
//! - Separators are Unicode white space (incl. U+00A0, U+202F, U+3000), control
//!   characters, the invisible U+200B, U+2060 and U+FEFF, and `#`, `*`, `;`.
//!   `,` separates too, except between an ASCII digit and one or two ASCII
//!   digits that are not followed by a third one: `1000001,45100` is two
//!   fields, `45100,5` and `45100,50` are one, `45,100` is two (45 and 100).
//! - Only ASCII `0`–`9` are digits; full-width, Arabic-Indic digits or a
//!   Cyrillic `О` for zero make the field unrecognised.
//! - A number may end in one `.` (the end of a sentence): `12345.` is 12345.
//!   A decimal part has one or two digits; `12345.678` is unrecognised.
//! - The account is digits only: `1000001,5` in its place is unrecognised.
//! - Labels match case-insensitively after dropping `.`, `/`, `\`, `-` and `·`
//!   (`Л.С.`, `л/с`, `Т-1`) and after reading Latin letters that look like
//!   Cyrillic ones as Cyrillic (`T1`, `H`, `Дeнь` with a Latin `e`).
//!   A field `т1 45100` needs the space or a `:`/`=`; only `№` may touch its
//!   value (`№1000001`). A lone `:`/`=` field, or one leading a value, is
//!   accepted right after a label (`т1 : 45100`, `т1 =45100`).
//! - Account labels are accepted only before the account, reading labels only
//!   after it. A reading label with no reading after it is ignored, so that a
//!   forgotten value is reported as a zone mismatch rather than a stray label.
//! - Units (`квт`, `кВт·ч`, `квт*ч`, `kWh`, `kw/h`, …) are accepted as their own
//!   field right after a reading; glued to it (`45100квт`) they are not.
//! - The first unrecognised field is reported before counting readings, so
//!   `1000001 1 2 3 4 x` is a bad field `x`; any format problem wins over an
//!   invalid e-mail (SPEC §3 order).
//! - In the account's place, an unrecognised field that holds a numeric
//!   character of any script is a bad field (`1ООО001`, `лс1000001`); any
//!   other field there means the account is missing.
//! - An e-mail may end in one `.`, which is dropped. It must have a dot in the
//!   domain, no domain literal or display name, and no part (between `@` and
//!   `.`) mixing Latin and Cyrillic letters: such a mix is a typo that would
//!   bounce. The domain is stored lower-cased, the local part as typed.
//! - Reading values saturate at `u64::MAX`; [`Reading::digits`] keeps the true
//!   count of significant digits for the register-size check.

use std::fmt;
use std::ops::RangeInclusive;

use email_address::{EmailAddress, Options};

/// The most readings a message may carry: one per tariff zone.
const MAX_READINGS: usize = 3;
/// How much of an unrecognised field is echoed back: enough to recognise it,
/// short enough for a one-segment reply.
const BAD_FIELD_MAX_CHARS: usize = 20;
/// How much of an invalid e-mail is echoed back; longer text is no address.
const EMAIL_ECHO_MAX_CHARS: usize = 64;
/// No label or unit is longer than this; longer fields skip the keyword lookup.
const KEYWORD_MAX_CHARS: usize = 12;

/// A personal account number: ASCII digits only, leading zeros significant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AccountNumber(String);

impl AccountNumber {
    /// Accepts `s` if it is made of ASCII digits only and its length is in `digits`.
    pub fn parse(s: &str, digits: RangeInclusive<usize>) -> Result<Self, FormatProblem> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(FormatProblem::NoAccount);
        }
        if !digits.contains(&s.len()) {
            return Err(FormatProblem::AccountLength { found: s.len() });
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A meter reading with its decimal part dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reading {
    /// The integer value, saturated at `u64::MAX`.
    value: u64,
    /// Significant digits as typed (leading zeros do not count, `0` has one),
    /// kept exact even when `value` saturates: it is what the register-size
    /// check compares.
    digits: u32,
}

impl Reading {
    /// A reading of `value`, as if typed without leading zeros.
    pub fn new(value: u64) -> Self {
        let digits = value.checked_ilog10().map_or(1, |d| d + 1);
        Self { value, digits }
    }

    /// `integer` is a non-empty run of ASCII digits.
    fn from_digits(integer: &str) -> Self {
        let significant = integer.trim_start_matches('0');
        let digits = u32::try_from(significant.len().max(1)).unwrap_or(u32::MAX);
        let value = significant
            .chars()
            .try_fold(0u64, |acc, c| {
                acc.checked_mul(10)?.checked_add(u64::from(c.to_digit(10)?))
            })
            .unwrap_or(u64::MAX);
        Self { value, digits }
    }

    pub fn value(&self) -> u64 {
        self.value
    }

    pub fn digits(&self) -> u32 {
        self.digits
    }
}

/// A validated e-mail address (domain lower-cased).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Validates `text` as the e-mail field of a message (see the module doc).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        let invalid = || ParseError::InvalidEmail(excerpt(text, EMAIL_ECHO_MAX_CHARS));
        let address = text.strip_suffix('.').unwrap_or(text);
        let options = Options::default()
            .with_required_tld()
            .without_domain_literal()
            .without_display_text();
        if EmailAddress::parse_with_options(address, options).is_err() || mixes_scripts(address) {
            return Err(invalid());
        }
        let (local, domain) = address.rsplit_once('@').ok_or_else(invalid)?;
        Ok(Self(format!("{local}@{}", domain.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A message that follows the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedMessage {
    pub account: AccountNumber,
    /// One to three readings, in the order typed (day then night; T1 T2 T3).
    pub readings: Vec<Reading>,
    pub email: Option<Email>,
}

/// Why a message was refused by the parser; SPEC §3 reasons `format` and `invalid_email`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    Format(FormatProblem),
    /// The e-mail field as typed (at most 64 characters, then `…`).
    InvalidEmail(String),
}

/// What is wrong with the form of a message, precisely enough for the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatProblem {
    /// Nothing but separators.
    Empty,
    /// The first field after any account labels is not an account number.
    NoAccount,
    /// The account is digits, but not of the configured length.
    AccountLength { found: usize },
    /// An account, but no reading after it.
    NoReading,
    /// More than three readings.
    TooManyReadings { found: usize },
    /// An unrecognised field (at most 20 characters, then `…`).
    BadField(String),
}

impl fmt::Display for FormatProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the message is empty"),
            Self::NoAccount => f.write_str("the message does not start with an account number"),
            Self::AccountLength { found } => write!(f, "the account number has {found} digits"),
            Self::NoReading => f.write_str("no reading after the account number"),
            Self::TooManyReadings { found } => {
                write!(f, "{found} readings, at most {MAX_READINGS} allowed")
            }
            Self::BadField(field) => write!(f, "unrecognised field `{field}`"),
        }
    }
}

impl std::error::Error for FormatProblem {}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Format(_) => f.write_str("the message is not in the expected form"),
            Self::InvalidEmail(text) => write!(f, "invalid e-mail address `{text}`"),
        }
    }
}

impl std::error::Error for ParseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Format(problem) => Some(problem),
            Self::InvalidEmail(_) => None,
        }
    }
}

impl From<FormatProblem> for ParseError {
    fn from(problem: FormatProblem) -> Self {
        Self::Format(problem)
    }
}

/// Parses an SMS text; `account_digits` is the allowed account length.
pub fn parse(
    text: &str,
    account_digits: RangeInclusive<usize>,
) -> Result<ParsedMessage, ParseError> {
    let mut fields = split_fields(text);
    let email_field = match fields.last() {
        None => return Err(FormatProblem::Empty.into()),
        Some(last) if last.contains('@') => fields.pop(),
        Some(_) => None,
    };
    let tokens: Vec<Token<'_>> = fields.iter().flat_map(|field| tokens(field)).collect();
    let (account, rest) = parse_account(&tokens, account_digits)?;
    let readings = parse_readings(rest)?;
    let email = email_field.map(Email::parse).transpose()?;
    Ok(ParsedMessage {
        account,
        readings,
        email,
    })
}

fn is_separator(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c, '#' | '*' | ';' | '\u{200B}' | '\u{2060}' | '\u{FEFF}')
}

/// A `,` after a digit and before one or two digits (and no third) is a
/// decimal comma, not a separator.
fn is_decimal_comma(previous: Option<char>, rest: &str) -> bool {
    let digits_after = rest.bytes().take(3).take_while(u8::is_ascii_digit).count();
    previous.is_some_and(|c| c.is_ascii_digit()) && (1..=2).contains(&digits_after)
}

fn split_fields(text: &str) -> Vec<&str> {
    let mut fields = Vec::new();
    let mut start = None;
    let mut previous = None;
    for (i, c) in text.char_indices() {
        // `,` is one byte, so `i + 1` is a char boundary.
        let separates =
            is_separator(c) || (c == ',' && !is_decimal_comma(previous, &text[i + 1..]));
        if separates {
            if let Some(s) = start.take() {
                fields.push(&text[s..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
        previous = Some(c);
    }
    if let Some(s) = start {
        fields.push(&text[s..]);
    }
    fields
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Label {
    Account,
    Reading,
}

/// Digits with an optional one- or two-digit decimal part.
#[derive(Debug, Clone, Copy)]
struct Number<'a> {
    integer: &'a str,
    has_fraction: bool,
}

impl<'a> Number<'a> {
    fn parse(text: &'a str) -> Option<Self> {
        let text = text.strip_suffix('.').unwrap_or(text);
        let (integer, fraction) = match text.split_once(['.', ',']) {
            Some((integer, fraction)) => (integer, Some(fraction)),
            None => (text, None),
        };
        let is_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let fraction_ok = fraction.is_none_or(|f| is_digits(f) && f.len() <= 2);
        (is_digits(integer) && fraction_ok).then_some(Self {
            integer,
            has_fraction: fraction.is_some(),
        })
    }
}

/// What a field, or a part of a glued field like `т1=45100`, is.
#[derive(Debug, Clone, Copy)]
enum Atom<'a> {
    Label(Label),
    /// `:` or `=` between a label and its value.
    Glue,
    Number(Number<'a>),
    Unit,
    /// The `ч` of `квт*ч`, split off by the `*` separator.
    UnitTail,
    Unknown,
}

#[derive(Debug, Clone, Copy)]
struct Token<'a> {
    atom: Atom<'a>,
    /// The whole field the atom came from, for the error message.
    field: &'a str,
}

fn tokens(field: &str) -> Vec<Token<'_>> {
    classify(field)
        .unwrap_or_else(|| vec![Atom::Unknown])
        .into_iter()
        .map(|atom| Token { atom, field })
        .collect()
}

fn classify(field: &str) -> Option<Vec<Atom<'_>>> {
    if let Some(rest) = field.strip_prefix('№') {
        let mut atoms = vec![Atom::Label(Label::Account)];
        let value = match rest.strip_prefix([':', '=']) {
            Some(value) => {
                atoms.push(Atom::Glue);
                value
            }
            None => rest,
        };
        if !value.is_empty() {
            atoms.push(Atom::Number(Number::parse(value)?));
        }
        return Some(atoms);
    }
    if let Some((label, value)) = field.split_once([':', '=']) {
        let mut atoms = Vec::with_capacity(3);
        if !label.is_empty() {
            atoms.push(Atom::Label(label_kind(label)?));
        }
        atoms.push(Atom::Glue);
        if !value.is_empty() {
            atoms.push(Atom::Number(Number::parse(value)?));
        }
        return Some(atoms);
    }
    let atom = if let Some(number) = Number::parse(field) {
        Atom::Number(number)
    } else if let Some(label) = label_kind(field) {
        Atom::Label(label)
    } else {
        unit_kind(field)?
    };
    Some(vec![atom])
}

/// Lower-cases a short keyword and drops the punctuation residents put in
/// abbreviations; with `homoglyphs`, Latin letters that look Cyrillic become
/// Cyrillic. `None` if the text is too long to be a keyword.
fn keyword(text: &str, homoglyphs: bool) -> Option<String> {
    if text.chars().nth(KEYWORD_MAX_CHARS).is_some() {
        return None;
    }
    let key = text
        .chars()
        .filter(|c| !matches!(c, '.' | '/' | '\\' | '-' | '·'))
        .map(|c| if homoglyphs { as_cyrillic(c) } else { c })
        .flat_map(char::to_lowercase)
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

fn label_kind(text: &str) -> Option<Label> {
    match keyword(text, true)?.as_str() {
        "лс" | "ls" | "№" => Some(Label::Account),
        "т1" | "т2" | "т3" | "день" | "ночь" | "д" | "н" => Some(Label::Reading),
        _ => None,
    }
}

fn unit_kind(text: &str) -> Option<Atom<'static>> {
    const UNITS: [&str; 5] = ["квт", "квтч", "квтчас", "kwh", "kw"];
    let plain = keyword(text, false)?;
    let folded = keyword(text, true)?;
    if UNITS.contains(&plain.as_str()) || UNITS.contains(&folded.as_str()) {
        Some(Atom::Unit)
    } else if matches!(folded.as_str(), "ч" | "час") {
        Some(Atom::UnitTail)
    } else {
        None
    }
}

fn parse_account<'t, 'a>(
    tokens: &'t [Token<'a>],
    digits: RangeInclusive<usize>,
) -> Result<(AccountNumber, &'t [Token<'a>]), FormatProblem> {
    let mut after_label = false;
    for (i, token) in tokens.iter().enumerate() {
        match token.atom {
            Atom::Label(Label::Account) => after_label = true,
            Atom::Glue if after_label => {}
            Atom::Number(number) if !number.has_fraction => {
                let account = AccountNumber::parse(number.integer, digits)?;
                // `i < len`, so `i + 1..` is in bounds.
                return Ok((account, &tokens[i + 1..]));
            }
            Atom::Number(_) => return Err(bad_field(token.field)),
            Atom::Unknown if token.field.chars().any(char::is_numeric) => {
                return Err(bad_field(token.field));
            }
            _ => return Err(FormatProblem::NoAccount),
        }
    }
    Err(FormatProblem::NoAccount)
}

fn parse_readings(tokens: &[Token<'_>]) -> Result<Vec<Reading>, FormatProblem> {
    let mut readings = Vec::with_capacity(MAX_READINGS);
    let mut found = 0usize;
    let mut previous = None;
    for token in tokens {
        let fits = match token.atom {
            Atom::Label(Label::Reading) => true,
            Atom::Glue => matches!(previous, Some(Atom::Label(Label::Reading))),
            Atom::Number(number) => {
                found += 1;
                if readings.len() < MAX_READINGS {
                    readings.push(Reading::from_digits(number.integer));
                }
                true
            }
            Atom::Unit => matches!(previous, Some(Atom::Number(_))),
            Atom::UnitTail => matches!(previous, Some(Atom::Unit)),
            Atom::Label(Label::Account) | Atom::Unknown => false,
        };
        if !fits {
            return Err(bad_field(token.field));
        }
        previous = Some(token.atom);
    }
    match found {
        0 => Err(FormatProblem::NoReading),
        1..=MAX_READINGS => Ok(readings),
        _ => Err(FormatProblem::TooManyReadings { found }),
    }
}

fn bad_field(field: &str) -> FormatProblem {
    FormatProblem::BadField(excerpt(field, BAD_FIELD_MAX_CHARS))
}

/// The first `max_chars` characters of `text`, with `…` if it was longer.
fn excerpt(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// True if a part of the address between `@` and `.` mixes Latin and
/// Cyrillic letters, as in `ivаn` typed with a Cyrillic `а`.
fn mixes_scripts(address: &str) -> bool {
    address.split(['@', '.']).any(|part| {
        part.chars().any(|c| c.is_ascii_alphabetic())
            && part.chars().any(|c| matches!(c, '\u{0400}'..='\u{04FF}'))
    })
}

#[cfg(test)]
mod tests;
