//! The broker as tests see it: one connection to the test's own vhost with a
//! confirming channel. Publishing returns only once the broker confirmed the
//! message (within [`CONFIRM_WAIT`], which allows for a busy machine); taking reads
//! one message from a queue; a capture queue of the test's own sees the events as a
//! third party would.

use lapin::options::{
    BasicGetOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;

use super::{CONFIRM_WAIT, TestEnv, WAIT, eventually};
use crate::events::{EXCHANGE, Event};

/// A confirming publisher onto `meter.events` and a reader of queues.
pub struct Broker {
    conn: lapin::Connection,
    channel: lapin::Channel,
}

/// A message taken from a queue.
#[derive(Debug, Clone)]
pub struct Taken {
    pub body: Vec<u8>,
    pub headers: FieldTable,
    pub properties: lapin::BasicProperties,
}

impl Taken {
    /// A string header (`traceparent`, `x-death` reasons are not strings).
    pub fn header(&self, key: &str) -> Option<String> {
        crate::tracecontext::header_str(&self.headers, key).map(str::to_owned)
    }

    /// The body as an event; panics on a body that is not one.
    pub fn event(&self) -> Event {
        Event::from_json(&self.body).expect("a valid event")
    }
}

impl Broker {
    /// Connects to the test's vhost and declares the system's topology (idempotent,
    /// with the same arguments as the services).
    pub async fn connect(env: &TestEnv) -> Broker {
        let conn = crate::broker::connect(
            &env.amqp_url,
            "test-broker",
            &crate::topology::system_queues(),
        )
        .await
        .expect("broker reachable");
        let channel = conn.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("publisher confirms");
        Broker { conn, channel }
    }

    /// Publishes an event under its routing key, confirmed, with no headers: unlike
    /// the services' publisher it adds no routing filter marks, so the event reaches
    /// every queue bound to its key.
    pub async fn publish(&self, event: &Event) {
        self.publish_with_headers(event, FieldTable::default())
            .await;
    }

    /// As [`Broker::publish`], with the given headers (e.g. a `traceparent`).
    pub async fn publish_with_headers(&self, event: &Event, headers: FieldTable) {
        self.publish_bytes(
            event.routing_key(),
            &event.to_json(),
            event.message_id(),
            headers,
        )
        .await;
    }

    /// Publishes raw bytes under a routing key (poison messages).
    pub async fn publish_raw(&self, routing_key: &str, body: &[u8]) {
        self.publish_bytes(routing_key, body, "raw", FieldTable::default())
            .await;
    }

    async fn publish_bytes(
        &self,
        routing_key: &str,
        body: &[u8],
        message_id: &str,
        headers: FieldTable,
    ) {
        crate::broker::publish_confirmed(
            &self.channel,
            EXCHANGE,
            routing_key,
            body,
            crate::broker::persistent_json(message_id, headers),
            CONFIRM_WAIT,
        )
        .await
        .unwrap_or_else(|e| panic!("publish {routing_key} confirmed: {e}"));
    }

    /// Takes one message from `queue`, if one is there now.
    pub async fn take(&self, queue: &str) -> Option<Taken> {
        let got = self
            .channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap_or_else(|e| panic!("basic.get on {queue}: {e}"))?;
        let properties = got.delivery.properties.clone();
        Some(Taken {
            body: got.delivery.data.clone(),
            headers: properties.headers().clone().unwrap_or_default(),
            properties,
        })
    }

    /// Waits for a message in `queue`.
    pub async fn wait_take(&self, queue: &str) -> Taken {
        eventually(&format!("a message in {queue}"), WAIT, || self.take(queue)).await
    }

    /// Declares a durable queue of the test's own bound to `meter.events` under
    /// `binding` (e.g. `reading.*`), as a third party would.
    pub async fn capture(&self, queue: &str, binding: &str) {
        self.channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("declare {queue}: {e}"));
        self.channel
            .queue_bind(
                queue.into(),
                EXCHANGE.into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("bind {queue} to {binding}: {e}"));
    }

    pub async fn close(self) {
        let _ = self.conn.close(200, "bye".into()).await;
    }
}
