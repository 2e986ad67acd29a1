//! What a drill sends, and what must become of each message: a generated account
//! registry (one-, two- and three-zone meters, closed accounts, accounts with two
//! meters) and a stream of SMS, about 80 % correct and 20 % wrong in every way of
//! SPEC §3 that a single message can be wrong, each with its outcome computed here.
//!
//! Why the outcome is knowable whatever order the system processes the stream in:
//! - every message is received in one period (2026-11, inside the 15th–25th window)
//!   and the validator compares a reading with the latest accepted one of an
//!   *earlier* period, i.e. the registry's baseline (2026-10): correct readings lie
//!   within 0–9,000 kWh above it, so several readings of one meter are all accepted
//!   (each later one superseding the earlier) in any order;
//! - every message has its own sender, so the hourly rate limit never applies
//!   (`rate_limited` depends on arrival order and is covered by the corpus test);
//! - every e-mail address is unique, so an e-mail names its message.

use std::fmt::Write as _;

/// SplitMix64: a small, seeded, reproducible generator (no dependency, stable output).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0; 0 gives 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `percent` / 100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let i = usize::try_from(self.below(items.len() as u64)).unwrap_or(0);
        &items[i]
    }
}

/// How the registry lists an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    /// One active meter: the only kind that can be accepted.
    Single,
    Closed,
    /// Two active meters: SMS not available.
    TwoMeters,
}

#[derive(Debug, Clone)]
pub struct Account {
    pub number: String,
    pub kind: AccountKind,
    pub zones: u8,
    /// Register size in digits.
    pub digits: u8,
    /// Last known readings (period 2026-10), if the registry has them.
    pub baseline: Option<Vec<u64>>,
}

/// The generated registry.
#[derive(Debug, Clone)]
pub struct Registry {
    pub accounts: Vec<Account>,
}

pub const BASELINE_PERIOD: &str = "2026-10";
/// Most a correct reading lies above its baseline (the limit is 10,000 a month).
const MAX_CORRECT_CONSUMPTION: u64 = 9_000;

impl Registry {
    /// `n` accounts: 40 % one-zone, 20 % two-zone, 15 % three-zone, 5 % one-zone
    /// without a baseline, 10 % closed, 10 % with two meters.
    pub fn generate(n: usize, rng: &mut Rng) -> Registry {
        let accounts = (0..n)
            .map(|i| {
                let number = format!("2{i:06}");
                let (kind, zones, digits, baseline) = match i % 20 {
                    0..=7 => (AccountKind::Single, 1, if i % 2 == 0 { 5 } else { 6 }, true),
                    8..=11 => (AccountKind::Single, 2, 6, true),
                    12..=14 => (AccountKind::Single, 3, 6, true),
                    15 => (AccountKind::Single, 1, 6, false),
                    16 | 17 => (AccountKind::Closed, 1, 5, true),
                    _ => (AccountKind::TwoMeters, 1, 5, true),
                };
                // Mid-range baselines: far from a register rollover (top 10 %), and
                // room above for an implausible jump within the register.
                let baseline = baseline.then(|| {
                    (0..zones)
                        .map(|_| rng.between(10_000, 60_000))
                        .collect::<Vec<u64>>()
                });
                Account {
                    number,
                    kind,
                    zones,
                    digits,
                    baseline,
                }
            })
            .collect();
        Registry { accounts }
    }

    /// The registry CSV of SPEC §4.6.
    pub fn csv(&self) -> String {
        let mut out = String::from(
            "account,meter,zones,digits,status,last_period,last_t1,last_t2,last_t3,normative_kwh\n",
        );
        for a in &self.accounts {
            let meters: &[&str] = match a.kind {
                AccountKind::TwoMeters => &["a", "b"],
                _ => &["a"],
            };
            let status = if a.kind == AccountKind::Closed {
                "closed"
            } else {
                "active"
            };
            let (period, mut last) = match &a.baseline {
                Some(v) => (BASELINE_PERIOD, v.iter().map(u64::to_string).collect()),
                None => ("", Vec::new()),
            };
            last.resize(3, String::new());
            for m in meters {
                let _ = writeln!(
                    out,
                    "{},M-{}-{m},{},{},{status},{period},{},{},{},150",
                    a.number, a.number, a.zones, a.digits, last[0], last[1], last[2]
                );
            }
        }
        out
    }

    fn of_kind(&self, kind: AccountKind) -> Vec<&Account> {
        self.accounts.iter().filter(|a| a.kind == kind).collect()
    }
}

/// What must become of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Accepted: billed once; one e-mail to `email` if given.
    Accepted { email: Option<String> },
    /// Refused with this reason code; answered by exactly one SMS.
    Rejected { reason: &'static str },
}

/// One SMS of the stream.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: String,
    pub from: String,
    pub text: String,
    pub received_at: String,
    pub expect: Expect,
}

/// The stream: distinct messages, and the order of posting (a few messages are posted
/// twice, as a gateway that re-delivers does).
#[derive(Debug, Clone)]
pub struct Plan {
    pub messages: Vec<Message>,
    /// Indices into `messages`; a repeated index is a duplicate delivery.
    pub order: Vec<usize>,
}

/// Reasons a single message can be refused for regardless of the order of processing.
pub const WRONG_KINDS: [&str; 10] = [
    "format",
    "invalid_email",
    "outside_window",
    "unknown_account",
    "account_closed",
    "multiple_meters",
    "zone_mismatch",
    "too_many_digits",
    "reading_decreased",
    "implausible",
];

impl Plan {
    /// `n` distinct messages; `prefix` makes the message ids unique to the drill.
    pub fn generate(registry: &Registry, n: usize, prefix: &str, rng: &mut Rng) -> Plan {
        let singles = registry.of_kind(AccountKind::Single);
        let with_baseline: Vec<&Account> = singles
            .iter()
            .copied()
            .filter(|a| a.baseline.is_some())
            .collect();
        let closed = registry.of_kind(AccountKind::Closed);
        let two = registry.of_kind(AccountKind::TwoMeters);
        let mut messages = Vec::with_capacity(n);
        for i in 0..n {
            let id = format!("{prefix}-{i:06}");
            // Distinct senders: +7 900 xxx xx xx.
            let from = format!("+7900{i:07}");
            let received_at = in_window(rng);
            let email_address = format!("r{i}.{prefix}@example.ru");
            let (text, received_at, expect) = if rng.percent(80) {
                let a = *rng.pick(&singles);
                let values = correct_values(a, rng);
                // ~1 in 8 correct messages carries an address: ~10 % of the stream.
                let email = rng.percent(12).then(|| email_address.clone());
                let text = render(&a.number, &values, email.as_deref(), rng);
                (text, received_at, Expect::Accepted { email })
            } else {
                let reason = *rng.pick(&WRONG_KINDS);
                let (text, at) = wrong(
                    reason,
                    &singles,
                    &with_baseline,
                    &closed,
                    &two,
                    &email_address,
                    received_at,
                    rng,
                );
                (text, at, Expect::Rejected { reason })
            };
            messages.push(Message {
                id,
                from,
                text,
                received_at,
                expect,
            });
        }
        // About 2 % re-delivered by the gateway, a little later in the stream.
        let mut order: Vec<usize> = (0..n).collect();
        for _ in 0..n / 50 {
            let i = usize::try_from(rng.below(n as u64)).unwrap_or(0);
            let later = (i + 1 + usize::try_from(rng.below(50)).unwrap_or(0)).min(order.len());
            order.insert(later, i);
        }
        Plan { messages, order }
    }

    pub fn expected_accepted(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| matches!(m.expect, Expect::Accepted { .. }))
            .count()
    }

    pub fn expected_rejected(&self) -> usize {
        self.messages.len() - self.expected_accepted()
    }

    pub fn expected_emails(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| matches!(m.expect, Expect::Accepted { email: Some(_) }))
            .count()
    }
}

/// A time of receipt on a window day of 2026-11, company time.
fn in_window(rng: &mut Rng) -> String {
    format!(
        "2026-11-{:02}T{:02}:{:02}:{:02}+05:00",
        rng.between(15, 25),
        rng.below(24),
        rng.below(60),
        rng.below(60)
    )
}

fn correct_values(a: &Account, rng: &mut Rng) -> Vec<u64> {
    match &a.baseline {
        Some(base) => base
            .iter()
            .map(|b| b + rng.between(0, MAX_CORRECT_CONSUMPTION))
            .collect(),
        None => (0..a.zones).map(|_| rng.between(0, 99_999)).collect(),
    }
}

/// The message as a resident might type it: separators, labels, leading zeros and
/// decimal parts vary; the meaning does not.
fn render(account: &str, values: &[u64], email: Option<&str>, rng: &mut Rng) -> String {
    let style = rng.below(6);
    let reading = |i: usize, v: u64, rng: &mut Rng| -> String {
        let mut s = match rng.below(8) {
            0 => format!("0{v}"),
            1 => format!("{v},{}", rng.below(10)),
            2 => format!("{v}.{:02}", rng.below(100)),
            _ => v.to_string(),
        };
        if style == 2 {
            s = format!("т{}={s}", i + 1);
        } else if style == 3 && values.len() == 2 {
            s = format!("{} {s}", if i == 0 { "день" } else { "ночь" });
        }
        s
    };
    let mut fields = Vec::new();
    match style {
        2 | 3 => {
            fields.push("лс".to_owned());
            fields.push(account.to_owned());
        }
        4 => fields.push(format!("№{account}")),
        _ => fields.push(account.to_owned()),
    }
    for (i, v) in values.iter().enumerate() {
        fields.push(reading(i, *v, rng));
    }
    if let Some(e) = email {
        fields.push(e.to_owned());
    }
    let sep = match style {
        1 => "#",
        5 => "*",
        _ => " ",
    };
    fields.join(sep)
}

#[allow(clippy::too_many_arguments)]
fn wrong(
    reason: &str,
    singles: &[&Account],
    with_baseline: &[&Account],
    closed: &[&Account],
    two: &[&Account],
    email_address: &str,
    received_at: String,
    rng: &mut Rng,
) -> (String, String) {
    let text = match reason {
        "format" => {
            let a = *rng.pick(singles);
            match rng.below(5) {
                0 => "привет, как передать показания?".to_owned(),
                1 => format!("показания {}", rng.between(10_000, 60_000)),
                2 => format!("{} 1 2 3 4", a.number),
                3 => format!("12345 {}", rng.between(10_000, 60_000)),
                _ => format!("{} 45x00", a.number),
            }
        }
        "invalid_email" => {
            let a = *rng.pick(singles);
            let values = correct_values(a, rng);
            let text = render(&a.number, &values, None, rng);
            format!("{text} {}", email_address.replace('@', "@@"))
        }
        "outside_window" => {
            let a = *rng.pick(singles);
            let values = correct_values(a, rng);
            let day = if rng.percent(50) {
                rng.between(26, 30)
            } else {
                rng.between(1, 14)
            };
            let at = format!("2026-11-{day:02}T{:02}:30:00+05:00", rng.below(24));
            return (render(&a.number, &values, None, rng), at);
        }
        "unknown_account" => format!("9{:08} {}", rng.below(100_000_000), rng.below(99_999)),
        "account_closed" => format!("{} {}", rng.pick(closed).number, rng.below(99_999)),
        "multiple_meters" => format!("{} {}", rng.pick(two).number, rng.below(99_999)),
        "zone_mismatch" => {
            let a = *rng.pick(singles);
            // Any count of readings in 1..=3 but the meter's own.
            let count = (u64::from(a.zones) - 1 + rng.between(1, 2)) % 3 + 1;
            let values: Vec<u64> = (0..count).map(|_| rng.between(10_000, 60_000)).collect();
            render(&a.number, &values, None, rng)
        }
        "too_many_digits" => {
            let a = *rng.pick(singles);
            let mut values = correct_values(a, rng);
            let size = 10u64.pow(u32::from(a.digits));
            values[0] = size + rng.below(size);
            render(&a.number, &values, None, rng)
        }
        "reading_decreased" => {
            let a = *rng.pick(with_baseline);
            let mut values = correct_values(a, rng);
            let base = a.baseline.as_ref().map_or(10_000, |b| b[0]);
            values[0] = base - rng.between(1, 5_000);
            render(&a.number, &values, None, rng)
        }
        "implausible" => {
            let a = *rng.pick(with_baseline);
            let mut values = correct_values(a, rng);
            let zone = usize::try_from(rng.below(values.len() as u64)).unwrap_or(0);
            let base = a.baseline.as_ref().map_or(10_000, |b| b[zone]);
            values[zone] = base + rng.between(10_001, 15_000);
            render(&a.number, &values, None, rng)
        }
        other => unreachable!("no generator for {other}"),
    };
    (text, received_at)
}
