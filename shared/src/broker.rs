//! Connections to RabbitMQ that heal themselves, and a publisher that counts a message
//! as sent only when the broker confirmed it.
//!
//! lapin's own auto-recovery is not relied on (its tracker shows recovery bugs after
//! broker restarts): a supervisor task owns the connection, notices its loss (an
//! error event, a closed status, or a failed publish), and builds a new connection,
//! topology and channel with capped, jittered back-off until shutdown.
//!
//! `AMQP_URL` may list several nodes of one cluster ([`Nodes`]): [`connect`] tries
//! them in turn from a random one, so the reconnect loops fail over to a live node.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::StreamExt;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use tokio::sync::{Notify, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::{EXCHANGE, Event};
use crate::topology::{self, QueueSpec};
use crate::tracecontext;

pub mod nodes;
pub use nodes::{Nodes, NodesError};

/// Readiness of one broker link, shared with `/readyz`.
#[derive(Debug, Clone, Default)]
pub struct ReadyFlag(Arc<AtomicBool>);

impl ReadyFlag {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Back-off between reconnection attempts: 100 ms doubling to 10 s, with jitter so
/// that a fleet of pods does not reconnect in lock-step after a broker restart.
pub fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build()
}

/// How long one node may take to accept a connection and the topology before the
/// next node is tried (a host that drops packets would otherwise hold the attempt
/// for the kernel's TCP timeout, minutes).
const NODE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to one of the nodes `urls` lists (one URL, or several comma-separated:
/// [`Nodes`]), trying each once from a random one, and declares the topology.
/// Returns the last node's error when none answered.
pub async fn connect(urls: &str, name: &str, queues: &[QueueSpec]) -> lapin::Result<Connection> {
    let nodes = Nodes::parse(urls)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let mut last = None;
    for url in nodes.in_turn() {
        let node = nodes::redact(url);
        match tokio::time::timeout(NODE_TIMEOUT, connect_node(url, name, queues)).await {
            Ok(Ok(conn)) => {
                if nodes.len() > 1 {
                    tracing::info!(connection = %name, %node, "connected to broker node");
                }
                return Ok(conn);
            }
            Ok(Err(e)) => {
                tracing::warn!(connection = %name, %node, error = %e, "broker node did not answer");
                last = Some(e);
            }
            Err(_) => {
                tracing::warn!(connection = %name, %node, timeout = ?NODE_TIMEOUT, "broker node did not answer in time");
                last = Some(
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("broker node {node} did not answer within {NODE_TIMEOUT:?}"),
                    )
                    .into(),
                );
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("AMQP_URL lists no node").into()))
}

/// Opens a connection to one node and declares the topology on a fresh channel.
async fn connect_node(url: &str, name: &str, queues: &[QueueSpec]) -> lapin::Result<Connection> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let conn = Connection::connect(url, props).await?;
    let channel = conn.create_channel().await?;
    topology::declare(&channel, queues).await?;
    // The declaring channel is not needed any more; a failure to close is harmless.
    close_quietly(channel.close(200, "topology declared".into())).await;
    Ok(conn)
}

/// How long closing a channel or connection may take before it is given up.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Closes a channel or connection, giving up after [`CLOSE_TIMEOUT`]: on a link the
/// broker has just dropped, lapin's close can wait for an answer that never comes
/// (seen: a publisher whose supervisor never reconnected after a broker restart).
pub async fn close_quietly(close: impl std::future::Future<Output = lapin::Result<()>>) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, close).await;
}

/// Resolves when the connection is lost (an error event or a closed status).
pub async fn lost(conn: &Connection) {
    let mut events = conn.events_listener();
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(lapin::Event::Error(e)) => {
                    tracing::warn!(error = %e, "broker connection lost");
                    return;
                }
                Some(_) => {}
                None => return,
            },
            _ = poll.tick() => {
                let status = conn.status();
                if status.closed() || status.errored() || status.closing() {
                    tracing::warn!("broker connection closed");
                    return;
                }
            }
        }
    }
}

/// Why a publish did not count as sent. Every variant means "not known to be stored":
/// the caller keeps the message (ingest answers 503, the outbox keeps the row).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("not connected to the broker")]
    Unavailable,
    #[error("broker refused the publish: {0}")]
    Channel(#[from] lapin::Error),
    #[error("broker did not confirm within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("broker nacked the message")]
    Nacked,
    #[error("no queue is bound for routing key `{0}`")]
    Unroutable(String),
}

/// Publishes events to `meter.events` with publisher confirms and `mandatory`.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<PublisherInner>,
}

struct PublisherInner {
    channel: RwLock<Option<Channel>>,
    /// Woken by a failed publish, so the supervisor rebuilds the link at once.
    broken: Notify,
    ready: ReadyFlag,
    confirm_timeout: Duration,
}

impl Publisher {
    /// Starts the supervisor that keeps a confirming channel open; returns at once.
    pub fn start(
        url: String,
        name: String,
        queues: Vec<QueueSpec>,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Publisher {
        let publisher = Publisher {
            inner: Arc::new(PublisherInner {
                channel: RwLock::new(None),
                broken: Notify::new(),
                ready: ReadyFlag::default(),
                confirm_timeout: Duration::from_secs(5),
            }),
        };
        let supervisor = publisher.clone();
        tracker.spawn(async move { supervisor.supervise(url, name, queues, shutdown).await });
        publisher
    }

    pub fn ready(&self) -> ReadyFlag {
        self.inner.ready.clone()
    }

    async fn supervise(
        self,
        url: String,
        name: String,
        queues: Vec<QueueSpec>,
        shutdown: CancellationToken,
    ) {
        let mut backoff = reconnect_backoff();
        while !shutdown.is_cancelled() {
            match self.open(&url, &name, &queues).await {
                Ok(conn) => {
                    backoff = reconnect_backoff();
                    self.inner.ready.set(true);
                    tracing::info!(connection = %name, "publisher connected");
                    tokio::select! {
                        _ = lost(&conn) => {}
                        _ = self.inner.broken.notified() => {
                            tracing::warn!(connection = %name, "publish failed; reconnecting");
                        }
                        _ = shutdown.cancelled() => {}
                    }
                    self.inner.ready.set(false);
                    *self.inner.channel.write().await = None;
                    close_quietly(conn.close(200, "bye".into())).await;
                }
                Err(e) => tracing::warn!(connection = %name, error = %e, "cannot reach broker"),
            }
            let delay = backoff.next().unwrap_or(Duration::from_secs(10));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    async fn open(&self, url: &str, name: &str, queues: &[QueueSpec]) -> lapin::Result<Connection> {
        let conn = connect(url, name, queues).await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        *self.inner.channel.write().await = Some(channel);
        Ok(conn)
    }

    /// Publishes an event to `meter.events` under its routing key, with its
    /// [`topology::routing_headers`]. `Ok` means the broker confirmed it as routed and
    /// persisted.
    pub async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        self.publish_to(
            EXCHANGE,
            event.routing_key(),
            &event.to_json(),
            event.message_id(),
            topology::routing_headers(event),
        )
        .await
    }

    /// Publishes raw JSON bytes; the current span's trace context is added to `headers`.
    pub async fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        message_id: &str,
        mut headers: FieldTable,
    ) -> Result<(), PublishError> {
        tracecontext::inject_current(&mut headers);
        let props = persistent_json(message_id, headers);
        let channel = self.inner.channel.read().await.clone();
        let Some(channel) = channel else {
            return Err(PublishError::Unavailable);
        };
        let result = publish_confirmed(
            &channel,
            exchange,
            routing_key,
            body,
            props,
            self.inner.confirm_timeout,
        )
        .await;
        if matches!(
            result,
            Err(PublishError::Channel(_) | PublishError::ConfirmTimeout(_))
        ) {
            self.inner.broken.notify_one();
        }
        result
    }
}

/// The properties of every message the system publishes.
pub fn persistent_json(message_id: &str, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(message_id.into())
        .with_headers(headers)
}

/// One publish with `mandatory`, awaiting the broker's confirm within `timeout`.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
    timeout: Duration,
) -> Result<(), PublishError> {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let confirm = channel
        .basic_publish(exchange.into(), routing_key.into(), options, body, props)
        .await?;
    match tokio::time::timeout(timeout, confirm).await {
        Err(_) => Err(PublishError::ConfirmTimeout(timeout)),
        Ok(Err(e)) => Err(PublishError::Channel(e)),
        Ok(Ok(Confirmation::Ack(None))) => Ok(()),
        Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Unroutable(routing_key.to_owned())),
        Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
        // confirm_select is always on for our channels; treat its absence as unknown.
        Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Nacked),
    }
}

/// An integer header, whichever AMQP integer type the publisher chose.
pub fn header_int(headers: &FieldTable, key: &str) -> Option<i64> {
    match headers.inner().get(key)? {
        AMQPValue::LongLongInt(v) => Some(*v),
        AMQPValue::LongInt(v) => Some(i64::from(*v)),
        AMQPValue::LongUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortUInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortInt(v) => Some(i64::from(*v)),
        AMQPValue::ShortShortUInt(v) => Some(i64::from(*v)),
        _ => None,
    }
}
