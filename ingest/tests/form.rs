//! The resident web form (SPEC §4.9) against the real RabbitMQ: CSRF, the per-client
//! rate limit (the client the trusted proxy names, an IPv6 one by its /64), the body
//! limit, bad input shown again with the reason, the cookie's `Secure` over HTTPS, and
//! the published `sms.received` on the `web` channel.

mod common;

use axum::http::HeaderName;
use shared::events::{Channel, Event};
use shared::testing::{Broker, Service, TestEnv};

async fn spawn_app(amqp_url: &str, max_body: u32, per_minute: u32) -> Service {
    let header = HeaderName::from_static("x-forwarded-for");
    spawn_behind(amqp_url, max_body, per_minute, Some(header)).await
}

/// Ingest behind a trusted proxy that names the client in `client_ip_header`, or
/// reached directly (`None`).
async fn spawn_behind(
    amqp_url: &str,
    max_body: u32,
    per_minute: u32,
    client_ip_header: Option<HeaderName>,
) -> Service {
    let amqp_url = amqp_url.to_owned();
    let config = move |http_addr| ingest::Config {
        max_body_bytes: max_body,
        form_rate_per_minute: per_minute,
        form_client_ip_header: client_ip_header.clone(),
        ..ingest::Config {
            http_addr,
            ..common::config(&amqp_url)
        }
    };
    Service::spawn("ingest", config, ingest::run).await
}

/// The form as a browser gets it: the cookie's token, the hidden fields.
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

async fn show(client: &reqwest::Client, base: &str) -> Shown {
    let resp = client
        .get(format!("{base}/form"))
        .send()
        .await
        .expect("GET /form");
    assert_eq!(resp.status(), 200);
    let set_cookie = resp
        .headers()
        .get("set-cookie")
        .expect("a CSRF cookie")
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().expect("pair").to_owned();
    let page = resp.text().await.expect("page");
    assert!(page.contains("inputmode=\"numeric\""), "{page}");
    assert!(page.contains("lang=\"ru\""));
    Shown {
        cookie,
        csrf: hidden(&page, "csrf"),
        id: hidden(&page, "id"),
    }
}

/// `application/x-www-form-urlencoded`, as a browser sends a form.
fn encode(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                b => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    ip: &str,
    cookie: Option<&str>,
    fields: &[(&str, &str)],
) -> (u16, String) {
    let mut req = client
        .post(format!("{base}/form"))
        .header("X-Forwarded-For", format!("203.0.113.250, {ip}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(fields));
    if let Some(cookie) = cookie {
        req = req.header("Cookie", cookie);
    }
    let resp = req.send().await.expect("POST /form");
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("page"))
}

#[tokio::test]
async fn a_filled_form_is_published_on_the_web_channel() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 16 * 1024, 10).await;
    app.ready().await;
    let client = reqwest::Client::new();
    let shown = show(&client, &app.base).await;
    assert!(shown.id.starts_with("web-"), "{}", shown.id);
    let (status, page) = post(
        &client,
        &app.base,
        "198.51.100.1",
        Some(&shown.cookie),
        &[
            ("csrf", &shown.csrf),
            ("id", &shown.id),
            ("account", " 0001000001 "),
            ("t1", "45100,7"),
            ("t2", "21100"),
            ("t3", ""),
            ("email", "ivan@mail.ru"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("результат придёт на e-mail"), "{page}");
    // Answered after the confirm: the message is already in the validator's queue.
    let broker = Broker::connect(&env).await;
    let msg = broker.take("validator").await.expect("published");
    broker.close().await;
    let Event::SmsReceived(e) = msg.event() else {
        panic!("an sms.received");
    };
    assert_eq!(e.channel, Channel::Web);
    assert_eq!(e.message_id, shown.id);
    assert_eq!(e.from, shown.id, "the sender is the form, not a phone");
    assert_eq!(e.to, "web");
    assert_eq!(e.text, "0001000001 45100 21100 ivan@mail.ru");
    assert!(String::from_utf8_lossy(&msg.body).contains(r#""channel":"web""#));
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn without_the_csrf_cookie_or_with_a_wrong_token_the_form_is_refused() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 16 * 1024, 100).await;
    app.ready().await;
    let client = reqwest::Client::new();
    let shown = show(&client, &app.base).await;
    let fields = |csrf: &'static str| vec![("csrf", csrf), ("account", "1000001"), ("t1", "45100")];
    // No cookie (a cross-site post): refused.
    let csrf: &'static str = Box::leak(shown.csrf.clone().into_boxed_str());
    let (status, page) = post(&client, &app.base, "198.51.100.2", None, &fields(csrf)).await;
    assert_eq!(status, 403, "{page}");
    assert!(page.contains("Форма устарела"), "{page}");
    assert!(
        page.contains("value=\"1000001\""),
        "what was typed is kept: {page}"
    );
    // A cookie that does not match the field: refused.
    let (status, _) = post(
        &client,
        &app.base,
        "198.51.100.2",
        Some(&shown.cookie),
        &fields("0123456789abcdef0123456789abcdef"),
    )
    .await;
    assert_eq!(status, 403);
    // Nothing was published.
    assert_eq!(env.queue_depth("validator").await.unwrap_or(0), 0);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn bad_input_is_shown_again_with_what_to_fix() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 16 * 1024, 100).await;
    app.ready().await;
    let client = reqwest::Client::new();
    for (account, t1, t2, email, reason) in [
        ("", "45100", "", "", "Укажите номер лицевого счёта"),
        ("10000a1", "45100", "", "", "только цифры"),
        ("1000001", "", "", "", "Укажите показание"),
        ("1000001", "", "21100", "", "Заполните поле «День / Т1»"),
        ("1000001", "45x", "", "", "Показание «День / Т1»"),
        (
            "1000001",
            "45100",
            "",
            "ivan.mail.ru",
            "Проверьте адрес e-mail",
        ),
    ] {
        let shown = show(&client, &app.base).await;
        let (status, page) = post(
            &client,
            &app.base,
            "198.51.100.3",
            Some(&shown.cookie),
            &[
                ("csrf", &shown.csrf),
                ("id", &shown.id),
                ("account", account),
                ("t1", t1),
                ("t2", t2),
                ("email", email),
            ],
        )
        .await;
        assert_eq!(status, 400, "{account} {t1} {t2} {email}: {page}");
        assert!(page.contains(reason), "{reason}: {page}");
        assert!(page.contains("<form"), "the form again: {page}");
        assert!(page.contains(&shown.id), "the same message id: {page}");
    }
    assert_eq!(env.queue_depth("validator").await.unwrap_or(0), 0);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn posts_over_the_per_client_rate_are_429_and_other_clients_still_pass() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 16 * 1024, 3).await;
    app.ready().await;
    let client = reqwest::Client::new();
    let shown = show(&client, &app.base).await;
    let fields = [
        ("csrf", shown.csrf.as_str()),
        ("id", shown.id.as_str()),
        ("account", "1000001"),
        ("t1", "45100"),
    ];
    for _ in 0..3 {
        let (status, page) = post(
            &client,
            &app.base,
            "198.51.100.4",
            Some(&shown.cookie),
            &fields,
        )
        .await;
        assert_eq!(status, 200, "{page}");
    }
    let resp = client
        .post(format!("{}/form", app.base))
        .header("X-Forwarded-For", "198.51.100.4")
        .header("Cookie", &shown.cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&fields))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    assert!(
        resp.text()
            .await
            .expect("page")
            .contains("Попробуйте через минуту")
    );
    let (status, _) = post(
        &client,
        &app.base,
        "198.51.100.5",
        Some(&shown.cookie),
        &fields,
    )
    .await;
    assert_eq!(status, 200, "another address has its own bucket");
    app.stop().await;
    env.cleanup().await;
}

/// Posts with the fields a valid form sends, from `ip` (behind the proxy).
async fn post_valid(client: &reqwest::Client, base: &str, ip: &str) -> (u16, String) {
    let shown = show(client, base).await;
    post(
        client,
        base,
        ip,
        Some(&shown.cookie),
        &[
            ("csrf", &shown.csrf),
            ("id", &shown.id),
            ("account", "1000001"),
            ("t1", "45100"),
        ],
    )
    .await
}

#[tokio::test]
async fn an_ipv6_client_counts_by_its_64() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 16 * 1024, 2).await;
    app.ready().await;
    let client = reqwest::Client::new();
    for ip in ["2001:db8:5:6::1", "2001:db8:5:6::2"] {
        let (status, page) = post_valid(&client, &app.base, ip).await;
        assert_eq!(status, 200, "{ip}: {page}");
    }
    let (status, page) = post_valid(&client, &app.base, "2001:db8:5:6:a:b:c:d").await;
    assert_eq!(status, 429, "a third address of the same /64: {page}");
    assert!(
        page.contains("value=\"1000001\""),
        "what was typed is kept: {page}"
    );
    let (status, _) = post_valid(&client, &app.base, "2001:db8:5:7::1").await;
    assert_eq!(status, 200, "the next /64 is another client");
    app.stop().await;
    env.cleanup().await;
}

/// Only posts that would be published spend the budget: junk (no token, bad input)
/// from an address leaves the budget of whoever shares it whole.
#[tokio::test]
async fn junk_posts_do_not_spend_the_clients_budget() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 16 * 1024, 1).await;
    app.ready().await;
    let client = reqwest::Client::new();
    let ip = "198.51.100.40";
    for _ in 0..5 {
        let (status, _) = post(&client, &app.base, ip, None, &[("account", "1000001")]).await;
        assert_eq!(status, 403, "no token");
        let shown = show(&client, &app.base).await;
        let (status, _) = post(
            &client,
            &app.base,
            ip,
            Some(&shown.cookie),
            &[("csrf", &shown.csrf), ("account", "10a"), ("t1", "1")],
        )
        .await;
        assert_eq!(status, 400, "bad input");
    }
    let (status, page) = post_valid(&client, &app.base, ip).await;
    assert_eq!(status, 200, "the first real post: {page}");
    let (status, _) = post_valid(&client, &app.base, ip).await;
    assert_eq!(status, 429, "the second, over a budget of one");
    app.stop().await;
    env.cleanup().await;
}

/// The CSRF cookie is `Secure` where the trusted proxy says the page went out over
/// HTTPS, and only then: over plain HTTP a `Secure` cookie is never stored, and
/// without a trusted proxy nobody may say so.
#[tokio::test]
async fn the_csrf_cookie_is_secure_where_the_page_is_served_over_https() {
    let env = TestEnv::new().await;
    let behind = spawn_app(&env.amqp_url, 16 * 1024, 10).await;
    let direct = spawn_behind(&env.amqp_url, 16 * 1024, 10, None).await;
    behind.ready().await;
    direct.ready().await;
    let client = reqwest::Client::new();
    let cookie = |base: String, proto: Option<&'static str>| {
        let client = client.clone();
        async move {
            let mut req = client.get(format!("{base}/form"));
            if let Some(proto) = proto {
                req = req.header("X-Forwarded-Proto", proto);
            }
            let resp = req.send().await.expect("GET /form");
            let cookie = resp.headers().get("set-cookie").expect("a cookie").clone();
            cookie.to_str().expect("ascii").to_owned()
        }
    };
    let secure = |c: &str| c.split(';').any(|a| a.trim() == "Secure");
    let c = cookie(behind.base.clone(), Some("https")).await;
    assert!(secure(&c), "{c}");
    assert!(
        c.contains("HttpOnly") && c.contains("SameSite=Strict"),
        "{c}"
    );
    let c = cookie(behind.base.clone(), Some("http")).await;
    assert!(!secure(&c), "{c}");
    let c = cookie(behind.base.clone(), None).await;
    assert!(!secure(&c), "{c}");
    let c = cookie(direct.base.clone(), Some("https")).await;
    assert!(!secure(&c), "no proxy is trusted: {c}");
    // The form shown again after a refused post carries the same attribute.
    let resp = client
        .post(format!("{}/form", behind.base))
        .header("X-Forwarded-Proto", "https")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("account=1")
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), 403);
    let c = resp.headers().get("set-cookie").expect("a fresh cookie");
    assert!(secure(c.to_str().expect("ascii")), "{c:?}");
    behind.stop().await;
    direct.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 1024, 100).await;
    app.ready().await;
    let client = reqwest::Client::new();
    let shown = show(&client, &app.base).await;
    let long = "1".repeat(4096);
    let (status, page) = post(
        &client,
        &app.base,
        "198.51.100.6",
        Some(&shown.cookie),
        &[("csrf", &shown.csrf), ("account", "1000001"), ("t1", &long)],
    )
    .await;
    assert_eq!(status, 413, "{page}");
    assert_eq!(env.queue_depth("validator").await.unwrap_or(0), 0);
    app.stop().await;
    env.cleanup().await;
}

/// The answer page shows the decision when it comes within seconds: here the test
/// plays the validator, taking the message and publishing the decision.
#[tokio::test]
async fn the_answer_page_shows_the_decision_that_arrives_in_time() {
    use shared::events::RejectReason;
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url, 16 * 1024, 100).await;
    app.ready().await;
    // The decisions' queue is bound once ingest has connected; give it a moment.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let client = reqwest::Client::new();
    for accept in [true, false] {
        let shown = show(&client, &app.base).await;
        let posting = {
            let client = client.clone();
            let base = app.base.clone();
            let shown_cookie = shown.cookie.clone();
            let csrf = shown.csrf.clone();
            let id = shown.id.clone();
            tokio::spawn(async move {
                post(
                    &client,
                    &base,
                    "198.51.100.7",
                    Some(&shown_cookie),
                    &[
                        ("csrf", &csrf),
                        ("id", &id),
                        ("account", "1000001"),
                        ("t1", "45100"),
                    ],
                )
                .await
            })
        };
        let broker = Broker::connect(&env).await;
        let msg = broker.wait_take("validator").await;
        let Event::SmsReceived(sms) = msg.event() else {
            panic!("an sms.received");
        };
        let decision = if accept {
            common::accepted(&sms, "2026-11", vec![45100])
        } else {
            common::rejected(
                &sms,
                RejectReason::ZoneMismatch,
                "Счётчик двухтарифный: укажите день и ночь",
            )
        };
        broker.publish(&decision).await;
        broker.close().await;
        let (status, page) = posting.await.expect("post");
        assert_eq!(status, 200, "{page}");
        if accept {
            assert!(
                page.contains("Показания приняты: лицевой счёт 1000001, период 2026-11"),
                "{page}"
            );
        } else {
            assert!(page.contains("Показания не приняты"), "{page}");
            assert!(page.contains("укажите день и ночь"), "{page}");
        }
    }
    app.stop().await;
    env.cleanup().await;
}
