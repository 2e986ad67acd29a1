//! console: the staff's web console (SPEC §4.8). The contact centre looks up what
//! became of a message (search by phone, account or message id; a message's
//! timeline; an account's page), types in paper slips, and supervisors look at the
//! dead letters and send them back. It reads only the owners' published views and
//! writes only its own schema `console` (users, sessions, login throttling, the audit
//! of staff actions, re-queue keys); paper slips go out through the broker like SMS.

pub mod api;
pub mod audit;
pub mod config;
pub mod dead;
pub mod glance;
pub mod kept;
pub mod pages;
pub mod paper;
pub mod records;
pub mod search;
pub mod session;
pub mod users;
pub mod web;
pub mod words;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use shared::service::{Schema, Service};
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// The console's migrations (schema `console`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");
pub const SCHEMA: &str = "console";

/// The console's tables (schema `console`).
pub const DATABASE: Schema = Schema {
    name: SCHEMA,
    migrator: &MIGRATOR,
};

/// Runs the console until `shutdown` on the service skeleton ([`shared::service`]).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let window = config.calendar.window()?;
    if config.insecure_cookies {
        tracing::warn!("CONSOLE_INSECURE_COOKIES=true: the session cookie is sent without Secure");
    }
    let mut service = Service::new("console", "console", &config.runtime);
    let pool = service.database(&config.database, DATABASE)?;
    let publisher = service.publisher(&config.broker, "console");
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .context("HTTP client for billing-export")?;
    let kept = Arc::new(kept::Kept::new(config.glance_refresh()));
    {
        let (kept, pool) = (kept.clone(), pool.clone());
        service.task("start page figures", move |stop| {
            kept.refresh(pool, window, stop)
        });
    }
    let state = web::AppState(Arc::new(web::Inner {
        kept,
        pool,
        publisher,
        amqp_url: config.broker.url().to_owned(),
        window,
        insecure_cookies: config.insecure_cookies,
        session_ttl: config.session_ttl(),
        api_tokens: config.api_token.clone(),
        http,
        billing_export_url: config.billing_export_url.clone(),
        export_token: config.export_token.clone(),
    }));
    service.routes(web::router(state));
    service.run(listener, shutdown).await
}
