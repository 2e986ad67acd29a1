//! A third party on the system's broker (SPEC §4.2): loadgen's own queue bound to
//! `meter.events` for `reading.accepted` and `reading.rejected`, each delivery stamped
//! with `Instant::now()` as it arrives. The queue is a light one (classic, exclusive,
//! not durable, no acks) so that watching costs the broker as little as possible.
//! `AMQP_URL` may list a cluster's nodes (SPEC §4): the observer connects to one of
//! them as the services do; every replica of every service publishes to the same
//! exchange, so one queue sees the events of all of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::StreamExt;
use lapin::Connection;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use shared::events::{EXCHANGE, READING_ACCEPTED, READING_REJECTED};

const QUEUE: &str = "loadgen.observer";

/// One event as it arrived.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub message_id: String,
    pub accepted: bool,
    pub reason: Option<String>,
    /// The broker delivered it again (not a second event of the system).
    pub redelivered: bool,
}

pub struct Observer {
    seen: Arc<Mutex<Vec<Seen>>>,
    count: Arc<AtomicUsize>,
    /// Deliveries that were not JSON with a `message_id`.
    undecodable: Arc<AtomicUsize>,
    /// The consumer's stream ended or failed (the link was lost).
    broken: Arc<AtomicUsize>,
    conn: Connection,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Binds the queue and starts consuming; events published from now on are seen.
    pub async fn start(amqp_url: &str) -> anyhow::Result<Observer> {
        let conn = shared::broker::connect(amqp_url, "loadgen-observer", &[]).await?;
        let channel = conn.create_channel().await?;
        // The exchanges exist once a service has started; declaring is idempotent.
        shared::topology::declare(&channel, &[]).await?;
        let options = QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(QUEUE.into(), options, FieldTable::default())
            .await?;
        for key in [READING_ACCEPTED, READING_REJECTED] {
            channel
                .queue_bind(
                    QUEUE.into(),
                    EXCHANGE.into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let mut consumer = channel
            .basic_consume(
                QUEUE.into(),
                "loadgen-observer".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let undecodable = Arc::new(AtomicUsize::new(0));
        let broken = Arc::new(AtomicUsize::new(0));
        let task = {
            let (seen, count, undecodable, broken) = (
                seen.clone(),
                count.clone(),
                undecodable.clone(),
                broken.clone(),
            );
            tokio::spawn(async move {
                // Keep the channel alive as long as the consumer.
                let _channel = channel;
                while let Some(delivery) = consumer.next().await {
                    let at = Instant::now();
                    let Ok(delivery) = delivery else {
                        broken.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let body: serde_json::Value =
                        serde_json::from_slice(&delivery.data).unwrap_or(serde_json::Value::Null);
                    let Some(message_id) = body["message_id"].as_str() else {
                        undecodable.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    let event = Seen {
                        at,
                        message_id: message_id.to_owned(),
                        accepted: delivery.routing_key.as_str() == READING_ACCEPTED,
                        reason: body["reason"].as_str().map(str::to_owned),
                        redelivered: delivery.redelivered,
                    };
                    if let Ok(mut s) = seen.lock() {
                        s.push(event);
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
                broken.fetch_add(1, Ordering::Relaxed);
            })
        };
        Ok(Observer {
            seen,
            count,
            undecodable,
            broken,
            conn,
            task,
        })
    }

    /// Events seen so far (duplicates included).
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn undecodable(&self) -> usize {
        self.undecodable.load(Ordering::Relaxed)
    }

    /// Whether the link to the broker was lost during the run (events may be missing).
    pub fn broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed) > 0
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub async fn stop(self) {
        let _ = self.conn.close(200, "loadgen done".into()).await;
        self.task.abort();
    }
}
