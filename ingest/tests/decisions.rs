//! Every ingest replica receives every decision of the system for the web form's
//! answer page (`ingest::decisions`): what one process is handed and what waits for
//! it are bounded, on the real RabbitMQ.

use std::time::Duration;

use ingest::decisions::{MAX_QUEUED, PREFETCH, WAIT, declare_queue};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use shared::events::{EXCHANGE, READING_REJECTED};
use shared::testing::{READY_WAIT, Service, TestEnv, eventually};

mod common;

/// A decision the form waits for, as the validator publishes it.
fn rejected(n: usize) -> Vec<u8> {
    serde_json::json!({
        "schema": "reading.rejected/v1",
        "message_id": format!("web-flood-{n}"),
        "from": format!("web-flood-{n}"),
        "account": null,
        "reason": "format",
        "reply": null,
        "received_at": "2026-11-20T10:00:00+05:00",
        "channel": "web"
    })
    .to_string()
    .into_bytes()
}

/// Decisions pile up while a process does not take them (a stalled runtime): the
/// queue keeps the newest [`MAX_QUEUED`], not everything.
#[tokio::test]
async fn the_decisions_queue_keeps_at_most_its_bound() {
    let env = TestEnv::new().await;
    let conn = shared::broker::connect(&env.amqp_url, "test-decisions", &[])
        .await
        .expect("broker");
    let channel = conn.create_channel().await.expect("channel");
    let queue = declare_queue(&channel).await.expect("declared");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    let sent = usize::try_from(MAX_QUEUED).expect("bound") + 1_000;
    let props = shared::broker::persistent_json("flood", FieldTable::default());
    for n in 0..sent {
        channel
            .basic_publish(
                EXCHANGE.into(),
                READING_REJECTED.into(),
                BasicPublishOptions::default(),
                &rejected(n),
                props.clone(),
            )
            .await
            .expect("published");
    }
    tokio::time::timeout(Duration::from_secs(60), channel.wait_for_confirms())
        .await
        .expect("confirms in time")
        .expect("confirms");
    let depth = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("the queue")
        .message_count();
    assert!(
        i64::from(depth) <= MAX_QUEUED,
        "{depth} decisions queued of {sent} sent"
    );
    let info = env
        .management(&format!("queues/{{vhost}}/{queue}"))
        .await
        .expect("the management API");
    let args = &info["arguments"];
    assert_eq!(args["x-overflow"], "drop-head", "{info}");
    assert_eq!(
        args["x-message-ttl"].as_u64(),
        u64::try_from(WAIT.as_millis()).ok()
    );
    shared::broker::close_quietly(conn.close(200, "bye".into())).await;
    env.cleanup().await;
}

/// A running ingest takes its decisions with acks and a prefetch: the broker never
/// pushes it more than [`PREFETCH`] at a time.
#[tokio::test]
async fn ingest_takes_decisions_with_acks_and_a_bounded_prefetch() {
    let env = TestEnv::new().await;
    let amqp_url = env.amqp_url.clone();
    let app = Service::spawn(
        "ingest",
        move |http_addr| ingest::Config {
            http_addr,
            ..common::config(&amqp_url)
        },
        ingest::run,
    )
    .await;
    app.ready().await;
    let consumer = eventually("the decisions' consumer", READY_WAIT, || async {
        let consumers = env.management("consumers/{vhost}").await?;
        consumers
            .as_array()?
            .iter()
            .find(|c| c["consumer_tag"] == "ingest-form")
            .cloned()
    })
    .await;
    assert_eq!(consumer["ack_required"], true, "{consumer}");
    assert_eq!(
        consumer["prefetch_count"].as_u64(),
        Some(u64::from(PREFETCH)),
        "{consumer}"
    );
    app.stop().await;
    env.cleanup().await;
}
