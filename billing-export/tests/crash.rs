//! Crash drills: the real `billing-export` binary is killed (it aborts itself, as
//! `kill -9` would: no ack, no cleanup) right after billing answered 2xx — once
//! before the reading and the answer are stored, once after — and a fresh instance takes over
//! the redelivered message. Billing must not see a second success for the reading.
//!
//! The abort is triggered by `BILLING_EXPORT_CRASH_AT`, a test hook read with
//! `std::env` in `reading.rs`; the child process has it, this test process does not.

mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;

use common::billing::{Behaviour, BillingDouble};
use common::{Events, Options, TOKEN, billing_pool, delivery_of, reading, spawn_app};
use shared::testing::{STOP_WAIT, TestEnv, WAIT, eventually};

/// Runs the binary with the crash hook until it aborts.
async fn run_until_crash(env: &TestEnv, billing: &BillingDouble, point: &str) {
    // `ulimit -c 0`: an abort must not leave core files behind.
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -c 0 && exec \"$0\" serve")
        .arg(env!("CARGO_BIN_EXE_billing-export"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AMQP_URL", &env.amqp_url)
        .env("DATABASE_URL", &env.database_url)
        .env("BILLING_URL", &billing.url)
        .env("BILLING_TOKEN", TOKEN)
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .env("BILLING_EXPORT_CRASH_AT", point)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("billing-export binary starts");
    let status = tokio::time::timeout(STOP_WAIT, child.wait())
        .await
        .expect("the child crashes at the hook")
        .expect("wait");
    assert_eq!(status.signal(), Some(6), "aborted (SIGABRT): {status:?}");
}

#[tokio::test]
async fn crash_after_billing_said_yes_but_before_recording_it() {
    let env = TestEnv::new().await;
    let billing = BillingDouble::start(Behaviour::Always(200)).await;
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

    run_until_crash(&env, &billing, "after_post").await;
    assert_eq!(
        billing.successes_for(&key),
        1,
        "billing took it before the crash"
    );
    // The reading is stored with billing's answer after the post: nothing yet.
    let pool = billing_pool(&env);
    assert_eq!(delivery_of(&pool, r.reading_id).await, None);

    // The broker redelivers to the new instance, which has no record of the
    // success: it posts again with the same Idempotency-Key and billing says 409.
    let app = spawn_app(
        &env,
        Options {
            billing_url: Some(billing.url.clone()),
            ..Options::default()
        },
    )
    .await;
    let posts = billing.wait_posts(&key, 2).await;
    assert_eq!(
        posts.iter().map(|p| p.status).collect::<Vec<_>>(),
        [200, 409]
    );
    app.wait_acked(1).await;
    assert_eq!(
        delivery_of(&pool, r.reading_id).await.as_deref(),
        Some("conflict")
    );
    assert_eq!(billing.successes_for(&key), 1);
    billing.assert_each_key_succeeded_at_most_once();
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn crash_after_recording_the_delivery_but_before_the_ack() {
    let env = TestEnv::new().await;
    let billing = BillingDouble::start(Behaviour::Always(200)).await;
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

    run_until_crash(&env, &billing, "after_record").await;
    let pool = billing_pool(&env);
    assert_eq!(
        delivery_of(&pool, r.reading_id).await.as_deref(),
        Some("delivered")
    );

    // Redelivered (never acked), and recognised as delivered: no second POST at all.
    let app = spawn_app(
        &env,
        Options {
            billing_url: Some(billing.url.clone()),
            ..Options::default()
        },
    )
    .await;
    app.wait_acked(1).await;
    assert_eq!(
        app.metric("billing_pushes_total", &[("result", "already_delivered")])
            .await,
        Some(1.0)
    );
    assert_eq!(billing.posts_for(&key).len(), 1);
    assert_eq!(billing.successes_for(&key), 1);
    // Nothing left in the queue either.
    eventually("queue drained", WAIT, || async {
        (env.queue_depth("billing-export").await == Some(0)).then_some(())
    })
    .await;
    app.stop().await;
    env.cleanup().await;
}
