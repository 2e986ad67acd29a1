//! Pushing readings to billing (SPEC §4.5) against the real RabbitMQ and PostgreSQL
//! and an HTTP billing double.

mod common;

use std::time::Duration;

use axum::response::IntoResponse as _;
use common::billing::{Behaviour, BillingDouble};
use common::{Events, Options, billing_pool, delivery_of, reading, spawn_app, wait_stored};
use shared::events::Event;
use shared::testing::{Broker, TestEnv, WAIT, eventually};

fn options(billing: &BillingDouble) -> Options {
    Options {
        billing_url: Some(billing.url.clone()),
        ..Options::default()
    }
}

/// Takes one message from a queue of the test's vhost, if any.
/// A message in `queue` now, if any (a connection of its own).
async fn take(env: &TestEnv, queue: &str) -> Option<shared::testing::Taken> {
    let broker = Broker::connect(env).await;
    let got = broker.take(queue).await;
    broker.close().await;
    got
}

#[tokio::test]
async fn billing_down_is_retried_until_delivered_once() {
    let env = TestEnv::new().await;
    let billing = BillingDouble::start(Behaviour::FailFirst(2)).await;
    let app = spawn_app(&env, options(&billing)).await;
    let events = Events::connect(&env).await;
    let mut r = reading(
        "1000001",
        "M-1",
        "2026-11",
        &[45100, 12000],
        "2026-11-20T10:00:00+05:00",
    );
    r.email = Some("resident@example.ru".into());
    events.publish(&r).await;

    let key = r.reading_id.to_string();
    // 503, 503 (retried after 1 s and 5 s by the broker's TTL queues), then 200.
    let posts = billing.wait_posts(&key, 3).await;
    assert_eq!(
        posts.iter().map(|p| p.status).collect::<Vec<_>>(),
        [503, 503, 200]
    );
    let pool = billing_pool(&env);
    eventually("delivery recorded", WAIT, || async {
        (delivery_of(&pool, r.reading_id).await.as_deref() == Some("delivered")).then_some(())
    })
    .await;
    app.wait_acked(1).await;

    for post in &posts {
        assert_eq!(
            post.authorization.as_deref(),
            Some("Bearer billing-test-token")
        );
        assert_eq!(post.content_type.as_deref(), Some("application/json"));
        // The body is the event exactly as published, schema field included.
        assert_eq!(post.body, Event::ReadingAccepted(r.clone()).to_json());
    }
    let body: serde_json::Value = serde_json::from_slice(&posts[2].body).expect("json");
    assert_eq!(body["schema"], "reading.accepted/v1");
    assert_eq!(billing.successes_for(&key), 1);
    billing.assert_each_key_succeeded_at_most_once();
    assert_eq!(
        app.metric("billing_pushes_total", &[("result", "retried")])
            .await,
        Some(2.0)
    );
    assert_eq!(
        app.metric("billing_pushes_total", &[("result", "delivered")])
            .await,
        Some(1.0)
    );

    // The same event again (the validator's outbox may publish twice): stored once,
    // not posted again.
    events.publish(&r).await;
    app.wait_acked(2).await;
    assert_eq!(billing.posts_for(&key).len(), 3);
    assert_eq!(
        app.metric("billing_pushes_total", &[("result", "already_delivered")])
            .await,
        Some(1.0)
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(rows, 1);
    let attempts: i32 = sqlx::query_scalar("SELECT attempts FROM readings")
        .fetch_one(&pool)
        .await
        .expect("attempts");
    assert_eq!(attempts, 3);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn conflict_means_billing_already_has_it() {
    let env = TestEnv::new().await;
    let billing = BillingDouble::start(Behaviour::Always(409)).await;
    let app = spawn_app(&env, options(&billing)).await;
    let events = Events::connect(&env).await;
    let r = reading(
        "1000001",
        "M-1",
        "2026-11",
        &[45100],
        "2026-11-20T10:00:00+05:00",
    );
    events
        .publish_traced(
            &r,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .await;
    let key = r.reading_id.to_string();
    let posts = billing.wait_posts(&key, 1).await;
    let traceparent = posts[0].traceparent.clone().unwrap_or_default();
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "the SMS's trace continues into billing: {traceparent}"
    );
    app.wait_acked(1).await;
    let pool = billing_pool(&env);
    assert_eq!(
        delivery_of(&pool, r.reading_id).await.as_deref(),
        Some("conflict")
    );
    assert_eq!(
        app.metric("billing_pushes_total", &[("result", "conflict")])
            .await,
        Some(1.0)
    );
    assert!(
        take(&env, "billing-export.dead").await.is_none(),
        "409 is not a dead letter"
    );
    assert_eq!(
        billing.posts_for(&key).len(),
        1,
        "delivered: not posted again"
    );
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn other_client_errors_are_dead_lettered_and_counted() {
    let env = TestEnv::new().await;
    let billing = BillingDouble::start(Behaviour::Always(422)).await;
    let app = spawn_app(&env, options(&billing)).await;
    let events = Events::connect(&env).await;
    let r = reading(
        "1000001",
        "M-1",
        "2026-11",
        &[45100],
        "2026-11-20T10:00:00+05:00",
    );
    events.publish(&r).await;
    let key = r.reading_id.to_string();
    billing.wait_posts(&key, 1).await;

    let broker = Broker::connect(&env).await;
    let dead = broker.wait_take("billing-export.dead").await;
    broker.close().await;
    let event = Event::from_json(&dead.body).expect("the event, unchanged");
    assert_eq!(event, Event::ReadingAccepted(r.clone()));
    let reason = dead
        .header(shared::consumer::ERROR_HEADER)
        .unwrap_or_default();
    assert!(reason.contains("422"), "{reason}");

    let metrics = app.metrics().await;
    assert_eq!(
        metrics.exact("billing_pushes_total", &[("result", "dead_lettered")]),
        Some(1.0),
        "{}",
        metrics.text
    );
    assert_eq!(
        metrics.exact(
            "billing_consumer_messages_total",
            &[("queue", "billing-export"), ("outcome", "dead_lettered")]
        ),
        Some(1.0),
        "{}",
        metrics.text
    );
    let pool = billing_pool(&env);
    assert_eq!(
        delivery_of(&pool, r.reading_id).await.as_deref(),
        Some("rejected")
    );
    assert_eq!(billing.posts_for(&key).len(), 1, "never retried");
    assert_eq!(billing.successes_for(&key), 0);
    app.stop().await;
    env.cleanup().await;
}

/// 401/403 (SPEC §4.5): billing refusing our credentials is retried like 5xx — the
/// readings wait for the token to be fixed — and counted for the alert.
#[tokio::test]
async fn refused_credentials_are_retried_and_raise_the_alerting_metric() {
    let env = TestEnv::new().await;
    let billing = BillingDouble::start(Behaviour::Always(401)).await;
    let app = spawn_app(&env, options(&billing)).await;
    let events = Events::connect(&env).await;
    let r = reading(
        "1000001",
        "M-1",
        "2026-11",
        &[45100],
        "2026-11-20T10:00:00+05:00",
    );
    events.publish(&r).await;
    let key = r.reading_id.to_string();
    // The first post and its retry after 1 s.
    billing.wait_posts(&key, 2).await;
    eventually("both refusals counted", WAIT, || async {
        let n = app.metric("billing_credentials_refused_total", &[]).await?;
        (n >= 2.0).then_some(())
    })
    .await;
    let metrics = app.metrics().await;
    assert!(
        metrics
            .exact("billing_pushes_total", &[("result", "retried")])
            .is_some(),
        "{}",
        metrics.text
    );
    assert!(
        metrics
            .exact("billing_pushes_total", &[("result", "dead_lettered")])
            .is_none(),
        "{}",
        metrics.text
    );
    let pool = billing_pool(&env);
    assert_eq!(
        delivery_of(&pool, r.reading_id).await.as_deref(),
        Some("pending")
    );
    assert!(take(&env, "billing-export.dead").await.is_none());
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn undecodable_events_are_dead_lettered_without_a_post() {
    let env = TestEnv::new().await;
    let billing = BillingDouble::start(Behaviour::Always(200)).await;
    let app = spawn_app(&env, options(&billing)).await;
    let events = Events::connect(&env).await;
    events
        .publish_raw(b"{\"schema\":\"reading.accepted/v1\",\"oops\":1}")
        .await;
    let mut four_zones = reading(
        "1000001",
        "M-1",
        "2026-11",
        &[1, 2, 3, 4],
        "2026-11-20T10:00:00+05:00",
    );
    four_zones.message_id = "four-zones".into();
    events.publish(&four_zones).await;
    let broker = Broker::connect(&env).await;
    for _ in 0..2 {
        broker.wait_take("billing-export.dead").await;
    }
    broker.close().await;
    assert!(billing.posts().is_empty());
    assert_eq!(common::stored_count(&billing_pool(&env)).await, 0);
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn without_billing_url_readings_are_stored_only() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env, Options::default()).await;
    let events = Events::connect(&env).await;
    let r = reading(
        "1000001",
        "M-1",
        "2026-11",
        &[45100],
        "2026-11-20T10:00:00+05:00",
    );
    events.publish(&r).await;
    let pool = billing_pool(&env);
    wait_stored(&pool, 1).await;
    assert_eq!(
        delivery_of(&pool, r.reading_id).await.as_deref(),
        Some("not_pushed")
    );
    let csv = app
        .get("/v1/exports/2026-11.csv")
        .await
        .text()
        .await
        .expect("body");
    assert!(csv.contains(&r.reading_id.to_string()), "{csv}");
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn unreachable_billing_is_retried_not_dead_lettered() {
    let env = TestEnv::new().await;
    // Nothing listens on port 1: connection refused.
    let options = Options {
        billing_url: Some("http://127.0.0.1:1/api/meter".into()),
        ..Options::default()
    };
    let app = spawn_app(&env, options).await;
    let events = Events::connect(&env).await;
    let r = reading(
        "1000001",
        "M-1",
        "2026-11",
        &[45100],
        "2026-11-20T10:00:00+05:00",
    );
    events.publish(&r).await;
    eventually("a second attempt", WAIT, || async {
        let n = app
            .metric("billing_pushes_total", &[("result", "retried")])
            .await?;
        (n >= 2.0).then_some(())
    })
    .await;
    let pool = billing_pool(&env);
    let (delivery, error): (String, Option<String>) =
        sqlx::query_as("SELECT delivery, last_error FROM readings WHERE reading_id = $1")
            .bind(r.reading_id)
            .fetch_one(&pool)
            .await
            .expect("row");
    assert_eq!(delivery, "pending");
    assert!(error.is_some_and(|e| !e.is_empty()));
    assert!(take(&env, "billing-export.dead").await.is_none());
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn a_backlog_is_posted_in_batches_each_reading_once() {
    // Readings waiting before the service starts arrive as full batches (up to 64
    // deliveries each), with some readings in the backlog twice in a row (the
    // validator's outbox may publish an event twice): each reading is stored once and
    // delivered once.
    let env = TestEnv::new().await;
    let billing = BillingDouble::start(Behaviour::FailFirst(0)).await;
    let events = Events::connect(&env).await;
    let readings: Vec<_> = (0..150)
        .map(|i| {
            reading(
                &format!("{:07}", 2_000_000 + i),
                "M-1",
                "2026-11",
                &[45_000 + i],
                "2026-11-20T10:00:00+05:00",
            )
        })
        .collect();
    for (i, r) in readings.iter().enumerate() {
        events.publish(r).await;
        if i % 5 == 0 {
            events.publish(r).await;
        }
    }
    let published = 150 + 30;
    let app = spawn_app(&env, options(&billing)).await;
    app.wait_acked(published).await;

    // Each reading delivered once. Two copies of a reading that land in two batches
    // handled at the same time may both be posted; billing answers the second 409
    // (the Idempotency-Key), as with one message at a time. Copies in one batch are
    // posted once: far fewer posts than messages.
    billing.assert_each_key_succeeded_at_most_once();
    let mut posts = 0;
    for r in &readings {
        let key = r.reading_id.to_string();
        assert_eq!(billing.successes_for(&key), 1, "delivered once: {key}");
        let for_key = billing.posts_for(&key);
        assert!(
            for_key.iter().skip(1).all(|p| p.status == 409),
            "a repeat is answered 409: {key}"
        );
        posts += for_key.len();
    }
    assert_eq!(posts, billing.posts().len());
    assert!(
        posts < 150 + 15,
        "{posts} posts for 150 readings: copies in one batch are posted once"
    );
    let pool = billing_pool(&env);
    let (rows, delivered): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE delivery IN ('delivered', 'conflict')) FROM readings",
    )
    .fetch_one(&pool)
    .await
    .expect("count");
    assert_eq!((rows, delivered), (150, 150));
    app.stop().await;
    env.cleanup().await;
}

/// Billing's `429` with `Retry-After` is retried when billing said, not on the back-off
/// schedule (whose first retry comes after 1 s). The double answers `429` with
/// `Retry-After: 6` to the first post and `201` to the next. "When billing said" is to
/// within the consumer's `DUE_TOLERANCE`: the wait runs on the broker's wall clock (a
/// CI run saw the retry 22 ms before 6 s on this test's monotonic clock).
#[tokio::test]
async fn throttled_pushes_are_retried_after_the_wait_billing_asks_for() {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    let env = TestEnv::new().await;
    let posts: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let router = {
        let posts = posts.clone();
        axum::Router::new().route(
            "/readings",
            axum::routing::post(move || {
                let posts = posts.clone();
                async move {
                    let mut posts = posts.lock().expect("posts");
                    posts.push(Instant::now());
                    if posts.len() == 1 {
                        (
                            axum::http::StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "6")],
                        )
                            .into_response()
                    } else {
                        axum::http::StatusCode::CREATED.into_response()
                    }
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move { axum::serve(listener, router).await });

    let app = spawn_app(
        &env,
        Options {
            billing_url: Some(url),
            ..Options::default()
        },
    )
    .await;
    let events = Events::connect(&env).await;
    let r = reading(
        "1000001",
        "M-1",
        "2026-11",
        &[45100],
        "2026-11-20T10:00:00+05:00",
    );
    events.publish(&r).await;
    let pool = billing_pool(&env);
    eventually("delivered", Duration::from_secs(30), || async {
        (delivery_of(&pool, r.reading_id).await.as_deref() == Some("delivered")).then_some(())
    })
    .await;
    let posts = posts.lock().expect("posts").clone();
    assert_eq!(posts.len(), 2, "one refusal, one delivery");
    let waited = posts[1] - posts[0];
    assert!(
        waited + shared::consumer::DUE_TOLERANCE >= Duration::from_secs(6),
        "retried after {waited:?}"
    );

    app.stop().await;
    server.abort();
    env.cleanup().await;
}

/// SPEC §5: a reading the database refuses for good (a foreign publisher's meter
/// with a NUL: SQLSTATE 22021) is dead-lettered at once with the reason; the other
/// readings of its batch are stored with billing's answer and acked.
#[tokio::test]
async fn a_reading_the_database_refuses_is_dead_lettered_alone() {
    let env = TestEnv::new().await;
    let billing = BillingDouble::start(Behaviour::Always(200)).await;
    let events = Events::connect(&env).await;
    let at = "2026-11-20T10:00:00+05:00";
    let good = [
        reading("1000001", "M-1", "2026-11", &[45100], at),
        reading("1000002", "M-2", "2026-11", &[100], at),
        reading("1000003", "M-3", "2026-11", &[200], at),
    ];
    let refused = reading("1000004", "M\u{0}4", "2026-11", &[300], at);
    // Queued before the service starts, so that they arrive as one batch.
    events.publish(&good[0]).await;
    events.publish(&refused).await;
    events.publish(&good[1]).await;
    events.publish(&good[2]).await;
    let app = spawn_app(&env, options(&billing)).await;

    let pool = billing_pool(&env);
    for r in &good {
        eventually("the reading stored as delivered", WAIT, || async {
            (delivery_of(&pool, r.reading_id).await.as_deref() == Some("delivered")).then_some(())
        })
        .await;
    }
    let broker = Broker::connect(&env).await;
    let dead = broker.wait_take("billing-export.dead").await;
    assert_eq!(
        Event::from_json(&dead.body).expect("the event"),
        Event::ReadingAccepted(refused.clone())
    );
    let reason = dead
        .header(shared::consumer::ERROR_HEADER)
        .unwrap_or_default();
    assert!(reason.contains("0x00"), "{reason}");
    assert_eq!(
        shared::broker::header_int(&dead.headers, shared::consumer::ATTEMPT_HEADER),
        Some(1),
        "dead-lettered on its first attempt"
    );
    app.wait_acked(3).await;
    assert!(
        broker.take("billing-export.dead").await.is_none(),
        "only the one"
    );
    broker.close().await;
    assert_eq!(delivery_of(&pool, refused.reading_id).await, None);
    app.stop().await;
    env.cleanup().await;
}

/// Billing's error text is stored as the reading's `last_error`: a NUL in it (a peer's
/// bytes) is stored as `␀`, so the reading is stored as pending and retried, not
/// refused by the database and dead-lettered.
#[tokio::test]
async fn a_nul_in_billings_answer_does_not_make_the_reading_unstorable() {
    let env = TestEnv::new().await;
    let pool = billing_pool(&env);
    billing_export::DATABASE
        .apply(&pool, &tokio_util::sync::CancellationToken::new())
        .await
        .expect("migrations");
    let r = reading(
        "1000001",
        "M-1",
        "2026-11",
        &[45100],
        "2026-11-20T10:00:00+05:00",
    );
    let outcome = billing_export::store::Outcome {
        reading: &r,
        delivery: billing_export::store::Delivery::Pending,
        attempted: true,
        status: Some(503),
        error: Some("billing answered 503 Service Unavailable: busy\u{0}"),
    };
    let stored = billing_export::store::store_each(&pool, &[outcome]).await;
    assert!(stored.iter().all(Result::is_ok), "{stored:?}");
    let last_error: Option<String> =
        sqlx::query_scalar("SELECT last_error FROM readings WHERE reading_id = $1")
            .bind(r.reading_id)
            .fetch_one(&pool)
            .await
            .expect("stored");
    assert_eq!(
        last_error.as_deref(),
        Some("billing answered 503 Service Unavailable: busy\u{2400}")
    );
    assert_eq!(
        delivery_of(&pool, r.reading_id).await.as_deref(),
        Some("pending")
    );
    env.cleanup().await;
}
