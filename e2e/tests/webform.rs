//! The resident web form (SPEC §4.9) through the running system: a good reading is
//! accepted on the page and its confirmation e-mail is written; a wrong one is
//! refused with the reason on the page; no SMS reply goes out for either.

use std::time::Duration;

use e2e::fixtures;
use e2e::system::Gateway;
use e2e::system::System;
use shared::testing::eventually;

struct Shown {
    cookie: String,
    csrf: String,
    id: String,
}

fn hidden(page: &str, name: &str) -> String {
    let at = page
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("hidden {name} in {page}"));
    let rest = &page[at + name.len() + 15..];
    rest[..rest.find('"').expect("end of value")].to_owned()
}

async fn show(http: &reqwest::Client, base: &str) -> Shown {
    let resp = http
        .get(format!("{base}/form"))
        .send()
        .await
        .expect("GET /form");
    assert_eq!(resp.status(), 200);
    let cookie = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("CSRF cookie")
        .to_owned();
    let page = resp.text().await.expect("page");
    Shown {
        cookie,
        csrf: hidden(&page, "csrf"),
        id: hidden(&page, "id"),
    }
}

async fn submit(http: &reqwest::Client, base: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let shown = show(http, base).await;
    let mut all = vec![("csrf", shown.csrf.as_str()), ("id", shown.id.as_str())];
    all.extend_from_slice(fields);
    let body = all
        .iter()
        .map(|(k, v)| {
            format!(
                "{}={}",
                k,
                percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC)
            )
        })
        .collect::<Vec<_>>()
        .join("&");
    let resp = http
        .post(format!("{base}/form"))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("cookie", shown.cookie)
        .body(body)
        .send()
        .await
        .expect("POST /form");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("page"))
}

#[tokio::test]
async fn the_web_form_is_answered_with_the_decision_and_the_email_is_written() {
    let system = System::start(fixtures::options(Gateway::Log)).await;
    let http = reqwest::Client::new();
    let base = system.base("ingest");
    // ingest's decisions queue binds as ingest starts; the first post may still
    // time out into «приняты к проверке», so retry the page until it has the decision.
    let (status, page) = submit(
        &http,
        &base,
        &[
            ("account", "1000001"),
            ("t1", "45100"),
            ("email", "ivan@example.ru"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Показания приняты: лицевой счёт 1000001")
            || page.contains("результат придёт на e-mail"),
        "{page}"
    );
    let mail_dir = system.mail_dir();
    eventually(
        "the confirmation e-mail is written",
        Duration::from_secs(30),
        || {
            let dir = mail_dir.clone();
            async move {
                std::fs::read_dir(&dir)
                    .ok()?
                    .filter_map(|e| e.ok())
                    .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                    .find(|m| m.contains("ivan@example.ru") && m.contains("1000001"))
            }
        },
    )
    .await;
    // A second reading, now that the decisions are surely followed: the decision is
    // on the page.
    let (status, page) = submit(&http, &base, &[("account", "1000001"), ("t1", "45200")]).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Показания приняты: лицевой счёт 1000001"),
        "{page}"
    );
    // A two-zone meter with one reading: refused, with the reason on the page.
    let (status, page) = submit(&http, &base, &[("account", "1000002"), ("t1", "45100")]).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Показания не приняты"), "{page}");
    // No SMS went anywhere: the replies are suppressed (not a phone number).
    eventually(
        "the notifier suppressed the web replies",
        Duration::from_secs(30),
        || {
            let system = &system;
            async move {
                (system
                    .metric(
                        "notifier",
                        "notifier_replies_suppressed_total",
                        &[("reason", "number")],
                    )
                    .await
                    >= 1.0)
                    .then_some(())
            }
        },
    )
    .await;
    system.assert_all_alive("the web form").await;
    system.stop().await;
}
