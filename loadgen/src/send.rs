//! The gateway side: posts the plan's messages to ingest `POST /v1/sms`, open-loop at a
//! fixed rate (message `i` is due at `t0 + i / rate`) or as fast as ingest takes them,
//! with a cap on requests in flight either way. A post that was not taken (`503`, any
//! `5xx`, `408`, `429`, no answer) is retried as an SMS aggregator does; the message's
//! latency still counts from the start of its first attempt. With several ingest
//! replicas the posts are spread as a round-robin load balancer spreads them: message
//! `i` goes to replica `i mod n`, a retry of it to the next replica.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::drill::plan::Plan;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How fast to offer messages.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// Messages per second, open loop.
    Fixed(f64),
    /// As fast as the in-flight cap allows.
    Max,
}

impl Rate {
    pub fn parse(s: &str) -> Result<Rate, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match s.parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate::Fixed(r)),
            _ => Err(format!(
                "`{s}` is not a rate: a positive number of messages per second, or `max`"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SendConfig {
    /// `POST /v1/sms` of every ingest replica (one, unless the system has replicas).
    pub urls: Vec<String>,
    pub token: String,
    pub rate: Rate,
    pub in_flight: usize,
    /// Stop offering new messages after this long (the plan may be longer).
    pub seconds: Option<f64>,
    /// A message that keeps failing this long is given up (and reported).
    pub give_up_after: Duration,
}

/// What became of one message's post.
#[derive(Debug, Clone)]
pub struct SendRecord {
    pub index: usize,
    /// Start of the first attempt.
    pub started: Instant,
    /// How much later than its schedule the first attempt started (fixed rate only):
    /// the in-flight cap or loadgen itself holding the offer back.
    pub lag: Duration,
    /// The last status: `202` when taken; `0` = no answer.
    pub status: u16,
    pub attempts: u32,
    /// When the `202` arrived.
    pub taken_at: Option<Instant>,
}

/// Posts the plan's first messages; returns each attempted message's record and `t0`.
pub async fn run(
    plan: Arc<Plan>,
    config: SendConfig,
) -> anyhow::Result<(Vec<SendRecord>, Instant)> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(config.in_flight.max(1))
        .build()?;
    anyhow::ensure!(!config.urls.is_empty(), "no ingest URL to post to");
    let urls = Arc::new(config.urls.clone());
    let token = Arc::new(config.token.clone());
    let slots = Arc::new(Semaphore::new(config.in_flight.max(1)));
    let t0 = Instant::now();
    let stop_at = config
        .seconds
        .map(|s| t0 + Duration::from_secs_f64(s.max(0.0)));
    let mut tasks = JoinSet::new();
    for index in 0..plan.messages.len() {
        let due = match config.rate {
            Rate::Fixed(rate) => Some(t0 + Duration::from_secs_f64(index as f64 / rate)),
            Rate::Max => None,
        };
        if let Some(due) = due {
            tokio::time::sleep_until(due.into()).await;
        }
        let slot = slots.clone().acquire_owned().await?;
        let now = Instant::now();
        if stop_at.is_some_and(|s| now >= s) {
            break;
        }
        let lag = due.map_or(Duration::ZERO, |d| now.saturating_duration_since(d));
        let (client, urls, token, plan) =
            (client.clone(), urls.clone(), token.clone(), plan.clone());
        let give_up_after = config.give_up_after;
        tasks.spawn(async move {
            let _slot = slot;
            let m = &plan.messages[index];
            let body = serde_json::json!({
                "message_id": m.id,
                "from": m.from,
                "to": "7377",
                "text": m.text,
                "received_at": m.received_at,
            });
            let started = Instant::now();
            let (status, attempts) = e2e::drill::stream::post_to_any(
                &client,
                &urls,
                index,
                &token,
                &body,
                give_up_after,
                || {},
            )
            .await;
            SendRecord {
                index,
                started,
                lag,
                status,
                attempts,
                taken_at: (status == 202).then(Instant::now),
            }
        });
    }
    let mut records = Vec::with_capacity(tasks.len());
    while let Some(done) = tasks.join_next().await {
        records.push(done?);
    }
    records.sort_by_key(|r| r.index);
    Ok((records, t0))
}
