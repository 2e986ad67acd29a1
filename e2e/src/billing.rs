//! An HTTP double of a peer we cannot have — the billing system (`POST /readings`) or an
//! SMS aggregator (`POST /sms`): records every post with its `Idempotency-Key`, and
//! answers as the test tells it (200, 409, 503 for a while…).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Inner {
    /// Status to answer; `None` = 200.
    answer: Option<u16>,
    /// Answer `409` to a post whose key was delivered before, as a peer that honours
    /// `Idempotency-Key` does (SPEC §4.5): the re-post is recorded, not delivered again.
    conflict_on_repeat: bool,
    /// Successful deliveries per idempotency key.
    delivered: HashMap<String, u32>,
    /// Every post: (key, status answered, body).
    posts: Vec<(String, u16, serde_json::Value)>,
    /// How long to take before answering (a slow peer).
    delay: Option<std::time::Duration>,
    /// Requests that arrived, answered or not yet.
    started: u32,
    /// When each post of `posts` arrived (same index), for latency measurements.
    arrived: Vec<std::time::Instant>,
}

#[derive(Clone)]
pub struct BillingDouble {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
    stop: CancellationToken,
}

impl BillingDouble {
    pub async fn start() -> BillingDouble {
        let inner = Arc::new(Mutex::new(Inner::default()));
        // `/readings` plays the billing system, `/sms` an SMS aggregator's send API.
        let app = Router::new()
            .route("/readings", post(readings))
            .route("/sms", post(readings))
            .with_state(inner.clone());
        let (url, stop) = shared::testing::serve_double(app).await;
        BillingDouble { inner, url, stop }
    }

    /// Answer every post with `status` from now on (`200` restores success).
    pub fn answer(&self, status: u16) {
        if let Ok(mut i) = self.inner.lock() {
            i.answer = (status != 200).then_some(status);
        }
    }

    /// Take `delay` before answering each request from now on.
    pub fn delay(&self, delay: std::time::Duration) {
        if let Ok(mut i) = self.inner.lock() {
            i.delay = Some(delay);
        }
    }

    /// Requests that have arrived (including those still waiting to be answered).
    pub fn started(&self) -> u32 {
        self.inner.lock().map(|i| i.started).unwrap_or(0)
    }

    /// Behave as a peer that deduplicates by `Idempotency-Key`: a post whose key was
    /// already delivered is answered `409` and not counted in `delivered` again.
    pub fn conflict_on_repeat(&self) {
        if let Ok(mut i) = self.inner.lock() {
            i.conflict_on_repeat = true;
        }
    }

    /// Successful deliveries per reading id.
    pub fn delivered(&self) -> HashMap<String, u32> {
        self.inner
            .lock()
            .map(|i| i.delivered.clone())
            .unwrap_or_default()
    }

    pub fn posts(&self) -> Vec<(String, u16, serde_json::Value)> {
        self.inner
            .lock()
            .map(|i| i.posts.clone())
            .unwrap_or_default()
    }

    /// Every post with the moment it arrived (before any `delay`): (arrival, key,
    /// status answered, body).
    pub fn timed_posts(&self) -> Vec<(std::time::Instant, String, u16, serde_json::Value)> {
        self.inner
            .lock()
            .map(|i| {
                i.arrived
                    .iter()
                    .zip(&i.posts)
                    .map(|(at, (key, status, body))| (*at, key.clone(), *status, body.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }
}

async fn readings(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let arrived = std::time::Instant::now();
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    let delay = match inner.lock() {
        Ok(mut i) => {
            i.started += 1;
            i.delay
        }
        Err(_) => None,
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let Ok(mut i) = inner.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    let mut status = i.answer.unwrap_or(200);
    if status == 200 && i.conflict_on_repeat && i.delivered.contains_key(&key) {
        status = 409;
    }
    if status == 200 {
        *i.delivered.entry(key.clone()).or_default() += 1;
    }
    i.posts.push((key, status, json));
    i.arrived.push(arrived);
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}
