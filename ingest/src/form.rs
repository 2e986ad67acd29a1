//! The resident web form (SPEC §4.9): `GET /form`, `POST /form`. Public, without
//! login; plain HTML that works without JavaScript on a small old phone.
//!
//! - **Zones**: one field per zone, up to three («день / Т1», «ночь / Т2», «Т3»); a
//!   one-zone meter fills only the first. Ingest reads no other service's data, so it
//!   cannot know the meter's zones: the validator's `zone_mismatch` says so when the
//!   count is wrong, as for an SMS.
//! - **CSRF without a session**: a double-submit token. `GET /form` sets a random
//!   token in a `SameSite=Strict`, `HttpOnly` cookie (`Secure` where the page is
//!   served over HTTPS) and the same token in a hidden field; `POST /form` is refused
//!   (403, the form again) unless both are present and equal. A cross-site page can
//!   neither read the cookie nor make the browser send it.
//! - **Message id**: `web-<uuid>` made when the form is shown (a hidden field), so a
//!   double submit is the same message, which the validator takes once. The sender
//!   (`from`) is the same id: not a phone, so the validator's per-sender limit counts
//!   each form on its own (as the console's paper slips do) and the notifier sends no
//!   SMS (suppressed: not a phone number). Abuse is limited per client here instead.
//! - **Text**: the canonical SMS text built from the fields (account, readings in zone
//!   order, e-mail), so the same grammar and checks apply.
//! - **Per-client rate limit** ([`limit`]): a token bucket per client — the address the
//!   trusted proxy names in `FORM_CLIENT_IP_HEADER`, an IPv6 client by its /64 — in
//!   this process (`FORM_RATE_PER_MINUTE`; with N replicas the limit is N times higher),
//!   spent only by posts that would be published (see `answer`).

pub mod limit;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Form, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use maud::{DOCTYPE, Markup, html};
use shared::client::{ClientKey, TrustedProxy};
use shared::events::{Channel, RejectReason, SmsReceived};
use tracing::Instrument;

use self::limit::RateLimiter;
use crate::decisions::{self, Decision, Decisions};
use crate::sms::{AppState, publish, request_span};

/// The cookie that carries the double-submit token.
pub const CSRF_COOKIE: &str = "form_csrf";
/// The `to` of a web form's message (an SMS has the number it was sent to).
pub const RECIPIENT: &str = "web";
/// Readings on one form at most (three tariff zones).
pub const MAX_ZONES: usize = 3;
const ZONE_LABELS: [&str; MAX_ZONES] = ["День / Т1", "Ночь / Т2", "Т3"];

#[derive(Clone)]
pub struct FormState {
    app: AppState,
    decisions: Decisions,
    limiter: Arc<RateLimiter>,
    /// The reverse proxy in front of the form, when `FORM_CLIENT_IP_HEADER` says one
    /// names the client.
    proxy: Option<TrustedProxy>,
}

impl FormState {
    pub fn new(
        app: AppState,
        decisions: Decisions,
        per_minute: u32,
        client_ip_header: Option<HeaderName>,
    ) -> FormState {
        FormState {
            app,
            decisions,
            limiter: Arc::new(RateLimiter::new(per_minute)),
            proxy: client_ip_header.map(TrustedProxy::new),
        }
    }

    /// Whom the rate limit counts: the client the proxy names, else the TCP peer.
    fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> ClientKey {
        let ip = match &self.proxy {
            Some(proxy) => proxy.client_ip(peer, headers),
            None => peer.ip(),
        };
        ClientKey::from(ip)
    }

    /// Whether the page reached the resident over HTTPS. Ingest speaks plain HTTP;
    /// only the trusted proxy knows, and says so in `X-Forwarded-Proto`. Without a
    /// proxy the page is served as it is, in clear.
    fn over_https(&self, headers: &HeaderMap) -> bool {
        self.proxy
            .as_ref()
            .is_some_and(|p| p.client_used_https(headers))
    }
}

pub fn router(state: FormState) -> Router {
    let limit = state.app.max_body();
    Router::new()
        .route("/form", get(show_form).post(post_form))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// What the resident typed, to show again with the reason when it cannot be sent.
#[derive(Debug, Default, Clone)]
struct Filled {
    account: String,
    values: [String; MAX_ZONES],
    email: String,
}

/// A checked form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    pub account: String,
    pub values: Vec<String>,
    pub email: Option<String>,
}

impl Reading {
    /// Checks what the form can check; the rest is the validator's, as for an SMS.
    pub fn parse(account: &str, values: &[&str], email: &str) -> Result<Reading, String> {
        let account = account.trim();
        if account.is_empty() {
            return Err("Укажите номер лицевого счёта.".into());
        }
        if account.len() > 18 || !account.chars().all(|c| c.is_ascii_digit()) {
            return Err("Лицевой счёт — только цифры.".into());
        }
        let values: Vec<&str> = values.iter().map(|v| v.trim()).collect();
        let last = values.iter().rposition(|v| !v.is_empty());
        let Some(last) = last else {
            return Err(
                "Укажите показание счётчика (для однотарифного — только первое поле).".into(),
            );
        };
        if values.len() > MAX_ZONES {
            return Err("Не больше трёх показаний.".into());
        }
        if let Some(i) = values[..=last].iter().position(|v| v.is_empty()) {
            return Err(format!(
                "Заполните поле «{}» или оставьте пустыми все поля после него.",
                ZONE_LABELS[i]
            ));
        }
        let mut digits = Vec::new();
        for (i, v) in values[..=last].iter().enumerate() {
            // A decimal part copied from the display is dropped, as in an SMS.
            let whole = v.split([',', '.']).next().unwrap_or("");
            let decimals_ok = v
                .get(whole.len() + 1..)
                .is_none_or(|d| d.len() <= 2 && d.chars().all(|c| c.is_ascii_digit()));
            if whole.is_empty()
                || whole.len() > 18
                || !whole.chars().all(|c| c.is_ascii_digit())
                || !decimals_ok
            {
                return Err(format!(
                    "Показание «{}» — только цифры (до запятой).",
                    ZONE_LABELS[i]
                ));
            }
            digits.push(whole.to_owned());
        }
        let email = email.trim();
        let email = if email.is_empty() {
            None
        } else if email.len() > 254
            || !email.contains('@')
            || email
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || "#*;,".contains(c))
        {
            return Err(
                "Проверьте адрес e-mail (например, ivan@mail.ru) или оставьте поле пустым.".into(),
            );
        } else {
            Some(email.to_owned())
        };
        Ok(Reading {
            account: account.to_owned(),
            values: digits,
            email,
        })
    }

    /// The text the validator reads: the canonical SMS form (SPEC §2).
    pub fn text(&self) -> String {
        let mut text = self.account.clone();
        for v in &self.values {
            text.push(' ');
            text.push_str(v);
        }
        if let Some(email) = &self.email {
            text.push(' ');
            text.push_str(email);
        }
        text
    }

    pub fn event(&self, id: &str) -> SmsReceived {
        SmsReceived {
            message_id: id.to_owned(),
            from: id.to_owned(),
            to: RECIPIENT.to_owned(),
            text: self.text(),
            received_at: Utc::now().fixed_offset(),
            channel: Channel::Web,
            chat: None,
            contact: None,
        }
    }
}

fn new_id() -> String {
    format!("web-{}", uuid::Uuid::new_v4())
}

fn valid_id(id: &str) -> bool {
    id.strip_prefix("web-")
        .is_some_and(|u| uuid::Uuid::parse_str(u).is_ok())
}

fn new_token() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    shared::http::cookie(headers, CSRF_COOKIE)
}

fn page(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="ru" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) }
                style { (maud::PreEscaped(CSS)) }
            }
            body { (body) }
        }
    }
}

const CSS: &str = "body{font-family:sans-serif;margin:0 auto;padding:8px;max-width:30em;font-size:18px}\
h1{font-size:24px;line-height:1.2;margin:8px 0 4px}\
label{display:block;margin-top:12px}\
input{display:block;box-sizing:border-box;width:100%;font-size:22px;padding:8px;margin-top:4px}\
button{font-size:22px;padding:10px;margin-top:16px;width:100%}\
.err{border:2px solid #b00;padding:8px;color:#800}.ok{border:2px solid #070;padding:8px}\
small{color:#555}";

fn form_page(token: &str, id: &str, filled: &Filled, error: Option<&str>) -> Markup {
    page(
        "Показания счётчика",
        html! {
            h1 { "Передать показания счётчика" }
            @if let Some(error) = error {
                p.err role="alert" { (error) }
            }
            form method="post" action="/form" {
                input type="hidden" name="csrf" value=(token);
                input type="hidden" name="id" value=(id);
                label for="account" { "Лицевой счёт" }
                input #account name="account" inputmode="numeric" autocomplete="off"
                    maxlength="18" required value=(filled.account);
                @for (i, label) in ZONE_LABELS.iter().enumerate() {
                    label for=(format!("t{}", i + 1)) { (label) }
                    input id=(format!("t{}", i + 1)) name=(format!("t{}", i + 1))
                        inputmode="numeric" autocomplete="off" maxlength="21"
                        required[i == 0] value=(filled.values[i]);
                }
                p { small { "Однотарифный счётчик — заполните только первое поле. \
                             Цифры до запятой." } }
                label for="email" { "E-mail (необязательно)" }
                input #email name="email" type="email" inputmode="email"
                    autocomplete="email" maxlength="254" value=(filled.email);
                p { small { "На e-mail придёт подтверждение." } }
                button type="submit" { "Отправить" }
            }
        },
    )
}

/// The form with a fresh token: the cookie and the hidden field. The cookie is
/// `Secure` where the page reached the resident over HTTPS ([`FormState::over_https`]),
/// so that the browser never sends it in clear; over plain HTTP a `Secure` cookie
/// would not be stored at all and every post would be refused.
fn with_form(
    secure: bool,
    status: StatusCode,
    filled: &Filled,
    error: Option<&str>,
    id: &str,
) -> Response {
    let token = new_token();
    let mut resp = (status, form_page(&token, id, filled, error)).into_response();
    let secure = if secure { "; Secure" } else { "" };
    let cookie = format!("{CSRF_COOKIE}={token}; Path=/form; HttpOnly; SameSite=Strict{secure}");
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn show_form(State(state): State<FormState>, headers: HeaderMap) -> Response {
    let secure = state.over_https(&headers);
    let resp = with_form(secure, StatusCode::OK, &Filled::default(), None, &new_id());
    state.app.count("form", resp.status());
    resp
}

async fn post_form(
    State(state): State<FormState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let span = request_span("POST /form", &headers);
    let resp = answer(&state, peer, &headers, form).instrument(span).await;
    state.app.count("form", resp.status());
    resp
}

/// A post's way: the body, the CSRF token, the form's own checks, then the client's
/// budget, then the broker. Only a post that would be published spends the budget:
/// the budget guards the broker, the validator and the connection held while the
/// decision comes; everything before it costs what `GET /form` costs (a small page,
/// bounded by the body limit and the HTTP server's limits), and charging it would let
/// junk from one client use up the budget of everyone behind the same address (a
/// carrier's NAT, a household's /64), or a stale form cost a resident a try.
async fn answer(
    state: &FormState,
    peer: SocketAddr,
    headers: &HeaderMap,
    form: Result<Form<HashMap<String, String>>, FormRejection>,
) -> Response {
    let secure = state.over_https(headers);
    let fields = match form {
        Ok(Form(fields)) => fields,
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                page(
                    "Слишком длинно",
                    html! {
                        h1 { "Слишком длинная форма" }
                        p.err { "Форма слишком длинная. " a href="/form" { "Заполните её заново" } "." }
                    },
                ),
            )
                .into_response();
        }
        Err(_) => {
            return with_form(
                secure,
                StatusCode::BAD_REQUEST,
                &Filled::default(),
                Some("Форма не прочиталась: заполните её заново."),
                &new_id(),
            );
        }
    };
    let field = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
    let filled = Filled {
        account: field("account").trim().to_owned(),
        values: [
            field("t1").trim().to_owned(),
            field("t2").trim().to_owned(),
            field("t3").trim().to_owned(),
        ],
        email: field("email").trim().to_owned(),
    };
    let id = if valid_id(field("id")) {
        field("id").to_owned()
    } else {
        new_id()
    };
    let csrf_ok = cookie_token(headers)
        .is_some_and(|c| !c.is_empty() && shared::token::same(c, field("csrf")));
    if !csrf_ok {
        tracing::debug!("web form: CSRF token missing or wrong");
        return with_form(
            secure,
            StatusCode::FORBIDDEN,
            &filled,
            Some(
                "Форма устарела или открыта не с нашего сайта. Проверьте данные и отправьте ещё раз.",
            ),
            &id,
        );
    }
    let values: Vec<&str> = filled.values.iter().map(String::as_str).collect();
    let reading = match Reading::parse(&filled.account, &values, &filled.email) {
        Ok(r) => r,
        Err(reason) => {
            return with_form(secure, StatusCode::BAD_REQUEST, &filled, Some(&reason), &id);
        }
    };
    let client = state.client(peer, headers);
    if let Err(wait) = state.limiter.admit(client, Instant::now()) {
        tracing::info!(%client, "web form: rate limited");
        let mut resp = with_form(
            secure,
            StatusCode::TOO_MANY_REQUESTS,
            &filled,
            Some("С этого адреса слишком много отправок. Попробуйте через минуту."),
            &id,
        );
        if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    // Subscribed before the publish, so a quick decision is not missed.
    let rx = state.decisions.subscribe();
    match publish(&state.app, reading.event(&id)).await {
        Ok(id) => {
            let decision = Decisions::wait(rx, &id, decisions::WAIT).await;
            received_page(&id, &reading, decision)
        }
        Err(_) => {
            let mut resp = with_form(
                secure,
                StatusCode::SERVICE_UNAVAILABLE,
                &filled,
                Some("Сейчас не удалось принять показания. Отправьте ещё раз через минуту."),
                &id,
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            resp
        }
    }
}

/// The answer: the decision when it came in time, else that the reading is being
/// checked. Shows only what the resident typed (SPEC §3: replies never repeat stored
/// data).
fn received_page(id: &str, reading: &Reading, decision: Option<Decision>) -> Response {
    let with_email = reading.email.is_some();
    let body = page(
        "Показания",
        html! {
            @match &decision {
                Some(Decision::Accepted { account, period }) => {
                    h1 { "Показания приняты" }
                    p.ok #decision {
                        "Показания приняты: лицевой счёт " (account) ", период " (period)
                        ", значения: " (reading.values.join(", ")) "."
                        @if with_email { " Подтверждение придёт на e-mail." }
                    }
                }
                Some(Decision::Rejected { reason, reply }) => {
                    h1 { "Показания не приняты" }
                    p.err #decision {
                        @match reply {
                            Some(reply) => (reply),
                            None if *reason == RejectReason::RateLimited => {
                                "Слишком много отправок. Попробуйте позже."
                            }
                            None => { "Проверьте лицевой счёт и показания (" (reason.as_str()) ")." }
                        }
                    }
                    p { a href="/form" { "Исправить и отправить ещё раз" } }
                }
                None => {
                    h1 { "Спасибо" }
                    p.ok #decision {
                        @if with_email {
                            "Показания приняты к проверке, результат придёт на e-mail."
                        } @else {
                            "Показания приняты к проверке."
                        }
                    }
                }
            }
            p { small { "Номер обращения: " (id) } }
            p { a href="/form" { "Передать ещё" } }
        },
    );
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_becomes_the_canonical_text_on_the_web_channel() {
        let r = Reading::parse(
            " 0001000001 ",
            &["45100,5", " 21100 ", ""],
            " ivan@mail.ru ",
        )
        .expect("valid");
        assert_eq!(r.text(), "0001000001 45100 21100 ivan@mail.ru");
        let id = new_id();
        let e = r.event(&id);
        assert_eq!(e.channel, Channel::Web);
        assert_eq!(e.from, id);
        let json =
            String::from_utf8(shared::events::Event::SmsReceived(e).to_json()).expect("utf-8");
        assert!(json.contains(r#""channel":"web""#), "{json}");
    }

    #[test]
    fn what_the_form_can_tell_is_refused_with_a_reason() {
        assert!(Reading::parse("", &["1"], "").is_err());
        assert!(Reading::parse("12a", &["1"], "").is_err());
        assert!(Reading::parse("1000001", &["", "", ""], "").is_err());
        assert!(Reading::parse("1000001", &["1", "", "3"], "").is_err());
        assert!(Reading::parse("1000001", &["1x"], "").is_err());
        assert!(Reading::parse("1000001", &["1"], "no-at-sign").is_err());
        assert!(Reading::parse("1000001", &["1"], "a b@c.ru").is_err());
    }
}
