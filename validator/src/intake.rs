//! Inbound SMS, from `sms.received` to a stored outcome: the checks of SPEC §3 in
//! their order, the audit row, the accepted reading (superseding an earlier one of the
//! same meter and period) and the event, all in one transaction. The event goes to
//! the outbox table, so it exists if and only if the outcome was committed; the
//! caller hands the returned [`Pending`] events to the relay after the commit.
//!
//! There is one path: [`process_batch`] decides and stores any number of messages in
//! one transaction, and a single message is a batch of one. This module holds the
//! decisions themselves — pure functions of the message, the account's meters and
//! the previous reading — and [`batch`] the statements that feed them and store
//! what they decide.

use std::ops::RangeInclusive;

use shared::events::{Period, ReadingAccepted, ReadingRejected, RejectReason, SmsReceived};
use uuid::Uuid;

mod batch;

pub use batch::{BatchItem, process_batch};

use crate::grammar::{self, ParseError, ParsedMessage};
#[cfg(doc)]
use crate::outbox::Pending;
use crate::reply::Refusal;
use crate::rules::{self, Previous, Window};

/// Seeds of the `hashtextextended` keys of the transaction-scoped advisory locks: one
/// per account a reading may be stored for, one per sender. Every transaction takes
/// its account locks first, then its sender locks, each sorted by key.
const ACCOUNT_LOCK_SEED: i64 = 11;
const SENDER_LOCK_SEED: i64 = 7;

/// Namespace of reading ids: a reading's id is derived from its message's id, so a
/// redelivered message can never make a second reading.
const READING_NAMESPACE: Uuid = Uuid::from_u128(0x7265_6164_696e_672d_6964_2d6e_616d_6531);

/// The knobs of the checks (SPEC §4 configuration).
#[derive(Debug, Clone)]
pub struct Rules {
    pub window: Window,
    pub account_digits: RangeInclusive<usize>,
    pub max_monthly_kwh: u64,
    pub rate_limit_per_hour: u32,
}

/// What became of a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Accepted(ReadingAccepted),
    Rejected(ReadingRejected),
    /// Seen before (same `message_id`): nothing changed, nothing emitted.
    Duplicate,
}

/// A refusal decided by the checks, owned (the reply is rendered before storing).
struct Refused {
    reason: RejectReason,
    reply: Option<String>,
    account: Option<String>,
}

impl Refused {
    fn new(refusal: Refusal<'_>, account: Option<&str>) -> Self {
        Refused {
            reason: refusal.reason(),
            reply: refusal.text(),
            account: account.map(str::to_owned),
        }
    }
}

struct Accepted {
    parsed: ParsedMessage,
    meter: String,
    period: Period,
}

/// A meter of the registry, as the checks need it.
#[derive(Clone, sqlx::FromRow)]
struct MeterRow {
    account: String,
    meter: String,
    zones: i16,
    digits: i16,
    /// `status = 'active'` in the registry.
    active: bool,
    /// The registry's last known reading (billing's), if any.
    baseline_period: Option<String>,
    baseline_values: Option<Vec<i64>>,
}

/// The latest accepted reading of a meter in an earlier period, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
struct AcceptedReading {
    period: String,
    readings: Vec<i64>,
}

/// The outcome a decision makes of a message (the event before it is stored), and the
/// reading's id if it was accepted.
fn outcome_of(sms: &SmsReceived, decision: Result<Accepted, Refused>) -> (Outcome, Option<Uuid>) {
    match decision {
        Err(refused) => (
            Outcome::Rejected(ReadingRejected {
                message_id: sms.message_id.clone(),
                from: sms.from.clone(),
                account: refused.account,
                reason: refused.reason,
                reply: refused.reply,
                received_at: sms.received_at,
                channel: sms.channel,
                chat: None,
            }),
            None,
        ),
        Ok(accepted) => {
            let reading_id = Uuid::new_v5(&READING_NAMESPACE, sms.message_id.as_bytes());
            (
                Outcome::Accepted(ReadingAccepted {
                    reading_id,
                    message_id: sms.message_id.clone(),
                    account: accepted.parsed.account.as_str().to_owned(),
                    meter: accepted.meter,
                    period: accepted.period,
                    values: accepted.parsed.readings.iter().map(|r| r.value()).collect(),
                    received_at: sms.received_at,
                    channel: sms.channel,
                    email: accepted.parsed.email.map(|e| e.as_str().to_owned()),
                    supersedes: None,
                    from: None,
                    chat: None,
                }),
                Some(reading_id),
            )
        }
    }
}

/// What the audit row says of an outcome (a duplicate has no row of its own).
struct AuditFields {
    status: &'static str,
    reason: Option<&'static str>,
    account: Option<String>,
    reply: Option<String>,
}

impl AuditFields {
    fn of(outcome: &Outcome) -> Option<Self> {
        Some(match outcome {
            Outcome::Accepted(a) => AuditFields {
                status: "accepted",
                reason: None,
                account: Some(a.account.clone()),
                reply: None,
            },
            Outcome::Rejected(r) => AuditFields {
                status: "rejected",
                reason: Some(r.reason.as_str()),
                account: r.account.clone(),
                reply: r.reply.clone(),
            },
            Outcome::Duplicate => return None,
        })
    }
}

/// The checks that need only the text and the time: format, e-mail, window.
fn parse_checked(rules: &Rules, sms: &SmsReceived) -> Result<(ParsedMessage, Period), Refused> {
    let parsed = match grammar::parse(&sms.text, rules.account_digits.clone()) {
        Ok(p) => p,
        Err(ParseError::Format(problem)) => {
            return Err(Refused::new(Refusal::Format(&problem), None));
        }
        Err(ParseError::InvalidEmail(email)) => {
            return Err(Refused::new(Refusal::InvalidEmail(&email), None));
        }
    };
    if !rules.window.contains(sms.received_at) {
        return Err(Refused::new(
            Refusal::OutsideWindow {
                start_day: rules.window.start_day,
                end_day: rules.window.end_day,
            },
            Some(parsed.account.as_str()),
        ));
    }
    let period = rules.window.period_of(sms.received_at);
    Ok((parsed, period))
}

/// The checks against the account's meters: known, open, one meter, zones, digits.
fn meter_checked(parsed: &ParsedMessage, meters: Vec<MeterRow>) -> Result<MeterRow, Refused> {
    let account = parsed.account.as_str();
    let refuse = |r: Refusal<'_>| Err(Refused::new(r, Some(account)));
    if meters.is_empty() {
        return refuse(Refusal::UnknownAccount(account));
    }
    let mut active = meters.into_iter().filter(|m| m.active);
    let Some(meter) = active.next() else {
        return refuse(Refusal::AccountClosed(account));
    };
    if active.next().is_some() {
        return refuse(Refusal::MultipleMeters);
    }
    let zones = u8::try_from(meter.zones).unwrap_or(0);
    if parsed.readings.len() != usize::from(zones) {
        return refuse(Refusal::ZoneMismatch { zones });
    }
    let digits = u8::try_from(meter.digits).unwrap_or(0);
    if let Some(long) = parsed
        .readings
        .iter()
        .find(|r| r.digits() > u32::from(digits))
    {
        return refuse(Refusal::TooManyDigits {
            value: long.value(),
        });
    }
    Ok(meter)
}

/// The check against the previous reading: `accepted` is the latest accepted reading
/// of an earlier period, if any.
fn reading_checked(
    rules: &Rules,
    parsed: &ParsedMessage,
    meter: &MeterRow,
    period: Period,
    accepted: Option<AcceptedReading>,
) -> Result<(), Refused> {
    let values: Vec<u64> = parsed.readings.iter().map(|r| r.value()).collect();
    let digits = u32::try_from(meter.digits).unwrap_or(0);
    let checked = previous_reading(accepted, meter, period).map_or(Ok(()), |previous| {
        rules::check_against(&previous, period, &values, digits, rules.max_monthly_kwh)
    });
    checked
        .map_err(|problem| Refused::new(Refusal::Reading(&problem), Some(parsed.account.as_str())))
}

/// The reading a new one is compared with: the latest accepted one of an earlier
/// period, else the registry's last known reading. A correction within the same
/// period is compared with the earlier period, not with the reading it corrects.
fn previous_reading(
    accepted: Option<AcceptedReading>,
    meter: &MeterRow,
    period: Period,
) -> Option<Previous> {
    let baseline = match (&meter.baseline_period, &meter.baseline_values) {
        (Some(p), Some(v)) => Some((p.clone(), v.clone())),
        _ => None,
    };
    let candidates = accepted
        .into_iter()
        .map(|a| (a.period, a.readings))
        .chain(baseline);
    candidates
        .filter_map(|(p, v)| {
            let p: Period = p.parse().ok()?;
            let values = v
                .into_iter()
                .map(|x| u64::try_from(x).unwrap_or(0))
                .collect();
            (p <= period).then_some(Previous { period: p, values })
        })
        .max_by_key(|prev| prev.period)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registry row whose stored facts — meter number, previous readings — are
    /// distinctive enough to be found in a reply by search.
    fn meter(active: bool) -> MeterRow {
        MeterRow {
            account: "2200002".into(),
            meter: "SN-884422".into(),
            zones: 2,
            digits: 5,
            active,
            baseline_period: Some("2026-10".into()),
            baseline_values: Some(vec![73_519, 21_980]),
        }
    }

    fn rules() -> Rules {
        Rules {
            window: Window {
                start_day: 15,
                end_day: 25,
                zone: chrono_tz::Asia::Yekaterinburg,
            },
            account_digits: 6..=12,
            max_monthly_kwh: 10_000,
            rate_limit_per_hour: 10,
        }
    }

    /// The refusal of `text` against `meters`, through the same decisions the batch
    /// path makes.
    fn refused(text: &str, meters: Vec<MeterRow>) -> Refused {
        let parsed = grammar::parse(text, 6..=12).expect("parses");
        let period = Period::new(2026, 11).expect("period");
        let meter = match meter_checked(&parsed, meters) {
            Ok(meter) => meter,
            Err(refused) => return refused,
        };
        match reading_checked(&rules(), &parsed, &meter, period, None) {
            Err(refused) => refused,
            Ok(()) => panic!("{text} was accepted"),
        }
    }

    #[test]
    fn no_refusal_repeats_what_the_system_holds() {
        let stored = ["SN-884422", "73519", "21980", "10000", "5 цифр"];
        let cases = [
            (
                "2200002 45000 22000",
                vec![meter(true)],
                "reading_decreased",
            ),
            (
                "2200002 73519 21000",
                vec![meter(true)],
                "reading_decreased",
            ),
            ("2200002 93600 22000", vec![meter(true)], "implausible"),
            ("2200002 123456 22000", vec![meter(true)], "too_many_digits"),
            ("2200002 74000", vec![meter(true)], "zone_mismatch"),
            ("2200002 74000 22000", vec![meter(false)], "account_closed"),
            (
                "2200002 74000 22000",
                vec![meter(true), meter(true)],
                "multiple_meters",
            ),
            ("2200002 74000 22000", vec![], "unknown_account"),
        ];
        for (text, meters, reason) in cases {
            let refused = refused(text, meters);
            assert_eq!(refused.reason.as_str(), reason, "{text}");
            let reply = refused.reply.expect("a reply");
            for value in stored {
                assert!(
                    !reply.contains(value),
                    "{text}: the reply {reply:?} repeats {value}"
                );
            }
        }
        // The consumption (93600 − 73519 = 20081) is not named either.
        let reply = refused("2200002 93600 22000", vec![meter(true)]).reply;
        assert!(reply.is_some_and(|r| !r.contains("20081") && r.contains("93600")));
    }
}
