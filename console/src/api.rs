//! The JSON API, `/api/v1/…` (SPEC §4.8): what the start, search, timeline and account
//! pages show, with the session cookie or a bearer token from `CONSOLE_API_TOKEN`
//! (`docs/openapi.yaml`). Audited like the pages; a token is audited as
//! `api:<fingerprint>`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::glance;
use crate::kept::{self, Shown};
use crate::web::{
    AppState, SearchQuery, Staff, load_account, load_timeline, read_glance, run_search,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/glance", get(glance_now))
        .route("/api/v1/search", get(search))
        .route("/api/v1/messages/{id}", get(message))
        .route("/api/v1/accounts/{account}", get(account))
}

/// The start page's figures. `figures` is the kept count (`null` while the first
/// count of this window is still running), `figures_state` says which: `counting`,
/// `fresh`, or `stale` (older than two refreshes: counting has failed since).
async fn glance_now(State(state): State<AppState>, _staff: Staff) -> Response {
    let read = match read_glance(&state).await {
        Ok(read) => read,
        Err(e) => return crate::web::Failure::Database(e).json(),
    };
    let every = state.kept.every();
    let (figures_state, figures) =
        match kept::shown(read.last.as_deref(), &state.window, read.now, every) {
            Shown::Counting => ("counting", None),
            Shown::Fresh(f) => ("fresh", Some(f)),
            Shown::Stale(f) => ("stale", Some(f)),
        };
    let this = glance::current(&state.window, read.now);
    Json(json!({
        "period": this.period.to_string(),
        "window": {"opens": this.opens, "closes": this.closes},
        "figures_state": figures_state,
        "refresh_seconds": every.as_secs(),
        "figures": figures,
        "billing_backlog": read.live.billing_backlog,
        "replies_sent_today": read.live.replies_sent_today,
        "dead_letters": read.depths.map(|d| d.into_iter()
            .map(|(queue, n)| json!({"queue": queue, "messages": n}))
            .collect::<Vec<_>>()),
        "at": read.now,
    }))
    .into_response()
}

async fn search(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<SearchQuery>,
) -> Response {
    match run_search(&state, &staff, &q.q).await {
        Ok(found) => Json(found).into_response(),
        Err(f) => f.json(),
    }
}

async fn message(State(state): State<AppState>, staff: Staff, Path(id): Path<String>) -> Response {
    match load_timeline(&state, &staff, &id).await {
        Ok(t) => Json(t).into_response(),
        Err(f) => f.json(),
    }
}

async fn account(
    State(state): State<AppState>,
    staff: Staff,
    Path(account): Path<String>,
) -> Response {
    match load_account(&state, &staff, &account).await {
        Ok(a) => Json(json!({
            "account": account,
            "meters": a.meters,
            "current": a.current,
            "readings": a.readings,
            "messages": a.messages,
            "missing": a.missing.iter().map(|m| json!({
                "meter": m.meter,
                "period": m.period,
                "months_missing": m.months_missing,
                "method": if m.months_missing <= 6 { "average" } else { "normative" },
            })).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(f) => f.json(),
    }
}
