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
//! - Labels, units and added words are matched as [`vocabulary`] says (any case,
//!   `ё` as `е`, abbreviation dots and slashes dropped, Latin look-alikes read as
//!   Cyrillic). A label is its own field or glued to its value by `:`, `=` or one
//!   `-` (`т1=45100`, `Т1-45100`); a lone `:`, `=` or `-` field right after a label
//!   is accepted too (`т1 : 45100`, `т1 - 45100`), and so is `:`/`=` leading the
//!   value (`т1 =45100`) — but not `-`: `т1 -45100` reads as a negative number.
//!   Only account labels may touch their value (`№1000001`, `лс1000001`): a
//!   reading label touching digits (`т145100`) could be T1 45100 or T 145100.
//! - Account labels are accepted only before the account, reading labels only
//!   after it. A reading label with no reading after it is ignored, so that a
//!   forgotten value is reported as a zone mismatch rather than a stray label.
//!   A label applies to the next reading; zone labels decide the zones only when
//!   every reading has one and they name different zones (`день` is the first
//!   zone, `ночь` the last: T2 of two, T3 of three); otherwise the typed order counts.
//! - Added words (`показания`, `лицевой`, `счёт`, `счетчик`, …) are ignored anywhere
//!   before the first reading, also between an account label and the account,
//!   with or without a trailing `:` (`счёт: 1000001`, `показания:45100`); after
//!   the first reading they are unrecognised fields. `e-mail`, `email`, `почта`,
//!   `эл.почта` are ignored only as the field right before the address, or glued
//!   to it by `:` (`e-mail:ivan@mail.ru`).
//! - Units (`квт`, `кВт·ч`, `квт*ч`, `kWh`, `kw/h`, …) are accepted as their own
//!   field right after a reading; glued to it (`45100квт`) they are not.
//! - The first unrecognised field is reported before counting readings, so
//!   `1000001 1 2 3 4 x` is a bad field `x`; any format problem wins over an
//!   invalid e-mail (SPEC §3 order).
//! - In the account's place, an unrecognised field that holds a numeric
//!   character of any script is a bad field (`1ООО001`, `лс1000001,5`); any
//!   other field there means the account is missing.
//! - An e-mail may end in one `.`, which is dropped. It must have a dot in the
//!   domain, no domain literal or display name, and no part (between `@` and
//!   `.`) mixing Latin and Cyrillic letters: such a mix is a typo that would
//!   bounce. Internationalised domains are valid (`ivan@почта.рф`) and stored as
//!   typed, lower-cased; the notifier sends to their IDNA form. The local part is
//!   stored as typed.
//! - Reading values saturate at `u64::MAX`; [`Reading::digits`] keeps the true
//!   count of significant digits for the register-size check.

use std::fmt;
use std::ops::RangeInclusive;

use email_address::{EmailAddress, Options};

mod vocabulary;

use vocabulary::{Label, Unit, Zone, label_kind};

/// The most readings a message may carry: one per tariff zone.
const MAX_READINGS: usize = 3;
/// How much of an unrecognised field is echoed back: enough to recognise it,
/// short enough for a one-segment reply.
const BAD_FIELD_MAX_CHARS: usize = 20;
/// How much of an invalid e-mail is echoed back; longer text is no address.
const EMAIL_ECHO_MAX_CHARS: usize = 64;

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
    /// One to three readings in zone order (day then night; T1 T2 T3): as typed, or
    /// as the zone labels say where every reading has a different one.
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
    if email_field.is_some() && fields.last().is_some_and(|f| vocabulary::is_email_word(f)) {
        fields.pop();
    }
    let tokens: Vec<Token<'_>> = fields.iter().flat_map(|field| tokens(field)).collect();
    let (account, rest) = parse_account(&tokens, account_digits)?;
    let readings = parse_readings(rest)?;
    let email = email_field
        .map(|field| Email::parse(address_of(field)))
        .transpose()?;
    Ok(ParsedMessage {
        account,
        readings,
        email,
    })
}

/// The address in an e-mail field, without an `e-mail:` or `почта:` glued before it.
fn address_of(field: &str) -> &str {
    match field.split_once(':') {
        Some((word, address)) if vocabulary::is_email_word(word) => address,
        _ => field,
    }
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
    /// `:`, `=` or `-` between a label (or an added word) and its value.
    Glue,
    Number(Number<'a>),
    Unit(Unit),
    /// A word residents add (`показания`, `счёт`), ignored before the first reading.
    Word,
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
        let value = match rest.strip_prefix([':', '=', '-']) {
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
        match keyword_atom(label) {
            // A word's `:` is its own (`счёт:`), not a label's glue.
            Some(Atom::Word) if field.as_bytes().get(label.len()) == Some(&b':') => {
                atoms.push(Atom::Word);
            }
            Some(atom) => atoms.extend([atom, Atom::Glue]),
            None if label.is_empty() => atoms.push(Atom::Glue),
            None => return None,
        }
        if !value.is_empty() {
            atoms.push(Atom::Number(Number::parse(value)?));
        }
        return Some(atoms);
    }
    if field == "-" {
        return Some(vec![Atom::Glue]);
    }
    if let Some(number) = Number::parse(field) {
        return Some(vec![Atom::Number(number)]);
    }
    if let Some(atom) = keyword_atom(field) {
        return Some(vec![atom]);
    }
    if let Some(unit) = vocabulary::unit_kind(field) {
        return Some(vec![Atom::Unit(unit)]);
    }
    dash_glued(field).or_else(|| touching_account(field))
}

/// A label or an added word.
fn keyword_atom(text: &str) -> Option<Atom<'static>> {
    match label_kind(text) {
        Some(label) => Some(Atom::Label(label)),
        None => vocabulary::is_added_word(text).then_some(Atom::Word),
    }
}

/// `Т1-45100`, `лс-1000001`: a label glued to its value by one `-`. A `-` with no
/// label before it is a minus (`-45100`), and `т1--45100` is no label and value:
/// both stay unrecognised.
fn dash_glued(field: &str) -> Option<Vec<Atom<'_>>> {
    field.match_indices('-').find_map(|(i, _)| {
        // `-` is one byte, so `i + 1` is a char boundary.
        let (label, value) = (&field[..i], &field[i + 1..]);
        if label.is_empty() || label.ends_with('-') {
            return None;
        }
        // The label first: it is at most a few characters, the value may be long.
        let label = label_kind(label)?;
        let number = Number::parse(value)?;
        Some(vec![Atom::Label(label), Atom::Glue, Atom::Number(number)])
    })
}

/// `лс1000001`, `Л/С1000001`: an account label touching the account. Reading
/// labels may not touch their value: `т145100` could be T1 45100 or T 145100.
fn touching_account(field: &str) -> Option<Vec<Atom<'_>>> {
    let at = field.find(|c: char| c.is_ascii_digit())?;
    let (label, value) = field.split_at(at);
    if label_kind(label)? != Label::Account {
        return None;
    }
    Some(vec![
        Atom::Label(Label::Account),
        Atom::Number(Number::parse(value)?),
    ])
}

fn parse_account<'t, 'a>(
    tokens: &'t [Token<'a>],
    digits: RangeInclusive<usize>,
) -> Result<(AccountNumber, &'t [Token<'a>]), FormatProblem> {
    let mut glue_fits = false;
    for (i, token) in tokens.iter().enumerate() {
        match token.atom {
            Atom::Label(Label::Account) | Atom::Word => glue_fits = true,
            Atom::Glue if glue_fits => glue_fits = false,
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
    let mut typed: Vec<(Reading, Option<Zone>)> = Vec::with_capacity(MAX_READINGS);
    let mut found = 0usize;
    // The atom before, added words left out: they change nothing around them.
    let mut previous = None;
    // Right after an added word, whose `:` may stand apart (`показания : 45100`).
    let mut after_word = false;
    // The zone of a label still waiting for its reading.
    let mut zone = None;
    for token in tokens {
        let fits = match token.atom {
            Atom::Word if found == 0 => {
                after_word = true;
                continue;
            }
            Atom::Label(Label::Reading(named)) => {
                zone = Some(named);
                true
            }
            Atom::Glue => after_word || matches!(previous, Some(Atom::Label(Label::Reading(_)))),
            Atom::Number(number) => {
                found += 1;
                let named = zone.take();
                if typed.len() < MAX_READINGS {
                    typed.push((Reading::from_digits(number.integer), named));
                }
                true
            }
            Atom::Unit(Unit::Unit) => matches!(previous, Some(Atom::Number(_))),
            Atom::Unit(Unit::Tail) => matches!(previous, Some(Atom::Unit(Unit::Unit))),
            Atom::Word | Atom::Label(Label::Account) | Atom::Unknown => false,
        };
        if !fits {
            return Err(bad_field(token.field));
        }
        previous = Some(token.atom);
        after_word = false;
    }
    match found {
        0 => Err(FormatProblem::NoReading),
        1..=MAX_READINGS => Ok(in_zone_order(typed)),
        _ => Err(FormatProblem::TooManyReadings { found }),
    }
}

/// The readings in zone order (SPEC §2): by their labels when every reading has one
/// and the labels name different zones, else as typed (day then night; T1 T2 T3).
fn in_zone_order(typed: Vec<(Reading, Option<Zone>)>) -> Vec<Reading> {
    let count = typed.len();
    let slots: Option<Vec<usize>> = typed
        .iter()
        .map(|(_, zone)| zone.map(|z| z.slot(count)))
        .collect();
    let mut pairs: Vec<(usize, Reading)> = match slots {
        Some(slots) if all_different(&slots) => slots
            .into_iter()
            .zip(typed.into_iter().map(|(r, _)| r))
            .collect(),
        _ => return typed.into_iter().map(|(r, _)| r).collect(),
    };
    pairs.sort_by_key(|(slot, _)| *slot);
    pairs.into_iter().map(|(_, r)| r).collect()
}

fn all_different(slots: &[usize]) -> bool {
    slots
        .iter()
        .enumerate()
        .all(|(i, s)| !slots[..i].contains(s))
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
