//! The console in a real browser: Debian's Chromium, headless, driven through
//! chromedriver with fantoccini (installed by scripts/test.sh: `chromium`,
//! `chromium-driver`). Keyboard where a person would use it: log in, search a phone
//! typed in the national form, open the timeline, enter a paper slip and see its
//! decision, re-queue a dead letter as a supervisor and be refused as an operator.
//! The screenshots show populated pages: the reply's delivery is stored before the
//! timeline is opened (no notifier runs here; the row is the one it would write), and
//! the start page has two windows of messages and a registry ([`window_fixture`]).
//!
//! `UPDATE_SCREENSHOTS=1` writes the pages' screenshots to docs/console/ (1280×800);
//! otherwise they go to a temporary directory, so a test run leaves the tree clean.

mod common;

use std::path::PathBuf;

use common::{Console, PASSWORD, decided, validator_config};
use console::users::Role;
use fantoccini::key::Key;
use fantoccini::{Client, Locator};
use lapin::types::{AMQPValue, FieldTable};
use shared::testing::browser::{Driver, screenshots, shot, type_into, until_page_has};
use shared::testing::{Broker, Service, WAIT, eventually};

async fn log_in(c: &Console, browser: &Client, login: &str) {
    browser.goto(&c.url("/login")).await.expect("open /login");
    type_into(browser, "#username", login).await;
    type_into(browser, "#password", &format!("{PASSWORD}{}", Key::Enter)).await;
    until_page_has(browser, "Окно приёма показаний", false).await;
}

async fn log_out(browser: &Client) {
    browser
        .find(Locator::Css("form.logout button"))
        .await
        .expect("logout button")
        .click()
        .await
        .expect("logout");
    until_page_has(browser, "Войти", false).await;
}

/// Two windows of messages (the one the start page shows and the one before it, each
/// day with its own count, one in six refused for one of four reasons) up to now, and
/// a registry of 40 active meters of which 27 have a reading this period (3 of them
/// not yet delivered to billing). The default calendar, as the console here has it.
async fn window_fixture(c: &Console) {
    let window = shared::calendar::Window {
        start_day: 15,
        end_day: 25,
        zone: chrono_tz::Asia::Yekaterinburg,
    };
    let this = console::glance::current(&window, chrono::Utc::now());
    let last = console::glance::Span::of(&window, this.period.previous());
    for (span, spread) in [(this, 7), (last, 5)] {
        sqlx::query(
            "INSERT INTO validator.messages
               (message_id, sender, recipient, body, received_at, channel, outcome, reason, account)
             SELECT 'fx-' || $3 || '-' || d || '-' || k,
                    '+7900' || lpad((1000000 + d * 97 + k)::text, 7, '0'), '+79037672060',
                    (2000001 + k % 40) || ' 45100', $1 + make_interval(days => d, hours => 8 + k % 10),
                    'sms', CASE WHEN k % 6 = 0 THEN 'rejected' ELSE 'accepted' END,
                    CASE WHEN k % 6 = 0 THEN (ARRAY['zone_mismatch', 'reading_decreased',
                      'unknown_account', 'format'])[1 + (d + k / 6) % 4] END,
                    (2000001 + k % 40)::text
             FROM generate_series(0, $2 - 1) d, generate_series(1, 14 + (d * $4) % 13) k
             WHERE $1 + make_interval(days => d, hours => 8 + k % 10) < now()",
        )
        .bind(span.opens)
        .bind(span.days(window.zone).len() as i32)
        .bind(span.period.to_string())
        .bind(spread)
        .execute(&c.owners)
        .await
        .expect("a window of messages");
    }
    sqlx::query(
        "INSERT INTO validator.meters (account, meter, zones, digits, status)
         SELECT (2000000 + i)::text, 'M-1', 1, 6, 'active' FROM generate_series(1, 40) i",
    )
    .execute(&c.owners)
    .await
    .expect("meters");
    sqlx::query(
        "INSERT INTO billing.readings (reading_id, message_id, account, meter, period, vals, received_at, channel, delivery)
         SELECT gen_random_uuid(), 'fx-b-' || i, (2000000 + i)::text, 'M-1', $1, '{100}', now(), 'sms',
                CASE WHEN i <= 3 THEN 'pending' ELSE 'delivered' END
         FROM generate_series(1, 27) i",
    )
    .bind(this.period.to_string())
    .execute(&c.owners)
    .await
    .expect("the period's readings");
}

#[tokio::test]
async fn staff_work_the_console_in_a_real_browser() {
    // The start page's figures counted every second, so they include the fixture.
    let c = Console::start(&[
        "--insecure-cookies",
        "true",
        "--glance-refresh-seconds",
        "1",
    ])
    .await;
    c.add_user("ivanova", Role::Operator).await;
    c.add_user("orlova", Role::Supervisor).await;
    sqlx::query(
        "INSERT INTO validator.meters (account, meter, zones, digits, status)
         VALUES ('1000001', 'M-1', 2, 6, 'active')",
    )
    .execute(&c.owners)
    .await
    .expect("meter");
    decided(
        &c.owners,
        "gw-77",
        "+79004445566",
        "1000001 45100",
        Some("zone_mismatch"),
        Some("1000001"),
        None,
        Some("Нужно два показания: день и ночь"),
    )
    .await;
    // The reply's fate, as the notifier and the gateway's delivery report leave it.
    sqlx::query(
        "INSERT INTO notifier.deliveries (key, channel, recipient, state, attempts, sent_at, report, report_detail, reported_at)
         VALUES ('reply:gw-77', 'sms', '+79004445566', 'sent', 1, now(), 'delivered', 'kannel 1', now())",
    )
    .execute(&c.owners)
    .await
    .expect("the reply's delivery");
    window_fixture(&c).await;
    let validator = Service::start(
        "validator",
        |addr| validator_config(&c.env, addr),
        validator::run,
    )
    .await;
    let broker = Broker::connect(&c.env).await;
    let (conn, channel) = common::dead_letter_link(&c.env).await;
    let mut headers = FieldTable::default();
    headers.insert(
        "x-last-error".into(),
        AMQPValue::LongString("billing answered 400".into()),
    );
    headers.insert(
        "x-failed-at".into(),
        AMQPValue::LongLongInt(chrono::Utc::now().timestamp_millis()),
    );
    shared::broker::publish_confirmed(
        &channel,
        shared::topology::DEAD_LETTER_EXCHANGE,
        "billing-export",
        br#"{"schema":"reading.accepted/v1","message_id":"dead-in-browser"}"#,
        shared::broker::persistent_json("dead-in-browser", headers),
        shared::testing::CONFIRM_WAIT,
    )
    .await
    .expect("a dead letter");

    let (shots, _tmp) =
        screenshots(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/console"));
    let driver = Driver::start().await;
    let browser = driver.browser().await;

    browser.goto(&c.url("/login")).await.expect("open /login");
    shot(&browser, &shots, "login").await;
    log_in(&c, &browser, "ivanova").await;

    // The search box, as a contact-centre agent types a caller's number.
    type_into(&browser, "#q", &format!("8 900 444-55-66{}", Key::Enter)).await;
    let found = until_page_has(&browser, "телефон <strong>+79004445566</strong>", false).await;
    assert!(found.contains(r#"href="/messages/gw-77""#), "{found}");
    shot(&browser, &shots, "search").await;
    browser
        .find(Locator::Css(r#"a[href="/messages/gw-77"]"#))
        .await
        .expect("the message's link")
        .click()
        .await
        .expect("open the timeline");
    let timeline = until_page_has(&browser, "Решение", false).await;
    assert!(
        timeline.contains("отклонено: число показаний не равно числу тарифных зон"),
        "{timeline}"
    );
    assert!(
        timeline.contains("«Нужно два показания: день и ночь»"),
        "{timeline}"
    );
    assert!(timeline.contains("доставлено на телефон"), "{timeline}");
    assert!(!timeline.contains("ещё не обработан"), "{timeline}");
    shot(&browser, &shots, "timeline").await;

    // A paper slip, keyboard only: account, Tab, day, Tab, night, Enter.
    browser.goto(&c.url("/paper")).await.expect("open /paper");
    type_into(
        &browser,
        "#account",
        &format!("1000001{}45100{}21100{}", Key::Tab, Key::Tab, Key::Enter),
    )
    .await;
    let decided_page = until_page_has(&browser, "<span class=\"ok\">принято</span>", false).await;
    assert!(
        decided_page.contains("1000001 45100 21100"),
        "{decided_page}"
    );
    let focused = browser
        .active_element()
        .await
        .expect("focus")
        .attr("id")
        .await
        .expect("id");
    assert_eq!(
        focused.as_deref(),
        Some("account"),
        "the cursor is back on the account"
    );
    shot(&browser, &shots, "paper").await;

    browser
        .goto(&c.url("/accounts/1000001"))
        .await
        .expect("account");
    until_page_has(&browser, "день <strong>45100</strong>", false).await;
    shot(&browser, &shots, "account").await;

    // An operator may not see the dead letters.
    browser.goto(&c.url("/dead")).await.expect("open /dead");
    until_page_has(&browser, "Это доступно только руководителям", false).await;
    browser.goto(&c.url("/")).await.expect("start page");
    // Reloaded until a count with the fixture's messages is shown.
    let glance = until_page_has(&browser, r#"<svg class="chart""#, true).await;
    assert!(glance.contains("Данные на <strong>"), "{glance}");
    assert!(!glance.contains("ещё нет"), "{glance}");
    shot(&browser, &shots, "glance").await;
    log_out(&browser).await;

    log_in(&c, &browser, "orlova").await;
    browser.goto(&c.url("/dead")).await.expect("open /dead");
    let dead = until_page_has(&browser, "dead-in-browser", false).await;
    assert!(dead.contains("billing answered 400"), "{dead}");
    shot(&browser, &shots, "dead-letters").await;
    browser
        .find(Locator::Css("table form button"))
        .await
        .expect("a re-queue button")
        .click()
        .await
        .expect("re-queue");
    until_page_has(&browser, "Возвращено в очередь: 1.", false).await;
    // The queue also holds the paper slip's accepted reading (no billing-export runs).
    eventually("the letter back in billing-export", WAIT, || async {
        let m = broker.take("billing-export").await?;
        let id = m
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned());
        (id.as_deref() == Some("dead-in-browser")).then_some(())
    })
    .await;

    browser.close().await.expect("browser closed");
    driver.stop().await;
    shared::broker::close_quietly(conn.close(200, "bye".into())).await;
    broker.close().await;
    validator.stop().await;
    c.stop().await;
}
