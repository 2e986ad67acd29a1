//! The validator killed between commit and publish (a crash-injection point in the
//! real binary): after a restart the event is published exactly once.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{Harness, IN_WINDOW, WAIT};
use shared::testing::{Metrics, eventually, listening_port};

fn validator_process(h: &Harness, crash: bool) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_validator"));
    cmd.env("AMQP_URL", &h.env.amqp_url)
        .env("DATABASE_URL", &h.env.database_url)
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if crash {
        cmd.env("VALIDATOR_CRASH_AFTER_COMMIT", "1");
    }
    cmd.spawn().expect("validator starts")
}

#[tokio::test]
async fn crash_between_commit_and_publish_publishes_once_after_restart() {
    let h = Harness::prepared().await;
    let mut doomed = validator_process(&h, true);
    h.send("crash-1", "+79004000001", "0000007 42", IN_WINDOW)
        .await;
    let status = tokio::time::timeout(WAIT, doomed.wait())
        .await
        .expect("process died")
        .expect("status");
    assert!(!status.success(), "aborted at the injection point");

    // Committed but not published: the audit row and the outbox row exist, no event.
    assert_eq!(
        h.audit("crash-1").await,
        Some(("accepted".to_owned(), None))
    );
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&h.pool)
        .await
        .expect("q");
    assert_eq!(pending, 1);
    assert!(
        h.captured_now().await.is_empty(),
        "nothing published before the restart"
    );

    let mut revived = validator_process(&h, false);
    eventually("outbox drained", WAIT, || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&h.pool)
            .await
            .ok()?;
        (n == 0).then_some(())
    })
    .await;
    let event = h.event_for("crash-1").await;
    assert!(matches!(event, shared::events::Event::ReadingAccepted(_)));
    // The message itself was redelivered to the new process and recognised as a
    // duplicate: acked by it (its own count, not the management API's statistics,
    // which lag by seconds)...
    let port = listening_port(revived.id().expect("pid"), "validator").await;
    let http = reqwest::Client::new();
    eventually("the redelivery acked", WAIT, || async {
        let text = http
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let acked = Metrics::parse(&text).sum(
            "validator_consumer_messages_total",
            &[("queue", "validator"), ("outcome", "acked")],
        );
        (acked >= 1.0).then_some(())
    })
    .await;
    // ...and the queue is empty.
    eventually("redelivery settled", WAIT, || async {
        let depth = h.env.queue_depth("validator").await?;
        (depth == 0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(h.captured_now().await.is_empty(), "published exactly once");
    revived.start_kill().ok();
    let _ = revived.wait().await;
    h.finish().await;
}
