//! The JSON API, `/api/v1/…` (SPEC §4.8): what the search, timeline and account pages
//! show, with the session cookie or a bearer token from `CONSOLE_API_TOKEN`
//! (`docs/openapi.yaml`). Audited like the pages; a token is audited as
//! `api:<fingerprint>`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::web::{AppState, SearchQuery, Staff, load_account, load_timeline, run_search};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/search", get(search))
        .route("/api/v1/messages/{id}", get(message))
        .route("/api/v1/accounts/{account}", get(account))
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
