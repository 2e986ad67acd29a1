//! The console's HTTP side: who is asking (a session, or a bearer token for the API),
//! the pages and their forms. Nothing but `/login` and `/static/…` answers without a
//! session (the ops endpoints are the skeleton's and carry no personal data).

use std::net::SocketAddr;
use std::str::FromStr as _;
use std::sync::Arc;

use axum::Form;
use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::Utc;
use chrono_tz::Tz;
use maud::Markup;
use serde::Deserialize;
use shared::broker::Publisher;
use shared::calendar::Window;
use shared::events::Period;
use shared::token::Tokens;
use sqlx::PgPool;

use crate::audit::{self, Action};
use crate::pages::{self, AccountView, Missing};
use crate::paper::{self, Slip};
use crate::records::{self, Message};
use crate::session::{self, Session};
use crate::users::{self, Role};
use crate::{dead, glance, kept, search};

/// Months of history an account's page shows.
pub const HISTORY_MONTHS: u32 = 12;
/// How long the start page waits for the dead-letter counts.
const DEPTHS_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// Paper slips listed under the form.
const RECENT_SLIPS: i64 = 10;

#[derive(Clone)]
pub struct AppState(pub Arc<Inner>);

pub struct Inner {
    pub pool: PgPool,
    /// The start page's slow figures, counted in the background.
    pub kept: Arc<crate::kept::Kept>,
    pub publisher: Publisher,
    pub amqp_url: String,
    pub window: Window,
    pub insecure_cookies: bool,
    pub session_ttl: std::time::Duration,
    pub api_tokens: Option<Tokens>,
    pub http: reqwest::Client,
    pub billing_export_url: reqwest::Url,
    pub export_token: Option<secrecy::SecretString>,
}

impl std::ops::Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Inner {
    pub fn zone(&self) -> Tz {
        self.window.zone
    }
}

/// Why a request was not answered with its page.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("not found")]
    NotFound,
    #[error("forbidden")]
    Forbidden,
    #[error("CSRF token missing or wrong")]
    Csrf,
    #[error("billing-export: {0}")]
    Upstream(String),
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self {
            Failure::Database(_) | Failure::Broker(_) => StatusCode::SERVICE_UNAVAILABLE,
            Failure::BadRequest(_) => StatusCode::BAD_REQUEST,
            Failure::NotFound => StatusCode::NOT_FOUND,
            Failure::Forbidden | Failure::Csrf => StatusCode::FORBIDDEN,
            Failure::Upstream(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// What staff read; never the database's own text.
    pub fn words(&self) -> String {
        match self {
            Failure::Database(_) => "База данных сейчас недоступна, повторите через минуту.".into(),
            Failure::Broker(_) => {
                "Брокер сообщений сейчас недоступен, повторите через минуту.".into()
            }
            Failure::BadRequest(why) => why.clone(),
            Failure::NotFound => "Не найдено.".into(),
            Failure::Forbidden => "Это доступно только руководителям.".into(),
            Failure::Csrf => {
                "Форма устарела или отправлена не с этой страницы. Откройте страницу заново.".into()
            }
            Failure::Upstream(_) => "Отчёт сейчас недоступен (billing-export не ответил).".into(),
        }
    }

    fn log(&self) {
        match self {
            Failure::Database(_) | Failure::Broker(_) | Failure::Upstream(_) => {
                tracing::warn!(error = %self, "console request failed")
            }
            _ => tracing::debug!(error = %self, "console request refused"),
        }
    }

    pub fn page(self, session: Option<&Session>) -> Response {
        self.log();
        let title = match self.status() {
            StatusCode::FORBIDDEN => "Нет доступа",
            StatusCode::NOT_FOUND => "Не найдено",
            StatusCode::BAD_REQUEST => "Ошибка в запросе",
            _ => "Временная ошибка",
        };
        (
            self.status(),
            Html(pages::error(session, title, &self.words()).into_string()),
        )
            .into_response()
    }

    pub fn json(self) -> Response {
        self.log();
        let body = serde_json::json!({ "error": self.words() });
        (self.status(), axum::Json(body)).into_response()
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        self.page(None)
    }
}

/// A signed-in member of staff (or an API token, as an operator).
pub struct Staff(pub Session);

impl Staff {
    pub fn require(&self, role: Role) -> Result<(), Failure> {
        if role == Role::Supervisor && self.0.role != Role::Supervisor {
            return Err(Failure::Forbidden);
        }
        Ok(())
    }

    pub fn check_csrf(&self, presented: &str) -> Result<(), Failure> {
        if self.0.csrf.is_empty() || !self.0.csrf_matches(presented) {
            return Err(Failure::Csrf);
        }
        Ok(())
    }

    pub fn login(&self) -> &str {
        &self.0.login
    }
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let api = parts.uri.path().starts_with("/api/");
        if api && let Some(presented) = shared::token::bearer(&parts.headers) {
            let verified = state.api_tokens.as_ref().and_then(|t| t.verify(presented));
            return match verified {
                Some(fingerprint) => Ok(Staff(Session {
                    login: format!("api:{fingerprint}"),
                    role: Role::Operator,
                    csrf: String::new(),
                })),
                None => Err(unauthorized()),
            };
        }
        let found = match session::cookie(&parts.headers, session::COOKIE) {
            Some(id) => session::find(&state.pool, id).await,
            None => Ok(None),
        };
        match found {
            Ok(Some(s)) => Ok(Staff(s)),
            Ok(None) if api => Err(unauthorized()),
            Ok(None) => Err(Redirect::to("/login").into_response()),
            Err(e) if api => Err(Failure::Database(e).json()),
            Err(e) => Err(Failure::Database(e).page(None)),
        }
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        axum::Json(serde_json::json!({"error": "a session or a valid bearer token is required"})),
    )
        .into_response()
}

fn html(m: Markup) -> Response {
    Html(m.into_string()).into_response()
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/static/console.css", get(css))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/", get(start))
        .route("/search", get(search_page))
        .route("/messages/{id}", get(message_page))
        .route("/accounts/{account}", get(account_page))
        .route("/paper", get(paper_page).post(paper_submit))
        .route("/paper/recent", get(paper_recent))
        .route("/dead", get(dead_page))
        .route("/dead/requeue", post(dead_requeue))
        .route("/reports/missing", get(missing_report))
        .route("/users", get(users_page).post(users_save))
        .route("/users/remove", post(users_remove))
        .merge(crate::api::router())
        .layer(axum::middleware::map_response(no_store))
        .with_state(state)
}

/// Pages hold personal data: never kept by a browser or a proxy cache.
async fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers.insert("x-frame-options", HeaderValue::from_static("DENY"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self'; frame-ancestors 'none'"),
    );
    response
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        pages::CSS,
    )
        .into_response()
}

async fn login_form(State(state): State<AppState>) -> Response {
    login_page(&state, StatusCode::OK, None)
}

fn login_page(state: &AppState, status: StatusCode, error: Option<&str>) -> Response {
    let token = session::random_token();
    let cookie = session::set_cookie(
        session::LOGIN_COOKIE,
        &token,
        std::time::Duration::from_secs(3600),
        state.insecure_cookies,
    );
    (
        status,
        [(header::SET_COOKIE, cookie)],
        Html(pages::login(&token, error).into_string()),
    )
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    match try_login(&state, peer, &headers, form).await {
        Ok(response) => response,
        Err(f) => f.page(None),
    }
}

async fn try_login(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
    form: LoginForm,
) -> Result<Response, Failure> {
    let expected = session::cookie(headers, session::LOGIN_COOKIE).unwrap_or("");
    if expected.is_empty() || !session::same(expected, &form.csrf) {
        return Ok(login_page(
            state,
            StatusCode::FORBIDDEN,
            Some("Форма входа устарела: попробуйте ещё раз."),
        ));
    }
    // Only a name `add-user` could have made can be a login (a NUL, which PostgreSQL
    // refuses as a parameter, was a 503 here): anything else is a wrong login.
    let login = match users::Login::parse(&form.username) {
        Ok(login) if form.password.len() <= 1024 => login.as_str().to_owned(),
        _ => {
            return Ok(login_page(
                state,
                StatusCode::UNAUTHORIZED,
                Some("Неверный логин или пароль."),
            ));
        }
    };
    let ip = Some(peer.ip());
    if let Some(until) = session::throttled_until(&state.pool, &login, ip).await? {
        let minutes = ((until - Utc::now()).num_seconds().max(0) + 59) / 60;
        return Ok(login_page(
            state,
            StatusCode::TOO_MANY_REQUESTS,
            Some(&format!(
                "Слишком много неудачных попыток. Попробуйте через {} мин.",
                minutes.max(1)
            )),
        ));
    }
    match users::check_password(&state.pool, &login, &form.password).await? {
        Some(_role) => {
            session::clear_failures(&state.pool, &login).await?;
            let id = session::open(&state.pool, &login, state.session_ttl).await?;
            audit::record(
                &state.pool,
                &login,
                Action::Login,
                &peer.ip().to_string(),
                None,
            )
            .await?;
            let cookie = session::set_cookie(
                session::COOKIE,
                &id,
                state.session_ttl,
                state.insecure_cookies,
            );
            let clear = session::clear_cookie(session::LOGIN_COOKIE, state.insecure_cookies);
            let mut response = Redirect::to("/").into_response();
            for c in [cookie, clear] {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    response.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            Ok(response)
        }
        None => {
            session::record_failure(&state.pool, &login, ip).await?;
            audit::record(
                &state.pool,
                &login,
                Action::LoginFailed,
                &peer.ip().to_string(),
                None,
            )
            .await?;
            Ok(login_page(
                state,
                StatusCode::UNAUTHORIZED,
                Some("Неверный логин или пароль."),
            ))
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    staff: Staff,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    let done = async {
        staff.check_csrf(&form.csrf)?;
        if let Some(id) = session::cookie(&headers, session::COOKIE) {
            session::close(&state.pool, id).await?;
        }
        audit::record(&state.pool, staff.login(), Action::Logout, "", None).await?;
        Ok::<_, Failure>(())
    }
    .await;
    match done {
        Ok(()) => (
            [(
                header::SET_COOKIE,
                session::clear_cookie(session::COOKIE, state.insecure_cookies),
            )],
            Redirect::to("/login"),
        )
            .into_response(),
        Err(f) => f.page(Some(&staff.0)),
    }
}

/// What the start page (and `/api/v1/glance`) shows, read for one request.
pub struct GlanceRead {
    pub last: Option<std::sync::Arc<glance::Figures>>,
    pub live: glance::Live,
    /// Dead letters per queue; `None` when the broker did not answer in time.
    pub depths: Option<Vec<(String, u32)>>,
    pub now: chrono::DateTime<Utc>,
}

pub async fn read_glance(state: &AppState) -> Result<GlanceRead, sqlx::Error> {
    let now = Utc::now();
    // The kept figures, the live ones and the broker's counts at the same time.
    let (last, live, depths) = tokio::join!(
        state.kept.last(kept::FIRST_WAIT),
        glance::live(&state.pool, state.zone(), now),
        // The page does not wait long for a broker that is away: it says so.
        tokio::time::timeout(DEPTHS_WAIT, dead::depths(&state.amqp_url)),
    );
    Ok(GlanceRead {
        last,
        live: live?,
        depths: depths.ok().and_then(Result::ok),
        now: Utc::now(),
    })
}

async fn start(State(state): State<AppState>, staff: Staff) -> Response {
    match read_glance(&state).await {
        Ok(read) => {
            let page = pages::Glance {
                this: glance::current(&state.window, read.now),
                figures: kept::shown(
                    read.last.as_deref(),
                    &state.window,
                    read.now,
                    state.kept.every(),
                ),
                every: state.kept.every(),
                live: read.live,
                dead: read.depths.as_deref(),
                zone: state.zone(),
                now: read.now,
            };
            html(pages::glance(&staff.0, &page))
        }
        Err(e) => Failure::Database(e).page(Some(&staff.0)),
    }
}

#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    pub q: String,
}

/// A search, audited before it is answered.
pub async fn run_search(
    state: &AppState,
    staff: &Staff,
    q: &str,
) -> Result<records::Found, Failure> {
    let queries = search::classify(q);
    let subject: String = q.trim().chars().take(search::MAX_QUERY).collect();
    audit::record(
        &state.pool,
        staff.login(),
        Action::Search,
        &subject,
        Some(serde_json::to_value(&queries).unwrap_or_default()),
    )
    .await?;
    Ok(records::search(&state.pool, queries).await?)
}

async fn search_page(
    State(state): State<AppState>,
    staff: Staff,
    Query(query): Query<SearchQuery>,
) -> Response {
    match run_search(&state, &staff, &query.q).await {
        Ok(found) => html(pages::search(
            &staff.0,
            query.q.trim(),
            &found,
            state.zone(),
        )),
        Err(f) => f.page(Some(&staff.0)),
    }
}

pub async fn load_timeline(
    state: &AppState,
    staff: &Staff,
    id: &str,
) -> Result<records::Timeline, Failure> {
    audit::record(&state.pool, staff.login(), Action::ViewMessage, id, None).await?;
    records::timeline(&state.pool, id)
        .await?
        .ok_or(Failure::NotFound)
}

async fn message_page(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> Response {
    match load_timeline(&state, &staff, &id).await {
        Ok(t) => html(pages::timeline(&staff.0, &t, state.zone())),
        Err(f) => f.page(Some(&staff.0)),
    }
}

/// Everything an account's page shows.
pub struct AccountData {
    pub meters: Vec<records::Meter>,
    pub current: Vec<records::Reading>,
    pub readings: Vec<records::Reading>,
    pub messages: Vec<Message>,
    pub missing: Vec<Missing>,
}

pub async fn load_account(
    state: &AppState,
    staff: &Staff,
    account: &str,
) -> Result<AccountData, Failure> {
    if account.is_empty() || account.len() > 18 || !account.chars().all(|c| c.is_ascii_digit()) {
        return Err(Failure::BadRequest("Лицевой счёт — только цифры.".into()));
    }
    audit::record(
        &state.pool,
        staff.login(),
        Action::ViewAccount,
        account,
        None,
    )
    .await?;
    let now = Utc::now();
    let latest = state.window.latest_closed(now);
    let mut first = latest;
    for _ in 1..HISTORY_MONTHS {
        first = first.previous();
    }
    let since = glance::Span::of(&state.window, first).opens - chrono::Duration::days(31);
    let meters = records::meters(&state.pool, account).await?;
    let current = records::current_readings(&state.pool, account).await?;
    let readings =
        records::readings_of_account(&state.pool, account, &first.previous().to_string()).await?;
    let messages = records::messages_of_account(&state.pool, account, Some(since)).await?;
    let missing = missing_periods(&meters, &readings, first, latest);
    Ok(AccountData {
        meters,
        current,
        readings,
        messages,
        missing,
    })
}

/// Closed periods from `first` to `latest` in which an active meter has no accepted
/// reading, with the months without one so far (billing estimates the first six on
/// the average, then on the norm: SPEC §4.5).
fn missing_periods(
    meters: &[records::Meter],
    readings: &[records::Reading],
    first: Period,
    latest: Period,
) -> Vec<Missing> {
    let mut out = Vec::new();
    for m in meters.iter().filter(|m| m.status == "active") {
        let mut known: Vec<Period> = readings
            .iter()
            .filter(|r| r.meter == m.meter)
            .filter_map(|r| Period::from_str(&r.period).ok())
            .collect();
        known.extend(
            m.baseline_period
                .as_deref()
                .and_then(|p| Period::from_str(p).ok()),
        );
        let mut p = first;
        loop {
            if !known.contains(&p) {
                let last = known.iter().filter(|k| **k < p).max();
                let months_missing = match last {
                    Some(l) => l.months_until(p),
                    None => first.months_until(p) + 1,
                };
                out.push(Missing {
                    meter: m.meter.clone(),
                    period: p.to_string(),
                    months_missing,
                });
            }
            if p >= latest {
                break;
            }
            p = p.next();
        }
    }
    out.reverse();
    out
}

async fn account_page(
    State(state): State<AppState>,
    staff: Staff,
    Path(account): Path<String>,
) -> Response {
    match load_account(&state, &staff, &account).await {
        Ok(a) => html(pages::account(
            &staff.0,
            &AccountView {
                account: &account,
                meters: &a.meters,
                current: &a.current,
                readings: &a.readings,
                messages: &a.messages,
                missing: &a.missing,
            },
            state.zone(),
        )),
        Err(f) => f.page(Some(&staff.0)),
    }
}

/// This operator's latest slips: (id, text, decision once made).
async fn recent_slips(
    state: &AppState,
    login: &str,
) -> Result<Vec<(String, String, Option<Message>)>, Failure> {
    let slips: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT subject, detail->>'text' FROM audit
         WHERE login = $1 AND action = 'paper_slip' ORDER BY at DESC LIMIT $2",
    )
    .bind(login)
    .bind(RECENT_SLIPS)
    .fetch_all(&state.pool)
    .await?;
    let ids: Vec<String> = slips.iter().map(|s| s.0.clone()).collect();
    let decided = records::messages(&state.pool, &ids).await?;
    Ok(slips
        .into_iter()
        .map(|(id, text)| {
            let m = decided.iter().find(|m| m.message_id == id).cloned();
            (id, text.unwrap_or_default(), m)
        })
        .collect())
}

async fn paper_page(State(state): State<AppState>, staff: Staff) -> Response {
    match recent_slips(&state, staff.login()).await {
        Ok(rows) => html(pages::paper(&staff.0, &paper::new_id(), None, &rows)),
        Err(f) => f.page(Some(&staff.0)),
    }
}

async fn paper_recent(State(state): State<AppState>, staff: Staff) -> Response {
    match recent_slips(&state, staff.login()).await {
        Ok(rows) => html(pages::slips(&rows)),
        Err(f) => f.page(Some(&staff.0)),
    }
}

#[derive(Deserialize)]
struct PaperForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    slip: String,
    #[serde(default)]
    account: String,
    #[serde(default)]
    t1: String,
    #[serde(default)]
    t2: String,
    #[serde(default)]
    t3: String,
}

async fn paper_submit(
    State(state): State<AppState>,
    staff: Staff,
    Form(form): Form<PaperForm>,
) -> Response {
    if let Err(f) = staff.check_csrf(&form.csrf) {
        return f.page(Some(&staff.0));
    }
    let slip = match Slip::parse(&form.slip, &form.account, &[&form.t1, &form.t2, &form.t3]) {
        Ok(slip) => slip,
        Err(why) => {
            let rows = recent_slips(&state, staff.login())
                .await
                .unwrap_or_default();
            let page = pages::paper(&staff.0, &form.slip, Some(&why), &rows);
            return (StatusCode::UNPROCESSABLE_ENTITY, Html(page.into_string())).into_response();
        }
    };
    let published = async {
        // Audited first: a slip the audit does not know was never sent.
        audit::record(
            &state.pool,
            staff.login(),
            Action::PaperSlip,
            &slip.id,
            Some(serde_json::json!({"text": slip.text()})),
        )
        .await?;
        slip.publish(&state.publisher)
            .await
            .map_err(|e| Failure::Broker(e.to_string()))
    }
    .await;
    match published {
        Ok(()) => Redirect::to("/paper").into_response(),
        Err(f) => f.page(Some(&staff.0)),
    }
}

async fn dead_page(State(state): State<AppState>, staff: Staff) -> Response {
    dead_view(&state, &staff, None).await
}

async fn dead_view(state: &AppState, staff: &Staff, notice: Option<&str>) -> Response {
    let loaded = async {
        staff.require(Role::Supervisor)?;
        audit::record(
            &state.pool,
            staff.login(),
            Action::ViewDeadLetters,
            "",
            None,
        )
        .await?;
        let mut all = Vec::new();
        for q in dead::queues() {
            let letters = dead::list(&state.amqp_url, &q.name)
                .await
                .map_err(|e| Failure::Broker(e.to_string()))?;
            all.push((q.name, letters));
        }
        Ok::<_, Failure>(all)
    }
    .await;
    match loaded {
        Ok(all) => html(pages::dead(&staff.0, &all, notice, state.zone())),
        Err(f) => f.page(Some(&staff.0)),
    }
}

#[derive(Deserialize)]
struct RequeueForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    queue: String,
    /// One letter's key; absent: every letter of the queue.
    key: Option<String>,
}

async fn dead_requeue(
    State(state): State<AppState>,
    staff: Staff,
    Form(form): Form<RequeueForm>,
) -> Response {
    let done = async {
        staff.require(Role::Supervisor)?;
        staff.check_csrf(&form.csrf)?;
        let key = form.key.as_deref().filter(|k| !k.is_empty());
        let taken = dead::requeue(
            &state.amqp_url,
            &state.pool,
            &form.queue,
            key,
            staff.login(),
        )
        .await
        .map_err(|e| match e {
            dead::DeadError::UnknownQueue(q) => Failure::BadRequest(format!("Нет очереди {q}.")),
            dead::DeadError::Database(e) => Failure::Database(e),
            other => Failure::Broker(other.to_string()),
        })?;
        let action = if key.is_some() {
            Action::Requeue
        } else {
            Action::RequeueAll
        };
        let ids: Vec<_> = taken.iter().map(|l| l.message_id.clone()).collect();
        audit::record(
            &state.pool,
            staff.login(),
            action,
            &form.queue,
            Some(serde_json::json!({"key": key, "requeued": ids})),
        )
        .await?;
        Ok::<_, Failure>(taken.len())
    }
    .await;
    match done {
        Ok(0) => {
            dead_view(
                &state,
                &staff,
                Some("Ничего не возвращено: эти сообщения уже возвращены в очередь."),
            )
            .await
        }
        Ok(n) => dead_view(&state, &staff, Some(&format!("Возвращено в очередь: {n}."))).await,
        Err(f) => f.page(Some(&staff.0)),
    }
}

#[derive(Deserialize)]
struct ReportQuery {
    #[serde(default)]
    period: String,
}

/// billing-export's missing-readings report of a period, streamed through: the
/// report's rules stay in billing-export, which owns them.
async fn missing_report(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<ReportQuery>,
) -> Response {
    let fetched = async {
        let period = Period::from_str(q.period.trim()).map_err(|_| {
            Failure::BadRequest("Период — в виде ГГГГ-ММ, например 2026-11.".into())
        })?;
        audit::record(
            &state.pool,
            staff.login(),
            Action::DownloadMissing,
            &period.to_string(),
            None,
        )
        .await?;
        let url = state
            .billing_export_url
            .join(&format!("v1/exports/{period}/missing.csv"))
            .map_err(|e| Failure::Upstream(e.to_string()))?;
        let mut request = state.http.get(url);
        if let Some(token) = &state.export_token {
            request = request.bearer_auth(secrecy::ExposeSecret::expose_secret(token));
        }
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Upstream(e.to_string()))?;
        if !response.status().is_success() {
            return Err(Failure::Upstream(format!("answered {}", response.status())));
        }
        Ok((period, response))
    }
    .await;
    match fetched {
        Ok((period, response)) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"missing-{period}.csv\""),
                ),
            ],
            axum::body::Body::from_stream(response.bytes_stream()),
        )
            .into_response(),
        Err(f) => f.page(Some(&staff.0)),
    }
}

/// Staff and their roles (supervisors): listed, added, given a new role or password,
/// removed. `console add-user` does the same from the command line (the first user).
async fn users_page(State(state): State<AppState>, staff: Staff) -> Response {
    match staff.require(Role::Supervisor) {
        Ok(()) => users_view(&state, &staff, None).await,
        Err(f) => f.page(Some(&staff.0)),
    }
}

async fn users_view(state: &AppState, staff: &Staff, notice: Option<&str>) -> Response {
    match users::list(&state.pool).await {
        Ok(list) => html(pages::users(&staff.0, &list, state.zone(), notice)),
        Err(e) => Failure::Database(e).page(Some(&staff.0)),
    }
}

#[derive(Deserialize)]
struct UserForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    login: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    password: String,
}

async fn users_save(
    State(state): State<AppState>,
    staff: Staff,
    Form(form): Form<UserForm>,
) -> Response {
    let done = async {
        staff.require(Role::Supervisor)?;
        staff.check_csrf(&form.csrf)?;
        let login = users::Login::parse(&form.login)
            .map_err(|e| Failure::BadRequest(format!("Логин: {e}.")))?;
        let role = Role::parse(&form.role)
            .ok_or_else(|| Failure::BadRequest("Роль: оператор или руководитель.".into()))?;
        if form.password.chars().count() < users::MIN_PASSWORD {
            return Err(Failure::BadRequest(format!(
                "Пароль должен быть не короче {} знаков.",
                users::MIN_PASSWORD
            )));
        }
        users::add_user(&state.pool, &login, role, &form.password)
            .await
            .map_err(|e| Failure::BadRequest(e.to_string()))?;
        audit::record(
            &state.pool,
            staff.login(),
            Action::SaveUser,
            login.as_str(),
            Some(serde_json::json!({"role": role.as_str()})),
        )
        .await?;
        Ok::<_, Failure>(login)
    }
    .await;
    match done {
        Ok(login) => {
            let notice = format!("Сохранено: {}.", login.as_str());
            users_view(&state, &staff, Some(&notice)).await
        }
        Err(f) => f.page(Some(&staff.0)),
    }
}

async fn users_remove(
    State(state): State<AppState>,
    staff: Staff,
    Form(form): Form<UserForm>,
) -> Response {
    let done = async {
        staff.require(Role::Supervisor)?;
        staff.check_csrf(&form.csrf)?;
        let login = users::Login::parse(&form.login)
            .map_err(|e| Failure::BadRequest(format!("Логин: {e}.")))?;
        if login.as_str() == staff.login() {
            return Err(Failure::BadRequest(
                "Себя удалить нельзя: это может сделать другой руководитель.".into(),
            ));
        }
        let removed = users::remove_user(&state.pool, &login).await?;
        if removed {
            audit::record(
                &state.pool,
                staff.login(),
                Action::RemoveUser,
                login.as_str(),
                None,
            )
            .await?;
        }
        Ok::<_, Failure>((login, removed))
    }
    .await;
    match done {
        Ok((login, true)) => {
            let notice = format!("Удалён: {}; его сеансы закрыты.", login.as_str());
            users_view(&state, &staff, Some(&notice)).await
        }
        Ok((login, false)) => {
            let notice = format!("Нет такого сотрудника: {}.", login.as_str());
            users_view(&state, &staff, Some(&notice)).await
        }
        Err(f) => f.page(Some(&staff.0)),
    }
}
