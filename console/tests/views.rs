//! Search, the message timeline, the account page, the start page and the API, over
//! the owners' views (fixtures written into the owners' tables).

mod common;

use chrono::{DateTime, Utc};
use common::{Console, billing_config, decided};
use console::users::Role;
use shared::testing::{Service, TestEnv, WAIT, eventually};

const API_TOKEN: &str = "console-api-token-for-tests-0001";

async fn fixture(c: &Console) -> uuid::Uuid {
    sqlx::query(
        "INSERT INTO validator.meters (account, meter, zones, digits, status, baseline_period, baseline_values)
         VALUES ('1000001', 'M-1', 2, 6, 'active', '2020-01', '{45000,21000}')",
    )
    .execute(&c.owners)
    .await
    .expect("meter");
    // A refusal with its reply sent, and an accepted reading with an e-mail and
    // billing's answer.
    decided(
        &c.owners,
        "gw-refused",
        "+79004445566",
        "1000001 45100",
        Some("zone_mismatch"),
        Some("1000001"),
        None,
        Some("Нужно два показания: день и ночь"),
    )
    .await;
    sqlx::query(
        "INSERT INTO notifier.deliveries (key, channel, recipient, state, attempts, sent_at, report, report_detail, reported_at)
         VALUES ('reply:gw-refused', 'sms', '+79004445566', 'sent', 1, now(), 'delivered', 'kannel 1', now())",
    )
    .execute(&c.owners)
    .await
    .expect("reply");
    let reading = uuid::Uuid::new_v4();
    decided(
        &c.owners,
        "gw-accepted",
        "+79004445566",
        "1000001 45100 21100 ivan@example.ru",
        None,
        Some("1000001"),
        Some(reading),
        None,
    )
    .await;
    sqlx::query(
        "INSERT INTO validator.readings (reading_id, message_id, account, meter, period, readings, received_at, email)
         VALUES ($1, 'gw-accepted', '1000001', 'M-1', to_char(now(), 'YYYY-MM'), '{45100,21100}', now(), 'ivan@example.ru')",
    )
    .bind(reading)
    .execute(&c.owners)
    .await
    .expect("reading");
    sqlx::query(
        "INSERT INTO notifier.deliveries (key, channel, recipient, state, attempts, sent_at)
         VALUES ($1, 'email', 'ivan@example.ru', 'sent', 1, now())",
    )
    .bind(format!("email:{reading}"))
    .execute(&c.owners)
    .await
    .expect("e-mail");
    sqlx::query(
        "INSERT INTO billing.readings (reading_id, message_id, account, meter, period, vals, received_at, channel, delivery, attempts, last_status, delivered_at)
         VALUES ($1, 'gw-accepted', '1000001', 'M-1', to_char(now(), 'YYYY-MM'), '{45100,21100}', now(), 'sms', 'delivered', 2, 200, now())",
    )
    .bind(reading)
    .execute(&c.owners)
    .await
    .expect("billing");
    reading
}

#[tokio::test]
async fn a_phone_typed_in_national_form_finds_its_messages_and_the_timeline_tells_their_story() {
    let c = Console::start(&[]).await;
    c.add_user("ivanova", Role::Operator).await;
    fixture(&c).await;
    let (client, _) = c.logged_in("ivanova").await;

    for typed in ["8 900 444-55-66", "+7 (900) 4445566"] {
        let page = c
            .page(&client, &format!("/search?q={}", urlenc(typed)))
            .await;
        assert!(page.contains("+79004445566"), "{typed}: {page}");
        assert!(
            page.contains(r#"href="/messages/gw-refused""#),
            "{typed}: {page}"
        );
        assert!(
            page.contains(r#"href="/messages/gw-accepted""#),
            "{typed}: {page}"
        );
    }
    let by_account = c.page(&client, "/search?q=1000001").await;
    assert!(
        by_account.contains(r#"href="/accounts/1000001""#),
        "{by_account}"
    );
    assert!(by_account.contains("gw-refused"), "{by_account}");
    let by_id = c.page(&client, "/search?q=gw-accepted").await;
    assert!(by_id.contains(r#"href="/messages/gw-accepted""#) && !by_id.contains("gw-refused"));

    let refused = c.page(&client, "/messages/gw-refused").await;
    for expected in [
        "с номера +79004445566",
        "1000001 45100",
        "отклонено: число показаний не равно числу тарифных зон",
        "«Нужно два показания: день и ночь»",
        "отправлено (+79004445566)",
        "доставлено на телефон",
    ] {
        assert!(refused.contains(expected), "{expected} in {refused}");
    }
    let accepted = c.page(&client, "/messages/gw-accepted").await;
    for expected in [
        "принято",
        "Счётчик M-1",
        "день <strong>45100</strong>, ночь <strong>21100</strong>",
        "отправлено (i***@example.ru)",
        "передано в биллинг",
        "попыток: 2",
    ] {
        assert!(accepted.contains(expected), "{expected} in {accepted}");
    }
    assert!(
        !accepted.contains("отправлено (ivan@example.ru)"),
        "the notifier's view masks the address"
    );
    let r = client
        .get(c.url("/messages/no-such"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404);

    let account = c.page(&client, "/accounts/1000001").await;
    assert!(
        account.contains("M-1") && account.contains("действует"),
        "{account}"
    );
    assert!(
        account.contains("день <strong>45100</strong>"),
        "current reading: {account}"
    );
    assert!(
        account.contains("по нормативу"),
        "years without readings: {account}"
    );

    let audited: Vec<(String, String)> =
        sqlx::query_as("SELECT action, subject FROM audit WHERE login = 'ivanova' AND action <> 'login' ORDER BY id")
            .fetch_all(&c.pool)
            .await
            .expect("audit");
    assert_eq!(audited[0], ("search".into(), "8 900 444-55-66".into()));
    assert!(audited.contains(&("view_message".into(), "gw-refused".into())));
    assert!(audited.contains(&("view_account".into(), "1000001".into())));
    c.stop().await;
}

#[tokio::test]
async fn the_api_answers_a_session_or_a_bearer_token_and_nothing_else() {
    let c = Console::start(&["--api-token", API_TOKEN]).await;
    let reading = fixture(&c).await;
    let http = reqwest::Client::new();
    let r = http
        .get(c.url("/api/v1/search?q=8%20900%20444-55-66"))
        .bearer_auth("wrong-token-wrong-token")
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 401);
    let found: serde_json::Value = http
        .get(c.url("/api/v1/search?q=8%20900%20444-55-66"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(
        found["queries"][0],
        serde_json::json!({"kind": "phone", "value": "+79004445566"})
    );
    assert_eq!(
        found["messages"].as_array().map(Vec::len),
        Some(2),
        "{found}"
    );
    let t: serde_json::Value = http
        .get(c.url("/api/v1/messages/gw-accepted"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(t["reading"]["reading_id"], reading.to_string());
    assert_eq!(t["billing"]["delivery"], "delivered");
    assert_eq!(t["email"]["state"], "sent");
    let a: serde_json::Value = http
        .get(c.url("/api/v1/accounts/1000001"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert_eq!(a["meters"][0]["meter"], "M-1");
    assert_eq!(a["current"][0]["vals"], serde_json::json!([45100, 21100]));
    let r = http
        .get(c.url("/api/v1/accounts/12ab"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 400);
    let who: Vec<String> = sqlx::query_scalar("SELECT DISTINCT login FROM audit")
        .fetch_all(&c.pool)
        .await
        .expect("audit");
    assert_eq!(who.len(), 1);
    assert!(
        who[0].starts_with("api:"),
        "the token audited by fingerprint: {who:?}"
    );
    assert!(!who[0].contains(API_TOKEN));
    c.stop().await;
}

#[tokio::test]
async fn the_start_page_shows_the_window_in_numbers_and_charts() {
    let c = Console::start(&[]).await;
    c.add_user("ivanova", Role::Operator).await;
    fixture(&c).await;
    let (client, _) = c.logged_in("ivanova").await;
    let page = c.page(&client, "/").await;
    // The window's and the registry's figures are a kept count (the next test); the
    // replies, the billing backlog and the dead letters are read for each request.
    assert!(page.contains("Период <strong>"), "{page}");
    assert!(
        page.contains("Ошибочных сообщений: validator <strong>0</strong>"),
        "{page}"
    );
    assert!(
        page.contains("Ожидают передачи в биллинг: <strong>0</strong>"),
        "{page}"
    );
    assert!(page.contains(r#"action="/reports/missing""#), "{page}");
    c.stop().await;
}

/// The `data-as-of` time of the start page's kept figures, once they are shown.
fn as_of(page: &str) -> Option<DateTime<Utc>> {
    let marker = r#"data-as-of=""#;
    let start = page.find(marker)? + marker.len();
    let end = page[start..].find('"')? + start;
    DateTime::parse_from_rfc3339(&page[start..end])
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[tokio::test]
async fn the_start_page_says_when_its_figures_were_counted_and_counts_them_again() {
    // Every day of the month in the window: a message of now is this window's.
    let c = Console::start(&[
        "--glance-refresh-seconds",
        "1",
        "--window-start-day",
        "1",
        "--window-end-day",
        "31",
    ])
    .await;
    c.add_user("ivanova", Role::Operator).await;
    let (client, _) = c.logged_in("ivanova").await;
    let first = eventually("the first count on the start page", WAIT, || async {
        let page = c.page(&client, "/").await;
        as_of(&page).map(|_| page)
    })
    .await;
    assert!(first.contains("Данные на <strong>"), "{first}");
    assert!(first.contains("Сообщений: <strong>0</strong>"), "{first}");
    assert!(first.contains("За это окно сообщений ещё нет."), "{first}");
    assert!(!first.contains(r#"<svg class="chart""#), "{first}");

    sqlx::query(
        "INSERT INTO validator.messages
           (message_id, sender, recipient, body, received_at, channel, outcome, account)
         VALUES ('gw-new', '+79004445566', '+79037672060', '1000001 45100', now(), 'sms', 'accepted', '1000001')",
    )
    .execute(&c.owners)
    .await
    .expect("message stored");
    let committed = Utc::now();
    // A count that began after the message was stored must show it, and the page
    // must say it is that count.
    let page = eventually("a count after the message", WAIT, || async {
        let page = c.page(&client, "/").await;
        (as_of(&page)? > committed).then_some(page)
    })
    .await;
    assert!(page.contains("Сообщений: <strong>1</strong>"), "{page}");
    assert!(page.contains("Принято: <strong>1</strong>"), "{page}");
    assert!(page.contains(r#"<svg class="chart""#), "{page}");
    assert!(!page.contains("сообщений ещё нет"), "{page}");
    c.stop().await;
}

#[tokio::test]
async fn the_api_gives_the_start_pages_figures_with_their_state() {
    let c = Console::start(&[
        "--api-token",
        API_TOKEN,
        "--glance-refresh-seconds",
        "1",
        "--window-start-day",
        "1",
        "--window-end-day",
        "31",
    ])
    .await;
    let http = reqwest::Client::new();
    let r = http.get(c.url("/api/v1/glance")).send().await.expect("GET");
    assert_eq!(r.status(), 401, "no session, no token");
    let get = || async {
        http.get(c.url("/api/v1/glance"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .ok()?
            .json::<serde_json::Value>()
            .await
            .ok()
    };
    sqlx::query(
        "INSERT INTO validator.messages
           (message_id, sender, recipient, body, received_at, channel, outcome, reason, account)
         VALUES ('gw-a', '+79004445566', '+79037672060', '1000001 45100', now(), 'sms', 'accepted', NULL, '1000001'),
                ('gw-r', '+79004445566', '+79037672060', 'привет', now(), 'sms', 'rejected', 'bad_format', NULL)",
    )
    .execute(&c.owners)
    .await
    .expect("messages stored");
    let committed = Utc::now();
    // A count that began after both messages were stored.
    let g = eventually("a fresh count after the messages", WAIT, || async {
        let g = get().await?;
        let as_of = g["figures"]["as_of"].as_str()?;
        let as_of = DateTime::parse_from_rfc3339(as_of)
            .ok()?
            .with_timezone(&Utc);
        (g["figures_state"] == "fresh" && as_of > committed).then_some(g)
    })
    .await;
    assert_eq!(g["period"], g["figures"]["this"]["period"], "{g}");
    assert_eq!(g["refresh_seconds"], 1, "{g}");
    assert_eq!(g["figures"]["accepted"], 1, "{g}");
    assert_eq!(
        g["figures"]["refused"],
        serde_json::json!([["bad_format", 1]]),
        "{g}"
    );
    let per_day: i64 = g["figures"]["this_days"]
        .as_array()
        .map(|days| days.iter().filter_map(|d| d[1].as_i64()).sum())
        .unwrap_or(-1);
    assert_eq!(per_day, 2, "{g}");
    assert_eq!(g["billing_backlog"], 0, "{g}");
    assert!(g["dead_letters"].is_array(), "the test broker answers: {g}");
    c.stop().await;
}

#[tokio::test]
async fn the_missing_readings_report_is_downloaded_from_billing_export() {
    let env = TestEnv::new().await;
    let billing = Service::spawn(
        "billing-export",
        |addr| billing_config(&env, addr),
        billing_export::run,
    )
    .await;
    let url = billing.base.clone();
    let c = Console::start_in(
        env,
        &[
            "--billing-export-url",
            &url,
            "--export-token",
            common::EXPORT_TOKEN,
        ],
    )
    .await;
    billing.ready().await;
    c.add_user("ivanova", Role::Operator).await;
    sqlx::query(
        "INSERT INTO validator.meters (account, meter, zones, digits, status, normative_kwh)
         VALUES ('1000001', 'M-1', 1, 6, 'active', 150), ('1000002', 'M-2', 1, 6, 'closed', 150)",
    )
    .execute(&c.owners)
    .await
    .expect("meters");
    let (client, _) = c.logged_in("ivanova").await;
    let r = client
        .get(c.url("/reports/missing?period=2026-10"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        r.headers()["content-disposition"],
        "attachment; filename=\"missing-2026-10.csv\""
    );
    let csv = r.text().await.expect("body");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("account,meter,months_missing,method,estimate_kwh")
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "the active meter only: {csv}");
    assert!(rows[0].starts_with("1000001,M-1,"), "{csv}");
    let r = client
        .get(c.url("/reports/missing?period=2026-13"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 400);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit WHERE action = 'download_missing' AND subject = '2026-10'",
    )
    .fetch_one(&c.pool)
    .await
    .expect("audit");
    assert_eq!(audited, 1);
    billing.stop().await;
    c.stop().await;
}

fn urlenc(s: &str) -> String {
    console::pages::urlencode(s)
}
