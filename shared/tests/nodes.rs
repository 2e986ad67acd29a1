//! `AMQP_URL` with several nodes (SPEC §4) against the real broker: a dead node in
//! the list is passed over, and when the node a publisher and a consumer are on goes
//! away they fail over to the next one and go on publishing and consuming.
//!
//! The "nodes" are the machine's one broker seen through TCP proxies of the test's
//! own (closing a proxy is a node dying: its port refuses and its connections drop),
//! or a leased port nothing listens on (a dead node). The cluster itself is drilled
//! in the e2e crate (scripts/cluster.sh).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lapin::uri::AMQPUri;
use shared::broker::{self, Publisher, ReadyFlag};
use shared::consumer::{self, ConsumerConfig, Handler, HandlerError, Incoming};
use shared::events::{Channel, Event, SmsReceived};
use shared::metrics::ConsumerMetrics;
use shared::testing::{PortLease, TestEnv, WAIT, eventually};
use shared::topology::{QueueSpec, RetryPolicy};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

fn spec() -> QueueSpec {
    QueueSpec::new(
        "work",
        &["sms.received"],
        RetryPolicy {
            delays: vec![Duration::from_millis(300)],
            max_attempts: Some(3),
        },
    )
}

/// The test's vhost URL with another host and port (a node of the list).
fn at_port(env: &TestEnv, port: u16) -> String {
    let mut uri = AMQPUri::from_str(&env.amqp_url).expect("the harness's URL parses");
    uri.authority.host = "127.0.0.1".into();
    uri.authority.port = port;
    uri.to_string()
}

/// The broker's address, as the harness reaches it.
fn upstream(env: &TestEnv) -> (String, u16) {
    let uri = AMQPUri::from_str(&env.amqp_url).expect("the harness's URL parses");
    (uri.authority.host, uri.authority.port)
}

/// A node in front of the real broker: forwards every connection until closed.
struct Node {
    port: u16,
    accepted: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Node {
    async fn start(listener: TcpListener, upstream: (String, u16)) -> Node {
        let port = listener.local_addr().expect("bound").port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (count, halt) = (accepted.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let (mut client, _) = tokio::select! {
                    got = listener.accept() => match got {
                        Ok(c) => c,
                        Err(_) => continue,
                    },
                    _ = halt.cancelled() => return,
                };
                count.fetch_add(1, Ordering::SeqCst);
                let (upstream, halt) = (upstream.clone(), halt.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        // Dropping both sockets: the node's connections are gone.
                        _ = halt.cancelled() => {}
                    }
                });
            }
        });
        Node {
            port,
            accepted,
            stop,
        }
    }

    async fn on_free_port(upstream: (String, u16)) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Node::start(listener, upstream).await
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Kills the node: it stops listening and its connections drop.
    fn kill(&self) {
        self.stop.cancel();
    }
}

fn sms(id: &str) -> Event {
    Event::SmsReceived(SmsReceived {
        message_id: id.into(),
        from: "+79001234567".into(),
        to: "7377".into(),
        text: "1000001 12345".into(),
        received_at: chrono::Utc::now().fixed_offset(),
        channel: Channel::Sms,
        chat: None,
        contact: None,
    })
}

#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

impl Handler for Seen {
    async fn handle(&self, msg: &Incoming) -> Result<(), HandlerError> {
        let event = Event::from_json(&msg.body).map_err(HandlerError::permanent)?;
        self.0.lock().await.push(event.message_id().to_owned());
        Ok(())
    }
}

impl Seen {
    async fn has(&self, id: &str) -> bool {
        self.0.lock().await.iter().any(|s| s == id)
    }
}

#[tokio::test]
async fn connect_passes_over_a_dead_node_wherever_it_starts() {
    let env = TestEnv::new().await;
    let dead = PortLease::take();
    let list = format!("{},{}", at_port(&env, dead.port()), env.amqp_url);
    // The start is random: enough tries that the dead node is tried first in some.
    for _ in 0..8 {
        let conn = broker::connect(&list, "nodes-test", &[spec()])
            .await
            .expect("the live node answers");
        let channel = conn.create_channel().await.expect("a channel on it");
        let declared = channel
            .queue_declare(
                "work".into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await;
        assert!(declared.is_ok(), "topology declared on the live node");
        let _ = conn.close(200, "bye".into()).await;
    }
    env.cleanup().await;
}

#[tokio::test]
async fn connect_fails_when_no_node_answers() {
    let env = TestEnv::new().await;
    let dead = PortLease::take_n(2);
    let list = format!(
        "{},127.0.0.1:{}",
        at_port(&env, dead[0].port()),
        dead[1].port()
    );
    let started = std::time::Instant::now();
    let result = broker::connect(&list, "nodes-test", &[spec()]).await;
    assert!(result.is_err(), "no node answers");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refused ports answer at once: {:?}",
        started.elapsed()
    );
    env.cleanup().await;
}

/// The publisher's supervisor and the consumer loop both start on node A (node B is
/// down); then A dies and B comes up: both must move to B by themselves and go on
/// publishing (confirmed) and consuming.
#[tokio::test]
async fn publisher_and_consumer_fail_over_to_the_next_node() {
    let env = TestEnv::new().await;
    let a = Node::on_free_port(upstream(&env)).await;
    let b_port = PortLease::take();
    let list = format!("{},127.0.0.1:{}", at_port(&env, a.port), b_port.port());

    let tracker = TaskTracker::new();
    let shutdown = CancellationToken::new();
    let publisher = Publisher::start(
        list.clone(),
        "nodes-publisher".into(),
        vec![spec()],
        &tracker,
        shutdown.clone(),
    );
    let seen = Arc::new(Seen::default());
    let ready = ReadyFlag::default();
    let mut registry = prometheus_client::registry::Registry::default();
    tracker.spawn(consumer::run(
        ConsumerConfig::new(&list, spec(), vec![spec()]),
        seen.clone(),
        ConsumerMetrics::register(&mut registry),
        ready.clone(),
        shutdown.clone(),
    ));
    eventually("publisher and consumer on node A", WAIT, || async {
        (publisher.ready().get() && ready.get()).then_some(())
    })
    .await;
    assert!(a.accepted() >= 2, "both links went to node A");
    publisher.publish(&sms("before")).await.expect("confirmed");
    eventually("`before` consumed", WAIT, || async {
        seen.has("before").await.then_some(())
    })
    .await;

    // Node B comes up on its port; node A dies.
    let b_listener = TcpListener::bind(("127.0.0.1", b_port.port()))
        .await
        .expect("node B's port binds");
    drop(b_port);
    let b = Node::start(b_listener, upstream(&env)).await;
    a.kill();

    // A publish is confirmed once the publisher is on B (until then: Unavailable or
    // a channel error, and nothing counted as sent).
    eventually("a publish confirmed through node B", WAIT, || async {
        publisher.publish(&sms("after")).await.ok()
    })
    .await;
    eventually("`after` consumed through node B", WAIT, || async {
        seen.has("after").await.then_some(())
    })
    .await;
    assert!(
        b.accepted() >= 2,
        "publisher and consumer reconnected to node B ({} connections)",
        b.accepted()
    );

    shutdown.cancel();
    tracker.close();
    tracker.wait().await;
    b.kill();
    env.cleanup().await;
}
