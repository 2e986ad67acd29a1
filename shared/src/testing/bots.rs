//! In-process doubles of the two messenger APIs the notifier answers residents
//! through (SPEC §4.9), built from their published request and response bodies: the
//! Telegram Bot API (`POST /bot<token>/sendMessage`, answered `{"ok":true,"result":
//! Message}` or `{"ok":false,"error_code","description","parameters"}`) and the MAX
//! Bot API (`POST /messages?chat_id=…` with `Authorization: <token>`, answered
//! `{"message":Message}` or `{"code","message"}`).
//!
//! Each double records every call as it arrived (method, path, query, headers, JSON
//! body), refuses a wrong bot token as the platform does (`401`), and answers the
//! calls from a script the test gives ([`BotApi::then`]), success once the script is
//! used up. The notifier's client tests and the end-to-end tests use the same
//! doubles, so both assert the same outbound calls.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio_util::sync::CancellationToken;

/// Which platform a double plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Telegram,
    Max,
}

/// One request as the double received it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    /// The path, e.g. `/bot123:abc/sendMessage` or `/messages`.
    pub path: String,
    /// The query string without `?` (`chat_id=…`), if any.
    pub query: Option<String>,
    /// Header names in lower case (hyper sends them so; compare case-insensitively).
    pub headers: Vec<(String, String)>,
    /// The body as JSON (`Null` when it was not JSON).
    pub body: serde_json::Value,
    /// The status the double answered.
    pub status: u16,
}

impl Call {
    /// A header's value, by name in any case.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter's value.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The chat a send went to: Telegram's `chat_id` in the body, MAX's in the query.
    pub fn chat(&self) -> Option<String> {
        match &self.body["chat_id"] {
            serde_json::Value::Number(n) => Some(n.to_string()),
            serde_json::Value::String(s) => Some(s.clone()),
            _ => self.query_param("chat_id"),
        }
    }

    /// The text of a send.
    pub fn text(&self) -> Option<&str> {
        self.body["text"].as_str()
    }
}

/// One scripted answer: a status, a JSON body and extra headers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
    pub headers: Vec<(String, String)>,
    /// How long to wait before answering (a slow platform, a timeout).
    pub delay: Option<Duration>,
}

impl Answer {
    /// Any status and body.
    pub fn new(status: u16, body: serde_json::Value) -> Answer {
        Answer {
            status,
            body,
            headers: Vec::new(),
            delay: None,
        }
    }

    /// The same answer with a header added (e.g. `Retry-After`).
    pub fn with_header(mut self, name: &str, value: &str) -> Answer {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The same answer after `delay`.
    pub fn after(mut self, delay: Duration) -> Answer {
        self.delay = Some(delay);
        self
    }

    /// Telegram's error object: `{"ok":false,"error_code","description"}`, with
    /// `parameters.retry_after` when given (a `429`).
    pub fn telegram_error(code: u16, description: &str, retry_after: Option<u64>) -> Answer {
        let mut body = serde_json::json!({
            "ok": false,
            "error_code": code,
            "description": description,
        });
        if let Some(secs) = retry_after {
            body["parameters"] = serde_json::json!({"retry_after": secs});
        }
        Answer::new(code, body)
    }

    /// Telegram's flood control: `429 Too Many Requests: retry after N`.
    pub fn telegram_too_many(retry_after: u64) -> Answer {
        Answer::telegram_error(
            429,
            &format!("Too Many Requests: retry after {retry_after}"),
            Some(retry_after),
        )
    }

    /// Telegram when the resident blocked the bot.
    pub fn telegram_blocked() -> Answer {
        Answer::telegram_error(403, "Forbidden: bot was blocked by the user", None)
    }

    /// MAX's error object: `{"code","message"}`.
    pub fn max_error(status: u16, code: &str, message: &str) -> Answer {
        Answer::new(
            status,
            serde_json::json!({"code": code, "message": message}),
        )
    }
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Answer>,
    calls: Vec<Call>,
    sends: u64,
}

struct Double {
    platform: Platform,
    token: String,
    inner: Mutex<Inner>,
}

/// A running double of one platform's bot API.
#[derive(Clone)]
pub struct BotApi {
    double: Arc<Double>,
    /// `http://127.0.0.1:<port>`: `TELEGRAM_API_URL` / `MAX_API_URL`.
    pub url: String,
    stop: CancellationToken,
}

impl BotApi {
    /// The Telegram Bot API for the bot whose token is `token`.
    pub async fn telegram(token: &str) -> BotApi {
        BotApi::start(Platform::Telegram, token).await
    }

    /// The MAX Bot API for the bot whose token is `token`.
    pub async fn max(token: &str) -> BotApi {
        BotApi::start(Platform::Max, token).await
    }

    async fn start(platform: Platform, token: &str) -> BotApi {
        let double = Arc::new(Double {
            platform,
            token: token.to_owned(),
            inner: Mutex::new(Inner::default()),
        });
        let app = Router::new().fallback(answer).with_state(double.clone());
        let (url, stop) = super::serve_double(app).await;
        BotApi { double, url, stop }
    }

    /// Answers the next call with `answer` (after those scripted before it).
    pub fn then(&self, answer: Answer) {
        self.with(|i| i.script.push_back(answer));
    }

    /// Every call so far, in the order they arrived.
    pub fn calls(&self) -> Vec<Call> {
        self.with(|i| i.calls.clone())
    }

    /// The sends the platform took (answered 2xx): `(chat, text)`.
    pub fn delivered(&self) -> Vec<(String, String)> {
        self.calls()
            .into_iter()
            .filter(|c| (200..300).contains(&c.status))
            .map(|c| {
                (
                    c.chat().unwrap_or_default(),
                    c.text().unwrap_or_default().to_owned(),
                )
            })
            .collect()
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut inner = self.double.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut inner)
    }
}

async fn answer(
    State(double): State<Arc<Double>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut call = Call {
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        status: 0,
    };
    let scripted = {
        let mut inner = double.inner.lock().unwrap_or_else(|e| e.into_inner());
        match double.refusal(&call) {
            Some(refused) => Some(refused),
            None => inner.script.pop_front(),
        }
    };
    let answer = match scripted {
        Some(answer) => answer,
        None => {
            let mut inner = double.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.sends += 1;
            double.success(&call, inner.sends)
        }
    };
    if let Some(delay) = answer.delay {
        tokio::time::sleep(delay).await;
    }
    call.status = answer.status;
    double
        .inner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .calls
        .push(call);
    let mut response = (
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(answer.body),
    )
        .into_response();
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_bytes()),
            axum::http::HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

impl Double {
    /// What the platform answers a call that is not a send of this bot: a wrong token
    /// (`401`), another method (`404`).
    fn refusal(&self, call: &Call) -> Option<Answer> {
        match self.platform {
            Platform::Telegram => {
                let expected = format!("/bot{}/", self.token);
                if !call.path.starts_with(&expected) {
                    return Some(Answer::telegram_error(401, "Unauthorized", None));
                }
                (call.method != "POST" || !call.path.ends_with("/sendMessage"))
                    .then(|| Answer::telegram_error(404, "Not Found", None))
            }
            Platform::Max => {
                if call.header("authorization") != Some(self.token.as_str()) {
                    return Some(Answer::max_error(
                        401,
                        "verify.token",
                        "Invalid access_token",
                    ));
                }
                (call.method != "POST" || call.path != "/messages").then(|| {
                    Answer::max_error(404, "not.found", &format!("Path {} not found", call.path))
                })
            }
        }
    }

    /// A send taken: the platform's `Message` for it.
    fn success(&self, call: &Call, n: u64) -> Answer {
        let chat = call.chat().unwrap_or_default();
        let chat_id: serde_json::Value = chat
            .parse::<i64>()
            .map(serde_json::Value::from)
            .unwrap_or(serde_json::Value::String(chat));
        let text = call.text().unwrap_or_default();
        let now = chrono::Utc::now();
        match self.platform {
            Platform::Telegram => Answer::new(
                200,
                serde_json::json!({
                    "ok": true,
                    "result": {
                        "message_id": n,
                        "from": {"id": 1, "is_bot": true, "first_name": "Показания"},
                        "chat": {"id": chat_id, "type": "private"},
                        "date": now.timestamp(),
                        "text": text,
                    }
                }),
            ),
            Platform::Max => Answer::new(
                200,
                serde_json::json!({
                    "message": {
                        "recipient": {"chat_id": chat_id, "chat_type": "dialog"},
                        "timestamp": now.timestamp_millis(),
                        "body": {"mid": format!("mid.double{n:016x}"), "seq": n, "text": text},
                    }
                }),
            ),
        }
    }
}
