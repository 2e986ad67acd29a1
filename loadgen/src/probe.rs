//! The cost of one quorum-queue crossing, one message at a time (`--probe-messages`):
//! what a message of a quiet system (200 SMS/s is a batch of one) pays at each hop.
//! In a fresh vhost, one durable quorum queue is declared through the first node of
//! the broker's list (RabbitMQ's default leader locator puts its leader there); then
//! from each node in turn, a publisher on that node publishes a persistent message of
//! the `sms.received` size and waits for its confirm, and a consumer on the same node
//! receives and acks it, before the next message. Timed per message: publish →
//! confirm (the broker has the message safe: on a quorum queue, a Raft commit — the
//! leader and one follower have written it to their logs and fsynced) and publish →
//! delivery to the consumer. For scale, the same on a durable classic queue through
//! the first node (a persistent message confirmed once on that node's disk).
//!
//! Nothing else of loadgen's runs while it does; the machine's other load does.

use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use shared::testing::{TestBroker, TestEnv};

use crate::report::Summary;

/// Messages before the timed ones on each node (connections warm, queue settled).
const WARM_UP: usize = 20;
/// One message may take this long to be confirmed or delivered before the probe fails.
const WAIT: Duration = Duration::from_secs(30);

/// One node's figures.
#[derive(Debug, Clone)]
pub struct ProbeRow {
    /// `quorum` or `classic`.
    pub queue_type: &'static str,
    /// The node the publisher and the consumer were connected to (1-based, in the
    /// broker's list).
    pub node: usize,
    /// The queue's leader as the management API named it (`?` when it did not say).
    pub leader: String,
    /// Whether the clients' node is the queue's leader.
    pub local_leader: Option<bool>,
    pub confirm: Summary,
    pub delivery: Summary,
}

pub async fn run(
    broker: &TestBroker,
    messages: usize,
    body_bytes: usize,
) -> anyhow::Result<Vec<ProbeRow>> {
    let env = TestEnv::on(broker.clone()).await;
    let result = run_in(&env, messages, body_bytes).await;
    env.cleanup().await;
    result
}

async fn run_in(
    env: &TestEnv,
    messages: usize,
    body_bytes: usize,
) -> anyhow::Result<Vec<ProbeRow>> {
    let nodes: Vec<&str> = env.amqp_url.split(',').map(str::trim).collect();
    let mut body = br#"{"schema":"sms.received/v1","text":""#.to_vec();
    body.resize(body_bytes.saturating_sub(2).max(body.len()), b'7');
    body.extend_from_slice(b"\"}");

    let mut rows = Vec::new();
    for (queue_type, queue) in [("quorum", "probe.quorum"), ("classic", "probe.classic")] {
        // Declared through the first node: a quorum queue's leader goes there.
        let admin = connect(nodes[0], "loadgen-probe-admin").await?;
        let ch = admin.create_channel().await?;
        let mut args = FieldTable::default();
        args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(queue_type.into()),
        );
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        ch.queue_declare(queue.into(), durable, args).await?;
        let leader = leader_of(env, queue).await;
        // The classic queue only through the first node: it lives there, and a client
        // elsewhere only adds the hop between nodes.
        let through: Vec<usize> = if queue_type == "quorum" {
            (0..nodes.len()).collect()
        } else {
            vec![0]
        };
        for n in through {
            let (confirm, delivery) = probe_node(nodes[n], queue, &body, messages).await?;
            let node_name = node_name_of(nodes[n]);
            rows.push(ProbeRow {
                queue_type,
                node: n + 1,
                local_leader: match (&leader, &node_name) {
                    (Some(l), Some(name)) => Some(l == name),
                    _ => None,
                },
                leader: leader.clone().unwrap_or_else(|| "?".into()),
                confirm,
                delivery,
            });
        }
        let _ = ch
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await;
        let _ = admin.close(200, "probe done".into()).await;
    }
    Ok(rows)
}

async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await
}

/// Publishes `messages` (+ warm-up) one at a time through `url`; each waits for its
/// confirm and its delivery to a consumer on the same node, which acks it.
async fn probe_node(
    url: &str,
    queue: &str,
    body: &[u8],
    messages: usize,
) -> anyhow::Result<(Summary, Summary)> {
    let publisher = connect(url, "loadgen-probe-publisher").await?;
    let subscriber = connect(url, "loadgen-probe-consumer").await?;
    let pch = publisher.create_channel().await?;
    pch.confirm_select(ConfirmSelectOptions::default()).await?;
    let cch = subscriber.create_channel().await?;
    cch.basic_qos(10, BasicQosOptions::default()).await?;
    let mut consumer = cch
        .basic_consume(
            queue.into(),
            "loadgen-probe".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let consuming = tokio::spawn(async move {
        while let Some(Ok(delivery)) = consumer.next().await {
            let at = Instant::now();
            if tx.send(at).is_err() {
                break;
            }
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
    });
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2);
    let mut confirms = Vec::with_capacity(messages);
    let mut deliveries = Vec::with_capacity(messages);
    for i in 0..WARM_UP + messages {
        let t0 = Instant::now();
        let confirm = pch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                properties.clone(),
            )
            .await?;
        let confirmed = tokio::time::timeout(WAIT, confirm).await??;
        let t_confirm = Instant::now();
        anyhow::ensure!(
            matches!(confirmed, Confirmation::Ack(_)),
            "the broker did not ack a probe publish: {confirmed:?}"
        );
        let delivered = tokio::time::timeout(WAIT, rx.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("the probe's consumer stopped"))?;
        if i >= WARM_UP {
            confirms.push(ms(t_confirm - t0));
            deliveries.push(ms(delivered.saturating_duration_since(t0)));
        }
    }
    consuming.abort();
    let _ = pch.close(200, "probe done".into()).await;
    let _ = cch.close(200, "probe done".into()).await;
    let _ = publisher.close(200, "bye".into()).await;
    let _ = subscriber.close(200, "bye".into()).await;
    Ok((Summary::of(confirms), Summary::of(deliveries)))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The queue's leader node (`rabbit@host`), from the management API; it may take the
/// API a moment to know it.
async fn leader_of(env: &TestEnv, queue: &str) -> Option<String> {
    let http = reqwest::Client::new();
    for _ in 0..20 {
        let resp = env
            .broker
            .api(&http, |h, api| {
                h.get(format!("{api}/api/queues/{}/{queue}", env.name))
            })
            .await;
        if let Some(resp) = resp
            && let Ok(v) = resp.json::<serde_json::Value>().await
        {
            // Quorum queues name a leader; a classic queue its node.
            if let Some(l) = v["leader"].as_str().or(v["node"].as_str()) {
                return Some(l.to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// The RabbitMQ node behind an AMQP URL of the project's cluster (port 5701 + n − 1 is
/// `meter-c<n>@localhost`, scripts/cluster.sh), or of the machine's broker.
fn node_name_of(url: &str) -> Option<String> {
    let port: u16 = url
        .rsplit_once('@')
        .map_or(url, |(_, hp)| hp)
        .split('/')
        .next()?
        .rsplit_once(':')?
        .1
        .parse()
        .ok()?;
    match port {
        5672 => Some("rabbit@localhost".into()),
        5701..=5703 => Some(format!("meter-c{}@localhost", port - 5700)),
        _ => None,
    }
}
