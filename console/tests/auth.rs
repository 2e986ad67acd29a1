//! Login, sessions, CSRF and the throttle, against a real database.

mod common;

use common::{Console, PASSWORD, hidden};
use console::users::Role;

#[tokio::test]
async fn nothing_but_the_login_page_static_files_and_ops_without_a_session() {
    let c = Console::start(&[]).await;
    let client = c.browser();
    for path in [
        "/",
        "/search?q=89004445566",
        "/messages/gw-1",
        "/accounts/1000001",
        "/paper",
        "/paper/recent",
        "/dead",
        "/reports/missing?period=2026-11",
        "/users",
    ] {
        let r = client.get(c.url(path)).send().await.expect("GET");
        assert_eq!(r.status(), 303, "{path} without a session");
        assert_eq!(r.headers()["location"], "/login", "{path}");
    }
    for path in [
        "/api/v1/glance",
        "/api/v1/search?q=1",
        "/api/v1/messages/x",
        "/api/v1/accounts/1000001",
    ] {
        let r = client.get(c.url(path)).send().await.expect("GET");
        assert_eq!(r.status(), 401, "{path} without a session or token");
    }
    let r = client
        .post(c.url("/paper"))
        .form(&[
            ("csrf", "x"),
            ("slip", "x"),
            ("account", "1000001"),
            ("t1", "1"),
        ])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 303, "a POST without a session");
    for path in [
        "/login",
        "/static/console.css",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        let r = client.get(c.url(path)).send().await.expect("GET");
        assert_eq!(r.status(), 200, "{path} is public");
    }
    c.stop().await;
}

#[tokio::test]
async fn a_login_sets_a_strict_http_only_secure_session_cookie_and_logout_ends_it() {
    let c = Console::start(&[]).await;
    c.add_user("ivanova", Role::Operator).await;
    let client = c.browser();
    let r = c.try_login(&client, "Ivanova", PASSWORD).await;
    assert_eq!(r.status(), 303);
    let cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().expect("ascii").to_owned())
        .collect();
    let session = cookies
        .iter()
        .find(|c| c.starts_with("console_session="))
        .expect("a session cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(session.contains(flag), "{flag} in {session}");
    }
    let id = session["console_session=".len()..]
        .split(';')
        .next()
        .expect("value");
    assert_eq!(id.len(), 64, "256 random bits");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE id_hash = $1")
        .bind(id)
        .fetch_one(&c.pool)
        .await
        .expect("query");
    assert_eq!(stored, 0, "the database keeps only a hash of the cookie");

    // Secure is dropped only on request (local runs over plain HTTP); the session
    // cookie still reaches the server here because reqwest ignores Secure on http.
    let page = c.page(&client, "/paper").await;
    assert!(page.contains("ivanova"), "logged in: {page}");
    let csrf = hidden(&page, "csrf").expect("csrf");
    let r = client
        .post(c.url("/logout"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), 303);
    let r = client.get(c.url("/paper")).send().await.expect("GET");
    assert_eq!(r.status(), 303, "the session is gone");
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit WHERE login = 'ivanova' ORDER BY id")
            .fetch_all(&c.pool)
            .await
            .expect("audit");
    assert_eq!(actions, ["login", "logout"]);
    c.stop().await;
}

#[tokio::test]
async fn insecure_cookies_only_when_asked() {
    let c = Console::start(&["--insecure-cookies", "true"]).await;
    c.add_user("petrov", Role::Operator).await;
    let r = c.try_login(&c.browser(), "petrov", PASSWORD).await;
    let session = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("console_session="))
        .expect("a session cookie")
        .to_owned();
    assert!(
        !session.contains("Secure") && session.contains("HttpOnly"),
        "{session}"
    );
    c.stop().await;
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_five_failures_make_the_login_wait() {
    let c = Console::start(&[]).await;
    c.add_user("sidorov", Role::Supervisor).await;
    let client = c.browser();
    for attempt in 1..=5 {
        let r = c.try_login(&client, "sidorov", "not-the-password").await;
        assert_eq!(r.status(), 401, "attempt {attempt}");
        assert!(
            r.headers()
                .get_all("set-cookie")
                .iter()
                .all(|v| { !v.to_str().unwrap_or("").starts_with("console_session=") })
        );
        let body = r.text().await.expect("body");
        assert!(body.contains("Неверный логин или пароль"), "{body}");
    }
    // Now even the right password waits, on this replica and any other (the
    // failures are rows in the database).
    let r = c.try_login(&client, "sidorov", PASSWORD).await;
    assert_eq!(r.status(), 429);
    assert!(r.text().await.expect("body").contains("Попробуйте через"));
    let failures: i64 =
        sqlx::query_scalar("SELECT count(*) FROM login_failures WHERE key = 'login:sidorov'")
            .fetch_one(&c.pool)
            .await
            .expect("query");
    assert_eq!(failures, 5);
    // Another login from the same address is not held back by this one's failures.
    c.add_user("kozlova", Role::Operator).await;
    let r = c.try_login(&c.browser(), "kozlova", PASSWORD).await;
    assert_eq!(r.status(), 303);
    // An unknown login is answered like a wrong password.
    let r = c.try_login(&c.browser(), "nobody", PASSWORD).await;
    assert_eq!(r.status(), 401);
    c.stop().await;
}

#[tokio::test]
async fn a_form_without_its_csrf_token_is_refused() {
    let c = Console::start(&[]).await;
    c.add_user("orlova", Role::Supervisor).await;
    // The login form: its token must match its cookie.
    let client = c.browser();
    let _ = c.login_token(&client).await;
    let r = client
        .post(c.url("/login"))
        .form(&[
            ("csrf", "forged"),
            ("username", "orlova"),
            ("password", PASSWORD),
        ])
        .send()
        .await
        .expect("POST");
    assert_eq!(r.status(), 403, "login with a forged token");

    let (client, csrf) = c.logged_in("orlova").await;
    let slip = console::paper::new_id();
    for token in ["", "forged", &csrf[..63]] {
        let r = client
            .post(c.url("/paper"))
            .form(&[
                ("csrf", token),
                ("slip", &slip),
                ("account", "1000001"),
                ("t1", "1"),
            ])
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 403, "paper slip with token {token:?}");
        let r = client
            .post(c.url("/dead/requeue"))
            .form(&[("csrf", token), ("queue", "billing-export")])
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 403, "re-queue with token {token:?}");
        let r = client
            .post(c.url("/logout"))
            .form(&[("csrf", token)])
            .send()
            .await
            .expect("POST");
        assert_eq!(r.status(), 403, "logout with token {token:?}");
    }
    let slips: i64 = sqlx::query_scalar("SELECT count(*) FROM audit WHERE action = 'paper_slip'")
        .fetch_one(&c.pool)
        .await
        .expect("query");
    assert_eq!(slips, 0, "nothing was entered");
    c.stop().await;
}
