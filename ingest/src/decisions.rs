//! How the web form's answer page learns the validator's decision without reading
//! another service's database: each ingest process binds its own exclusive,
//! auto-delete, server-named queue to `reading.accepted` and `reading.rejected` on
//! `meter.events` (a third party's queue, SPEC §4.2), keeps only the decisions of the
//! channels that wait for them — the web form (`web`) and the personal cabinet
//! (`cabinet`) — and broadcasts them in-process. `POST /form` and `POST /v1/readings`
//! subscribe before they publish and wait up to [`WAIT`] for their message id; past that the page says the
//! reading is being checked (and that the result comes by e-mail when one was given).
//! Nothing is stored: a decision nobody waits for is dropped. Each replica has its own
//! queue, so whichever replica answered the post sees the decision.
//!
//! Every replica thus receives every decision of the system, the SMS ones included, so
//! both ends are bounded: the broker hands this process at most [`PREFETCH`]
//! decisions it has not acked (a consumer without acks would be pushed everything, and
//! lapin buffers what it is pushed without limit), and the queue keeps at most
//! [`MAX_QUEUED`], none older than [`WAIT`] — past that nobody waits for them, so the
//! oldest are dropped (`x-overflow: drop-head`). Queue arguments, not a policy: the
//! queue is new with each connection, so its arguments can never be frozen.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use shared::events::{Channel, EXCHANGE, Event, READING_ACCEPTED, READING_REJECTED, RejectReason};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// How long the answer page waits for the decision.
pub const WAIT: Duration = Duration::from_secs(5);
/// Decisions delivered to this process and not yet acked, at most.
pub const PREFETCH: u16 = 200;
/// Decisions waiting in this process's queue at most; past it the oldest go.
pub const MAX_QUEUED: i64 = 5_000;

/// A web form's decision, as the answer page shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Accepted {
        account: String,
        period: String,
    },
    Rejected {
        reason: RejectReason,
        reply: Option<String>,
    },
}

/// Whether someone in ingest waits for this channel's decisions.
fn waits(channel: Channel) -> bool {
    matches!(channel, Channel::Web | Channel::Cabinet)
}

#[derive(Clone)]
pub struct Decisions {
    tx: broadcast::Sender<(String, Decision)>,
}

impl Default for Decisions {
    fn default() -> Self {
        Decisions {
            tx: broadcast::channel(1024).0,
        }
    }
}

impl Decisions {
    pub fn subscribe(&self) -> broadcast::Receiver<(String, Decision)> {
        self.tx.subscribe()
    }

    /// Waits for `message_id`'s decision on `rx` (subscribed before the publish).
    pub async fn wait(
        mut rx: broadcast::Receiver<(String, Decision)>,
        message_id: &str,
        wait: Duration,
    ) -> Option<Decision> {
        tokio::time::timeout(wait, async {
            loop {
                match rx.recv().await {
                    Ok((id, d)) if id == message_id => return Some(d),
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    fn offer(&self, body: &[u8]) {
        let decision = match Event::from_json(body) {
            Ok(Event::ReadingAccepted(a)) if waits(a.channel) => (
                a.message_id,
                Decision::Accepted {
                    account: a.account,
                    period: a.period.to_string(),
                },
            ),
            Ok(Event::ReadingRejected(r)) if waits(r.channel) => (
                r.message_id,
                Decision::Rejected {
                    reason: r.reason,
                    reply: r.reply,
                },
            ),
            _ => return,
        };
        // No receiver: nobody is waiting for it.
        let _ = self.tx.send(decision);
    }

    /// Follows the decisions until `stop`, reconnecting when the link is lost.
    pub async fn follow(self, amqp_url: String, stop: CancellationToken) {
        let mut backoff = shared::broker::reconnect_backoff();
        loop {
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.follow_once(&amqp_url) => r,
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "web form decisions: broker link lost; reconnecting");
            }
            let pause = backoff.next().unwrap_or(Duration::from_secs(5));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn follow_once(&self, amqp_url: &str) -> lapin::Result<()> {
        let conn = shared::broker::connect(amqp_url, "ingest-form-decisions", &[]).await?;
        let channel = conn.create_channel().await?;
        let queue = declare_queue(&channel).await?;
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await?;
        let mut consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "ingest-form".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!("web form decisions: following reading.accepted / reading.rejected");
        while let Some(delivery) = consumer.next().await {
            let delivery = delivery?;
            self.offer(&delivery.data);
            delivery.acker.ack(BasicAckOptions::default()).await?;
        }
        Err(std::io::Error::other("consumer ended").into())
    }
}

/// Declares this process's queue of decisions (exclusive to `channel`'s connection,
/// deleted with it) with its bounds, bound to both decisions; returns its name.
pub async fn declare_queue(channel: &lapin::Channel) -> lapin::Result<String> {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(MAX_QUEUED));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("drop-head".into()),
    );
    let ttl_ms = i64::try_from(WAIT.as_millis()).unwrap_or(i64::MAX);
    args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl_ms));
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await?;
    let name = queue.name().as_str().to_owned();
    for key in [READING_ACCEPTED, READING_REJECTED] {
        channel
            .queue_bind(
                name.as_str().into(),
                EXCHANGE.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(name)
}
