//! The gateway side of a drill: posts the plan to ingest at a steady rate with a
//! bounded number of requests in flight, and retries a post that was not taken —
//! `503`, another `5xx`, a refused or dropped connection — as an SMS aggregator does,
//! so nothing is lost at the edge. A post that was taken but whose answer was lost
//! is retried too; the message id makes that a duplicate the system must absorb.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::plan::Plan;

/// How the gateway posts.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Posts started per second.
    pub rate_per_sec: f64,
    pub max_in_flight: usize,
    /// How long one message may keep failing before the gateway gives up on it
    /// (a message given up is a failure of the drill).
    pub give_up_after: Duration,
}

/// Live counters, for the drill to time its fault and for the table.
#[derive(Debug, Default)]
pub struct Progress {
    /// Posts started (including duplicates).
    pub started: AtomicUsize,
    /// Posts answered `202`.
    pub taken: AtomicUsize,
    /// Attempts that were not taken and were retried.
    pub retries: AtomicU64,
}

/// A post that never got its `202`, or got an answer a correct request must never get.
#[derive(Debug, Clone)]
pub struct PostFailure {
    pub message_id: String,
    pub last_status: u16,
    pub attempts: u32,
}

#[derive(Debug, Default, Clone)]
pub struct StreamReport {
    pub posts: usize,
    pub retries: u64,
    pub failures: Vec<PostFailure>,
}

pub struct Stream {
    pub progress: Arc<Progress>,
    pub total_posts: usize,
    task: JoinHandle<StreamReport>,
}

impl Stream {
    /// Posts to the ingest replicas at `ingest_bases` as a load balancer in front of
    /// them would: each message to the next replica, a retry to the one after.
    pub fn start(
        ingest_bases: Vec<String>,
        token: &str,
        plan: Arc<Plan>,
        config: StreamConfig,
    ) -> Stream {
        let progress = Arc::new(Progress::default());
        let total_posts = plan.order.len();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        let token = token.to_owned();
        let p = progress.clone();
        let task = tokio::spawn(async move {
            let urls: Arc<Vec<String>> = Arc::new(
                ingest_bases
                    .iter()
                    .map(|base| format!("{base}/v1/sms"))
                    .collect(),
            );
            let slots = Arc::new(Semaphore::new(config.max_in_flight.max(1)));
            let period = Duration::from_secs_f64(1.0 / config.rate_per_sec.max(0.1));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut posts = Vec::with_capacity(plan.order.len());
            for (n, &index) in plan.order.iter().enumerate() {
                tick.tick().await;
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let (client, urls, token, plan, p) = (
                    client.clone(),
                    urls.clone(),
                    token.clone(),
                    plan.clone(),
                    p.clone(),
                );
                p.started.fetch_add(1, Ordering::Relaxed);
                posts.push(tokio::spawn(async move {
                    let _slot = slot;
                    let m = &plan.messages[index];
                    let body = serde_json::json!({
                        "message_id": m.id,
                        "from": m.from,
                        "to": "7377",
                        "text": m.text,
                        "received_at": m.received_at,
                    });
                    post_until_taken(&client, &urls, n, &token, &body, &p, config.give_up_after)
                        .await
                        .map_err(|(last_status, attempts)| PostFailure {
                            message_id: m.id.clone(),
                            last_status,
                            attempts,
                        })
                }));
            }
            let mut report = StreamReport {
                posts: posts.len(),
                ..StreamReport::default()
            };
            for post in posts {
                match post.await {
                    Ok(Ok(())) => {}
                    Ok(Err(failure)) => report.failures.push(failure),
                    Err(e) => report.failures.push(PostFailure {
                        message_id: format!("(task failed: {e})"),
                        last_status: 0,
                        attempts: 0,
                    }),
                }
            }
            report.retries = p.retries.load(Ordering::Relaxed);
            report
        });
        Stream {
            progress,
            total_posts,
            task,
        }
    }

    /// Resolves once `fraction` of the posts have been started (to time a fault).
    pub async fn started_fraction(&self, fraction: f64, deadline: Duration) {
        let want = ((self.total_posts as f64) * fraction).ceil() as usize;
        let p = self.progress.clone();
        shared::testing::eventually("the stream under way", deadline, || {
            let p = p.clone();
            async move { (p.started.load(Ordering::Relaxed) >= want).then_some(()) }
        })
        .await;
    }

    /// Waits for every post to be taken or given up.
    pub async fn finish(self) -> StreamReport {
        match self.task.await {
            Ok(report) => report,
            Err(e) => StreamReport {
                failures: vec![PostFailure {
                    message_id: format!("(stream task failed: {e})"),
                    last_status: 0,
                    attempts: 0,
                }],
                ..StreamReport::default()
            },
        }
    }
}

/// Posts until `202`. Retried: `5xx`, `408`, `429` and no answer at all (0). Anything
/// else is a failure at once: the request is well-formed, ingest must take it.
async fn post_until_taken(
    client: &reqwest::Client,
    urls: &[String],
    first: usize,
    token: &str,
    body: &serde_json::Value,
    progress: &Progress,
    give_up_after: Duration,
) -> Result<(), (u16, u32)> {
    let (status, attempts) = post_to_any(client, urls, first, token, body, give_up_after, || {
        progress.retries.fetch_add(1, Ordering::Relaxed);
    })
    .await;
    if status == 202 {
        progress.taken.fetch_add(1, Ordering::Relaxed);
        return Ok(());
    }
    Err((status, attempts))
}

/// Posts an SMS to ingest as an aggregator does: again after a `5xx`, `408`, `429` or
/// no answer at all (status 0), with back-off from 100 ms doubling to 2 s (shorter than
/// ingest's `Retry-After: 5`: hammering a recovering ingest is part of the test), until
/// any other answer or `give_up_after`. Returns the last status and the attempts made;
/// `on_retry` is called before each repeat.
pub async fn post_as_a_gateway(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
    give_up_after: Duration,
    on_retry: impl Fn(),
) -> (u16, u32) {
    post_to_any(
        client,
        &[url.to_owned()],
        0,
        token,
        body,
        give_up_after,
        on_retry,
    )
    .await
}

/// As [`post_as_a_gateway`], through a load balancer in front of several ingest
/// replicas: the first attempt goes to `urls[first % len]`, each repeat to the next
/// replica (a killed replica's requests are taken by another).
pub async fn post_to_any(
    client: &reqwest::Client,
    urls: &[String],
    first: usize,
    token: &str,
    body: &serde_json::Value,
    give_up_after: Duration,
    on_retry: impl Fn(),
) -> (u16, u32) {
    let until = tokio::time::Instant::now() + give_up_after;
    let mut pause = Duration::from_millis(100);
    let mut attempts: u32 = 0;
    loop {
        let url = &urls[(first + attempts as usize) % urls.len().max(1)];
        attempts += 1;
        let status = match client.post(url).bearer_auth(token).json(body).send().await {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        match status {
            0 | 408 | 429 | 500..=599 if tokio::time::Instant::now() < until => {
                on_retry();
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return (other, attempts),
        }
    }
}
