//! The HTTP side every service shares: the operational endpoints (`GET /healthz`,
//! the process is alive; `GET /readyz`, broker and database reachable; `GET
//! /metrics`) and the server itself, [`serve`], which bounds what a client may take
//! (SPEC §5, `HttpLimits`):
//!
//! - **headers**: a request's head must arrive within `HTTP_HEADER_TIMEOUT_SECONDS`
//!   (hyper's `header_read_timeout`; the clock also runs on an idle keep-alive
//!   connection), else the connection is closed — a slowloris client holds a
//!   connection for seconds, not forever;
//! - **body**: a request's body must arrive within `HTTP_BODY_TIMEOUT_SECONDS` of its
//!   head, else `408` and the connection is closed;
//! - **connections**: at most `HTTP_MAX_CONNECTIONS` are served at once. Beyond it
//!   the server stops accepting, so new connections wait in the kernel's accept
//!   queue and are served as slots free — queued, not refused, because a refused
//!   gateway does not always retry (Kannel's `http-request-retry` defaults to 0) and
//!   the two bounds above free a slot held by a slow client within seconds.
//!
//! HTTP/1.1 only: every client of these services (gateways, Prometheus, billing,
//! probes) speaks it, and one protocol keeps the bounds simple to reason about
//! (HTTP/2's preface and streams would need bounds of their own).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::ReadyFlag;
use crate::config::HttpLimits;

/// What `/readyz` checks and `/metrics` shows.
#[derive(Clone)]
pub struct Ops {
    pub registry: Arc<Registry>,
    /// Every broker link the service needs (publisher, consumers).
    pub broker_links: Vec<ReadyFlag>,
    pub database: Option<PgPool>,
    /// Start-up has finished (migrations applied, consumers running).
    pub started: Arc<AtomicBool>,
    /// Something the service cannot run without has stopped: never ready again.
    pub failed: Arc<AtomicBool>,
}

pub fn router(ops: Ops) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ops)
}

async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    let mut problems = Vec::new();
    if ops.failed.load(Ordering::Acquire) {
        problems.push("a consumer or server stopped; the process is exiting");
    } else if !ops.started.load(Ordering::Acquire) {
        problems.push("starting");
    }
    if ops.broker_links.iter().any(|l| !l.get()) {
        problems.push("broker not connected");
    }
    if let Some(pool) = &ops.database {
        let ping = sqlx::query("SELECT 1").execute(pool);
        if !matches!(
            tokio::time::timeout(Duration::from_secs(2), ping).await,
            Ok(Ok(_))
        ) {
            problems.push("database not reachable");
        }
    }
    if problems.is_empty() {
        (StatusCode::OK, "ready".to_owned())
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, problems.join("; "))
    }
}

async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::encode(&ops.registry),
    )
}

/// What the server counts (registered by the skeleton under the service's prefix).
#[derive(Clone)]
pub struct HttpMetrics {
    connections: Gauge,
    limit_waits: Counter,
    header_timeouts: Counter,
    body_timeouts: Counter,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = HttpMetrics {
            connections: Gauge::default(),
            limit_waits: Counter::default(),
            header_timeouts: Counter::default(),
            body_timeouts: Counter::default(),
        };
        registry.register(
            "http_connections",
            "HTTP connections open now (at most HTTP_MAX_CONNECTIONS)",
            metrics.connections.clone(),
        );
        registry.register(
            "http_connection_limit_waits",
            "Times the server stopped accepting because HTTP_MAX_CONNECTIONS were open",
            metrics.limit_waits.clone(),
        );
        registry.register(
            "http_header_timeouts",
            "Connections closed because no complete request head came within \
             HTTP_HEADER_TIMEOUT_SECONDS (slow clients, and idle keep-alive connections)",
            metrics.header_timeouts.clone(),
        );
        registry.register(
            "http_body_timeouts",
            "Requests answered 408 because the body did not arrive within HTTP_BODY_TIMEOUT_SECONDS",
            metrics.body_timeouts.clone(),
        );
        metrics
    }
}

/// Serves `app` until `shutdown` within `limits` (see the module's documentation),
/// then finishes the requests in progress.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    metrics: HttpMetrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let body_timeout = limits.body_timeout();
    let deadline_metrics = metrics.clone();
    let app = app.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            body_deadline(req, next, body_timeout, deadline_metrics.clone())
        },
    ));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout());
    let slots = Arc::new(Semaphore::new(limits.max_connections()));
    let connections = TaskTracker::new();
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                metrics.limit_waits.inc();
                tracing::debug!(
                    limit = limits.max_connections(),
                    "HTTP connection limit reached; new connections wait to be accepted"
                );
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        // Handlers may read the peer's address (`ConnectInfo<SocketAddr>`): the console
        // throttles failed logins per client address.
        let service = TowerToHyperService::new(app.clone());
        let with_peer = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            hyper::service::Service::call(&service, req)
        });
        let connection = http1.serve_connection(TokioIo::new(stream), with_peer);
        let shutdown = shutdown.clone();
        let metrics = metrics.clone();
        connections.spawn(async move {
            let _slot = slot;
            metrics.connections.inc();
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            metrics.connections.dec();
            match served {
                Ok(()) => {}
                Err(e) if e.is_timeout() => {
                    metrics.header_timeouts.inc();
                    tracing::debug!(
                        "HTTP connection closed: no request head within the header timeout"
                    );
                }
                Err(e) => tracing::debug!(error = %e, "HTTP connection ended with an error"),
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// As axum's own server: a failed accept of one connection is that connection's
/// problem; anything else (out of file descriptors, say) is waited out for a second
/// rather than spun on.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting an HTTP connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Runs the request with its body bounded in time: when the body has not arrived
/// within `limit`, whatever the handler answered (its body extractor saw an error)
/// becomes `408` with `Connection: close`.
async fn body_deadline(
    req: Request,
    next: Next,
    limit: Duration,
    metrics: HttpMetrics,
) -> Response {
    let expired = Arc::new(AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let body = Body::new(DeadlineBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep(limit)),
        expired: expired.clone(),
    });
    let response = next.run(Request::from_parts(parts, body)).await;
    if !expired.load(Ordering::Acquire) {
        return response;
    }
    metrics.body_timeouts.inc();
    tracing::info!(
        path,
        limit_seconds = limit.as_secs(),
        "request body too slow: 408"
    );
    let mut response = (
        StatusCode::REQUEST_TIMEOUT,
        Json(serde_json::json!({
            "error": "request_timeout",
            "message": format!("the request body did not arrive within {} s", limit.as_secs()),
        })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails once its deadline has passed.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    expired: Arc<AtomicBool>,
}

#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct BodyTimedOut;

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimedOut))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A cookie's value from the request's `Cookie` headers, if it has one of `name`.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}
