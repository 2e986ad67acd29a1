//! The operational endpoints every service serves: `GET /healthz` (the process is
//! alive), `GET /readyz` (broker and database reachable) and `GET /metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::broker::ReadyFlag;

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

/// Serves `app` until `shutdown`, then finishes the requests in progress. Handlers
/// may read the peer's address (`ConnectInfo<SocketAddr>`): the console throttles
/// login attempts per address.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
