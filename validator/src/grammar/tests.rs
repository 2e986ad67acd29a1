use proptest::prelude::*;

use super::*;

const DIGITS: RangeInclusive<usize> = 6..=12;

/// A parse result reduced to plain values, so expectations read like the SMS.
type Outcome = Result<(String, Vec<u64>, Option<String>), ParseError>;

fn outcome(text: &str) -> Outcome {
    parse(text, DIGITS).map(|m| {
        (
            m.account.as_str().to_owned(),
            m.readings.iter().map(Reading::value).collect(),
            m.email.map(|e| e.as_str().to_owned()),
        )
    })
}

fn ok(account: &str, readings: &[u64]) -> Outcome {
    Ok((account.to_owned(), readings.to_vec(), None))
}

fn ok_mail(account: &str, readings: &[u64], email: &str) -> Outcome {
    Ok((
        account.to_owned(),
        readings.to_vec(),
        Some(email.to_owned()),
    ))
}

fn fails(problem: FormatProblem) -> Outcome {
    Err(ParseError::Format(problem))
}

fn bad(field: &str) -> Outcome {
    fails(FormatProblem::BadField(field.to_owned()))
}

fn bad_email(text: &str) -> Outcome {
    Err(ParseError::InvalidEmail(text.to_owned()))
}

fn case(input: impl Into<String>, expected: Outcome) -> (String, Outcome) {
    (input.into(), expected)
}

#[test]
fn table() {
    use FormatProblem::*;
    let junk_20 = "абвабвабвабвабвабваб…"; // 20 characters, cut on a char boundary
    let cases = vec![
        // Canonical forms: one, two, three, four readings.
        case("1000001 45100", ok("1000001", &[45100])),
        case("1000001 45100 23456", ok("1000001", &[45100, 23456])),
        case("1000001 1 2 3", ok("1000001", &[1, 2, 3])),
        case("1000001 1 2 3 4", fails(TooManyReadings { found: 4 })),
        case("1000001 1 2 3 4 5 6", fails(TooManyReadings { found: 6 })),
        // Empty, separators only.
        case("", fails(Empty)),
        case("   ", fails(Empty)),
        case(" \t\r\n\u{a0}\u{3000}#*;,", fails(Empty)),
        case("1000001", fails(NoReading)),
        // Every separator.
        case("  1000001   45100  ", ok("1000001", &[45100])),
        case("1000001\t45100", ok("1000001", &[45100])),
        case("1000001\n45100\n23456", ok("1000001", &[45100, 23456])),
        case("1000001\r\n45100", ok("1000001", &[45100])),
        case("1000001\u{a0}45100", ok("1000001", &[45100])),
        case("1000001\u{202f}45100\u{3000}1", ok("1000001", &[45100, 1])),
        case("1000001\u{200b}45100\u{feff}", ok("1000001", &[45100])),
        case("1000001#45100", ok("1000001", &[45100])),
        case("1000001*45100*23456", ok("1000001", &[45100, 23456])),
        case("1000001;45100;", ok("1000001", &[45100])),
        case("*1000001*45100#", ok("1000001", &[45100])),
        case("##1000001##45100##", ok("1000001", &[45100])),
        case("1000001,45100", ok("1000001", &[45100])),
        case("1000001, 45100, 23456", ok("1000001", &[45100, 23456])),
        case("1000001 12345,", ok("1000001", &[12345])),
        // Decimal parts are dropped.
        case("1000001 12345,7", ok("1000001", &[12345])),
        case("1000001 12345,67", ok("1000001", &[12345])),
        case("1000001 12345.7", ok("1000001", &[12345])),
        case("1000001 12345.67", ok("1000001", &[12345])),
        case("1000001 12345,7 23456,5", ok("1000001", &[12345, 23456])),
        case("1000001,12345,67,23456,5", ok("1000001", &[12345, 23456])),
        case("1000001 0,5", ok("1000001", &[0])),
        case("1000001 12345.", ok("1000001", &[12345])),
        case("1000001 12345,67.", ok("1000001", &[12345])),
        case("1000001 12345,678", ok("1000001", &[12345, 678])),
        case("1000001 45,100", ok("1000001", &[45, 100])),
        case("1000001 12345.678", bad("12345.678")),
        case("1000001 12345..", bad("12345..")),
        case("1000001 .5", bad(".5")),
        case("1000001,12", bad("1000001,12")),
        // Leading zeros.
        case("0001234 00045", ok("0001234", &[45])),
        case("000000 0", ok("000000", &[0])),
        case("1000001 0000 007", ok("1000001", &[0, 7])),
        // Account length bounds (6..=12).
        case("12345 45100", fails(AccountLength { found: 5 })),
        case("123456 45100", ok("123456", &[45100])),
        case("123456789012 1", ok("123456789012", &[1])),
        case("1234567890123 1", fails(AccountLength { found: 13 })),
        // Account labels.
        case("лс 1000001 45100", ok("1000001", &[45100])),
        case("ЛС 1000001 45100", ok("1000001", &[45100])),
        case("л/с 1000001 45100", ok("1000001", &[45100])),
        case("Л.С. 1000001 45100", ok("1000001", &[45100])),
        case("ls 1000001 45100", ok("1000001", &[45100])),
        case("LS:1000001 45100", ok("1000001", &[45100])),
        case("лс=1000001 45100", ok("1000001", &[45100])),
        case("л/с: 1000001 45100", ok("1000001", &[45100])),
        case("№1000001 45100", ok("1000001", &[45100])),
        case("№ 1000001 45100", ok("1000001", &[45100])),
        case("№:1000001 45100", ok("1000001", &[45100])),
        case("#1000001 45100", ok("1000001", &[45100])),
        case("лc 1000001 45100", ok("1000001", &[45100])), // Latin c
        // Reading labels, both scripts, own field or glued by `:`/`=`.
        case("1000001 т1 45100 т2 23456", ok("1000001", &[45100, 23456])),
        case("1000001 T1=45100 T2=23456", ok("1000001", &[45100, 23456])),
        case("1000001 Т1:1 Т2:2 Т3:3", ok("1000001", &[1, 2, 3])),
        case(
            "1000001 t1: 45100 t2: 23456",
            ok("1000001", &[45100, 23456]),
        ),
        case("1000001 т1 : 45100", ok("1000001", &[45100])),
        case("1000001 т1 =45100", ok("1000001", &[45100])),
        case(
            "1000001 день 45100 ночь 23456",
            ok("1000001", &[45100, 23456]),
        ),
        case(
            "1000001 ДЕНЬ 45100 НОЧЬ 23456",
            ok("1000001", &[45100, 23456]),
        ),
        case("1000001 Д:45100 Н:23456", ok("1000001", &[45100, 23456])),
        case("1000001 д=45100 н=23456", ok("1000001", &[45100, 23456])),
        case("1000001 д. 45100 н. 23456", ok("1000001", &[45100, 23456])),
        // Zone labels decide the zones when every reading has a different one.
        case("1000001 н 21100 д 45200", ok("1000001", &[45200, 21100])),
        case(
            "1000001 ночь 21100 день 45200",
            ok("1000001", &[45200, 21100]),
        ),
        case("1000001 Н:21100 Д:45200", ok("1000001", &[45200, 21100])),
        case("1000001 т2=21100 т1=45200", ok("1000001", &[45200, 21100])),
        case(
            "1000001 т3 3100 т1 1100 т2 2100",
            ok("1000001", &[1100, 2100, 3100]),
        ),
        case(
            "1000001 T3=3100 T2=2100 T1=1100",
            ok("1000001", &[1100, 2100, 3100]),
        ),
        case(
            "1000001 н 3100 т1 1100 т2 2100",
            ok("1000001", &[1100, 2100, 3100]),
        ),
        // ... otherwise the order typed counts.
        case("1000001 н 21100 45200", ok("1000001", &[21100, 45200])),
        case("1000001 21100 д 45200", ok("1000001", &[21100, 45200])),
        case("1000001 н 21100 н 45200", ok("1000001", &[21100, 45200])),
        case("1000001 д 21100 т1 45200", ok("1000001", &[21100, 45200])),
        case("1000001 т2 21100 н 45200", ok("1000001", &[21100, 45200])),
        case("1000001 н 45100", ok("1000001", &[45100])),
        case("1000001 т2 т1 45100 23456", ok("1000001", &[45100, 23456])),
        // `-` glues a label to its value; a minus is no glue.
        case("1000001 Т1-45100 Т2-23456", ok("1000001", &[45100, 23456])),
        case("1000001 т-1-45100", ok("1000001", &[45100])),
        case("1000001 н-21100 д-45200", ok("1000001", &[45200, 21100])),
        case("1000001 т1 - 45100", ok("1000001", &[45100])),
        case("1000001 т1- 45100", ok("1000001", &[45100])),
        case("лс-1000001 45100", ok("1000001", &[45100])),
        case("№-1000001 45100", ok("1000001", &[45100])),
        case("1000001 т1 -45100", bad("-45100")),
        case("1000001 т1--45100", bad("т1--45100")),
        case("1000001 - 45100", bad("-")),
        case("1000001-45100", bad("1000001-45100")),
        case("1000001 45100-23456", bad("45100-23456")),
        case("1000001 х-45100", bad("х-45100")),
        case("1000001 Дeнь 45100 H 23456", ok("1000001", &[45100, 23456])), // Latin e, H
        case("1000001 т1=45100,5", ok("1000001", &[45100])),
        case("1000001 45100 т2", ok("1000001", &[45100])),
        case("1000001 т1", fails(NoReading)),
        case("1000001 т145100", bad("т145100")),
        case("1000001 д45100", bad("д45100")),
        case("лс1000001 45100", ok("1000001", &[45100])),
        case("Л/С1000001 45100", ok("1000001", &[45100])),
        case("л.с.1000001 45100", ok("1000001", &[45100])),
        case("LS1000001 45100", ok("1000001", &[45100])),
        case("лс1000001,5 45100", bad("лс1000001,5")),
        case("лс12345 45100", fails(AccountLength { found: 5 })),
        case("1000001 лс45100", bad("лс45100")),
        case("т11000001 45100", bad("т11000001")),
        case("т1 1000001 45100", fails(NoAccount)),
        case("1000001 лс 45100", bad("лс")),
        case("1000001 №45100", bad("№45100")),
        case("1000001 : 45100", bad(":")),
        case("1000001 т1=абв", bad("т1=абв")),
        // Words residents add, before the first reading.
        case("показания 1000001 45100", ok("1000001", &[45100])),
        case("1000001 показания 45100", ok("1000001", &[45100])),
        case("лицевой счёт 1000001 45100", ok("1000001", &[45100])),
        case(
            "Лицевой счет: 1000001 Показания: 45100",
            ok("1000001", &[45100]),
        ),
        case("лс 1000001 показания 46000", ok("1000001", &[46000])),
        case("счёт:1000001 показания:45100", ok("1000001", &[45100])),
        case("СЧЁТЧИК 1000001 45100", ok("1000001", &[45100])),
        case(
            "1000001 счетчик т1 45100 т2 23456",
            ok("1000001", &[45100, 23456]),
        ),
        case("1000001 т1 показания 45100", ok("1000001", &[45100])),
        case("пoкaзaния 1000001 45100", ok("1000001", &[45100])), // Latin o, a
        case("1000001 показание : 45100", ok("1000001", &[45100])),
        case("л/с показания 1000001 45100", ok("1000001", &[45100])),
        case("1000001 показания", fails(NoReading)),
        case("1000001 45100 показания", bad("показания")),
        case("1000001 45100 показания 23456", bad("показания")),
        case("1000001 показ 45100", bad("показ")),
        case("1000001 спасибо 45100", bad("спасибо")),
        case("1000001 показания-45100", bad("показания-45100")),
        case("почта 1000001 45100", fails(NoAccount)),
        case("1000001 почта 45100", bad("почта")),
        // ... and right before the address.
        case(
            "1000001 45100 e-mail: ivan@mail.ru",
            ok_mail("1000001", &[45100], "ivan@mail.ru"),
        ),
        case(
            "1000001 45100 E-mail:ivan@mail.ru",
            ok_mail("1000001", &[45100], "ivan@mail.ru"),
        ),
        case(
            "1000001 45100 email ivan@mail.ru",
            ok_mail("1000001", &[45100], "ivan@mail.ru"),
        ),
        case(
            "1000001 45100 почта ivan@mail.ru",
            ok_mail("1000001", &[45100], "ivan@mail.ru"),
        ),
        case(
            "1000001 45100 Эл.почта: ivan@mail.ru",
            ok_mail("1000001", &[45100], "ivan@mail.ru"),
        ),
        case(
            "1000001 45100 почта:ivan@mail.ru",
            ok_mail("1000001", &[45100], "ivan@mail.ru"),
        ),
        case("1000001 45100 почта ivan@mail", bad_email("ivan@mail")),
        case("1000001 45100 почта", bad("почта")),
        case("1000001 45100 почта почта ivan@mail.ru", bad("почта")),
        case("1000001 45100 адрес ivan@mail.ru", bad("адрес")),
        case(
            "1000001 45100 адрес:ivan@mail.ru",
            bad_email("адрес:ivan@mail.ru"),
        ),
        case("1000001 почта ivan@mail.ru", fails(NoReading)),
        // Units after a reading.
        case("1000001 45100 квт", ok("1000001", &[45100])),
        case(
            "1000001 45100 кВт 23456 kWh",
            ok("1000001", &[45100, 23456]),
        ),
        case(
            "1000001 45100 квт*ч 23456 кВт·ч",
            ok("1000001", &[45100, 23456]),
        ),
        case(
            "1000001 45100 кВт.ч. 23456 kw/h",
            ok("1000001", &[45100, 23456]),
        ),
        case("1000001 квт", bad("квт")),
        case("1000001 45100 ч", bad("ч")),
        case("1000001 45100квт", bad("45100квт")),
        // E-mail.
        case(
            "1000001 45100 ivan@mail.ru",
            ok_mail("1000001", &[45100], "ivan@mail.ru"),
        ),
        case(
            "1000001 45100 23456 Ivan.Petrov+meter@Mail.RU",
            ok_mail("1000001", &[45100, 23456], "Ivan.Petrov+meter@mail.ru"),
        ),
        case(
            "1000001 1 IVAN@MAIL.RU",
            ok_mail("1000001", &[1], "IVAN@mail.ru"),
        ),
        case(
            "1000001 1 ivan@mail.ru.",
            ok_mail("1000001", &[1], "ivan@mail.ru"),
        ),
        case(
            "1000001 1 иван@почта.рф",
            ok_mail("1000001", &[1], "иван@почта.рф"),
        ),
        case(
            "1000001 1 ivan@почта.рф",
            ok_mail("1000001", &[1], "ivan@почта.рф"),
        ),
        case(
            "1000001 1 Ivan@ПОЧТА.РФ",
            ok_mail("1000001", &[1], "Ivan@почта.рф"),
        ),
        case(
            "1000001 1 ivan@xn--80a1acny.xn--p1ai",
            ok_mail("1000001", &[1], "ivan@xn--80a1acny.xn--p1ai"),
        ),
        case("1000001 1 ivan@пoчта.рф", bad_email("ivan@пoчта.рф")), // Latin o
        case("1000001 1 ivan@почта", bad_email("ivan@почта")),
        case("1000001 1 ivan@mail", bad_email("ivan@mail")),
        case("1000001 1 ivan@@mail.ru", bad_email("ivan@@mail.ru")),
        case("1000001 1 ivan.@mail.ru", bad_email("ivan.@mail.ru")),
        case("1000001 1 @", bad_email("@")),
        case("1000001 1 ivan@[10.0.0.1]", bad_email("ivan@[10.0.0.1]")),
        case("1000001 1 ivаn@mail.ru", bad_email("ivаn@mail.ru")), // Cyrillic а
        case("1000001 ivan@mail.ru", fails(NoReading)),
        case("1000001 45100 ivan@mail.ru 23456", bad("ivan@mail.ru")),
        case("1000001 a@b.ru 45100 c@d.ru", bad("a@b.ru")),
        case("ivan@mail.ru", fails(NoAccount)),
        case("1000001 45100 junk ivan@mail", bad("junk")),
        case(
            "1000001 1 2 3 4 ivan@mail",
            fails(TooManyReadings { found: 4 }),
        ),
        // Junk, emoji, look-alikes, foreign digits.
        case("привет", fails(NoAccount)),
        case("здравствуйте 1000001 45100", fails(NoAccount)),
        case("1000001 45100 спасибо", bad("спасибо")),
        case("1000001 1 2 3 4 спасибо", bad("спасибо")),
        case("1000001 45100 😀", bad("😀")),
        case("😀😀😀", fails(NoAccount)),
        case("1000001 -45100", bad("-45100")),
        case("1000001 1ООО", bad("1ООО")), // Cyrillic О for zero
        case("1ООО001 45100", bad("1ООО001")),
        case("１０００００１ 45100", bad("１０００００１")),
        case("1000001 ٤٥١٠٠", bad("٤٥١٠٠")),
        case("1000001 45100\u{0}\u{7}", ok("1000001", &[45100])),
        // Huge numbers and long input.
        case(
            "1000001 9999999999999999999999999",
            ok("1000001", &[u64::MAX]),
        ),
        case("1000001 18446744073709551615", ok("1000001", &[u64::MAX])),
        case("1000001 18446744073709551616", ok("1000001", &[u64::MAX])),
        case(
            "1234567890123456789012345 1",
            fails(AccountLength { found: 25 }),
        ),
        case(
            format!("1000001 {}", "1 ".repeat(5_000)),
            fails(TooManyReadings { found: 5_000 }),
        ),
        case(format!("1000001 1 {}", "абв".repeat(2_000)), bad(junk_20)),
        case("7".repeat(10_000), fails(AccountLength { found: 10_000 })),
        case(
            format!("1000001 1 {}@mail.ru", "a".repeat(10_000)),
            bad_email(&format!("{}…", "a".repeat(64))),
        ),
    ];
    assert!(cases.len() >= 70, "only {} cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(input, expected)| {
            let got = outcome(input);
            (got != *expected).then(|| {
                format!(
                    "{:?}\n  expected {expected:?}\n  got      {got:?}",
                    excerpt(input, 60)
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn reading_digits_ignore_leading_zeros_and_survive_saturation() {
    let digits = |text: &str| -> Vec<(u64, u32)> {
        let message = parse(text, DIGITS).expect("parses");
        message
            .readings
            .iter()
            .map(|r| (r.value(), r.digits()))
            .collect()
    };
    assert_eq!(
        digits("1000001 0 0000 00450"),
        vec![(0, 1), (0, 1), (450, 3)]
    );
    assert_eq!(digits("1000001 12345,67"), vec![(12345, 5)]);
    let huge = digits("1000001 0009999999999999999999999999");
    assert_eq!(huge, vec![(u64::MAX, 25)]);
    assert_eq!(Reading::new(0).digits(), 1);
    assert_eq!(Reading::new(99_999).digits(), 5);
    assert_eq!(Reading::new(u64::MAX).digits(), 20);
}

#[test]
fn account_number_parse_is_strict() {
    assert_eq!(
        AccountNumber::parse("000123", 6..=6).map(|a| a.to_string()),
        Ok("000123".to_owned())
    );
    assert_eq!(
        AccountNumber::parse("", DIGITS),
        Err(FormatProblem::NoAccount)
    );
    assert_eq!(
        AccountNumber::parse("12a456", DIGITS),
        Err(FormatProblem::NoAccount)
    );
    assert_eq!(
        AccountNumber::parse("1234567", 8..=8),
        Err(FormatProblem::AccountLength { found: 7 })
    );
    assert_eq!(
        parse("1234567 1", 7..=7).map(|m| m.account.to_string()),
        Ok("1234567".to_owned())
    );
}

#[test]
fn errors_display_and_chain() {
    let format = ParseError::from(FormatProblem::AccountLength { found: 5 });
    assert_eq!(
        format.to_string(),
        "the message is not in the expected form"
    );
    let source = std::error::Error::source(&format).map(ToString::to_string);
    assert_eq!(source.as_deref(), Some("the account number has 5 digits"));
    assert_eq!(
        ParseError::InvalidEmail("a@b".into()).to_string(),
        "invalid e-mail address `a@b`"
    );
    assert_eq!(
        FormatProblem::BadField("x".into()).to_string(),
        "unrecognised field `x`"
    );
}

/// Pieces that exercise every branch of the parser when strung together.
const PIECES: &[&str] = &[
    "1", "0", "7", "00", "1000001", ",", ".", ":", "=", "№", "#", "*", ";", " ", "\u{a0}", "\n",
    "т1", "T2", "день", "Н", "лс", "л/с", "квт", "ч", "kWh", "@", "a", "mail.ru", "О", "😀", "１",
    "٤", "\u{301}", "\u{200b}", "-", "é", "ß", "İ",
];

fn piece_soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..40).prop_map(|p| p.concat())
}

fn separator_run() -> impl Strategy<Value = String> {
    const SEPARATORS: &[&str] = &[
        " ", "\t", "\n", "\r\n", "\u{a0}", "\u{3000}", "#", "*", ";", ",",
    ];
    prop::collection::vec(prop::sample::select(SEPARATORS), 1..5).prop_map(|run| {
        // A lone `,` between a digit and one or two digits is a decimal comma,
        // the one place where a separator run is not neutral.
        let run = run.concat();
        if run == "," { ", ".to_owned() } else { run }
    })
}

/// Fields as residents type them, correct or not, none containing a separator.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9]{1,14}",
        "[0-9]{1,6}[.,][0-9]{1,3}",
        prop::sample::select(
            &[
                "лс",
                "№",
                "т1",
                "T2",
                "день",
                "н",
                "квт",
                "кВт·ч",
                ":",
                "=",
                "x"
            ][..]
        )
        .prop_map(str::to_owned),
        "(т1|д|№|лс)[:=]?[0-9]{0,7}",
        "[a-z0-9]{1,6}@[a-z]{1,6}(\\.ru)?",
        "[а-яА-Я😀]{1,4}",
    ]
}

fn email() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,10}(\\+[a-z0-9]{1,5})?@[a-z]{1,10}\\.(ru|com|org)"
}

/// An independent oracle for a reading's value and digits: u128 holds 30 digits.
fn expected_reading(text: &str) -> (u64, u32) {
    let integer = text.split(['.', ',']).next().unwrap_or_default();
    let significant = integer.trim_start_matches('0');
    let value = integer.parse::<u128>().expect("test digits fit u128");
    let value = u64::try_from(value).unwrap_or(u64::MAX);
    (value, significant.len().max(1) as u32)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn never_panics_on_any_unicode(text in any::<String>(), min in 0usize..20, max in 0usize..20) {
        let _ = parse(&text, min..=max);
    }

    #[test]
    fn never_panics_on_piece_soup(text in piece_soup()) {
        let _ = parse(&text, DIGITS);
    }

    #[test]
    fn never_panics_on_any_email_field(local in any::<String>(), domain in any::<String>()) {
        let _ = Email::parse(&format!("{local}@{domain}"));
        let _ = parse(&format!("1000001 1 {local}@{domain}"), DIGITS);
    }
}

proptest! {
    #[test]
    fn canonical_message_round_trips(
        account in "[0-9]{6,12}",
        readings in prop::collection::vec("[0-9]{1,30}([.,][0-9]{1,2})?", 1..=3),
        email in prop::option::of(email()),
    ) {
        let mut text = format!("{account} {}", readings.join(" "));
        if let Some(email) = &email {
            text = format!("{text} {email}");
        }
        let message = parse(&text, DIGITS).expect("canonical message parses");
        prop_assert_eq!(message.account.as_str(), account.as_str());
        let got: Vec<(u64, u32)> = message.readings.iter().map(|r| (r.value(), r.digits())).collect();
        let expected: Vec<(u64, u32)> = readings.iter().map(|r| expected_reading(r)).collect();
        prop_assert_eq!(got, expected);
        prop_assert_eq!(message.email.as_ref().map(Email::as_str), email.as_deref());
    }

    #[test]
    fn separator_runs_between_fields_do_not_matter(
        fields in prop::collection::vec(field(), 0..8),
        runs in prop::collection::vec(separator_run(), 9),
        lead in prop::option::of(separator_run()),
    ) {
        let plain = fields.join(" ");
        let mut noisy = lead.unwrap_or_default();
        for (field, run) in fields.iter().zip(&runs) {
            noisy.push_str(field);
            noisy.push_str(run);
        }
        prop_assert_eq!(parse(&noisy, DIGITS), parse(&plain, DIGITS), "noisy: {:?}", noisy);
    }
}

/// A label of zone `zone` (0-based) of `count` readings, as residents write it.
fn zone_label(zone: usize, count: usize, pick: usize) -> &'static str {
    let choices: &[&str] = match (count, zone) {
        (2, 0) => &["д", "Д", "д.", "день", "ДЕНЬ", "Дeнь", "т1", "T1", "Т-1"],
        (2, 1) => &["н", "Н", "н.", "ночь", "Ночь", "H", "т2", "t2", "Т-2"],
        (_, 0) => &["т1", "Т1", "T1", "t1", "т-1"],
        (_, 1) => &["т2", "Т2", "T2", "t-2"],
        _ => &["т3", "Т3", "T3", "н", "ночь"],
    };
    choices[pick % choices.len()]
}

/// How a label is joined to its value, as residents do it (never ` -45100`: a minus).
const GLUES: &[&str] = &[" ", ":", "=", "-", " : ", " = ", " - ", ": ", "= ", "- "];

/// An account label and how it is joined to the account; `""` for none.
const ACCOUNT_PREFIXES: &[&str] = &[
    "", "", "лс ", "Л/С ", "л.с. ", "ls ", "№ ", "№", "лс", "Л/С", "лс:", "лс-", "№-", "ЛС=",
];

/// A word residents add, spelt as they might: any case, `ё` or `е`, Latin look-alike
/// letters, a trailing `:` or none.
fn added_word() -> impl Strategy<Value = String> {
    const WORDS: &[&str] = &[
        "показания",
        "показание",
        "лицевой",
        "счёт",
        "счет",
        "счетчик",
        "счётчик",
    ];
    (
        prop::sample::select(WORDS),
        0..3u8,
        any::<u16>(),
        any::<bool>(),
    )
        .prop_map(|(word, case, mask, colon)| spelt(word, case, mask, colon))
}

/// A word said before the address, spelt as residents might.
fn email_word() -> impl Strategy<Value = String> {
    const WORDS: &[&str] = &["e-mail", "email", "почта", "эл.почта"];
    (
        prop::sample::select(WORDS),
        0..3u8,
        any::<u16>(),
        any::<bool>(),
    )
        .prop_map(|(word, case, mask, colon)| spelt(word, case, mask, colon))
}

/// `word` in lower case (0), capitalised (1) or upper case (2), with the Cyrillic
/// letters picked by `mask` typed as their Latin look-alikes, and maybe a `:`.
fn spelt(word: &str, case: u8, mask: u16, colon: bool) -> String {
    let cased: String = match case {
        0 => word.to_owned(),
        1 => word
            .chars()
            .enumerate()
            .flat_map(|(i, c)| {
                let up: Vec<char> = if i == 0 {
                    c.to_uppercase().collect()
                } else {
                    vec![c]
                };
                up
            })
            .collect(),
        _ => word.to_uppercase(),
    };
    let mut out: String = cased
        .chars()
        .enumerate()
        .map(|(i, c)| {
            if mask & (1 << (i % 16)) == 0 {
                return c;
            }
            match c {
                'а' => 'a',
                'с' => 'c',
                'е' => 'e',
                'о' => 'o',
                'р' => 'p',
                'х' => 'x',
                'у' => 'y',
                'к' => 'k',
                'м' => 'm',
                'т' => 't',
                'н' => 'h',
                'А' => 'A',
                'В' => 'B',
                'С' => 'C',
                'Е' => 'E',
                'Н' => 'H',
                'К' => 'K',
                'М' => 'M',
                'О' => 'O',
                'Р' => 'P',
                'Т' => 'T',
                'Х' => 'X',
                other => other,
            }
        })
        .collect();
    if colon {
        out.push(':');
    }
    out
}

/// A message with an optional account label, one to three readings each with a zone
/// label, in any order, and an optional e-mail: the fields (split on spaces by the
/// parser), the index of the first field holding a reading's value, and the same
/// message in the canonical form.
fn labelled_message() -> impl Strategy<Value = (Vec<String>, usize, String)> {
    (
        "[0-9]{6,12}",
        prop::sample::select(ACCOUNT_PREFIXES),
        prop::collection::vec(
            (
                "[0-9]{1,9}([.,][0-9]{1,2})?",
                any::<usize>(),
                prop::sample::select(GLUES),
            ),
            1..=3,
        ),
        prop::option::of(email()),
        any::<bool>(),
    )
        .prop_flat_map(|(account, prefix, readings, email, labelled)| {
            let count = readings.len();
            let typed: Vec<(usize, String)> = readings
                .iter()
                .enumerate()
                .map(|(zone, (value, pick, glue))| {
                    let text = if labelled {
                        format!("{}{glue}{value}", zone_label(zone, count, *pick))
                    } else {
                        value.clone()
                    };
                    (zone, text)
                })
                .collect();
            let canonical = std::iter::once(account.clone())
                .chain(readings.iter().map(|(v, _, _)| v.clone()))
                .chain(email.clone())
                .collect::<Vec<_>>()
                .join(" ");
            // Unlabelled readings keep their order; labelled ones may come in any.
            let order = if labelled {
                Just(typed).prop_shuffle().boxed()
            } else {
                Just(typed).boxed()
            };
            (
                Just(format!("{prefix}{account}")),
                order,
                Just(email),
                Just(canonical),
            )
        })
        .prop_map(|(account, typed, email, canonical)| {
            let mut fields: Vec<String> = account.split(' ').map(str::to_owned).collect();
            let first_value = fields.len() + {
                // The first reading's own fields: the label's and the glue's come before the value's.
                let (_, text) = &typed[0];
                text.split(' ').count() - 1
            };
            for (_, text) in &typed {
                fields.extend(text.split(' ').map(str::to_owned));
            }
            fields.extend(email);
            (fields, first_value, canonical)
        })
}

proptest! {
    #[test]
    fn labels_in_any_order_give_the_canonical_values(
        (fields, _, canonical) in labelled_message(),
    ) {
        let text = fields.join(" ");
        let got = outcome(&text);
        prop_assert!(got.is_ok(), "{:?}: {:?}", text, got);
        prop_assert_eq!(got, outcome(&canonical), "{:?} vs {:?}", text, canonical);
    }

    #[test]
    fn an_added_word_never_changes_the_values(
        (fields, first_value, _) in labelled_message(),
        words in prop::collection::vec((added_word(), any::<prop::sample::Index>()), 1..4),
        before_address in prop::option::of(email_word()),
    ) {
        let plain = fields.join(" ");
        let mut noisy = fields.clone();
        // From the last insertion point down, so earlier positions stay valid.
        let mut inserts: Vec<(usize, String)> = words
            .into_iter()
            .map(|(word, at)| (at.index(first_value + 1), word))
            .collect();
        inserts.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
        for (at, word) in inserts {
            noisy.insert(at, word);
        }
        let has_email = fields.last().is_some_and(|f| f.contains('@'));
        if let (Some(word), true) = (before_address, has_email) {
            noisy.insert(noisy.len() - 1, word);
        }
        let noisy = noisy.join(" ");
        prop_assert_eq!(outcome(&noisy), outcome(&plain), "{:?} vs {:?}", noisy, plain);
    }

    #[test]
    fn any_other_word_is_a_format_error(
        (fields, first_value, _) in labelled_message(),
        word in "[а-яё]{2,8}",
        at in any::<prop::sample::Index>(),
    ) {
        prop_assume!(!vocabulary::is_added_word(&word));
        prop_assume!(vocabulary::label_kind(&word).is_none());
        prop_assume!(vocabulary::unit_kind(&word).is_none());
        let mut noisy = fields.clone();
        noisy.insert(at.index(first_value + 1), word.clone());
        let noisy = noisy.join(" ");
        prop_assert!(
            matches!(parse(&noisy, DIGITS), Err(ParseError::Format(_))),
            "{:?} parsed: {:?}", noisy, parse(&noisy, DIGITS)
        );
    }
}
