//! A billing double: a small axum app on port 0 that behaves like a billing system
//! with idempotency keys. It records every POST; a key that already had a success
//! gets 409 (as a real billing would answer a repeat), so "delivered once as a
//! success" is something the double can check, not something the test assumes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use shared::testing::eventually;
use tokio_util::sync::CancellationToken;

/// How the double answers.
#[derive(Debug, Clone, Copy)]
pub enum Behaviour {
    /// The first `n` posts get 503, then billing works.
    FailFirst(usize),
    /// Every post gets this status (a repeat of a succeeded key still gets 409).
    Always(u16),
}

/// One POST as the double saw it.
#[derive(Debug, Clone)]
pub struct Post {
    pub key: Option<String>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub traceparent: Option<String>,
    pub body: Vec<u8>,
    pub status: u16,
}

#[derive(Default)]
struct Seen {
    posts: Vec<Post>,
    successes: HashMap<String, u32>,
}

struct DoubleState {
    behaviour: Behaviour,
    seen: Mutex<Seen>,
}

pub struct BillingDouble {
    pub url: String,
    state: Arc<DoubleState>,
    shutdown: CancellationToken,
}

impl BillingDouble {
    pub async fn start(behaviour: Behaviour) -> BillingDouble {
        let state = Arc::new(DoubleState {
            behaviour,
            seen: Mutex::new(Seen::default()),
        });
        let app = Router::new()
            .route("/api/meter/readings", post(readings))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/api/meter", listener.local_addr().expect("addr"));
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        BillingDouble {
            url,
            state,
            shutdown,
        }
    }

    pub fn posts(&self) -> Vec<Post> {
        self.state.seen.lock().expect("lock").posts.clone()
    }

    pub fn posts_for(&self, key: &str) -> Vec<Post> {
        self.posts()
            .into_iter()
            .filter(|p| p.key.as_deref() == Some(key))
            .collect()
    }

    pub fn successes_for(&self, key: &str) -> u32 {
        let seen = self.state.seen.lock().expect("lock");
        seen.successes.get(key).copied().unwrap_or(0)
    }

    /// Waits until the double has seen `n` posts for `key`.
    pub async fn wait_posts(&self, key: &str, n: usize) -> Vec<Post> {
        eventually(
            &format!("{n} posts for {key}"),
            Duration::from_secs(60),
            || async {
                let posts = self.posts_for(key);
                (posts.len() >= n).then_some(posts)
            },
        )
        .await
    }

    /// Every key the double saw had at most one success.
    pub fn assert_each_key_succeeded_at_most_once(&self) {
        let seen = self.state.seen.lock().expect("lock");
        for (key, n) in &seen.successes {
            assert_eq!(*n, 1, "billing saw {n} successes for {key}");
        }
    }
}

impl Drop for BillingDouble {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

async fn readings(
    State(state): State<Arc<DoubleState>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let key = header(&headers, "idempotency-key");
    let mut seen = state.seen.lock().expect("lock");
    let already = key.as_ref().is_some_and(|k| seen.successes.contains_key(k));
    let status = match state.behaviour {
        Behaviour::FailFirst(n) if seen.posts.len() < n => 503,
        _ if already => 409,
        Behaviour::FailFirst(_) => 200,
        Behaviour::Always(s) => s,
    };
    if (200..300).contains(&status)
        && let Some(k) = &key
    {
        *seen.successes.entry(k.clone()).or_default() += 1;
    }
    seen.posts.push(Post {
        key,
        authorization: header(&headers, "authorization"),
        content_type: header(&headers, "content-type"),
        traceparent: header(&headers, "traceparent"),
        body: body.to_vec(),
        status,
    });
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
