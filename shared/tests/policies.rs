//! The queue settings that live in broker policies (docs/operations.md, "Broker
//! policies") against the real RabbitMQ: the code's declaration still fits queues
//! declared by the previous version, the test harness's vhost has the policies in
//! force, and without any policy the declared delivery limit still ends a crash loop.

use std::time::Duration;

use lapin::options::{BasicGetOptions, BasicNackOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use shared::broker::publish_confirmed;
use shared::testing::{TestEnv, eventually};
use shared::topology::{self, DEAD_LETTER_EXCHANGE};

const WAIT: Duration = Duration::from_secs(30);

fn rabbit_api() -> String {
    std::env::var("TEST_RABBITMQ_API").unwrap_or_else(|_| "http://127.0.0.1:15672".to_owned())
}

async fn connect(env: &TestEnv) -> Connection {
    Connection::connect(&env.amqp_url, ConnectionProperties::default())
        .await
        .expect("connect")
}

fn string(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// The arguments the queues had before the policies (commit 22c9e4a), written out
/// literally: a declaration that differs from what a running system has fails with
/// PRECONDITION_FAILED, so this copy must never follow the code.
fn previous_arguments(dead_letter: Option<&str>, ttl_home: Option<(i64, &str)>) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), string("quorum"));
    args.insert("x-dead-letter-strategy".into(), string("at-least-once"));
    args.insert("x-overflow".into(), string("reject-publish"));
    if let Some(queue) = dead_letter {
        args.insert(
            "x-dead-letter-exchange".into(),
            string(DEAD_LETTER_EXCHANGE),
        );
        args.insert("x-dead-letter-routing-key".into(), string(queue));
        args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(20));
    }
    if let Some((ttl, home)) = ttl_home {
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        args.insert("x-dead-letter-exchange".into(), string(""));
        args.insert("x-dead-letter-routing-key".into(), string(home));
    }
    args
}

#[tokio::test]
async fn the_declaration_fits_queues_declared_by_the_previous_version() {
    let env = TestEnv::new().await;
    let conn = connect(&env).await;
    let ch = conn.create_channel().await.expect("channel");
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let queues = topology::system_queues();
    for q in &queues {
        ch.queue_declare(
            q.dead_letter_queue().as_str().into(),
            durable,
            previous_arguments(None, None),
        )
        .await
        .expect("previous dead-letter queue");
        ch.queue_declare(
            q.name.as_str().into(),
            durable,
            previous_arguments(Some(&q.name), None),
        )
        .await
        .expect("previous consumer queue");
        for delay in [1, 5, 30, 120, 300].map(Duration::from_secs) {
            let ttl = i64::try_from(delay.as_millis()).expect("ttl");
            ch.queue_declare(
                q.retry_queue(delay).as_str().into(),
                durable,
                previous_arguments(None, Some((ttl, &q.name))),
            )
            .await
            .expect("previous retry queue");
        }
    }
    topology::declare(&ch, &queues)
        .await
        .expect("today's declaration over the previous version's queues");
    env.cleanup().await;
}

/// The name of the policy in force on a queue of the vhost, by the management API.
async fn policy_of(http: &reqwest::Client, env: &TestEnv, queue: &str) -> Option<String> {
    let resp = http
        .get(format!("{}/api/queues/{}/{queue}", rabbit_api(), env.name))
        .basic_auth("guest", Some("guest"))
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = resp.json().await.ok()?;
    body.get("policy")?.as_str().map(str::to_owned)
}

#[tokio::test]
async fn the_harness_vhost_has_the_policies_in_force() {
    let env = TestEnv::new().await;
    let conn = connect(&env).await;
    let ch = conn.create_channel().await.expect("channel");
    let queues = topology::system_queues();
    topology::declare(&ch, &queues).await.expect("declare");
    let http = reqwest::Client::new();
    for q in &queues {
        for (queue, expected) in [
            (q.name.clone(), "meter-consumers"),
            (q.dead_letter_queue(), "meter-dead-letters"),
        ] {
            eventually(&format!("policy {expected} on {queue}"), WAIT, || {
                let http = &http;
                let env = &env;
                let queue = queue.clone();
                async move {
                    (policy_of(http, env, &queue).await.as_deref() == Some(expected)).then_some(())
                }
            })
            .await;
        }
        // The retry queues keep their own TTL and match no policy.
        let retry = q.retry_queue(q.retry.delays[0]);
        assert_eq!(policy_of(&http, &env, &retry).await, None, "{retry}");
    }
    env.cleanup().await;
}

#[tokio::test]
async fn without_any_policy_the_declared_limit_still_ends_a_crash_loop() {
    let env = TestEnv::new().await;
    let http = reqwest::Client::new();
    for name in ["meter-consumers", "meter-dead-letters"] {
        let resp = http
            .delete(format!("{}/api/policies/{}/{name}", rabbit_api(), env.name))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .expect("delete policy");
        assert!(
            resp.status().is_success(),
            "delete {name}: {}",
            resp.status()
        );
    }
    let conn = connect(&env).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    topology::declare(&ch, &topology::system_queues())
        .await
        .expect("declare");
    publish_confirmed(
        &ch,
        "",
        "validator",
        b"{}",
        BasicProperties::default().with_delivery_mode(2),
        WAIT,
    )
    .await
    .expect("publish");

    // A consumer that dies before acking, over and over: each return counts.
    let mut deliveries = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline && deliveries <= 100 {
        match ch
            .basic_get("validator".into(), BasicGetOptions { no_ack: false })
            .await
            .expect("get")
        {
            Some(msg) => {
                deliveries += 1;
                msg.delivery
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    })
                    .await
                    .expect("nack");
            }
            None if deliveries > 0 => break,
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(
        deliveries,
        topology::DELIVERY_LIMIT + 1,
        "the first delivery and 20 redeliveries, then the broker dead-letters it"
    );
    eventually("the message in validator.dead", WAIT, || {
        let ch = &ch;
        async move {
            ch.basic_get("validator.dead".into(), BasicGetOptions { no_ack: true })
                .await
                .ok()
                .flatten()
                .map(|_| ())
        }
    })
    .await;
    env.cleanup().await;
}

/// SPEC §4.7: dead letters expire after 14 days by the `meter-dead-letters` policy. The
/// policy in force on every `.dead` queue carries that TTL; and a dead letter under the
/// same policy with a 1 s TTL (14 days being too long for a test) is gone after it —
/// the policy, not a queue argument, expires the messages of our quorum queues.
#[tokio::test]
async fn dead_letters_expire_by_the_broker_policy() {
    let env = TestEnv::new().await;
    let conn = connect(&env).await;
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(Default::default())
        .await
        .expect("confirms");
    let queues = topology::system_queues();
    topology::declare(&ch, &queues).await.expect("declare");
    let http = reqwest::Client::new();
    let fourteen_days = u64::try_from(topology::DEAD_LETTER_TTL.as_millis()).expect("ms");
    assert_eq!(fourteen_days, 14 * 24 * 3600 * 1000);
    for q in &queues {
        let dead = q.dead_letter_queue();
        eventually(&format!("the 14-day TTL in force on {dead}"), WAIT, || {
            let (http, env, dead) = (&http, &env, dead.clone());
            async move {
                let body: serde_json::Value = http
                    .get(format!("{}/api/queues/{}/{dead}", rabbit_api(), env.name))
                    .basic_auth("guest", Some("guest"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                let ttl = body.pointer("/effective_policy_definition/message-ttl")?;
                (ttl.as_u64() == Some(fourteen_days)).then_some(())
            }
        })
        .await;
    }

    let policy = topology::policies(&queues)
        .into_iter()
        .find(|p| p.name == "meter-dead-letters")
        .expect("the dead-letter policy");
    let resp = http
        .put(format!(
            "{}/api/policies/{}/{}",
            rabbit_api(),
            env.name,
            policy.name
        ))
        .basic_auth("guest", Some("guest"))
        .json(&serde_json::json!({
            "pattern": policy.pattern,
            "definition": {"message-ttl": 1000},
            "priority": topology::POLICY_PRIORITY,
            "apply-to": "queues",
        }))
        .send()
        .await
        .expect("set policy");
    assert!(resp.status().is_success(), "{}", resp.status());
    eventually("the 1 s TTL in force", WAIT, || async {
        let body: serde_json::Value = http
            .get(format!(
                "{}/api/queues/{}/validator.dead",
                rabbit_api(),
                env.name
            ))
            .basic_auth("guest", Some("guest"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let ttl = body.pointer("/effective_policy_definition/message-ttl")?;
        (ttl.as_u64() == Some(1000)).then_some(())
    })
    .await;
    // As the consumer dead-letters: through the dead-letter exchange, by queue name.
    publish_confirmed(
        &ch,
        DEAD_LETTER_EXCHANGE,
        "validator",
        b"{\"dead\": true}",
        BasicProperties::default().with_delivery_mode(2),
        WAIT,
    )
    .await
    .expect("dead letter routed and confirmed");
    // Counted without taking it (a passive declare), so only the TTL can remove it.
    eventually("the dead letter expired", WAIT, || async {
        let queue = ch
            .queue_declare(
                "validator.dead".into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare");
        (queue.message_count() == 0).then_some(())
    })
    .await;
    conn.close(200, "done".into()).await.expect("close");
    env.cleanup().await;
}
