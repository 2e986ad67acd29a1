//! Fault drills (SPEC §5, issues 7 and 19): each drill sends a stream of
//! `DRILL_MESSAGES` messages (1000 by default; `scripts/drills.sh` runs 5000 with
//! minute-long outages), `DRILL_WEB_PERCENT` (20 %) of them through the resident web
//! form and the rest by SMS, while one fault happens, then accounts for every message
//! and effect: zero lost, zero duplicated. Each prints its line of the drill table.
//!
//! The broker and PostgreSQL restarts take the server away from every other test:
//! they are `#[ignore]`d, named `*broker_restart*` / `*postgres_restart*`, and run
//! alone with one thread (scripts/test.sh); a guard brings the server back even when
//! the drill fails.

use std::collections::HashSet;

use e2e::drill::plan::{
    Channel, Expect, Message, Mix, Plan, Registry, Rng, WEB_WRONG_KINDS, WRONG_KINDS,
};
use e2e::drill::{Drill, ServerOutage, assert_clean};

/// The fault starts when this share of the stream has been posted.
const FAULT_AT: f64 = 0.3;

/// `kill -9` of one service, `DRILL_KILLS` times spread over the stream (from 20 % to
/// 80 % of it), each followed by a restart.
async fn kill9_drill(name: &str, service: &'static str) {
    let mut drill = Drill::start(name).await;
    let stream = drill.stream();
    let kills = drill.settings.kills.max(1);
    for k in 0..kills {
        let at = if kills == 1 {
            FAULT_AT
        } else {
            0.2 + 0.6 * k as f64 / (kills - 1) as f64
        };
        drill.when_under_way(&stream, at).await;
        drill.kill9_and_restart(service).await;
    }
    let tally = drill.finish(stream).await;
    assert_clean(&tally);
}

#[tokio::test]
async fn drill_kill9_ingest() {
    kill9_drill("kill -9 ingest", "ingest").await;
}

#[tokio::test]
async fn drill_kill9_validator() {
    kill9_drill("kill -9 validator", "validator").await;
}

#[tokio::test]
async fn drill_kill9_notifier() {
    kill9_drill("kill -9 notifier", "notifier").await;
}

#[tokio::test]
async fn drill_kill9_billing_export() {
    kill9_drill("kill -9 billing-export", "billing-export").await;
}

#[tokio::test]
async fn drill_billing_503() {
    let drill = Drill::start("billing 503").await;
    let stream = drill.stream();
    drill.when_under_way(&stream, FAULT_AT).await;
    drill.billing.answer(503);
    drill.outage().await;
    drill.billing.answer(200);
    let tally = drill.finish(stream).await;
    assert_clean(&tally);
}

#[tokio::test]
async fn drill_smtp_down() {
    let mut drill = Drill::start("SMTP server down").await;
    let stream = drill.stream();
    drill.when_under_way(&stream, FAULT_AT).await;
    drill.smtp.stop().await;
    drill.outage().await;
    drill.smtp.restart(&[]).await;
    let tally = drill.finish(stream).await;
    assert_clean(&tally);
}

#[tokio::test]
async fn drill_sms_gateway_503() {
    let drill = Drill::start("SMS gateway 503").await;
    let stream = drill.stream();
    drill.when_under_way(&stream, FAULT_AT).await;
    drill.sms.answer(503);
    drill.outage().await;
    drill.sms.answer(200);
    let tally = drill.finish(stream).await;
    assert_clean(&tally);
}

#[tokio::test]
#[ignore = "restarts RabbitMQ: run alone (scripts/test.sh, scripts/drills.sh)"]
async fn drill_broker_restart() {
    let drill = Drill::start("RabbitMQ restart").await;
    let stream = drill.stream();
    drill.when_under_way(&stream, FAULT_AT).await;
    let outage = ServerOutage::broker().await;
    drill.outage().await;
    outage.end().await;
    let tally = drill.finish(stream).await;
    assert_clean(&tally);
}

#[tokio::test]
#[ignore = "restarts PostgreSQL: run alone (scripts/test.sh, scripts/drills.sh)"]
async fn drill_postgres_restart() {
    let drill = Drill::start("PostgreSQL restart").await;
    let stream = drill.stream();
    drill.when_under_way(&stream, FAULT_AT).await;
    let outage = ServerOutage::postgres().await;
    drill.outage().await;
    outage.end().await;
    let tally = drill.finish(stream).await;
    assert_clean(&tally);
}

/// The validator's verdict on what the plan's text alone decides: a correct message
/// parses to the values the plan meant, a `format` one does not parse, an
/// `invalid_email` one fails on its address, every other one parses. Returns the
/// kind it checked.
fn check_against_the_grammar(m: &Message) -> &'static str {
    let parsed = validator::grammar::parse(&m.text, 6..=12);
    match &m.expect {
        Expect::Accepted { email } => {
            let p = parsed.unwrap_or_else(|e| panic!("{:?} should parse: {e:?}", m.text));
            assert_eq!(
                p.email.as_ref().map(|e| e.as_str().to_owned()),
                email.clone(),
                "{}",
                m.text
            );
            "accepted"
        }
        Expect::Rejected { reason: "format" } => {
            assert!(
                matches!(parsed, Err(validator::grammar::ParseError::Format(_))),
                "{:?} should be a format error: {parsed:?}",
                m.text
            );
            "format"
        }
        Expect::Rejected {
            reason: "invalid_email",
        } => {
            assert!(
                matches!(parsed, Err(validator::grammar::ParseError::InvalidEmail(_))),
                "{:?} should be an invalid e-mail: {parsed:?}",
                m.text
            );
            "invalid_email"
        }
        Expect::Rejected { reason } => {
            assert!(parsed.is_ok(), "{:?} ({reason}) should parse", m.text);
            reason
        }
    }
}

/// The generator's expectations agree with the validator's grammar (the rest of the
/// checks need the registry and are what the drills themselves verify).
#[test]
fn plan_expectations_agree_with_the_grammar() {
    let mut rng = Rng::new(7);
    let registry = Registry::generate(300, &mut rng);
    let plan = Plan::generate(&registry, 5000, "check", &mut rng);
    let mut kinds = HashSet::new();
    for m in &plan.messages {
        assert_eq!(m.channel, Channel::Sms);
        kinds.insert(check_against_the_grammar(m));
    }
    for k in WRONG_KINDS {
        assert!(kinds.contains(k), "the plan has no `{k}` message");
    }
    let accepted = plan.expected_accepted() as f64 / plan.messages.len() as f64;
    assert!((0.75..0.85).contains(&accepted), "{accepted}");
    let emails = plan.expected_emails() as f64 / plan.messages.len() as f64;
    assert!((0.07..0.13).contains(&emails), "{emails}");
    assert!(plan.order.len() > plan.messages.len(), "some duplicates");
    let senders: HashSet<&str> = plan.messages.iter().map(|m| m.from.as_str()).collect();
    assert_eq!(senders.len(), plan.messages.len(), "one sender per message");
}

/// A plan with web forms, for windows around any day of the month: every form gets
/// past the form's own checks (ingest's `Reading::parse`) and becomes the text the
/// plan expects; the texts agree with the grammar; web forms are on web accounts
/// only and SMS on SMS accounts only; the SMS are dated in the window unless they
/// are meant to be outside it.
#[test]
fn mixed_plans_agree_with_the_form_and_the_grammar() {
    for today in [1, 2, 10, 14, 15, 20, 24, 25, 28, 30, 31] {
        let mut rng = Rng::new(u64::from(today));
        let registry = Registry::generate_mixed(300, 75, "2026-11", &mut rng);
        let mix = Mix::for_today(today, 20);
        let (start, end) = mix.window;
        assert!((start..=end).contains(&today), "{today}: {start}–{end}");
        assert!(
            today == 31 || (start..=end).contains(&(today + 1)),
            "{today}: tomorrow too"
        );
        let plan = Plan::generate_mixed(&registry, 5000, "check", mix, &mut rng);
        let web_accounts: HashSet<&str> = registry
            .accounts
            .iter()
            .filter(|a| a.web)
            .map(|a| a.number.as_str())
            .collect();
        let sms_accounts: HashSet<&str> = registry
            .accounts
            .iter()
            .filter(|a| !a.web)
            .map(|a| a.number.as_str())
            .collect();
        let mut web_kinds = HashSet::new();
        let mut sms_kinds = HashSet::new();
        for m in &plan.messages {
            let kind = check_against_the_grammar(m);
            let account = m.text.split([' ', '#', '*']).next().unwrap_or("");
            match m.channel {
                Channel::Web => {
                    let f = m.form.as_ref().expect("a web message has its form");
                    let values: Vec<&str> = f.values.iter().map(String::as_str).collect();
                    let reading = ingest::form::Reading::parse(&f.account, &values, &f.email)
                        .unwrap_or_else(|e| panic!("{f:?} refused by the form: {e}"));
                    assert_eq!(reading.text(), m.text, "{f:?}");
                    assert!(
                        !sms_accounts.contains(f.account.as_str()),
                        "{f:?}: a web form on an SMS account"
                    );
                    web_kinds.insert(kind);
                }
                Channel::Sms => {
                    assert!(
                        !web_accounts.contains(account.trim_start_matches('№')),
                        "{m:?}: an SMS on a web account"
                    );
                    let day: u32 = m.received_at[8..10].parse().expect("day");
                    let outside = m.expect
                        == (Expect::Rejected {
                            reason: "outside_window",
                        });
                    assert_eq!(
                        !(start..=end).contains(&day),
                        outside,
                        "{today}: {m:?} in {start}–{end}"
                    );
                    sms_kinds.insert(kind);
                }
            }
        }
        for k in WEB_WRONG_KINDS {
            assert!(web_kinds.contains(k), "{today}: no `{k}` web form");
        }
        for k in WRONG_KINDS {
            assert!(sms_kinds.contains(k), "{today}: no `{k}` SMS");
        }
        let web = plan.of_channel(Channel::Web).count() as f64 / plan.messages.len() as f64;
        assert!((0.17..0.23).contains(&web), "{today}: {web}");
        let web_emails = plan
            .of_channel(Channel::Web)
            .filter(|m| matches!(m.expect, Expect::Accepted { email: Some(_) }))
            .count();
        assert!(web_emails > 100, "{today}: {web_emails} web e-mails");
    }
}
