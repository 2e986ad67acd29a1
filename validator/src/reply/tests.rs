use super::segments::{Encoding, UCS2_ONE_SEGMENT, segments};
use super::*;

/// Values the system holds, chosen so that none can appear in a reply by chance: the
/// previous reading, a consumption and the monthly limit behind `implausible`.
const STORED_PREVIOUS: u64 = 73_519;
const STORED_CONSUMPTION: u64 = 18_207;
const STORED_LIMIT: u64 = 10_000;

static DECREASED: [ReadingProblem; 2] = [
    ReadingProblem::Decreased {
        zone: 0,
        previous: STORED_PREVIOUS,
        new: 45_000,
    },
    ReadingProblem::Decreased {
        zone: 1,
        previous: 999_999_999_999_999_999,
        new: 999_999_999_999_999_998,
    },
];
static IMPLAUSIBLE: [ReadingProblem; 2] = [
    ReadingProblem::Implausible {
        zone: 0,
        new: 91_726,
        consumption: STORED_CONSUMPTION,
        limit: STORED_LIMIT,
    },
    ReadingProblem::Implausible {
        zone: 2,
        new: 999_999_999_999_999_999,
        consumption: 999_999_999_999_999_998,
        limit: STORED_LIMIT,
    },
];
static FORMATS: [(&str, FormatProblem); 5] = [
    ("empty", FormatProblem::Empty),
    ("no account first", FormatProblem::NoAccount),
    ("account length", FormatProblem::AccountLength { found: 5 }),
    ("no reading", FormatProblem::NoReading),
    (
        "over three readings",
        FormatProblem::TooManyReadings { found: 4 },
    ),
];

/// Every reply: (reason, the case, a realistic refusal, the longest input possible).
fn catalogue() -> Vec<(&'static str, Refusal<'static>, Refusal<'static>)> {
    // A field of 20 emoji, 40 UTF-16 code units: the widest echo there is.
    static WIDE_FIELD: std::sync::LazyLock<FormatProblem> =
        std::sync::LazyLock::new(|| FormatProblem::BadField("😀".repeat(20)));
    static TYPO: std::sync::LazyLock<FormatProblem> =
        std::sync::LazyLock::new(|| FormatProblem::BadField("45l00".into()));
    let mut v: Vec<(&'static str, Refusal<'static>, Refusal<'static>)> = Vec::new();
    for (case, problem) in &FORMATS {
        let extreme = match problem {
            FormatProblem::AccountLength { .. } => {
                static HUGE: FormatProblem = FormatProblem::AccountLength { found: 10_000 };
                Refusal::Format(&HUGE)
            }
            other => Refusal::Format(other),
        };
        v.push((case, Refusal::Format(problem), extreme));
    }
    v.push((
        "unrecognised field",
        Refusal::Format(&TYPO),
        Refusal::Format(&WIDE_FIELD),
    ));
    v.extend([
        (
            "invalid e-mail",
            Refusal::InvalidEmail("ivan@@mail.ru"),
            Refusal::InvalidEmail("very.long.address.with.typo@@example-domain.ru"),
        ),
        (
            "outside the window",
            Refusal::OutsideWindow {
                start_day: 15,
                end_day: 25,
            },
            Refusal::OutsideWindow {
                start_day: 28,
                end_day: 31,
            },
        ),
        (
            "unknown account",
            Refusal::UnknownAccount("1234567"),
            Refusal::UnknownAccount("123456789012"),
        ),
        (
            "closed account",
            Refusal::AccountClosed("1234567"),
            Refusal::AccountClosed("123456789012"),
        ),
        (
            "two or more meters",
            Refusal::MultipleMeters,
            Refusal::MultipleMeters,
        ),
        (
            "one zone",
            Refusal::ZoneMismatch { zones: 1 },
            Refusal::ZoneMismatch { zones: 1 },
        ),
        (
            "two zones",
            Refusal::ZoneMismatch { zones: 2 },
            Refusal::ZoneMismatch { zones: 2 },
        ),
        (
            "three zones",
            Refusal::ZoneMismatch { zones: 3 },
            Refusal::ZoneMismatch { zones: 3 },
        ),
        (
            "too many digits",
            Refusal::TooManyDigits { value: 1_234_567 },
            Refusal::TooManyDigits {
                value: 9_999_999_999_999_999_999,
            },
        ),
        (
            "reading decreased",
            Refusal::Reading(&DECREASED[0]),
            Refusal::Reading(&DECREASED[1]),
        ),
        (
            "implausible",
            Refusal::Reading(&IMPLAUSIBLE[0]),
            Refusal::Reading(&IMPLAUSIBLE[1]),
        ),
    ]);
    v
}

#[test]
fn every_reason_has_a_case() {
    use std::collections::BTreeSet;
    let covered: BTreeSet<&str> = catalogue()
        .iter()
        .map(|(_, r, _)| r.reason().as_str())
        .chain([RejectReason::RateLimited.as_str()])
        .collect();
    let all: BTreeSet<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(covered, all);
}

#[test]
fn every_reply_fits_one_segment_and_puts_the_fix_first() {
    // The words a fix starts with: the resident learns what to do before why.
    const FIXES: [&str; 5] = [
        "Напишите",
        "Проверьте",
        "Пришлите",
        "Исправьте",
        "Передайте",
    ];
    for (case, realistic, extreme) in catalogue() {
        for refusal in [&realistic, &extreme] {
            let text = refusal.text().expect("a reply");
            assert_eq!(Encoding::of(&text), Encoding::Ucs2, "{text}");
            assert!(
                ucs2_len(&text) <= UCS2_ONE_SEGMENT,
                "{case}: {} > 70: {text}",
                ucs2_len(&text)
            );
            assert!(
                FIXES.iter().any(|f| text.starts_with(f)),
                "{case}: the fix first: {text}"
            );
        }
    }
}

#[test]
fn an_account_beyond_the_default_length_still_fits_two_segments() {
    let long = "1".repeat(64);
    for refusal in [
        Refusal::AccountClosed(&long),
        Refusal::UnknownAccount(&long),
    ] {
        let text = refusal.text().expect("text");
        assert!(ucs2_len(&text) <= TWO_SEGMENTS, "{text}");
    }
    assert!(ucs2_len(&fit("я".repeat(400))) <= TWO_SEGMENTS);
}

#[test]
fn no_reply_repeats_a_stored_value() {
    let stored = [STORED_PREVIOUS, STORED_CONSUMPTION, STORED_LIMIT]
        .map(|v| v.to_string())
        .to_vec();
    for (case, realistic, _) in catalogue() {
        let text = realistic.text().expect("text");
        for value in &stored {
            assert!(
                !text.contains(value.as_str()),
                "{case}: {text} names {value}"
            );
        }
    }
    // What the sender typed is what the replies quote.
    let text = Refusal::Reading(&DECREASED[0]).text().expect("text");
    assert!(text.contains("45000"), "{text}");
    let text = Refusal::Reading(&IMPLAUSIBLE[0]).text().expect("text");
    assert!(text.contains("91726"), "{text}");
}

#[test]
fn replies_name_the_problem_in_the_senders_words() {
    let window = Refusal::OutsideWindow {
        start_day: 15,
        end_day: 25,
    }
    .text()
    .expect("text");
    assert!(window.contains("с 15 по 25"), "{window}");
    let unknown = Refusal::UnknownAccount("1000001").text().expect("text");
    assert!(unknown.contains("1000001"), "{unknown}");
    let field = Refusal::Format(&FormatProblem::BadField("45l00".into()))
        .text()
        .expect("text");
    assert!(field.contains("«45l00»"), "{field}");
    let saturated = Refusal::TooManyDigits { value: u64::MAX }
        .text()
        .expect("text");
    assert!(!saturated.contains(&u64::MAX.to_string()), "{saturated}");
    assert_eq!(Refusal::RateLimited.text(), None);
}

#[test]
fn resident_text_is_clipped_by_what_the_network_counts() {
    let long = "ж".repeat(500);
    let text = Refusal::Format(&FormatProblem::BadField(long))
        .text()
        .expect("text");
    assert!(ucs2_len(&text) <= UCS2_ONE_SEGMENT, "{text}");
    assert_eq!(clip(&"😀".repeat(30)), format!("{}…", "😀".repeat(8)));
    assert_eq!(clip("a\u{0}b\u{7}c"), "abc");
}

#[test]
fn digit_counts_read_as_russian() {
    for (n, word) in [
        (1, "цифра"),
        (2, "цифры"),
        (4, "цифры"),
        (5, "цифр"),
        (11, "цифр"),
        (13, "цифр"),
        (21, "цифра"),
        (22, "цифры"),
        (112, "цифр"),
        (10_000, "цифр"),
    ] {
        assert_eq!(digits_word(n), word, "{n}");
    }
}

/// The table of `docs/replies.md`, between its markers, as the code writes it.
fn reply_table() -> String {
    let mut out = String::from(
        "| reason | case | reply (example) | length | segments | longest input: length, segments |\n\
         |---|---|---|---|---|---|\n",
    );
    for (case, realistic, extreme) in catalogue() {
        let text = realistic.text().expect("text");
        let longest = extreme.text().expect("text");
        out.push_str(&format!(
            "| `{}` | {case} | {text} | {} {} | {} | {}, {} |\n",
            realistic.reason().as_str(),
            ucs2_len(&text),
            Encoding::of(&text).as_str(),
            segments(&text),
            ucs2_len(&longest),
            segments(&longest),
        ));
    }
    out.push_str(&format!(
        "| `{}` | over the hourly limit | (no reply) | – | 0 | – |\n",
        RejectReason::RateLimited.as_str()
    ));
    out
}

const BEGIN: &str =
    "<!-- reply-table:begin (written by the validator's reply tests: UPDATE_EXPECTED=1) -->\n";
const END: &str = "<!-- reply-table:end -->";

#[test]
fn docs_reply_table_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/replies.md");
    let doc = std::fs::read_to_string(path).expect("docs/replies.md");
    let (before, rest) = doc
        .split_once(BEGIN)
        .expect("docs/replies.md: begin marker");
    let (documented, after) = rest.split_once(END).expect("docs/replies.md: end marker");
    let table = reply_table();
    if std::env::var_os("UPDATE_EXPECTED").is_some() {
        std::fs::write(path, format!("{before}{BEGIN}{table}{END}{after}")).expect("write");
        return;
    }
    assert_eq!(
        documented, table,
        "docs/replies.md is out of date: run the validator's tests with UPDATE_EXPECTED=1"
    );
}
