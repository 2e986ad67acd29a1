//! The shared plumbing against the real RabbitMQ: topology, confirms, the consumer
//! loop's ack / retry / dead-letter, redelivery after a crash, trace context, and
//! shutdown in the middle of work. Each test has its own vhost.

use std::sync::Arc;

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Connection, ConnectionProperties};
use shared::broker::{Publisher, ReadyFlag, persistent_json, publish_confirmed};
use shared::consumer::{self, ConsumerConfig, Handler, HandlerError, Incoming};
use shared::metrics::ConsumerMetrics;
use shared::testing::{CONFIRM_WAIT, TestEnv, WAIT, eventually};
use shared::topology::{self, QueueSpec, RetryPolicy};
use shared::tracecontext::header_str;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn spec() -> QueueSpec {
    QueueSpec::new(
        "work",
        &["sms.received"],
        RetryPolicy {
            delays: vec![Duration::from_millis(300), Duration::from_millis(600)],
            max_attempts: Some(3),
        },
    )
}

/// One delivery as the handler saw it: body, attempt, redelivered, when, traceparent.
type Seen = (String, u32, bool, Instant, Option<String>);

/// Records what the handler saw; behaviour by message body.
#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Seen>>,
    done: Mutex<Vec<String>>,
    release: Notify,
    started: Notify,
}

impl Handler for Recorder {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        let body = String::from_utf8_lossy(&msg.body).to_string();
        let tp = header_str(&msg.headers, "traceparent").map(str::to_owned);
        self.seen.lock().await.push((
            body.clone(),
            msg.attempt,
            msg.redelivered,
            Instant::now(),
            tp,
        ));
        let attempts = self
            .seen
            .lock()
            .await
            .iter()
            .filter(|s| s.0 == body)
            .count();
        match body.as_str() {
            "poison" => return Err(HandlerError::permanent(anyhow::anyhow!("cannot parse"))),
            "flaky" if attempts < 2 => {
                return Err(HandlerError::transient(anyhow::anyhow!("peer down")));
            }
            "always-down" => return Err(HandlerError::transient(anyhow::anyhow!("peer down"))),
            "slow" => {
                self.started.notify_one();
                self.release.notified().await;
            }
            _ => {}
        }
        self.done.lock().await.push(body);
        Ok(())
    }
}

async fn publish_raw(conn: &Connection, body: &str, headers: FieldTable) {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    publish_confirmed(
        &ch,
        "meter.events",
        "sms.received",
        body.as_bytes(),
        persistent_json(body, headers),
        CONFIRM_WAIT,
    )
    .await
    .expect("confirmed");
}

struct Running {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    ready: ReadyFlag,
}

fn start(env: &TestEnv, handler: Arc<Recorder>) -> Running {
    let shutdown = CancellationToken::new();
    let ready = ReadyFlag::default();
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = ConsumerMetrics::register(&mut registry);
    let mut config = ConsumerConfig::new(&env.amqp_url, spec(), vec![spec()]);
    config.prefetch = 10;
    config.concurrency = 4;
    let task = tokio::spawn(consumer::run(
        config,
        handler,
        metrics,
        ready.clone(),
        shutdown.clone(),
    ));
    Running {
        shutdown,
        task,
        ready,
    }
}

async fn declared(env: &TestEnv) -> Connection {
    let conn = Connection::connect(&env.amqp_url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    topology::declare(&ch, &[spec()]).await.expect("declare");
    conn
}

async fn get_one(conn: &Connection, queue: &str) -> Option<lapin::message::BasicGetMessage> {
    let ch = conn.create_channel().await.expect("channel");
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: true })
        .await
        .expect("get")
}

#[tokio::test]
async fn topology_can_be_declared_twice_and_by_every_service() {
    let env = TestEnv::new().await;
    let conn = declared(&env).await;
    let ch = conn.create_channel().await.expect("channel");
    topology::declare(&ch, &[spec()])
        .await
        .expect("second declare is a no-op");
    topology::declare(&ch, &topology::system_queues())
        .await
        .expect("system queues");
    topology::declare(&ch, &topology::system_queues())
        .await
        .expect("system queues again");
    // The queue really is a durable quorum queue: a passive declare finds it.
    let q = ch
        .queue_declare(
            "validator".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exists");
    assert_eq!(q.message_count(), 0);
    conn.close(200, "bye".into()).await.ok();
    env.cleanup().await;
}

/// Every body in `queue` now (taken, not acked back).
async fn drain_bodies(conn: &Connection, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Some(msg) = get_one(conn, queue).await {
        bodies.push(String::from_utf8_lossy(&msg.delivery.data).to_string());
    }
    bodies.sort();
    bodies
}

#[tokio::test]
async fn notifier_filter_drops_only_accepted_events_marked_as_nothing_for_it() {
    let env = TestEnv::new().await;
    let conn = Connection::connect(&env.amqp_url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    // The topology as it was before the filter: `reading.accepted` bound directly.
    let unfiltered = QueueSpec::new(
        "notifier",
        &["reading.accepted", "reading.rejected"],
        RetryPolicy::standard(),
    );
    topology::declare(&ch, &[unfiltered])
        .await
        .expect("old topology");
    // Today's, declared over it (a service of this version starting), twice.
    for _ in 0..2 {
        topology::declare(&ch, &topology::system_queues())
            .await
            .expect("system queues over the old topology");
    }
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    let skip = |value: &str| {
        let mut headers = FieldTable::default();
        headers.insert("skip-notifier".into(), AMQPValue::LongString(value.into()));
        headers
    };
    let cases = [
        ("reading.accepted", "accepted-marked", skip("yes")),
        (
            "reading.accepted",
            "accepted-unmarked",
            FieldTable::default(),
        ),
        ("reading.accepted", "accepted-marked-no", skip("no")),
        // The filter is on `reading.accepted` only.
        ("reading.rejected", "rejected-marked", skip("yes")),
    ];
    for (key, body, headers) in cases {
        publish_confirmed(
            &ch,
            "meter.events",
            key,
            body.as_bytes(),
            persistent_json(body, headers),
            CONFIRM_WAIT,
        )
        .await
        .expect("routed and confirmed");
    }
    // Each once: the old direct binding is gone, so nothing arrives twice.
    assert_eq!(
        drain_bodies(&conn, "notifier").await,
        ["accepted-marked-no", "accepted-unmarked", "rejected-marked"]
    );
    // Other consumers see every accepted reading, marked or not.
    assert_eq!(
        drain_bodies(&conn, "billing-export").await,
        ["accepted-marked", "accepted-marked-no", "accepted-unmarked"]
    );
    // The filter's exchanges are internal: nobody publishes around the filter.
    let internal = ch
        .basic_publish(
            "notifier.pass".into(),
            "".into(),
            Default::default(),
            b"sneaky",
            persistent_json("sneaky", FieldTable::default()),
        )
        .await;
    let refused = match internal {
        Err(_) => true,
        Ok(confirm) => confirm.await.is_err(),
    };
    assert!(refused, "publishing to an internal exchange is refused");
    conn.close(200, "bye".into()).await.ok();
    env.cleanup().await;
}

#[tokio::test]
async fn ack_on_success_and_dead_letter_for_poison_without_blocking() {
    let env = TestEnv::new().await;
    let conn = declared(&env).await;
    publish_raw(&conn, "poison", FieldTable::default()).await;
    publish_raw(&conn, "good", FieldTable::default()).await;
    let handler = Arc::new(Recorder::default());
    let run = start(&env, handler.clone());
    eventually("good handled", WAIT, || async {
        handler
            .done
            .lock()
            .await
            .contains(&"good".to_owned())
            .then_some(())
    })
    .await;
    let dead = eventually("poison in DLQ", WAIT, || get_one(&conn, "work.dead")).await;
    assert_eq!(dead.delivery.data, b"poison");
    let headers = dead
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    assert_eq!(header_str(&headers, "x-last-error"), Some("cannot parse"));
    // Poison is tried once only: a permanent failure is not retried.
    let tries = handler
        .seen
        .lock()
        .await
        .iter()
        .filter(|s| s.0 == "poison")
        .count();
    assert_eq!(tries, 1);
    assert!(run.ready.get());
    run.shutdown.cancel();
    run.task.await.expect("consumer ends");
    assert!(get_one(&conn, "work").await.is_none(), "main queue drained");
    conn.close(200, "bye".into()).await.ok();
    env.cleanup().await;
}

#[tokio::test]
async fn retry_later_comes_back_after_the_delay() {
    let env = TestEnv::new().await;
    let conn = declared(&env).await;
    publish_raw(&conn, "flaky", FieldTable::default()).await;
    let handler = Arc::new(Recorder::default());
    let run = start(&env, handler.clone());
    eventually("flaky done", WAIT, || async {
        handler
            .done
            .lock()
            .await
            .contains(&"flaky".to_owned())
            .then_some(())
    })
    .await;
    let seen = handler.seen.lock().await.clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!((seen[0].1, seen[1].1), (1, 2), "attempt numbers");
    let gap = seen[1].3 - seen[0].3;
    assert!(
        gap >= Duration::from_millis(300),
        "retried after {gap:?}, before the 300 ms delay"
    );
    run.shutdown.cancel();
    run.task.await.expect("consumer ends");
    assert!(get_one(&conn, "work.dead").await.is_none());
    conn.close(200, "bye".into()).await.ok();
    env.cleanup().await;
}

#[tokio::test]
async fn retries_are_bounded_then_dead_lettered() {
    let env = TestEnv::new().await;
    let conn = declared(&env).await;
    publish_raw(&conn, "always-down", FieldTable::default()).await;
    publish_raw(&conn, "after", FieldTable::default()).await;
    let handler = Arc::new(Recorder::default());
    let run = start(&env, handler.clone());
    let dead = eventually("in DLQ", WAIT, || get_one(&conn, "work.dead")).await;
    assert_eq!(dead.delivery.data, b"always-down");
    let attempts: Vec<u32> = handler
        .seen
        .lock()
        .await
        .iter()
        .filter(|s| s.0 == "always-down")
        .map(|s| s.1)
        .collect();
    assert_eq!(attempts, vec![1, 2, 3], "max_attempts = 3");
    assert!(
        handler.done.lock().await.contains(&"after".to_owned()),
        "the queue was not blocked"
    );
    run.shutdown.cancel();
    run.task.await.expect("consumer ends");
    conn.close(200, "bye".into()).await.ok();
    env.cleanup().await;
}

#[tokio::test]
async fn a_consumer_that_dies_before_ack_loses_nothing() {
    let env = TestEnv::new().await;
    let conn = declared(&env).await;
    publish_raw(&conn, "precious", FieldTable::default()).await;

    // A consumer that takes the message and dies (its connection drops) before acking.
    let crashing = Connection::connect(&env.amqp_url, ConnectionProperties::default())
        .await
        .expect("connect");
    let ch = crashing.create_channel().await.expect("channel");
    let mut stream = ch
        .basic_consume(
            "work".into(),
            "doomed".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let first = stream.next().await.expect("a delivery").expect("ok");
    assert_eq!(first.data, b"precious");
    crashing.close(320, "simulated crash".into()).await.ok();

    let handler = Arc::new(Recorder::default());
    let run = start(&env, handler.clone());
    eventually("redelivered and handled", WAIT, || async {
        (!handler.done.lock().await.is_empty()).then_some(())
    })
    .await;
    let seen = handler.seen.lock().await.clone();
    assert_eq!(seen.len(), 1, "handled once: {seen:?}");
    assert!(seen[0].2, "marked as redelivered");
    run.shutdown.cancel();
    run.task.await.expect("consumer ends");
    assert!(get_one(&conn, "work").await.is_none());
    conn.close(200, "bye".into()).await.ok();
    env.cleanup().await;
}

#[tokio::test]
async fn traceparent_arrives_unchanged() {
    let env = TestEnv::new().await;
    let conn = declared(&env).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut headers = FieldTable::default();
    headers.insert("traceparent".into(), AMQPValue::LongString(tp.into()));
    publish_raw(&conn, "traced", headers).await;
    let handler = Arc::new(Recorder::default());
    let run = start(&env, handler.clone());
    eventually("handled", WAIT, || async {
        (!handler.done.lock().await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(handler.seen.lock().await[0].4.as_deref(), Some(tp));
    run.shutdown.cancel();
    run.task.await.expect("consumer ends");
    conn.close(200, "bye".into()).await.ok();
    env.cleanup().await;
}

#[tokio::test]
async fn shutdown_mid_work_finishes_and_acks() {
    let env = TestEnv::new().await;
    let conn = declared(&env).await;
    publish_raw(&conn, "slow", FieldTable::default()).await;
    let handler = Arc::new(Recorder::default());
    let run = start(&env, handler.clone());
    tokio::time::timeout(WAIT, handler.started.notified())
        .await
        .expect("work started");
    run.shutdown.cancel();
    // Shutdown waits for the work in hand.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !run.task.is_finished(),
        "consumer must wait for in-flight work"
    );
    handler.release.notify_one();
    tokio::time::timeout(WAIT, run.task)
        .await
        .expect("stops")
        .expect("no panic");
    assert_eq!(handler.done.lock().await.as_slice(), ["slow".to_owned()]);
    // Acked: nothing comes back.
    assert!(get_one(&conn, "work").await.is_none(), "acked before exit");
    conn.close(200, "bye".into()).await.ok();
    env.cleanup().await;
}

#[tokio::test]
async fn publisher_confirms_and_reports_unavailable_broker() {
    let env = TestEnv::new().await;
    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let publisher = Publisher::start(
        env.amqp_url.clone(),
        "test".into(),
        vec![spec()],
        &tracker,
        shutdown.clone(),
    );
    eventually("publisher ready", WAIT, || async {
        publisher.ready().get().then_some(())
    })
    .await;
    let event = shared::events::Event::SmsReceived(shared::events::SmsReceived {
        message_id: "m-1".into(),
        from: "+79001234567".into(),
        to: "7377".into(),
        text: "1000001 12345".into(),
        received_at: chrono::Utc::now().fixed_offset(),
        channel: shared::events::Channel::Sms,
        chat: None,
        contact: None,
    });
    publisher.publish(&event).await.expect("confirmed");
    let conn = declared(&env).await;
    let got = get_one(&conn, "work").await.expect("stored");
    assert_eq!(
        shared::events::Event::from_json(&got.delivery.data).expect("decodes"),
        event
    );
    assert_eq!(
        got.delivery.properties.delivery_mode(),
        &Some(2),
        "persistent"
    );

    let nowhere = Publisher::start(
        "amqp://guest:guest@127.0.0.1:1/%2f".into(),
        "t".into(),
        vec![],
        &tracker,
        shutdown.clone(),
    );
    assert!(matches!(
        nowhere.publish(&event).await,
        Err(shared::broker::PublishError::Unavailable)
    ));
    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    conn.close(200, "bye".into()).await.ok();
    env.cleanup().await;
}

/// Restarts the broker under a running consumer: it must resume by itself and lose nothing.
/// Takes the broker away from every other test: run alone (`--run-ignored only`, one thread).
#[tokio::test]
#[ignore = "restarts RabbitMQ; run alone"]
async fn consumer_resumes_after_broker_restart() {
    let env = TestEnv::new().await;
    let conn = declared(&env).await;
    let handler = Arc::new(Recorder::default());
    let run = start(&env, handler.clone());
    eventually("consuming", WAIT, || async {
        run.ready.get().then_some(())
    })
    .await;
    publish_raw(&conn, "before", FieldTable::default()).await;
    eventually("before handled", WAIT, || async {
        (handler.done.lock().await.len() == 1).then_some(())
    })
    .await;

    let restarted = restart_broker().await;
    assert!(restarted, "broker restarted");
    let conn = eventually("broker back", Duration::from_secs(60), || async {
        Connection::connect(&env.amqp_url, ConnectionProperties::default())
            .await
            .ok()
    })
    .await;
    publish_raw(&conn, "after", FieldTable::default()).await;
    eventually(
        "after handled by the same consumer loop",
        Duration::from_secs(60),
        || async {
            handler
                .done
                .lock()
                .await
                .contains(&"after".to_owned())
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        handler
            .done
            .lock()
            .await
            .iter()
            .filter(|d| *d == "before")
            .count(),
        1
    );
    run.shutdown.cancel();
    run.task.await.expect("consumer ends");
    conn.close(200, "bye".into()).await.ok();
    env.cleanup().await;
}

async fn restart_broker() -> bool {
    let stop = tokio::process::Command::new("rabbitmqctl")
        .arg("stop_app")
        .status()
        .await;
    let start = tokio::process::Command::new("rabbitmqctl")
        .arg("start_app")
        .status()
        .await;
    // Always try to bring it back, whatever stop said.
    matches!(stop, Ok(s) if s.success()) && matches!(start, Ok(s) if s.success())
}

/// Batches that finish out of order: the one holding the first message waits until a
/// later batch has finished (so the later acks must wait for it), and a message in the
/// middle is dead-lettered (its original acked on its own).
#[derive(Default)]
struct OutOfOrder {
    seen: Mutex<Vec<(String, bool)>>,
    later_done: Notify,
    first_waited: Mutex<bool>,
}

impl consumer::BatchHandler for OutOfOrder {
    async fn handle_batch(&self, msgs: &[Incoming]) -> consumer::Outcomes {
        let bodies: Vec<String> = msgs
            .iter()
            .map(|m| String::from_utf8_lossy(&m.body).to_string())
            .collect();
        if bodies.iter().any(|b| b == "m-000") {
            let waited = tokio::time::timeout(WAIT, self.later_done.notified())
                .await
                .is_ok();
            *self.first_waited.lock().await = waited;
        }
        let mut seen = self.seen.lock().await;
        for (body, msg) in bodies.iter().zip(msgs) {
            seen.push((body.clone(), msg.redelivered));
        }
        drop(seen);
        if !bodies.iter().any(|b| b == "m-000") {
            self.later_done.notify_one();
        }
        bodies
            .iter()
            .map(|b| match b.as_str() {
                "m-050" => Err(HandlerError::permanent(anyhow::anyhow!("cannot parse"))),
                _ => Ok(()),
            })
            .collect::<Vec<_>>()
            .into()
    }
}

#[tokio::test]
async fn batches_finishing_out_of_order_are_all_acked_once() {
    let env = TestEnv::new().await;
    let conn = declared(&env).await;
    let bodies: Vec<String> = (0..120).map(|i| format!("m-{i:03}")).collect();
    for body in &bodies {
        publish_raw(&conn, body, FieldTable::default()).await;
    }
    let handler = Arc::new(OutOfOrder::default());
    let shutdown = CancellationToken::new();
    let mut registry = prometheus_client::registry::Registry::default();
    let config = ConsumerConfig {
        batch: 8,
        concurrency: 4,
        prefetch: 32,
        ..ConsumerConfig::new(&env.amqp_url, spec(), vec![spec()])
    };
    let task = tokio::spawn(consumer::run_batched(
        config,
        handler.clone(),
        ConsumerMetrics::register(&mut registry),
        ReadyFlag::default(),
        shutdown.clone(),
    ));
    eventually("every message handled", WAIT, || async {
        (handler.seen.lock().await.len() >= bodies.len()).then_some(())
    })
    .await;
    assert!(
        *handler.first_waited.lock().await,
        "the first batch finished after a later one"
    );
    // Acks (and the dead letter) go out before the consumer stops; once it has, nothing
    // is left in the queue to come back.
    shutdown.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("stops")
        .expect("no panic");
    let seen = handler.seen.lock().await.clone();
    let mut handled: Vec<String> = seen.iter().map(|(b, _)| b.clone()).collect();
    handled.sort();
    assert_eq!(handled, bodies, "each message handled exactly once");
    assert!(seen.iter().all(|(_, redelivered)| !redelivered));
    assert!(
        get_one(&conn, "work").await.is_none(),
        "every message acked"
    );
    let dead = get_one(&conn, "work.dead").await.expect("the dead letter");
    assert_eq!(dead.delivery.data, b"m-050");
    assert!(
        get_one(&conn, "work.dead").await.is_none(),
        "one dead letter"
    );
    conn.close(200, "bye".into()).await.ok();
    env.cleanup().await;
}
