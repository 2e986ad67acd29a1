//! A mixed corpus through the whole system, every service a separate process: correct
//! messages (one, two and three zones, with and without e-mail), every refusal of
//! SPEC §3, a resubmission, a duplicate, and a sender over the hourly limit; and one
//! message per form of SPEC §2 added in issue 17 (zone labels in any order, an
//! account label touching the account, `-` glue, the words residents add, an
//! internationalised e-mail domain). Every outcome is checked: the audit row, the
//! reply (text and count, and that no reply names a stored value), the e-mail, the
//! billing post (the values in zone order) and the export line.

use std::collections::HashMap;
use std::time::Duration;

use e2e::{BillingDouble, Gateway, SmtpSink, System, fixtures};
use shared::testing::eventually;

const AT: &str = "2026-11-20T10:00:00+05:00";

/// Accounts of the new forms, without a previous reading.
const NEW_FORMS_REGISTRY: &str = "\
1000011,EM-11,1,5,active,,,,,100
1000012,EM-12,2,6,active,,,,,100
1000013,EM-13,3,6,active,,,,,100
1000014,EM-14,1,5,active,,,,,100
1000015,EM-15,2,6,active,,,,,100
1000016,EM-16,1,5,active,,,,,100
1000017,EM-17,1,5,active,,,,,100
1000018,EM-18,1,5,active,,,,,100
";

/// One accepted message per new form of SPEC §2, and the values billing must get.
const NEW_FORMS: [(&str, &str, &[u64]); 8] = [
    ("form-touching", "лс1000011 45100", &[45100]),
    ("form-zones-2", "1000012 н 21100 д 45200", &[45200, 21100]),
    (
        "form-zones-3",
        "1000013 т3 30100 т1 10100 т2 20100",
        &[10100, 20100, 30100],
    ),
    ("form-touching-slash", "Л/С1000014 45100", &[45100]),
    ("form-dash", "1000015 Т1-45100 Т2-12100", &[45100, 12100]),
    (
        "form-words",
        "Лицевой счёт 1000016 показания: 45100",
        &[45100],
    ),
    ("form-idn", "1000017 45100 e-mail: ivan@почта.рф", &[45100]),
    (
        "form-words-mail",
        "1000018 счетчик 45100 почта resident@example.com",
        &[45100],
    ),
];
const WAIT: Duration = Duration::from_secs(60);

struct Case {
    id: &'static str,
    from: &'static str,
    text: &'static str,
    at: &'static str,
    /// `None` = accepted; else the reason code.
    reason: Option<&'static str>,
}

const fn case(
    id: &'static str,
    from: &'static str,
    text: &'static str,
    reason: Option<&'static str>,
) -> Case {
    Case {
        id,
        from,
        text,
        at: AT,
        reason,
    }
}

#[tokio::test]
async fn mixed_corpus_every_outcome_checked() {
    let billing = BillingDouble::start().await;
    let sms = BillingDouble::start().await;
    let smtp = SmtpSink::start(&[]).await;
    let mut opts = fixtures::options(Gateway::Http(sms.url.clone()));
    opts.billing_url = Some(billing.url.clone());
    opts.smtp_url = Some(smtp.url());
    opts.registry_csv = format!("{}{NEW_FORMS_REGISTRY}", fixtures::REGISTRY);
    // The contract's window (15th–25th); every message carries its time of receipt.
    opts.env = vec![];
    let system = System::start(opts).await;

    let mut cases = vec![
        case(
            "ok-1",
            "+79000000001",
            "1000001 45100 ivan@example.ru",
            None,
        ),
        case(
            "ok-2",
            "+79000000002",
            "лс 1000002 день 45100 ночь 12100",
            None,
        ),
        case(
            "ok-3",
            "+79000000003",
            "1000003*10100*20100*30100*resident+meter@example.ru",
            None,
        ),
        case("fmt", "+79000000004", "привет", Some("format")),
        case(
            "email",
            "+79000000005",
            "1000001 45100 ivan@@example.ru",
            Some("invalid_email"),
        ),
        case(
            "unknown",
            "+79000000006",
            "9999999 100",
            Some("unknown_account"),
        ),
        case(
            "closed",
            "+79000000007",
            "1000004 30100",
            Some("account_closed"),
        ),
        case(
            "multi",
            "+79000000008",
            "1000005 100",
            Some("multiple_meters"),
        ),
        case(
            "zones",
            "+79000000009",
            "1000002 45100",
            Some("zone_mismatch"),
        ),
        case(
            "digits",
            "+79000000010",
            "1000001 1234567",
            Some("too_many_digits"),
        ),
        case(
            "down",
            "+79000000011",
            "1000001 44000",
            Some("reading_decreased"),
        ),
        case("huge", "+79000000012", "1000001 99999", Some("implausible")),
        Case {
            id: "late",
            from: "+79000000013",
            text: "1000001 45100",
            at: "2026-11-26T00:00:00+05:00",
            reason: Some("outside_window"),
        },
        // A resubmission the next day supersedes ok-1 for the period.
        Case {
            id: "ok-1b",
            from: "+79000000001",
            text: "1000001 45150",
            at: "2026-11-21T09:00:00+05:00",
            reason: None,
        },
    ];
    for (i, (id, text, _)) in NEW_FORMS.iter().enumerate() {
        let from: &'static str = Box::leak(format!("+7900000010{i}").into_boxed_str());
        cases.push(case(id, from, text, None));
    }
    // Eleven messages within an hour from one sender: the eleventh is refused silently.
    for i in 0..11u32 {
        let id: &'static str = Box::leak(format!("flood-{i}").into_boxed_str());
        let text: &'static str = Box::leak(
            format!("1000003 {} {} {}", 10_100 + i, 20_100 + i, 30_100 + i).into_boxed_str(),
        );
        let at: &'static str =
            Box::leak(format!("2026-11-22T10:{:02}:00+05:00", i * 2).into_boxed_str());
        cases.push(Case {
            id,
            from: "+79000000099",
            text,
            at,
            reason: if i < 10 { None } else { Some("rate_limited") },
        });
    }
    for c in &cases {
        assert_eq!(
            system.post_sms_at(c.id, c.from, c.text, Some(c.at)).await,
            202,
            "{}",
            c.id
        );
        if c.from == "+79000000099" {
            // The flood is sequential so that the hourly count is deterministic.
            wait_audit(&system, c.id).await;
        }
    }
    // The same message delivered again by the gateway.
    assert_eq!(
        system
            .post_sms_at(
                "ok-2",
                "+79000000002",
                "лс 1000002 день 45100 ночь 12100",
                Some(AT)
            )
            .await,
        202
    );

    let pool = db(&system).await;
    for c in &cases {
        let (outcome, reason) = wait_audit_row(&pool, c.id).await;
        match c.reason {
            None => assert_eq!(
                (outcome.as_str(), reason),
                ("accepted", None),
                "{} ({})",
                c.id,
                c.text
            ),
            Some(r) => assert_eq!(
                (outcome.as_str(), reason.as_deref()),
                ("rejected", Some(r)),
                "{} ({})",
                c.id,
                c.text
            ),
        }
    }
    let audit_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM validator.messages")
        .fetch_one(&pool)
        .await
        .expect("q");
    assert_eq!(
        audit_rows,
        cases.len() as i64,
        "every message once, the duplicate not twice"
    );

    // Replies: one per refusal that has a reply, to its sender; none for accepted or rate-limited.
    let expected_replies: HashMap<String, u32> = cases
        .iter()
        .filter(|c| matches!(c.reason, Some(r) if r != "rate_limited"))
        .map(|c| (c.from.to_owned(), 1))
        .collect();
    let sent = tokio::time::timeout(WAIT, async {
        while sms.posts().len() < expected_replies.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        sent.is_ok(),
        "{} of {} replies; notifier log:\n{}",
        sms.posts().len(),
        expected_replies.len(),
        system.logs("notifier")
    );
    let accepted: Vec<&Case> = cases.iter().filter(|c| c.reason.is_none()).collect();
    eventually("all readings billed", WAIT, || async {
        (billing.delivered().len() >= accepted.len()).then_some(())
    })
    .await;
    let with_email = accepted.iter().filter(|c| c.text.contains('@')).count();
    eventually("all e-mails sent", WAIT, || async {
        (smtp.mails().len() >= with_email).then_some(())
    })
    .await;
    // Let any duplicate effect surface before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut replies: HashMap<String, u32> = HashMap::new();
    for (_, _, body) in sms.posts() {
        *replies
            .entry(body["to"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
        let text = body["text"].as_str().unwrap_or("");
        assert!(
            !text.is_empty() && text.encode_utf16().count() <= 70,
            "one segment: {text}"
        );
        // SPEC §3: no reply names a stored value — 1000001's previous reading (45000),
        // the consumption of `huge` (99999 − 45000), a meter's number.
        for stored in ["45000", "54999", "EM-"] {
            assert!(!text.contains(stored), "{text} names {stored}");
        }
    }
    assert_eq!(
        replies, expected_replies,
        "one reply per refusal, none for correct or rate-limited messages"
    );

    let delivered = billing.delivered();
    assert_eq!(
        delivered.len(),
        accepted.len(),
        "every accepted reading billed"
    );
    assert!(
        delivered.values().all(|n| *n == 1),
        "each exactly once: {delivered:?}"
    );
    let superseding = billing
        .posts()
        .into_iter()
        .find(|p| p.2["message_id"] == "ok-1b")
        .expect("ok-1b billed");
    assert!(
        superseding.2["supersedes"].is_string(),
        "the resubmission names what it supersedes"
    );

    let mails = smtp.mails();
    assert_eq!(
        mails.len(),
        with_email,
        "one confirmation per accepted reading with an address"
    );
    let mut recipients: Vec<String> = mails
        .iter()
        .map(|m| m.envelope_to.trim_matches(['<', '>']).to_owned())
        .collect();
    recipients.sort();
    assert_eq!(
        recipients,
        [
            "ivan@example.ru",
            // ivan@почта.рф, its domain in IDNA form.
            "ivan@xn--80a1acny.xn--p1ai",
            "resident+meter@example.ru",
            "resident@example.com",
        ]
    );
    // The new forms reach billing with their values in zone order.
    let posts = billing.posts();
    for (id, text, values) in NEW_FORMS {
        let post = posts
            .iter()
            .find(|p| p.2["message_id"] == id)
            .unwrap_or_else(|| panic!("{id} ({text}) billed"));
        assert_eq!(post.2["values"], serde_json::json!(values), "{id} ({text})");
    }
    let idn = posts
        .iter()
        .find(|p| p.2["message_id"] == "form-idn")
        .expect("form-idn billed");
    assert_eq!(idn.2["email"], "ivan@почта.рф", "stored as typed");
    for m in &mails {
        assert!(
            ["1000001", "1000003", "1000017", "1000018"]
                .iter()
                .any(|a| m.text.contains(a)),
            "{}",
            m.text
        );
        assert!(!m.html.is_empty(), "HTML part");
    }

    // The period's export: the latest reading per meter.
    let export = reqwest::Client::new()
        .get(format!(
            "{}/v1/exports/2026-11.csv",
            system.base("billing-export")
        ))
        .bearer_auth(e2e::system::EXPORT_TOKEN)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("body");
    let lines: Vec<&str> = export.lines().collect();
    assert_eq!(
        lines[0],
        "account,meter,period,t1,t2,t3,received_at,channel,reading_id"
    );
    let em1: Vec<&&str> = lines.iter().filter(|l| l.starts_with("1000001,")).collect();
    assert_eq!(em1.len(), 1, "only the latest of 1000001: {export}");
    assert!(
        em1[0].starts_with("1000001,EM-1,2026-11,45150,"),
        "{}",
        em1[0]
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("1000002,EM-2,2026-11,45100,12100,")),
        "{export}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("1000003,EM-3,2026-11,10109,20109,30109,")),
        "{export}"
    );

    // What the public ports serve without a token (/metrics, /healthz, /readyz of
    // every service, after all this traffic) carries none of the senders' numbers,
    // in any form, nor an account or an address of the corpus.
    let mut personal: Vec<String> = Vec::new();
    for c in &cases {
        let national = c.from.trim_start_matches("+7");
        personal.extend([
            c.from.to_owned(),
            format!("7{national}"),
            national.to_owned(),
        ]);
        for field in c.text.split(['*', ' ']) {
            if field.contains('@')
                || (field.len() >= 7 && field.bytes().all(|b| b.is_ascii_digit()))
            {
                personal.push(field.to_owned());
            }
        }
    }
    personal.sort();
    personal.dedup();
    assert!(
        personal.contains(&"1000003".to_owned())
            && personal.contains(&"ivan@example.ru".to_owned())
    );
    let pages = system.open_pages().await;
    assert!(
        pages
            .iter()
            .any(|(page, body)| page == "billing-export /metrics"
                && body.contains("billing_pushes_total")),
        "the scrape read the metrics: {pages:?}"
    );
    for (page, body) in &pages {
        for value in &personal {
            assert!(
                !body.contains(value.as_str()),
                "{page} shows `{value}`:\n{body}"
            );
        }
    }

    pool.close().await;
    system.stop().await;
    billing.stop();
    sms.stop();
}

async fn db(system: &System) -> sqlx::PgPool {
    sqlx::PgPool::connect(&system.env.database_url)
        .await
        .expect("database")
}

async fn wait_audit(system: &System, id: &str) {
    let pool = db(system).await;
    wait_audit_row(&pool, id).await;
    pool.close().await;
}

async fn wait_audit_row(pool: &sqlx::PgPool, id: &str) -> (String, Option<String>) {
    eventually(&format!("audit row of {id}"), WAIT, || async {
        sqlx::query_as("SELECT outcome, reason FROM validator.messages WHERE message_id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await
            .ok()?
    })
    .await
}
