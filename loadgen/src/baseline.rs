//! The broker's own ceiling on this machine, for scale: in a fresh vhost, one durable
//! quorum queue, one publisher with pipelined publisher confirms (up to `outstanding`
//! unconfirmed, persistent messages) and one consumer acking each message by itself,
//! both at once, for a fixed time. Messages are the size of a real `sms.received` body.
//! What counts is messages fully consumed (acked) per second. On a cluster
//! (`--broker cluster`) the vhost is the cluster's and the publisher and the consumer
//! each connect to a node of it as the services do (`shared::broker::connect`, from a
//! random node): the queue's leader is on the publisher's node, the consumer's may be
//! another.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation};
use shared::testing::{TestBroker, TestEnv};

const QUEUE: &str = "baseline";
/// Unacked deliveries the consumer may hold (it acks one at a time).
const PREFETCH: u16 = 250;

#[derive(Debug, Clone)]
pub struct Baseline {
    pub seconds: f64,
    pub body_bytes: usize,
    pub outstanding: usize,
    pub prefetch: u16,
    /// Confirmed (acked by the broker) publishes within the window.
    pub confirmed: u64,
    pub nacked: u64,
    /// Deliveries the consumer acked within the window.
    pub consumed: u64,
}

impl Baseline {
    /// Messages fully consumed per second.
    pub fn rate(&self) -> f64 {
        self.consumed as f64 / self.seconds.max(f64::EPSILON)
    }

    pub fn publish_rate(&self) -> f64 {
        self.confirmed as f64 / self.seconds.max(f64::EPSILON)
    }
}

pub async fn run(
    broker: &TestBroker,
    seconds: f64,
    body_bytes: usize,
    outstanding: usize,
) -> anyhow::Result<Baseline> {
    let env = TestEnv::on(broker.clone()).await;
    let result = run_in(&env, seconds, body_bytes, outstanding).await;
    env.cleanup().await;
    result
}

async fn run_in(
    env: &TestEnv,
    seconds: f64,
    body_bytes: usize,
    outstanding: usize,
) -> anyhow::Result<Baseline> {
    let publisher =
        shared::broker::connect(&env.amqp_url, "loadgen-baseline-publisher", &[]).await?;
    let subscriber =
        shared::broker::connect(&env.amqp_url, "loadgen-baseline-consumer", &[]).await?;

    let pch = publisher.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    pch.queue_declare(QUEUE.into(), durable, args).await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;

    let cch = subscriber.create_channel().await?;
    cch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let mut consumer = cch
        .basic_consume(
            QUEUE.into(),
            "loadgen-baseline".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let window = Duration::from_secs_f64(seconds.max(0.1));
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + window);

    let consuming = tokio::spawn(async move {
        let mut consumed = 0u64;
        loop {
            let next = tokio::time::timeout_at(deadline, consumer.next()).await;
            let Ok(Some(delivery)) = next else {
                break;
            };
            delivery?.ack(BasicAckOptions::default()).await?;
            if tokio::time::Instant::now() <= deadline {
                consumed += 1;
            }
        }
        anyhow::Ok(consumed)
    });

    // A JSON-looking body of the mean `sms.received` size.
    let mut body = br#"{"schema":"sms.received/v1","text":""#.to_vec();
    body.resize(body_bytes.saturating_sub(2).max(body.len()), b'7');
    body.extend_from_slice(b"\"}");
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    let mut pending = FuturesUnordered::new();
    let (mut confirmed, mut nacked) = (0u64, 0u64);
    let mut tally = |c: Result<Confirmation, lapin::Error>| -> anyhow::Result<()> {
        match c? {
            Confirmation::Ack(_) => confirmed += 1,
            Confirmation::Nack(_) | Confirmation::NotRequested => nacked += 1,
        }
        Ok(())
    };
    while tokio::time::Instant::now() < deadline {
        if pending.len() >= outstanding.max(1) {
            match tokio::time::timeout_at(deadline, pending.next()).await {
                Ok(Some(c)) => tally(c)?,
                Ok(None) => {}
                Err(_) => break,
            }
            continue;
        }
        let confirm = pch
            .basic_publish(
                "".into(),
                QUEUE.into(),
                BasicPublishOptions::default(),
                &body,
                properties.clone(),
            )
            .await?;
        pending.push(confirm);
    }
    let consumed = consuming.await??;
    drop(pending);
    let _ = pch.close(200, "baseline done".into()).await;
    let _ = cch.close(200, "baseline done".into()).await;
    let _ = publisher.close(200, "bye".into()).await;
    let _ = subscriber.close(200, "bye".into()).await;
    Ok(Baseline {
        seconds: window.as_secs_f64(),
        body_bytes: body.len(),
        outstanding,
        prefetch: PREFETCH,
        confirmed,
        nacked,
        consumed,
    })
}
