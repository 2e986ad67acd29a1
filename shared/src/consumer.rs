//! The consumer loop every service runs: manual acks, prefetch, bounded concurrency,
//! and a handler outcome that decides the message's fate:
//!
//! | handler returns            | the message                                         |
//! |----------------------------|-----------------------------------------------------|
//! | `Ok(())`                   | acked (with its neighbours: one `multiple` ack)     |
//! | `Err(Transient)`           | re-published to a TTL retry queue (delayed retry), then acked; dead-lettered once the attempts are spent |
//! | `Err(RetryAfter)`          | the same, but back when the handler asked (a peer's `Retry-After`), not on the schedule (below) |
//! | `Err(RetryWithin)`         | the same, on the schedule but never later than the handler asked (a lease that ends) |
//! | `Err(Permanent)`           | re-published to the dead-letter queue with the reason, then acked |
//!
//! Nothing is ever requeued in a loop: a consumer that crashes before acking gets the
//! message back from the broker, and the quorum queue's delivery limit dead-letters a
//! message that keeps crashing it. The loop reconnects by itself and stops on shutdown
//! after the messages in hand are finished and acked.
//!
//! `RetryAfter` and `RetryWithin` are for a handler that knows when trying again can
//! help (a peer said `Retry-After`; another worker's lease ends): the back-off schedule
//! alone would bring the message back too early (spending an attempt for nothing) or
//! minutes too late. The retry queues have fixed delays, so a message whose delay is
//! not one of them carries its due time ([`NOT_BEFORE_HEADER`]) and goes to the
//! longest delay that does not pass it; one that comes back early is parked again for
//! what is left (without calling the handler or spending an attempt), so it reaches
//! the handler within the shortest delay (1 s) after its due time.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use lapin::Channel;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::broker::{self, ReadyFlag, close_quietly, header_int, publish_confirmed};
use crate::metrics::ConsumerMetrics;
use crate::topology::{DEAD_LETTER_EXCHANGE, QueueSpec};
use crate::tracecontext::{self, header_str};

/// Header: which attempt this delivery is (1 = first).
pub const ATTEMPT_HEADER: &str = "x-attempt";
/// Header: the routing key the message was first published with (a retry comes back
/// through the default exchange, which would otherwise show the queue's name).
pub const ROUTING_KEY_HEADER: &str = "x-original-routing-key";
/// Header: the last error, on retried and dead-lettered messages.
pub const ERROR_HEADER: &str = "x-last-error";
/// Header: when that error happened (Unix time in milliseconds), so that the console
/// can say when a dead letter died.
pub const FAILED_AT_HEADER: &str = "x-failed-at";
/// Header: on a retry whose delay is not a retry queue's, when it is due (Unix time in
/// milliseconds).
pub const NOT_BEFORE_HEADER: &str = "x-not-before";
/// A delivery this close to its due time is due: the retry queues' TTLs run on the
/// broker's wall clock (in milliseconds, and moved by NTP like any wall clock), so a
/// hop can end a few milliseconds early, and another trip through a retry queue (at
/// least 1 s) would make it far later instead.
pub const DUE_TOLERANCE: Duration = Duration::from_millis(50);

/// How long in-flight messages may run on after the broker link was lost.
const LINK_LOST_DRAIN: Duration = Duration::from_secs(5);
/// An ack (or a retry/dead-letter copy and its ack) that takes longer has hung.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A message as the handler sees it.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub body: Vec<u8>,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub headers: FieldTable,
    /// The broker redelivered it (a consumer died before acking).
    pub redelivered: bool,
    pub attempt: u32,
    /// The consumer span of this message, already a child of the trace it arrived
    /// with: a batch handler enters it for work done on this message alone.
    pub span: tracing::Span,
}

/// A handler's failure, split by whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// A peer or resource is unavailable now: retry later with back-off.
    #[error("retry later: {0:#}")]
    Transient(anyhow::Error),
    /// As `Transient`, but trying again cannot help before `after` has passed (a peer
    /// said `Retry-After`): retried then, not on the back-off schedule.
    #[error("retry in {after:?}: {error:#}")]
    RetryAfter {
        after: Duration,
        error: anyhow::Error,
    },
    /// As `Transient`, but no later than `within`: by then what blocks it is gone
    /// (another worker's lease ends). Earlier tries on the schedule may still succeed
    /// (the other worker finishes), so the schedule's delay is kept when it is shorter.
    #[error("retry within {within:?}: {error:#}")]
    RetryWithin {
        within: Duration,
        error: anyhow::Error,
    },
    /// The message can never be processed (malformed, refused by the peer).
    #[error("never succeeds: {0:#}")]
    Permanent(anyhow::Error),
}

impl HandlerError {
    pub fn transient(e: impl Into<anyhow::Error>) -> Self {
        HandlerError::Transient(e.into())
    }

    pub fn permanent(e: impl Into<anyhow::Error>) -> Self {
        HandlerError::Permanent(e.into())
    }

    /// A database error, judged once ([`crate::db::classify`]): `Permanent` when the
    /// data is what the database refuses (dead-lettered at once, with the reason),
    /// else `Transient`. The error is shared (one cause for the messages of a batch),
    /// not copied as text; `doing` says what was being done.
    pub fn database(
        e: &Arc<sqlx::Error>,
        doing: impl std::fmt::Display + Send + Sync + 'static,
    ) -> Self {
        let permanent = crate::db::is_permanent(e);
        let error = anyhow::Error::new(Arc::clone(e)).context(doing);
        if permanent {
            HandlerError::Permanent(error)
        } else {
            HandlerError::Transient(error)
        }
    }
}

/// A service's message logic.
pub trait Handler: Send + Sync + 'static {
    fn handle(&self, msg: &Incoming) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// A service's message logic, several deliveries at a time (one database transaction
/// for many messages, say). Returns the outcome of each message ([`Outcomes`]); a
/// message left without one is retried later.
pub trait BatchHandler: Send + Sync + 'static {
    fn handle_batch(&self, msgs: &[Incoming]) -> impl Future<Output = Outcomes> + Send;
}

/// The outcome of each message of a batch, filled in as the handler decides them.
/// A message the handler never came to is retried later: an answer can be missing,
/// never wrong.
#[derive(Debug)]
pub struct Outcomes(Vec<Option<Result<(), HandlerError>>>);

impl Outcomes {
    /// A batch of `n` messages, none decided yet. (The handler is given the batch's
    /// length: `Outcomes` never holds more or fewer answers than messages.)
    pub fn new(n: usize) -> Self {
        Outcomes((0..n).map(|_| None).collect())
    }

    /// The `i`-th message's outcome (a later call for the same message wins).
    pub fn set(&mut self, i: usize, outcome: Result<(), HandlerError>) {
        if let Some(slot) = self.0.get_mut(i) {
            *slot = Some(outcome);
        }
    }

    /// Whether the `i`-th message has its outcome.
    pub fn is_settled(&self, i: usize) -> bool {
        self.0.get(i).is_some_and(Option::is_some)
    }

    /// The `i`-th message's outcome, if it has one.
    pub fn get(&self, i: usize) -> Option<&Result<(), HandlerError>> {
        self.0.get(i).and_then(Option::as_ref)
    }

    /// The answers in order, a transient error for every message without one.
    pub fn into_results(self) -> Vec<Result<(), HandlerError>> {
        self.0
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(HandlerError::transient(anyhow::anyhow!(
                        "no outcome for the message"
                    )))
                })
            })
            .collect()
    }
}

impl From<Vec<Result<(), HandlerError>>> for Outcomes {
    /// Every message's outcome, in order.
    fn from(results: Vec<Result<(), HandlerError>>) -> Self {
        Outcomes(results.into_iter().map(Some).collect())
    }
}

/// A [`Handler`] run as batches of one.
struct One<H>(Arc<H>);

impl<H: Handler> BatchHandler for One<H> {
    async fn handle_batch(&self, msgs: &[Incoming]) -> Outcomes {
        let mut outcomes = Outcomes::new(msgs.len());
        for (i, msg) in msgs.iter().enumerate() {
            outcomes.set(i, self.0.handle(msg).instrument(msg.span.clone()).await);
        }
        outcomes
    }
}

/// How one consumer runs.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub url: String,
    /// The queue consumed; declared with the rest of `topology`.
    pub queue: QueueSpec,
    /// Everything this service declares at start (normally `system_queues()`).
    pub topology: Vec<QueueSpec>,
    /// Unacked deliveries the broker may send ahead.
    pub prefetch: u16,
    /// Batches handled at once.
    pub concurrency: usize,
    /// Most deliveries handed to the handler at once. A batch is whatever has arrived
    /// (up to this many): under light load batches are of one and add no delay.
    pub batch: usize,
}

impl ConsumerConfig {
    pub fn new(url: &str, queue: QueueSpec, topology: Vec<QueueSpec>) -> Self {
        ConsumerConfig {
            url: url.to_owned(),
            queue,
            topology,
            prefetch: 64,
            concurrency: 16,
            batch: 1,
        }
    }
}

/// Runs the consumer until `shutdown`, one message per handler call; reconnects with
/// back-off whenever the broker connection is lost.
pub async fn run<H: Handler>(
    config: ConsumerConfig,
    handler: Arc<H>,
    metrics: ConsumerMetrics,
    ready: ReadyFlag,
    shutdown: CancellationToken,
) {
    let config = ConsumerConfig { batch: 1, ..config };
    run_batched(config, Arc::new(One(handler)), metrics, ready, shutdown).await
}

/// Runs the consumer until `shutdown`, handing the handler up to `config.batch`
/// deliveries at a time; reconnects with back-off whenever the broker connection is
/// lost.
pub async fn run_batched<H: BatchHandler>(
    config: ConsumerConfig,
    handler: Arc<H>,
    metrics: ConsumerMetrics,
    ready: ReadyFlag,
    shutdown: CancellationToken,
) {
    let mut backoff = broker::reconnect_backoff();
    while !shutdown.is_cancelled() {
        match consume_once(&config, &handler, &metrics, &ready, &shutdown).await {
            Ok(()) => backoff = broker::reconnect_backoff(),
            Err(e) => {
                tracing::warn!(queue = %config.queue.name, error = %e, "consumer lost its broker link")
            }
        }
        ready.set(false);
        if shutdown.is_cancelled() {
            break;
        }
        let delay = backoff.next().unwrap_or(Duration::from_secs(10));
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    tracing::info!(queue = %config.queue.name, "consumer stopped");
}

async fn consume_once<H: BatchHandler>(
    config: &ConsumerConfig,
    handler: &Arc<H>,
    metrics: &ConsumerMetrics,
    ready: &ReadyFlag,
    shutdown: &CancellationToken,
) -> lapin::Result<()> {
    let name = format!("{}-consumer", config.queue.name);
    let conn = Arc::new(broker::connect(&config.url, &name, &config.topology).await?);
    let consume_channel = conn.create_channel().await?;
    consume_channel
        .basic_qos(config.prefetch, BasicQosOptions::default())
        .await?;
    let publish_channel = conn.create_channel().await?;
    publish_channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let consumer = consume_channel
        .basic_consume(
            config.queue.name.as_str().into(),
            name.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    ready.set(true);
    tracing::info!(queue = %config.queue.name, "consuming");

    let link_lost = CancellationToken::new();
    let watcher = {
        let link_lost = link_lost.clone();
        let conn_status = conn.clone();
        tokio::spawn(async move {
            broker::lost(&conn_status).await;
            link_lost.cancel();
        })
    };
    let stop = {
        let shutdown = shutdown.clone();
        let link_lost = link_lost.clone();
        async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = link_lost.cancelled() => {}
            }
        }
    };
    let failure: std::sync::Mutex<Option<lapin::Error>> = std::sync::Mutex::new(None);
    let acks = Acks::default();
    let channels = Channels {
        consume: &consume_channel,
        publish: &publish_channel,
        acks: &acks,
        link_lost: &link_lost,
    };
    let mut processing = Box::pin(
        consumer
            .take_until(stop)
            .ready_chunks(config.batch.max(1))
            .for_each_concurrent(config.concurrency, |chunk| async {
                let mut deliveries = Vec::with_capacity(chunk.len());
                for delivery in chunk {
                    match delivery {
                        Ok(delivery) => deliveries.push(delivery),
                        Err(e) => {
                            if let Ok(mut slot) = failure.lock() {
                                slot.get_or_insert(e);
                            }
                            link_lost.cancel();
                        }
                    }
                }
                if !deliveries.is_empty() {
                    process(config, handler.as_ref(), metrics, &channels, deliveries).await
                }
            }),
    );
    // After the link is lost nothing in hand can be acked any more, and an ack on a dead
    // connection may never resolve: give in-flight work a short while, then abandon it
    // (its effects are idempotent and the broker redelivers the messages) and reconnect.
    let abandon = async {
        link_lost.cancelled().await;
        tokio::time::sleep(LINK_LOST_DRAIN).await;
    };
    tokio::select! {
        _ = &mut processing => {}
        _ = abandon => {
            tracing::warn!(queue = %config.queue.name, "in-flight messages abandoned after the broker link was lost; the broker redelivers them");
        }
    }
    drop(processing);
    watcher.abort();
    // In-flight messages are finished and acked by now; unstarted prefetched ones go
    // back to the queue when the channel closes.
    close_quietly(consume_channel.close(200, "shutdown".into())).await;
    close_quietly(publish_channel.close(200, "shutdown".into())).await;
    close_quietly(conn.close(200, "bye".into())).await;
    let failure = failure.into_inner().ok().flatten();
    match failure {
        Some(e) => Err(e),
        None if link_lost.is_cancelled() && !shutdown.is_cancelled() => Err(lapin::Error::from(
            lapin::ErrorKind::InvalidConnectionState(lapin::ConnectionState::Closed),
        )),
        None => Ok(()),
    }
}

fn incoming(delivery: &Delivery, queue: &str) -> Incoming {
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    let routing_key = header_str(&headers, ROUTING_KEY_HEADER)
        .map(str::to_owned)
        .unwrap_or_else(|| delivery.routing_key.to_string());
    let attempt = header_int(&headers, ATTEMPT_HEADER)
        .and_then(|a| u32::try_from(a).ok())
        .unwrap_or(1)
        .max(1);
    let message_id = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|m| m.to_string());
    let span = tracing::info_span!(
        "process",
        otel.name = format!("{queue} process"),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.destination.name = %routing_key,
        messaging.consumer.group.name = queue,
        messaging.message.id = message_id.as_deref().unwrap_or(""),
        attempt = attempt,
    );
    tracecontext::set_parent_from(&span, &headers);
    Incoming {
        body: delivery.data.clone(),
        routing_key,
        message_id,
        headers,
        redelivered: delivery.redelivered,
        attempt,
        span,
    }
}

async fn process<H: BatchHandler>(
    config: &ConsumerConfig,
    handler: &H,
    metrics: &ConsumerMetrics,
    channels: &Channels<'_>,
    deliveries: Vec<Delivery>,
) {
    let queue = config.queue.name.as_str();
    let now = unix_millis(SystemTime::now());
    let (deliveries, early): (Vec<Delivery>, Vec<(Delivery, Duration)>) = {
        let mut due = Vec::with_capacity(deliveries.len());
        let mut early = Vec::new();
        for d in deliveries {
            match parked_for(config, &d, now) {
                Some(wait) => early.push((d, wait)),
                None => due.push(d),
            }
        }
        (due, early)
    };
    let parked = futures::future::join_all(
        early
            .iter()
            .map(|(d, wait)| park(config, metrics, channels.publish, d, *wait)),
    )
    .await;
    let parked: Vec<(u64, Settled)> = early
        .iter()
        .map(|(d, _)| d.delivery_tag)
        .zip(parked)
        .collect();
    let msgs: Vec<Incoming> = deliveries.iter().map(|d| incoming(d, queue)).collect();
    let started = Instant::now();
    // A batch of only early retries has nothing for the handler.
    let outcomes = if msgs.is_empty() {
        Vec::new()
    } else {
        metrics.observe_batch(queue, msgs.len());
        handler.handle_batch(&msgs).await.into_results()
    };
    let elapsed = started.elapsed();
    let settles =
        deliveries
            .iter()
            .zip(msgs.iter())
            .zip(outcomes)
            .map(|((delivery, msg), outcome)| {
                metrics.observe_processing(queue, elapsed);
                settle(config, metrics, channels.publish, delivery, msg, outcome)
            });
    let settled = futures::future::join_all(settles).await;
    let ack = tokio::time::timeout(
        SETTLE_TIMEOUT,
        channels.acks.settled(
            channels.consume,
            deliveries
                .iter()
                .map(|d| d.delivery_tag)
                .zip(settled)
                .chain(parked),
        ),
    )
    .await;
    match ack {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(queue, error = %e, "could not ack; reconnecting, the broker redelivers what was not acked");
            channels.link_lost.cancel();
        }
        Err(_) => {
            tracing::warn!(
                queue,
                "acking did not finish in time; reconnecting, the broker redelivers what was not acked"
            );
            channels.link_lost.cancel();
        }
    }
}

/// What a batch needs of its consumer's link.
struct Channels<'a> {
    consume: &'a Channel,
    publish: &'a Channel,
    acks: &'a Acks,
    /// Cancelled to give the link up (and reconnect) when acking goes wrong.
    link_lost: &'a CancellationToken,
}

/// How one message was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// To be acked (the handler succeeded); the ack goes out with its neighbours'.
    Ack,
    /// Done with already: a confirmed copy was published and the original acked, or
    /// it was returned to the queue.
    Done,
    /// Its fate is unknown (a copy or an ack that failed or hung): it must stay
    /// unacked until the channel closes, so the broker redelivers it.
    Unknown,
}

/// The acks of one consume channel, sent as few frames as possible: deliveries finish
/// in batches, out of order (several batches run at once), and each finished message
/// waits until every older one on the channel has finished too; then one `multiple`
/// ack covers them all. Per-message acks cost the broker about as much as the message
/// itself (a quorum queue settles each through its log).
///
/// A message whose fate is unknown stops acking on the channel for good: a `multiple`
/// ack past it would ack it too. The consumer then reconnects and the broker
/// redelivers everything unacked (handlers are idempotent).
#[derive(Default)]
struct Acks {
    state: tokio::sync::Mutex<AckState>,
}

#[derive(Default)]
struct AckState {
    /// Every delivery tag below this is settled; delivery tags start at 1.
    next: u64,
    /// Finished messages at or above `next`, waiting for the older ones.
    finished: std::collections::BTreeMap<u64, Settled>,
    /// An unknown fate was seen: nothing more is acked on this channel.
    stopped: bool,
}

impl AckState {
    /// Takes in finished messages; returns the tag to ack with `multiple` (the newest
    /// message to ack among those now settled in order), if any.
    fn finish(&mut self, finished: impl IntoIterator<Item = (u64, Settled)>) -> Option<u64> {
        if self.stopped {
            return None;
        }
        self.next = self.next.max(1);
        self.finished.extend(finished);
        let mut ack_to = None;
        while let Some(settled) = self.finished.remove(&self.next) {
            match settled {
                Settled::Ack => ack_to = Some(self.next),
                Settled::Done => {}
                Settled::Unknown => {
                    self.stopped = true;
                    break;
                }
            }
            self.next += 1;
        }
        ack_to
    }
}

impl Acks {
    async fn settled(
        &self,
        channel: &Channel,
        finished: impl IntoIterator<Item = (u64, Settled)>,
    ) -> lapin::Result<()> {
        // Held while the ack goes out, so acks leave in tag order.
        let mut state = self.state.lock().await;
        let stopped_before = state.stopped;
        if let Some(tag) = state.finish(finished) {
            channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await?;
        }
        if state.stopped && !stopped_before {
            return Err(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
                lapin::ChannelState::Error,
                "a message could not be settled",
            )));
        }
        Ok(())
    }
}

async fn settle(
    config: &ConsumerConfig,
    metrics: &ConsumerMetrics,
    publish_channel: &Channel,
    delivery: &Delivery,
    msg: &Incoming,
    outcome: Result<(), HandlerError>,
) -> Settled {
    let queue = config.queue.name.as_str();
    let settled = async {
        match outcome {
            Ok(()) => {
                metrics.count(queue, "acked");
                Ok::<_, lapin::Error>(Settled::Ack)
            }
            Err(
                e @ (HandlerError::Transient(_)
                | HandlerError::RetryAfter { .. }
                | HandlerError::RetryWithin { .. }),
            ) if config.queue.retry.allows_retry_after(msg.attempt) => {
                let scheduled = config.queue.retry.delay_for(msg.attempt).unwrap_or(Duration::from_secs(1));
                let (delay, e) = match e {
                    HandlerError::RetryAfter { after, error } => (after, error),
                    HandlerError::RetryWithin { within, error } => (scheduled.min(within), error),
                    HandlerError::Transient(error) | HandlerError::Permanent(error) => (scheduled, error),
                };
                // A delay that is not one of the queues' is reached in hops (see above).
                let hop = config.queue.retry.hop_within(delay).unwrap_or(scheduled);
                let due = (hop != delay).then(|| unix_millis(SystemTime::now() + delay));
                tracing::warn!(error = %format!("{e:#}"), attempt = msg.attempt, ?delay, "retrying later");
                let target = config.queue.retry_queue(hop);
                let props = republished(delivery, msg, msg.attempt + 1, &e, due);
                forward(delivery, publish_channel, "", &target, props).await?;
                metrics.count(queue, "retried");
                Ok(Settled::Done)
            }
            Err(
                HandlerError::Transient(e)
                | HandlerError::RetryAfter { error: e, .. }
                | HandlerError::RetryWithin { error: e, .. }
                | HandlerError::Permanent(e),
            ) => {
                tracing::error!(error = %format!("{e:#}"), attempt = msg.attempt, "dead-lettering message");
                let props = republished(delivery, msg, msg.attempt, &e, None);
                forward(delivery, publish_channel, DEAD_LETTER_EXCHANGE, queue, props).await?;
                metrics.count(queue, "dead_lettered");
                Ok(Settled::Done)
            }
        }
    }
    .instrument(msg.span.clone());
    match tokio::time::timeout(SETTLE_TIMEOUT, settled).await {
        Ok(Ok(settled)) => settled,
        // The channel is gone: the broker will redeliver the message to the next consumer.
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not settle message; the broker will redeliver it");
            Settled::Unknown
        }
        Err(_) => {
            tracing::warn!(
                "settling the message did not finish in time; the broker will redeliver it"
            );
            Settled::Unknown
        }
    }
}

/// How long a delivery with a due time must still wait, if it came back
/// early (its due time is more than a few milliseconds away).
fn parked_for(config: &ConsumerConfig, delivery: &Delivery, now: i64) -> Option<Duration> {
    let headers = delivery.properties.headers().as_ref()?;
    let due = header_int(headers, NOT_BEFORE_HEADER)?;
    let wait = u64::try_from(due.checked_sub(now)?).ok()?;
    let wait = Duration::from_millis(wait);
    (wait > DUE_TOLERANCE && !config.queue.retry.delays.is_empty()).then_some(wait)
}

/// Sends an early delivery back to a retry queue for what is left of its wait, with
/// its headers (attempt, due time) unchanged.
async fn park(
    config: &ConsumerConfig,
    metrics: &ConsumerMetrics,
    publish_channel: &Channel,
    delivery: &Delivery,
    wait: Duration,
) -> Settled {
    let queue = config.queue.name.as_str();
    let Some(delay) = config.queue.retry.hop_within(wait) else {
        return Settled::Unknown;
    };
    let target = config.queue.retry_queue(delay);
    let props = delivery.properties.clone().with_delivery_mode(2);
    match tokio::time::timeout(
        SETTLE_TIMEOUT,
        forward(delivery, publish_channel, "", &target, props),
    )
    .await
    {
        Ok(Ok(())) => {
            metrics.count(queue, "deferred");
            Settled::Done
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not park an early retry; the broker will redeliver it");
            Settled::Unknown
        }
        Err(_) => {
            tracing::warn!(
                "parking an early retry did not finish in time; the broker will redeliver it"
            );
            Settled::Unknown
        }
    }
}

fn unix_millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A copy of the delivery's properties for a retry or dead-letter publish; `due` is
/// when a retry is due, if its delay is not a retry queue's (any earlier due time is
/// dropped).
fn republished(
    delivery: &Delivery,
    msg: &Incoming,
    attempt: u32,
    error: &anyhow::Error,
    due: Option<i64>,
) -> lapin::BasicProperties {
    let mut headers: FieldTable = msg
        .headers
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != NOT_BEFORE_HEADER)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect::<std::collections::BTreeMap<_, _>>()
        .into();
    if let Some(due) = due {
        headers.insert(NOT_BEFORE_HEADER.into(), AMQPValue::LongLongInt(due));
    }
    headers.insert(
        ATTEMPT_HEADER.into(),
        AMQPValue::LongLongInt(i64::from(attempt)),
    );
    headers.insert(
        ROUTING_KEY_HEADER.into(),
        AMQPValue::LongString(msg.routing_key.as_str().into()),
    );
    let mut reason = format!("{error:#}");
    if reason.len() > 1000 {
        let cut = (0..=1000)
            .rev()
            .find(|i| reason.is_char_boundary(*i))
            .unwrap_or(0);
        reason.truncate(cut);
    }
    headers.insert(ERROR_HEADER.into(), AMQPValue::LongString(reason.into()));
    headers.insert(
        FAILED_AT_HEADER.into(),
        AMQPValue::LongLongInt(chrono::Utc::now().timestamp_millis()),
    );
    delivery
        .properties
        .clone()
        .with_delivery_mode(2)
        .with_headers(headers)
}

/// Publishes a copy with confirm, then acks the original. If the copy cannot be
/// confirmed, the original is returned to the queue instead (never lost, and the
/// quorum queue's delivery limit bounds how often this can happen).
async fn forward(
    delivery: &Delivery,
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    props: lapin::BasicProperties,
) -> lapin::Result<()> {
    match publish_confirmed(
        channel,
        exchange,
        routing_key,
        &delivery.data,
        props,
        Duration::from_secs(5),
    )
    .await
    {
        Ok(()) => delivery.ack(BasicAckOptions::default()).await.map(|_| ()),
        Err(e) => {
            tracing::warn!(error = %e, "could not forward message; returning it to the queue");
            delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await
                .map(|_| ())
        }
    }
}

#[cfg(test)]
mod ack_tests {
    use super::{AckState, Settled};
    use Settled::{Ack, Done, Unknown};

    #[test]
    fn in_order_batches_are_acked_up_to_their_newest_message() {
        let mut s = AckState::default();
        assert_eq!(s.finish([(1, Ack), (2, Ack), (3, Ack)]), Some(3));
        assert_eq!(s.finish([(4, Ack)]), Some(4));
    }

    #[test]
    fn a_newer_batch_waits_for_the_older_one() {
        let mut s = AckState::default();
        assert_eq!(s.finish([(4, Ack), (5, Ack)]), None);
        assert_eq!(s.finish([(1, Ack), (2, Ack), (3, Ack)]), Some(5));
    }

    #[test]
    fn forwarded_messages_are_not_acked_again() {
        let mut s = AckState::default();
        // 3 was retried or dead-lettered: its original is acked already, so the
        // multiple ack names the newest message still to ack.
        assert_eq!(s.finish([(1, Ack), (2, Ack), (3, Done)]), Some(2));
        assert_eq!(s.finish([(4, Done)]), None);
        assert_eq!(s.finish([(5, Ack)]), Some(5));
    }

    #[test]
    fn an_unknown_fate_stops_acking_past_it() {
        let mut s = AckState::default();
        assert_eq!(s.finish([(3, Ack), (2, Unknown)]), None);
        assert_eq!(s.finish([(1, Ack)]), Some(1));
        assert!(s.stopped);
        assert_eq!(s.finish([(4, Ack)]), None);
    }
}
