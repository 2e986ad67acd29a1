//! The answers in the bots' chats (SPEC §4.9), in the style of Courier's handler
//! tests: the Telegram and MAX send clients against in-process doubles of both APIs
//! (`shared::testing::bots`, built from the published request and response bodies,
//! error bodies included), asserting the exact outbound call and how each answer is
//! mapped; and the pacer on the real PostgreSQL, shared by two "replicas".

use std::time::{Duration, Instant};

use notifier::bots::pace::{HORIZON, Pacer, Slot};
use notifier::bots::{Answered, BotClients, BotConfig, CONTACT_BUTTON, ChatAnswer, Platform};
use notifier::failure::FailureKind;
use secrecy::SecretString;
use shared::testing::TestEnv;
use shared::testing::bots::{Answer, BotApi};
use tokio_util::sync::CancellationToken;

const TELEGRAM_TOKEN: &str = "7000000001:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
const MAX_TOKEN: &str = "f9LHodD0cOJgWrG9GFmIplCEhz7cVIjYqq1-max";

/// Clients for both doubles, with `timeout` on each send.
fn clients(telegram: &BotApi, max: &BotApi, timeout: Duration) -> BotClients {
    let config = BotConfig {
        telegram_bot_token: Some(SecretString::from(TELEGRAM_TOKEN)),
        telegram_api_url: telegram.url.parse().expect("url"),
        max_bot_token: Some(SecretString::from(MAX_TOKEN)),
        max_api_url: max.url.parse().expect("url"),
    };
    BotClients::from_config(&config, timeout).expect("clients")
}

async fn doubles() -> (BotApi, BotApi) {
    (
        BotApi::telegram(TELEGRAM_TOKEN).await,
        BotApi::max(MAX_TOKEN).await,
    )
}

fn answer(chat: &str, text: &str, share_contact: bool) -> ChatAnswer {
    ChatAnswer {
        chat: chat.into(),
        text: text.into(),
        share_contact,
    }
}

const ACCEPTED: &str = "Показания приняты: л/с …0001, 45100 12100, период 2026-11.";

#[tokio::test]
async fn telegram_gets_one_send_message_with_the_chat_and_the_text() {
    let (telegram, max) = doubles().await;
    let clients = clients(&telegram, &max, Duration::from_secs(30));
    let sent = clients
        .send(Platform::Telegram, &answer("287635914", ACCEPTED, false))
        .await
        .expect("sent");
    assert_eq!(sent, Answered::Sent);
    let calls = telegram.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, format!("/bot{TELEGRAM_TOKEN}/sendMessage"));
    assert_eq!(call.header("content-type"), Some("application/json"));
    assert_eq!(
        call.body,
        serde_json::json!({"chat_id": 287635914_i64, "text": ACCEPTED}),
        "exactly the chat and the text"
    );
    assert!(max.calls().is_empty());
}

#[tokio::test]
async fn the_telegram_greeting_carries_the_button_that_shares_the_phone() {
    let (telegram, max) = doubles().await;
    let clients = clients(&telegram, &max, Duration::from_secs(30));
    clients
        .send(
            Platform::Telegram,
            &answer("287635914", "Здравствуйте!", true),
        )
        .await
        .expect("sent");
    assert_eq!(
        telegram.calls()[0].body,
        serde_json::json!({
            "chat_id": 287635914_i64,
            "text": "Здравствуйте!",
            "reply_markup": {
                "keyboard": [[{"text": CONTACT_BUTTON, "request_contact": true}]],
                "one_time_keyboard": true,
                "resize_keyboard": true
            }
        })
    );
}

#[tokio::test]
async fn telegrams_answers_are_mapped_once() {
    let (telegram, max) = doubles().await;
    let clients = clients(&telegram, &max, Duration::from_secs(30));
    let accepted = answer("287635914", ACCEPTED, false);
    let send = || clients.send(Platform::Telegram, &accepted);

    telegram.then(Answer::telegram_too_many(7));
    let failure = send().await.expect_err("flood control");
    assert_eq!(failure.kind, FailureKind::Transient);
    assert_eq!(failure.retry_after, Some(Duration::from_secs(7)));

    telegram.then(Answer::telegram_blocked());
    assert_eq!(
        send().await.expect("settled"),
        Answered::Blocked("Forbidden: bot was blocked by the user".into())
    );

    telegram.then(Answer::telegram_error(
        400,
        "Bad Request: chat not found",
        None,
    ));
    let failure = send().await.expect_err("refused");
    assert_eq!(failure.kind, FailureKind::Permanent);
    assert!(failure.to_string().contains("chat not found"), "{failure}");

    telegram.then(Answer::telegram_error(502, "Bad Gateway", None));
    assert_eq!(
        send().await.expect_err("retry").kind,
        FailureKind::Transient
    );

    // Then the platform takes it.
    assert_eq!(send().await.expect("sent"), Answered::Sent);
    let statuses: Vec<u16> = telegram.calls().iter().map(|c| c.status).collect();
    assert_eq!(statuses, [429, 403, 400, 502, 200]);
    assert_eq!(
        telegram.delivered(),
        [("287635914".to_owned(), ACCEPTED.to_owned())]
    );
}

#[tokio::test]
async fn a_wrong_bot_token_is_refused_not_retried() {
    let telegram = BotApi::telegram("7000000001:another-bots-token").await;
    let max = BotApi::max("another-max-token").await;
    let clients = clients(&telegram, &max, Duration::from_secs(30));
    let shown = format!("{clients:?}");
    assert!(
        !shown.contains(TELEGRAM_TOKEN) && !shown.contains(MAX_TOKEN),
        "{shown}"
    );
    for platform in [Platform::Telegram, Platform::Max] {
        let failure = clients
            .send(platform, &answer("182182182", ACCEPTED, false))
            .await
            .expect_err("refused");
        assert_eq!(failure.kind, FailureKind::Permanent, "{platform:?}");
        assert!(failure.to_string().contains("401"), "{failure}");
        // The token never shows in what is logged and dead-lettered.
        assert!(!failure.to_string().contains(TELEGRAM_TOKEN), "{failure}");
        assert!(
            !format!("{failure:?}").contains(TELEGRAM_TOKEN),
            "{failure:?}"
        );
    }
}

#[tokio::test]
async fn max_gets_one_post_messages_with_its_token_header_and_the_text() {
    let (telegram, max) = doubles().await;
    let clients = clients(&telegram, &max, Duration::from_secs(30));
    let sent = clients
        .send(Platform::Max, &answer("182182182", ACCEPTED, false))
        .await
        .expect("sent");
    assert_eq!(sent, Answered::Sent);
    let calls = max.calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.path, "/messages");
    assert_eq!(call.query.as_deref(), Some("chat_id=182182182"));
    assert_eq!(call.header("authorization"), Some(MAX_TOKEN), "no Bearer");
    assert_eq!(call.header("content-type"), Some("application/json"));
    assert_eq!(call.body, serde_json::json!({"text": ACCEPTED}));
}

#[tokio::test]
async fn the_max_greeting_carries_a_request_contact_button() {
    let (telegram, max) = doubles().await;
    let clients = clients(&telegram, &max, Duration::from_secs(30));
    clients
        .send(Platform::Max, &answer("182182182", "Здравствуйте!", true))
        .await
        .expect("sent");
    assert_eq!(
        max.calls()[0].body,
        serde_json::json!({
            "text": "Здравствуйте!",
            "attachments": [{
                "type": "inline_keyboard",
                "payload": {"buttons": [[{"type": "request_contact", "text": CONTACT_BUTTON}]]}
            }]
        })
    );
}

#[tokio::test]
async fn maxs_answers_are_mapped_once() {
    let (telegram, max) = doubles().await;
    let clients = clients(&telegram, &max, Duration::from_secs(30));
    let accepted = answer("182182182", ACCEPTED, false);
    let send = || clients.send(Platform::Max, &accepted);

    max.then(
        Answer::max_error(429, "too.many.requests", "Too many requests")
            .with_header("Retry-After", "3"),
    );
    let failure = send().await.expect_err("rate");
    assert_eq!(failure.kind, FailureKind::Transient);
    assert_eq!(failure.retry_after, Some(Duration::from_secs(3)));

    max.then(Answer::max_error(403, "chat.denied", "dialog.suspended"));
    assert_eq!(
        send().await.expect("settled"),
        Answered::Blocked("chat.denied: dialog.suspended".into())
    );

    max.then(Answer::max_error(
        404,
        "chat.not.found",
        "Chat 182182182 not found",
    ));
    assert_eq!(
        send().await.expect_err("refused").kind,
        FailureKind::Permanent
    );

    max.then(Answer::max_error(503, "service.unavailable", ""));
    assert_eq!(
        send().await.expect_err("retry").kind,
        FailureKind::Transient
    );

    assert_eq!(send().await.expect("sent"), Answered::Sent);
    assert_eq!(
        max.delivered(),
        [("182182182".to_owned(), ACCEPTED.to_owned())]
    );
}

#[tokio::test]
async fn no_answer_after_the_request_went_out_is_never_sent_again() {
    let (telegram, max) = doubles().await;
    let clients = clients(&telegram, &max, Duration::from_secs(1));
    telegram.then(Answer::new(200, serde_json::json!({"ok": true})).after(Duration::from_secs(3)));
    max.then(Answer::new(200, serde_json::json!({})).after(Duration::from_secs(3)));
    for platform in [Platform::Telegram, Platform::Max] {
        let failure = clients
            .send(platform, &answer("182182182", ACCEPTED, false))
            .await
            .expect_err("no answer");
        assert_eq!(
            failure.kind,
            FailureKind::Unknown,
            "{platform:?}: {failure}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_platform_is_retried_and_an_unconfigured_one_refused() {
    // A port nobody listens on: the connection is refused, nothing went out.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let config = BotConfig {
        telegram_bot_token: Some(SecretString::from(TELEGRAM_TOKEN)),
        telegram_api_url: url.parse().expect("url"),
        ..BotConfig::default()
    };
    let clients = BotClients::from_config(&config, Duration::from_secs(5)).expect("clients");
    let failure = clients
        .send(Platform::Telegram, &answer("1", ACCEPTED, false))
        .await
        .expect_err("refused connection");
    assert_eq!(failure.kind, FailureKind::Transient);
    assert!(clients.answers_on(Platform::Telegram) && !clients.answers_on(Platform::Max));
    let failure = clients
        .send(Platform::Max, &answer("1", ACCEPTED, false))
        .await
        .expect_err("no token");
    assert_eq!(failure.kind, FailureKind::Permanent);
    assert!(failure.to_string().contains("MAX_BOT_TOKEN"), "{failure}");
    // A chat id that is no number can never be sent to.
    let failure = clients
        .send(Platform::Telegram, &answer("@someone", ACCEPTED, false))
        .await
        .expect_err("not a chat");
    assert_eq!(failure.kind, FailureKind::Permanent);
}

/// A pool on the notifier's schema, migrated: one per "replica".
async fn replica(env: &TestEnv) -> Pacer {
    let pool = notifier::DATABASE
        .open(&env.database(), &CancellationToken::new())
        .await
        .expect("notifier schema");
    Pacer::new(pool)
}

fn reserved(slots: &[Slot]) -> Vec<Duration> {
    slots
        .iter()
        .map(|s| match s {
            Slot::After(d) => *d,
            Slot::Later(d) => panic!("not reserved: later {d:?}"),
        })
        .collect()
}

#[tokio::test]
async fn replicas_share_a_chats_lane_and_nothing_is_reserved_past_the_horizon() {
    let env = TestEnv::new().await;
    let (a, b) = (replica(&env).await, replica(&env).await);
    let started = Instant::now();
    let first = reserved(
        &a.reserve(Platform::Telegram, &["7", "7", "7"])
            .await
            .expect("a"),
    );
    // The first slot of the platform's next thirtieth of a second, then a second apart.
    let w0 = first[0];
    assert!(w0 < Duration::from_millis(34), "{first:?}");
    assert_eq!(
        first,
        [w0, w0 + Duration::from_secs(1), w0 + Duration::from_secs(2)]
    );
    // The other replica, a moment later: its answers to chat 7 queue behind these.
    let second = reserved(&b.reserve(Platform::Telegram, &["7", "7"]).await.expect("b"));
    let elapsed = started.elapsed();
    for (i, wait) in second.iter().enumerate() {
        let slot = w0 + Duration::from_secs(3 + i as u64);
        assert!(
            *wait <= slot && *wait + elapsed >= slot,
            "{second:?} after {elapsed:?}"
        );
    }
    // Chat 7's next answers fall at 5 s and 6 s: the one past the horizon comes back
    // instead; chat 8 is not held up by chat 7.
    let third = a
        .reserve(Platform::Telegram, &["7", "7", "8"])
        .await
        .expect("a");
    if started.elapsed() < Duration::from_millis(900) {
        assert!(
            matches!(third[1], Slot::Later(d) if d > HORIZON),
            "{third:?}"
        );
    }
    assert!(
        matches!(third[2], Slot::After(d) if d < Duration::from_millis(200)),
        "{third:?}"
    );
    // Another platform's slots and lanes are its own.
    let max = reserved(&b.reserve(Platform::Max, &["7"]).await.expect("max"));
    assert!(max[0] < Duration::from_millis(34), "{max:?}");
    env.cleanup().await;
}

#[tokio::test]
async fn concurrent_reservations_never_share_a_slot_and_lose_none() {
    let env = TestEnv::new().await;
    let (a, b) = (replica(&env).await, replica(&env).await);
    // Eight batches of five answers to distinct chats, from two replicas at once.
    let mut batches = Vec::new();
    for n in 0..8 {
        let pacer = if n % 2 == 0 { a.clone() } else { b.clone() };
        batches.push(tokio::spawn(async move {
            let chats: Vec<String> = (0..5).map(|i| format!("{n}{i}")).collect();
            let chats: Vec<&str> = chats.iter().map(String::as_str).collect();
            pacer
                .reserve(Platform::Telegram, &chats)
                .await
                .expect("reserve")
        }));
    }
    let mut slots = Vec::new();
    for batch in batches {
        slots.extend(batch.await.expect("task"));
    }
    assert_eq!(slots.len(), 40);
    assert!(
        slots.iter().all(|s| matches!(s, Slot::After(_))),
        "{slots:?}"
    );
    // One row per send, each its own thirtieth of a second (the key says so): 40
    // answers take at least 40 slots, whoever reserved them.
    let pool = notifier::DATABASE
        .open(&env.database(), &CancellationToken::new())
        .await
        .expect("pool");
    let (rows, first, last): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), min(slot), max(slot) FROM chat_slots WHERE platform = 'telegram'",
    )
    .fetch_one(&pool)
    .await
    .expect("slots");
    assert_eq!(rows, 40);
    assert!(last - first >= 39, "{first}..{last}");
    env.cleanup().await;
}

#[tokio::test]
async fn a_held_chat_waits_and_spent_lanes_are_pruned() {
    let env = TestEnv::new().await;
    let pacer = replica(&env).await;
    pacer
        .hold(Platform::Max, "9", Duration::from_secs(3))
        .await
        .expect("hold");
    let slots = pacer.reserve(Platform::Max, &["9"]).await.expect("reserve");
    assert!(
        matches!(slots[0], Slot::After(d) if d > Duration::from_secs(2) && d < Duration::from_millis(3034)),
        "{slots:?}"
    );
    let pool = notifier::DATABASE
        .open(&env.database(), &CancellationToken::new())
        .await
        .expect("pool");
    sqlx::query("UPDATE chat_pace SET next_at = now() - interval '2 hours' WHERE lane = 'max:9'")
        .execute(&pool)
        .await
        .expect("age the lane");
    assert_eq!(pacer.prune().await.expect("prune"), 1);
    let lanes: Vec<String> = sqlx::query_scalar("SELECT lane FROM chat_pace ORDER BY lane")
        .fetch_all(&pool)
        .await
        .expect("lanes");
    assert_eq!(lanes, ["max"]);
    env.cleanup().await;
}
