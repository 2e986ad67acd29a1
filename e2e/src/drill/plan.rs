//! What a drill sends, and what must become of each message: a generated account
//! registry (one-, two- and three-zone meters, closed accounts, accounts with two
//! meters) and a stream of SMS, about 80 % correct and 20 % wrong in every way of
//! SPEC §3 that a single message can be wrong, each with its outcome computed here —
//! and, with [`Plan::generate_mixed`], a share of resident web forms (SPEC §4.9)
//! among them, on accounts of their own.
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
//!
//! The web forms need more, because ingest stamps a form with the moment it is
//! posted (a resident cannot say when): they fall in *today's* period, which the
//! drill's window must contain ([`Mix::for_today`] picks one, and the SMS days
//! around it), and they go to accounts of their own ("3…", whose registry baseline
//! is the month before today's), so a web reading is never compared with an SMS
//! reading of 2026-11 nor the other way round. A form is its own sender too (ingest
//! uses the form's id), so no per-sender limit applies either.

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
    /// Last known readings (of `baseline_period`), if the registry has them.
    pub baseline: Option<Vec<u64>>,
    /// The period of `baseline`: [`BASELINE_PERIOD`], or the month before today's
    /// for the web accounts.
    pub baseline_period: String,
    /// Written to only through the web form.
    pub web: bool,
}

/// The generated registry.
#[derive(Debug, Clone)]
pub struct Registry {
    pub accounts: Vec<Account>,
}

pub const BASELINE_PERIOD: &str = "2026-10";
/// The period every SMS of a plan falls in.
pub const SMS_PERIOD: &str = "2026-11";
/// Most a correct reading lies above its baseline (the limit is 10,000 a month).
const MAX_CORRECT_CONSUMPTION: u64 = 9_000;

impl Registry {
    /// `n` accounts: 40 % one-zone, 20 % two-zone, 15 % three-zone, 5 % one-zone
    /// without a baseline, 10 % closed, 10 % with two meters.
    pub fn generate(n: usize, rng: &mut Rng) -> Registry {
        Registry {
            accounts: accounts(n, '2', BASELINE_PERIOD, false, rng),
        }
    }

    /// [`Registry::generate`]'s `n` accounts, and `web` more of the same kinds
    /// numbered `3…` whose baseline is of `web_baseline_period`, written to only
    /// through the web form.
    pub fn generate_mixed(
        n: usize,
        web: usize,
        web_baseline_period: &str,
        rng: &mut Rng,
    ) -> Registry {
        let mut accounts = accounts(n, '2', BASELINE_PERIOD, false, rng);
        accounts.extend(self::accounts(web, '3', web_baseline_period, true, rng));
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
                Some(v) => (
                    a.baseline_period.as_str(),
                    v.iter().map(u64::to_string).collect(),
                ),
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

    fn of_kind(&self, kind: AccountKind, web: bool) -> Vec<&Account> {
        self.accounts
            .iter()
            .filter(|a| a.kind == kind && a.web == web)
            .collect()
    }
}

/// `n` accounts numbered `{first}00000…`: 40 % one-zone, 20 % two-zone, 15 %
/// three-zone, 5 % one-zone without a baseline, 10 % closed, 10 % with two meters.
fn accounts(
    n: usize,
    first: char,
    baseline_period: &str,
    web: bool,
    rng: &mut Rng,
) -> Vec<Account> {
    (0..n)
        .map(|i| {
            let number = format!("{first}{i:06}");
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
                baseline_period: baseline_period.to_owned(),
                web,
            }
        })
        .collect()
}

/// What must become of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Accepted: billed once; one e-mail to `email` if given.
    Accepted { email: Option<String> },
    /// Refused with this reason code; an SMS is answered by exactly one SMS, a web
    /// form by none (the refusal is on its answer page).
    Rejected { reason: &'static str },
}

/// How a message reaches ingest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// `POST /v1/sms`, from an SMS aggregator.
    Sms,
    /// `GET /form` then `POST /form`, from a resident's browser.
    Web,
}

impl Channel {
    /// As `shared::events::Channel` is written (`sms.received`'s `channel`, the
    /// audit's and the exports' `channel` column).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Web => "web",
        }
    }
}

/// What a resident types into the web form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebForm {
    pub account: String,
    /// `t1`, `t2`, `t3` as typed (unused fields empty).
    pub values: [String; 3],
    /// Empty: none given.
    pub email: String,
    /// The resident's address, as the reverse proxy in front of ingest reports it
    /// (`X-Forwarded-For`): the form's rate limit is per address.
    pub client_ip: String,
}

/// One message of the stream.
#[derive(Debug, Clone)]
pub struct Message {
    /// An SMS's `message_id`. A web form's id is made by ingest when the form is
    /// shown, so this is only the plan's name for it (the stream reports the id).
    pub id: String,
    /// The SMS sender (a web form's sender is its id).
    pub from: String,
    /// The SMS text; for a web form, the text ingest makes of its fields.
    pub text: String,
    /// The SMS's `received_at`; a web form is received when it is posted (empty).
    pub received_at: String,
    pub expect: Expect,
    pub channel: Channel,
    /// The fields of a web form.
    pub form: Option<WebForm>,
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

/// The refusals a web form can get from the validator: all but `outside_window` (a
/// form is received when it is posted, on a window day in a drill).
pub const WEB_WRONG_KINDS: [&str; 9] = [
    "format",
    "invalid_email",
    "unknown_account",
    "account_closed",
    "multiple_meters",
    "zone_mismatch",
    "too_many_digits",
    "reading_decreased",
    "implausible",
];

/// The window days the SMS of a plan are dated in, and the share of web forms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// Share of the stream that comes through the web form, in percent.
    pub web_percent: u64,
    /// `WINDOW_START_DAY`, `WINDOW_END_DAY` of the system the plan is sent to.
    pub window: (u32, u32),
}

impl Mix {
    /// SMS only, in the default window (15th–25th).
    pub const SMS_ONLY: Mix = Mix {
        web_percent: 0,
        window: (15, 25),
    };

    /// `web_percent` of web forms, and a window that holds `today` (the day of the
    /// month, company time) and the day after, since forms are received when they
    /// are posted: the default 15th–25th when it does, else the ten days or so
    /// around today. The SMS of 2026-11 are dated in and out of it alike.
    pub fn for_today(today: u32, web_percent: u64) -> Mix {
        let window = if (15..=24).contains(&today) {
            (15, 25)
        } else {
            (today.saturating_sub(5).max(1), (today + 5).min(31))
        };
        Mix {
            web_percent,
            window,
        }
    }
}

/// Days of 2026-11 (30 of them).
const NOVEMBER_DAYS: u32 = 30;

impl Plan {
    /// `n` distinct SMS; `prefix` makes the message ids unique to the drill.
    pub fn generate(registry: &Registry, n: usize, prefix: &str, rng: &mut Rng) -> Plan {
        Plan::generate_mixed(registry, n, prefix, Mix::SMS_ONLY, rng)
    }

    /// `n` distinct messages, `mix.web_percent` of them web forms on the registry's
    /// web accounts (it needs some: [`Registry::generate_mixed`]), the SMS dated
    /// in and out of `mix.window`.
    pub fn generate_mixed(
        registry: &Registry,
        n: usize,
        prefix: &str,
        mix: Mix,
        rng: &mut Rng,
    ) -> Plan {
        let sms = Accounts::of(registry, false);
        let web = Accounts::of(registry, true);
        let web_percent = if web.singles.is_empty() {
            0
        } else {
            mix.web_percent
        };
        let mut messages = Vec::with_capacity(n);
        for i in 0..n {
            let email_address = format!("r{i}.{prefix}@example.ru");
            if web_percent > 0 && rng.percent(web_percent) {
                messages.push(web_form(i, prefix, &web, &email_address, rng));
                continue;
            }
            let id = format!("{prefix}-{i:06}");
            // Distinct senders: +7 900 xxx xx xx.
            let from = format!("+7900{i:07}");
            let received_at = in_window(mix.window, rng);
            let (text, received_at, expect) = if rng.percent(80) {
                let a = *rng.pick(&sms.singles);
                let values = correct_values(a, rng);
                // ~1 in 8 correct messages carries an address: ~10 % of the stream.
                let email = rng.percent(12).then(|| email_address.clone());
                let text = render(&a.number, &values, email.as_deref(), rng);
                (text, received_at, Expect::Accepted { email })
            } else {
                let reason = *rng.pick(&WRONG_KINDS);
                let (text, at) = wrong(reason, &sms, &email_address, received_at, mix.window, rng);
                (text, at, Expect::Rejected { reason })
            };
            messages.push(Message {
                id,
                from,
                text,
                received_at,
                expect,
                channel: Channel::Sms,
                form: None,
            });
        }
        // About 2 % posted twice a little later in the stream: an SMS re-delivered by
        // the gateway, a web form submitted again (the same form: its id, its token).
        let mut order: Vec<usize> = (0..n).collect();
        for _ in 0..n / 50 {
            let i = usize::try_from(rng.below(n as u64)).unwrap_or(0);
            let later = (i + 1 + usize::try_from(rng.below(50)).unwrap_or(0)).min(order.len());
            order.insert(later, i);
        }
        Plan { messages, order }
    }

    /// The messages that came by `channel`.
    pub fn of_channel(&self, channel: Channel) -> impl Iterator<Item = &Message> {
        self.messages.iter().filter(move |m| m.channel == channel)
    }

    /// Refusals answered by SMS: those of SMS (a web form's is on its page).
    pub fn expected_replies(&self) -> usize {
        self.of_channel(Channel::Sms)
            .filter(|m| matches!(m.expect, Expect::Rejected { .. }))
            .count()
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

/// The registry's accounts of one channel, by kind.
struct Accounts<'a> {
    singles: Vec<&'a Account>,
    with_baseline: Vec<&'a Account>,
    closed: Vec<&'a Account>,
    two: Vec<&'a Account>,
}

impl<'a> Accounts<'a> {
    fn of(registry: &'a Registry, web: bool) -> Accounts<'a> {
        let singles = registry.of_kind(AccountKind::Single, web);
        let with_baseline = singles
            .iter()
            .copied()
            .filter(|a| a.baseline.is_some())
            .collect();
        Accounts {
            singles,
            with_baseline,
            closed: registry.of_kind(AccountKind::Closed, web),
            two: registry.of_kind(AccountKind::TwoMeters, web),
        }
    }
}

/// A time of receipt on a window day of 2026-11, company time.
fn in_window(window: (u32, u32), rng: &mut Rng) -> String {
    let (start, end) = window;
    format!(
        "2026-11-{:02}T{:02}:{:02}:{:02}+05:00",
        rng.between(u64::from(start), u64::from(end.min(NOVEMBER_DAYS))),
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

fn wrong(
    reason: &str,
    accounts: &Accounts<'_>,
    email_address: &str,
    received_at: String,
    window: (u32, u32),
    rng: &mut Rng,
) -> (String, String) {
    let Accounts {
        singles,
        with_baseline,
        closed,
        two,
    } = accounts;
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
            // A day of 2026-11 before or after the window (with the default window:
            // the 26th–30th or the 1st–14th).
            let (start, end) = window;
            let after = (end < NOVEMBER_DAYS).then_some((end + 1, NOVEMBER_DAYS));
            let before = (start > 1).then_some((1, start - 1));
            let (lo, hi) = match (after, before) {
                (Some(a), Some(b)) => {
                    if rng.percent(50) {
                        a
                    } else {
                        b
                    }
                }
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => (1, NOVEMBER_DAYS),
            };
            let day = rng.between(u64::from(lo), u64::from(hi));
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

/// A web form: what a resident types into it, and what must become of it.
fn web_form(
    i: usize,
    prefix: &str,
    accounts: &Accounts<'_>,
    email_address: &str,
    rng: &mut Rng,
) -> Message {
    let (account, values, email, expect) = if rng.percent(80) {
        let a = *rng.pick(&accounts.singles);
        let values = correct_values(a, rng);
        // Residents who use the form give an address more often than by SMS.
        let email = rng.percent(30).then(|| email_address.to_owned());
        let expect = Expect::Accepted {
            email: email.clone(),
        };
        (a.number.clone(), values, email, expect)
    } else {
        let reason = *rng.pick(&WEB_WRONG_KINDS);
        let (account, values, email) = web_wrong(reason, accounts, email_address, rng);
        (account, values, email, Expect::Rejected { reason })
    };
    // Typed as on a display: now and then a leading zero or a decimal part, which
    // the form drops.
    let mut typed: [String; 3] = Default::default();
    let mut wholes = Vec::new();
    for (slot, v) in typed.iter_mut().zip(&values) {
        let whole = if rng.percent(10) {
            format!("0{v}")
        } else {
            v.to_string()
        };
        *slot = match rng.below(6) {
            0 => format!("{whole},{}", rng.below(10)),
            1 => format!("{whole}.{:02}", rng.below(100)),
            _ => whole.clone(),
        };
        wholes.push(whole);
    }
    // The text ingest makes of the fields: the canonical SMS (form.rs).
    let mut text = account.clone();
    for w in &wholes {
        text.push(' ');
        text.push_str(w);
    }
    if let Some(e) = &email {
        text.push(' ');
        text.push_str(e);
    }
    Message {
        id: format!("{prefix}-w{i:06}"),
        from: String::new(),
        text,
        received_at: String::new(),
        expect,
        channel: Channel::Web,
        form: Some(WebForm {
            account,
            values: typed,
            email: email.unwrap_or_default(),
            // One address per resident (10.0.0.0/8): each has a bucket of its own.
            client_ip: format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255),
        }),
    }
}

/// A wrong web form that the form itself lets through (digits where digits go, an
/// `@` in the address): the account, the readings and the address.
fn web_wrong(
    reason: &str,
    accounts: &Accounts<'_>,
    email_address: &str,
    rng: &mut Rng,
) -> (String, Vec<u64>, Option<String>) {
    let single = |rng: &mut Rng| *rng.pick(&accounts.singles);
    match reason {
        // An account number too short for the grammar (6–12 digits).
        "format" => (
            rng.between(10_000, 99_999).to_string(),
            vec![rng.between(10_000, 60_000)],
            None,
        ),
        "invalid_email" => {
            let a = single(rng);
            let values = correct_values(a, rng);
            (
                a.number.clone(),
                values,
                Some(email_address.replace('@', "@@")),
            )
        }
        "unknown_account" => (
            format!("9{:08}", rng.below(100_000_000)),
            vec![rng.below(99_999)],
            None,
        ),
        "account_closed" => (
            rng.pick(&accounts.closed).number.clone(),
            vec![rng.below(99_999)],
            None,
        ),
        "multiple_meters" => (
            rng.pick(&accounts.two).number.clone(),
            vec![rng.below(99_999)],
            None,
        ),
        "zone_mismatch" => {
            let a = single(rng);
            let count = (u64::from(a.zones) - 1 + rng.between(1, 2)) % 3 + 1;
            let values = (0..count).map(|_| rng.between(10_000, 60_000)).collect();
            (a.number.clone(), values, None)
        }
        "too_many_digits" => {
            let a = single(rng);
            let mut values = correct_values(a, rng);
            let size = 10u64.pow(u32::from(a.digits));
            values[0] = size + rng.below(size);
            (a.number.clone(), values, None)
        }
        "reading_decreased" => {
            let a = *rng.pick(&accounts.with_baseline);
            let mut values = correct_values(a, rng);
            let base = a.baseline.as_ref().map_or(10_000, |b| b[0]);
            values[0] = base - rng.between(1, 5_000);
            (a.number.clone(), values, None)
        }
        "implausible" => {
            let a = *rng.pick(&accounts.with_baseline);
            let mut values = correct_values(a, rng);
            let zone = usize::try_from(rng.below(values.len() as u64)).unwrap_or(0);
            let base = a.baseline.as_ref().map_or(10_000, |b| b[zone]);
            // Above a month's limit (10,000): the baseline is the month before.
            values[zone] = base + rng.between(10_001, 15_000);
            (a.number.clone(), values, None)
        }
        other => unreachable!("no web form for {other}"),
    }
}
