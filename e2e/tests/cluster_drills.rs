//! Drills past one machine (SPEC §5, issue 20): the system on the project's own
//! three-node RabbitMQ cluster (`scripts/cluster.sh`), two replicas of every service,
//! every `AMQP_URL` listing the three nodes, the gateway posting to both ingest
//! replicas as a load balancer would. Each drill streams `DRILL_MESSAGES` SMS through
//! one fault and accounts for every message and effect (docs/drills.md): zero lost,
//! duplicated, wrong.
//!
//! `#[ignore]`d: they need the cluster (started here if it is not running, which takes
//! minutes on a busy 2-core machine) and kill its nodes. `scripts/drills.sh` runs them
//! (`scripts/drills.sh 'test(/cluster/)'`).

use e2e::drill::cluster::{self, NodeDown};
use e2e::drill::{Drill, assert_clean};
use e2e::system::{SERVICES, Scale, instance};

const REPLICAS: usize = 2;

/// The fault starts when this share of the stream has been posted.
const FAULT_AT: f64 = 0.3;

async fn start(name: &str) -> Drill {
    cluster::ensure_started().await;
    Drill::start_scaled(name, Scale::cluster(REPLICAS)).await
}

/// `kill -9` of the node leading the validator's quorum queue, mid-stream; down for
/// `DRILL_OUTAGE_SECONDS`, then started again (it rejoins the cluster).
#[tokio::test]
#[ignore = "needs scripts/cluster.sh and kills its nodes: scripts/drills.sh"]
async fn drill_cluster_kill9_queue_leader() {
    let drill = start("cluster: kill -9 the validator queue's leader").await;
    let stream = drill.stream();
    drill.when_under_way(&stream, FAULT_AT).await;
    let node = cluster::leader(&drill.system.env.name, "validator").await;
    eprintln!("killing node {node}, leader of the validator queue");
    let down = NodeDown::kill9(node).await;
    drill.outage().await;
    down.end().await;
    let after = cluster::leader(&drill.system.env.name, "validator").await;
    eprintln!("validator queue led by node {after} after the kill");
    let tally = drill.finish(stream).await;
    assert_clean(&tally);
}

/// `kill -9` of one replica of every service at once, `DRILL_KILLS` times over the
/// stream (the other replica of each carries on), each started again.
#[tokio::test]
#[ignore = "needs scripts/cluster.sh: scripts/drills.sh"]
async fn drill_cluster_kill9_one_replica_of_each() {
    let mut drill = start("cluster: kill -9 one replica of each").await;
    let stream = drill.stream();
    let kills = drill.settings.kills.max(1);
    for k in 0..kills {
        let at = if kills == 1 {
            FAULT_AT
        } else {
            0.2 + 0.6 * k as f64 / (kills - 1) as f64
        };
        drill.when_under_way(&stream, at).await;
        let replica = k % REPLICAS;
        for s in SERVICES {
            drill.system.kill9(instance(s, replica)).await;
        }
        tokio::time::sleep(drill.settings.kill_down).await;
        for s in SERVICES {
            drill.system.spawn(instance(s, replica)).await;
        }
        for s in SERVICES {
            drill.system.wait_ready(instance(s, replica)).await;
        }
    }
    let tally = drill.finish(stream).await;
    assert_clean(&tally);
}

/// A rolling restart of every service, one replica at a time, by SIGTERM: each must
/// exit cleanly, and the next is stopped only once the restarted one is ready.
#[tokio::test]
#[ignore = "needs scripts/cluster.sh: scripts/drills.sh"]
async fn drill_cluster_rolling_restart() {
    let mut drill = start("cluster: rolling restart (SIGTERM)").await;
    let stream = drill.stream();
    drill.when_under_way(&stream, FAULT_AT).await;
    for s in SERVICES {
        for r in 0..REPLICAS {
            let i = instance(s, r);
            let status = drill.system.terminate(i).await;
            assert!(
                status.is_some_and(|s| s.success()),
                "{i} did not exit cleanly on SIGTERM: {status:?}"
            );
            drill.system.spawn(i).await;
            drill.system.wait_ready(i).await;
        }
    }
    let tally = drill.finish(stream).await;
    assert_clean(&tally);
}

/// The rules that depend on what other messages did, with replicas racing: one sender's
/// fifteen correct readings of one meter, all received in the same minute and posted
/// at once through both ingest replicas, are decided by two validator replicas — the
/// hourly limit (10) refuses exactly five, and the ten accepted form one supersession
/// chain (each supersedes the one accepted before it; the export lists the last);
/// another sender's eight wrong messages, answered by two notifier replicas, get
/// exactly `REPLY_DAILY_CAP_PER_NUMBER` (5) replies.
#[tokio::test]
#[ignore = "needs scripts/cluster.sh: scripts/drills.sh"]
async fn cluster_replicas_keep_the_rate_limit_reply_cap_and_supersession_exact() {
    use std::collections::HashSet;
    use std::time::Duration;

    use e2e::drill::stream::post_to_any;
    use e2e::system::TOKEN;
    use e2e::{BillingDouble, Gateway, System, fixtures};
    use shared::testing::{WAIT, eventually};

    const AT: &str = "2026-11-20T10:00:00+05:00";
    const FLOOD: u32 = 15;
    const WRONG: u32 = 8;
    cluster::ensure_started().await;
    let billing = BillingDouble::start().await;
    billing.conflict_on_repeat();
    let sms = BillingDouble::start().await;
    sms.conflict_on_repeat();
    let mut opts = fixtures::options(Gateway::Http(sms.url.clone()));
    opts.billing_url = Some(billing.url.clone());
    // The contract's window; every message carries its time of receipt.
    opts.env = vec![];
    let system = System::start_scaled(opts, Scale::cluster(REPLICAS)).await;
    let urls: Vec<String> = system
        .bases("ingest")
        .iter()
        .map(|b| format!("{b}/v1/sms"))
        .collect();

    let client = reqwest::Client::new();
    let mut posts = Vec::new();
    for i in 0..FLOOD {
        let body = serde_json::json!({
            "message_id": format!("flood-{i}"), "from": "+79000000099", "to": "7377",
            "text": format!("1000003 {} {} {}", 10_100 + i, 20_100 + i, 30_100 + i),
            "received_at": AT,
        });
        posts.push((body, i as usize));
    }
    for i in 0..WRONG {
        let body = serde_json::json!({
            "message_id": format!("wrong-{i}"), "from": "+79000000088", "to": "7377",
            "text": "привет", "received_at": AT,
        });
        posts.push((body, i as usize));
    }
    // All at once: the replicas race.
    let tasks: Vec<_> = posts
        .into_iter()
        .map(|(body, n)| {
            let (client, urls) = (client.clone(), urls.clone());
            tokio::spawn(
                async move { post_to_any(&client, &urls, n, TOKEN, &body, WAIT, || {}).await },
            )
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.map(|(status, _)| status).unwrap_or(0));
    }
    assert!(statuses.iter().all(|status| *status == 202), "{statuses:?}");

    let pool = sqlx::PgPool::connect(&system.env.database_url)
        .await
        .expect("database");
    let total = i64::from(FLOOD + WRONG);
    eventually("every message decided", WAIT, || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM validator.messages")
            .fetch_one(&pool)
            .await
            .ok()?;
        (n == total).then_some(())
    })
    .await;
    eventually(
        "ten readings billed and five replies sent",
        WAIT,
        || async { (billing.delivered().len() >= 10 && sms.delivered().len() >= 5).then_some(()) },
    )
    .await;
    // Nothing more in flight anywhere (the management API's statistics lag ~5 s: the
    // queues must stay empty past that), then count.
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_secs(6)).await;
        eventually("the queues empty", WAIT, || async {
            for q in ["validator", "notifier", "billing-export"] {
                if system.env.queue_depth(q).await != Some(0) {
                    return None;
                }
            }
            Some(())
        })
        .await;
    }

    let outcomes: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT message_id, outcome, reason FROM validator.messages WHERE message_id LIKE 'flood-%'",
    )
    .fetch_all(&pool)
    .await
    .expect("audit");
    let accepted = outcomes.iter().filter(|o| o.1 == "accepted").count();
    let limited = outcomes
        .iter()
        .filter(|o| o.2.as_deref() == Some("rate_limited"))
        .count();
    assert_eq!(
        (accepted, limited),
        (10, 5),
        "the hourly limit, exactly: {outcomes:?}"
    );

    // Billing: ten readings, each once; one chain of supersession.
    let delivered = billing.delivered();
    assert_eq!(delivered.len(), 10, "{delivered:?}");
    assert!(delivered.values().all(|n| *n == 1), "{delivered:?}");
    let mut readings = HashSet::new();
    let mut superseded = Vec::new();
    for (_, status, body) in billing.posts() {
        if !(200..300).contains(&status) {
            continue;
        }
        readings.insert(body["reading_id"].as_str().unwrap_or("").to_owned());
        if let Some(s) = body["supersedes"].as_str() {
            superseded.push(s.to_owned());
        }
    }
    let distinct: HashSet<&String> = superseded.iter().collect();
    assert_eq!(
        (superseded.len(), distinct.len()),
        (9, 9),
        "each accepted reading but the first supersedes another, each a different one: {superseded:?}"
    );
    assert!(
        distinct.iter().all(|s| readings.contains(*s)),
        "supersedes names an accepted reading"
    );
    let latest: Vec<&String> = readings.iter().filter(|r| !distinct.contains(r)).collect();
    assert_eq!(latest.len(), 1, "one reading supersedes none: {latest:?}");
    let export = client
        .get(format!(
            "{}/v1/exports/2026-11.csv",
            system.base("billing-export")
        ))
        .bearer_auth(e2e::system::EXPORT_TOKEN)
        .send()
        .await
        .expect("export")
        .text()
        .await
        .expect("body");
    let lines: Vec<&str> = export
        .lines()
        .filter(|l| l.starts_with("1000003,"))
        .collect();
    assert_eq!(lines.len(), 1, "only the latest of 1000003: {export}");
    assert!(
        lines[0].ends_with(latest[0].as_str()),
        "{} vs {}",
        lines[0],
        latest[0]
    );

    // Replies: the daily cap, exactly, with two notifiers racing.
    let to_wrong = sms
        .posts()
        .iter()
        .filter(|(_, status, body)| (200..300).contains(status) && body["to"] == "+79000000088")
        .count();
    assert_eq!(to_wrong, 5, "REPLY_DAILY_CAP_PER_NUMBER replies, no more");
    assert_eq!(sms.delivered().len(), 5, "no other reply");

    pool.close().await;
    billing.stop();
    sms.stop();
    system.stop().await;
}
