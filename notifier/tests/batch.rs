//! The batch path (`BatchHandler::handle_batch`, what the consumer runs) called directly
//! with batches the test composes, so that one batch really holds many events: replies
//! from one number past its daily cap, more replies than the hourly budget, copies of
//! one event, refusals before counting, e-mails and events without an effect. The
//! guards must hold exactly as if the events came one by one, a copy must never be
//! answered twice, and two replicas handling overlapping batches at once must neither
//! overspend the budget nor deadlock.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{accepted, config, ledger, rejected, use_http_gateway};
use lapin::types::FieldTable;
use notifier::gateway::SmsGateway;
use notifier::handler::Notifier;
use notifier::limits::ReplyLimits;
use notifier::mailer::Mailer;
use notifier::metrics::NotifierMetrics;
use prometheus_client::registry::Registry;
use shared::consumer::{BatchHandler, Incoming};
use shared::events::Event;
use shared::testing::TestEnv;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const REPLY: &str = "Не удалось разобрать сообщение.";
const CAP: u32 = 2;
const BUDGET: u32 = 10;

async fn notifier(env: &TestEnv, scratch: &tempfile::TempDir, gateway: &MockServer) -> Notifier {
    let mut cfg = config(env, scratch);
    use_http_gateway(&mut cfg, &format!("{}/sms", gateway.uri()));
    cfg.limits.reply_daily_cap_per_number = CAP;
    cfg.limits.reply_hourly_budget = BUDGET;
    notifier::DATABASE
        .migrate(&cfg.database, &CancellationToken::new())
        .await
        .expect("migrate");
    let send_timeout = cfg.send_timeout();
    Notifier {
        pool: ledger(env),
        gateway: SmsGateway::from_config(&cfg.sms, &cfg.reports, send_timeout).expect("gateway"),
        mailer: Mailer::from_config(&cfg.email, send_timeout)
            .await
            .expect("mailer"),
        limits: ReplyLimits::new(&cfg.limits, cfg.zone.timezone),
        email_from: cfg.email.email_from.clone(),
        timezone: cfg.zone.timezone,
        send_timeout,
        metrics: NotifierMetrics::register(&mut Registry::default()),
    }
}

fn incoming(event: &Event) -> Incoming {
    Incoming {
        body: event.to_json(),
        routing_key: event.routing_key().to_owned(),
        message_id: Some(event.message_id().to_owned()),
        headers: FieldTable::default(),
        redelivered: false,
        attempt: 1,
        span: tracing::Span::none(),
    }
}

async fn gateway() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

/// SMS requests the gateway received, by idempotency key.
async fn sent(server: &MockServer) -> HashMap<String, usize> {
    let mut by_key = HashMap::new();
    for request in server.received_requests().await.unwrap_or_default() {
        let key = request
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        *by_key.entry(key).or_insert(0) += 1;
    }
    by_key
}

/// Ledger rows as (state, detail) by key.
async fn rows(pool: &PgPool) -> HashMap<String, (String, Option<String>)> {
    sqlx::query_as::<_, (String, String, Option<String>)>(
        "SELECT key, state, detail FROM deliveries",
    )
    .fetch_all(pool)
    .await
    .expect("ledger")
    .into_iter()
    .map(|(key, state, detail)| (key, (state, detail)))
    .collect()
}

/// Units of this hour's reply budget taken.
async fn budget_used(pool: &PgPool) -> i32 {
    sqlx::query_scalar("SELECT used FROM reply_quota WHERE bucket LIKE 'all:%'")
        .fetch_one(pool)
        .await
        .expect("quota")
}

#[tokio::test]
async fn one_batch_keeps_the_guards_in_order_and_answers_a_copy_once() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = gateway().await;
    let handler = notifier(&env, &scratch, &server).await;

    let mut events = Vec::new();
    // One number texting five wrong messages: two replies (the daily cap), then three
    // refused — before any budget runs out, so the cap is the reason.
    for i in 1..=5 {
        events.push(rejected(&format!("a-{i}"), "+79001234567", Some(REPLY)));
    }
    // Twenty more numbers, one message each: 8 replies left in the budget of 10.
    // With copies in the same batch: of an answered event, right behind it (while the
    // budget lasts), and of a budget-refused one.
    for i in 1..=20 {
        events.push(rejected(
            &format!("b-{i}"),
            &format!("+790010000{i:02}"),
            Some(REPLY),
        ));
        if i == 1 {
            events.push(rejected("b-1", "+79001000001", Some(REPLY)));
        }
    }
    events.push(rejected("b-15", "+79001000015", Some(REPLY)));
    // Refused before counting, without a reply, and events with no SMS at all.
    events.push(rejected("c-country", "+380441234567", Some(REPLY)));
    events.push(rejected("c-number", "MTS-Info", Some(REPLY)));
    events.push(rejected("c-silent", "+79001000099", None));
    let with_email = Uuid::new_v4();
    events.push(accepted(with_email, Some("ivan@example.org"), vec![45100]));
    events.push(accepted(Uuid::new_v4(), None, vec![45100]));
    let batch: Vec<Incoming> = events.iter().map(incoming).collect();

    let outcomes = handler.handle_batch(&batch).await.into_results();
    assert_eq!(outcomes.len(), batch.len());
    for (event, outcome) in events.iter().zip(&outcomes) {
        assert!(outcome.is_ok(), "{}: {outcome:?}", event.message_id());
    }

    let by_key = sent(&server).await;
    let expected: Vec<String> = ["a-1", "a-2"]
        .into_iter()
        .map(str::to_owned)
        .chain((1..=8).map(|i| format!("b-{i}")))
        .collect();
    let expected_keys: HashMap<String, usize> = expected
        .iter()
        .map(|id| (notifier::gateway::idempotency_key(id), 1))
        .collect();
    assert_eq!(
        by_key, expected_keys,
        "one SMS each to exactly a-1, a-2, b-1..b-8"
    );

    let pool = ledger(&env);
    let ledger_rows = rows(&pool).await;
    let state = |key: &str| ledger_rows.get(key).cloned();
    for id in &expected {
        assert_eq!(
            state(&format!("reply:{id}")),
            Some(("sent".into(), None)),
            "{id}"
        );
    }
    for i in 3..=5 {
        assert_eq!(
            state(&format!("reply:a-{i}")),
            Some(("suppressed".into(), Some("daily_cap".into())))
        );
    }
    for i in 9..=20 {
        assert_eq!(
            state(&format!("reply:b-{i}")),
            Some(("suppressed".into(), Some("budget".into())))
        );
    }
    assert_eq!(
        state("reply:c-country"),
        Some(("suppressed".into(), Some("country".into())))
    );
    assert_eq!(
        state("reply:c-number"),
        Some(("suppressed".into(), Some("number".into())))
    );
    assert_eq!(state("reply:c-silent"), None);
    assert_eq!(
        state(&format!("email:{with_email}")),
        Some(("sent".into(), None))
    );
    assert_eq!(ledger_rows.len(), 5 + 20 + 2 + 1);

    let used: Vec<(String, i32)> =
        sqlx::query_as("SELECT bucket, used FROM reply_quota ORDER BY bucket")
            .fetch_all(&pool)
            .await
            .expect("quota");
    let hour = used
        .iter()
        .find(|(b, _)| b.starts_with("all:"))
        .map(|u| u.1);
    assert_eq!(
        hour,
        Some(BUDGET as i32),
        "the budget is spent exactly: {used:?}"
    );
    let first = used
        .iter()
        .find(|(b, _)| b.starts_with("number:+79001234567:"))
        .map(|u| u.1);
    assert_eq!(first, Some(CAP as i32), "{used:?}");

    // The whole batch redelivered: nothing is sent again, nothing counted again.
    let outcomes = handler.handle_batch(&batch).await.into_results();
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(sent(&server).await, expected_keys);
    assert_eq!(rows(&pool).await, ledger_rows);
    let hour_after = budget_used(&pool).await;
    assert_eq!(hour_after, BUDGET as i32);
    env.cleanup().await;
}

#[tokio::test]
async fn two_replicas_with_overlapping_batches_share_the_budget_without_deadlock() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let server = gateway().await;
    let one = notifier(&env, &scratch, &server).await;
    let two = notifier(&env, &scratch, &server).await;

    // 40 events from 40 numbers; each replica gets all of them, in opposite orders and
    // cut into batches differently, as after a redelivery to another replica.
    let events: Vec<Event> = (1..=40)
        .map(|i| rejected(&format!("r-{i}"), &format!("+790020000{i:02}"), Some(REPLY)))
        .collect();
    let forward: Vec<Incoming> = events.iter().map(incoming).collect();
    let backward: Vec<Incoming> = events.iter().rev().map(incoming).collect();
    let run_one = async {
        for chunk in forward.chunks(16) {
            let outcomes = one.handle_batch(chunk).await.into_results();
            assert_eq!(outcomes.len(), chunk.len());
        }
    };
    let run_two = async {
        for chunk in backward.chunks(7) {
            let outcomes = two.handle_batch(chunk).await.into_results();
            assert_eq!(outcomes.len(), chunk.len());
        }
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(run_one, run_two)
    })
    .await
    .expect("both replicas finish (no deadlock)");

    let by_key = sent(&server).await;
    assert_eq!(
        by_key.len(),
        BUDGET as usize,
        "exactly the budget is sent: {by_key:?}"
    );
    assert!(
        by_key.values().all(|&n| n == 1),
        "no reply twice: {by_key:?}"
    );

    let pool = ledger(&env);
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM deliveries GROUP BY state ORDER BY state")
            .fetch_all(&pool)
            .await
            .expect("ledger");
    // A copy that found the other replica's lease is retried later (`Busy`); every
    // event is either sent or suppressed for the budget by now.
    assert_eq!(
        states,
        vec![
            ("sent".to_owned(), i64::from(BUDGET)),
            ("suppressed".to_owned(), 40 - i64::from(BUDGET))
        ]
    );
    let hour = budget_used(&pool).await;
    assert_eq!(hour, BUDGET as i32);
    env.cleanup().await;
}
