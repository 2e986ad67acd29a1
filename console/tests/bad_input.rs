//! What schemathesis found (issue 30): a NUL in what staff send — a search, a
//! message id, a login name — reached PostgreSQL, which refuses it as a parameter, and
//! the answer was `503` ("the database is unavailable"). Each is now an ordinary
//! answer: nothing found, not found, a wrong login.

mod common;

use common::{Console, PASSWORD};
use console::users::Role;

const API_TOKEN: &str = "console-api-token-for-bad-input-01";

#[tokio::test]
async fn a_nul_in_a_search_finds_nothing_and_is_audited_as_typed() {
    let c = Console::start(&["--api-token", API_TOKEN]).await;
    c.add_user("petrova", Role::Operator).await;
    let http = reqwest::Client::new();
    let r = http
        .get(c.url("/api/v1/search?q=gw%00-1"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let found: serde_json::Value = r.json().await.expect("json");
    assert_eq!(found["messages"], serde_json::json!([]), "{found}");

    let (client, _) = c.logged_in("petrova").await;
    let r = client
        .get(c.url("/search?q=%00"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 200, "the search page");

    let subjects: Vec<String> =
        sqlx::query_scalar("SELECT subject FROM audit WHERE action = 'search' ORDER BY id")
            .fetch_all(&c.pool)
            .await
            .expect("audit");
    assert_eq!(subjects, ["gw\u{2400}-1", "\u{2400}"]);
    c.stop().await;
}

#[tokio::test]
async fn a_nul_in_a_message_id_is_not_found() {
    let c = Console::start(&["--api-token", API_TOKEN]).await;
    c.add_user("petrova", Role::Operator).await;
    let r = reqwest::Client::new()
        .get(c.url("/api/v1/messages/gw%00-1"))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404);
    let (client, _) = c.logged_in("petrova").await;
    let r = client
        .get(c.url("/messages/%00"))
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status(), 404, "the timeline page");
    c.stop().await;
}

#[tokio::test]
async fn a_nul_in_a_login_name_is_a_wrong_login() {
    let c = Console::start(&[]).await;
    c.add_user("petrova", Role::Operator).await;
    for name in ["petr\0ova", "petrova\0", "\0"] {
        let r = c.try_login(&c.browser(), name, PASSWORD).await;
        assert_eq!(r.status(), 401, "{name:?}");
        let body = r.text().await.expect("body");
        assert!(body.contains("Неверный логин или пароль"), "{body}");
    }
    // The right name still logs in: nothing was counted against it.
    let r = c.try_login(&c.browser(), "petrova", PASSWORD).await;
    assert_eq!(r.status(), 303);
    c.stop().await;
}

#[tokio::test]
async fn a_nul_in_an_audited_detail_is_kept_visible() {
    let c = Console::start(&[]).await;
    console::audit::record(
        &c.pool,
        "petrova",
        console::audit::Action::Requeue,
        "validator\0",
        Some(serde_json::json!({"key": "a\0b", "requeued": ["x\0"]})),
    )
    .await
    .expect("a NUL is stored as ␀");
    let (subject, detail): (String, serde_json::Value) =
        sqlx::query_as("SELECT subject, detail FROM audit")
            .fetch_one(&c.pool)
            .await
            .expect("audit");
    assert_eq!(subject, "validator\u{2400}");
    assert_eq!(
        detail,
        serde_json::json!({"key": "a\u{2400}b", "requeued": ["x\u{2400}"]})
    );
    c.stop().await;
}
