//! The audit of staff actions (SPEC §4.8): who looked up which phone, account or
//! message, who entered a paper slip, who re-queued what. Written before the answer
//! is shown: an action that cannot be audited is not done.

use serde_json::Value;
use sqlx::PgPool;

/// What a member of staff did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Login,
    LoginFailed,
    Logout,
    Search,
    ViewMessage,
    ViewAccount,
    PaperSlip,
    ViewDeadLetters,
    Requeue,
    RequeueAll,
    DownloadMissing,
    SaveUser,
    RemoveUser,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Login => "login",
            Action::LoginFailed => "login_failed",
            Action::Logout => "logout",
            Action::Search => "search",
            Action::ViewMessage => "view_message",
            Action::ViewAccount => "view_account",
            Action::PaperSlip => "paper_slip",
            Action::ViewDeadLetters => "view_dead_letters",
            Action::Requeue => "requeue",
            Action::RequeueAll => "requeue_all",
            Action::DownloadMissing => "download_missing",
            Action::SaveUser => "save_user",
            Action::RemoveUser => "remove_user",
        }
    }
}

pub async fn record(
    pool: &PgPool,
    login: &str,
    action: Action,
    subject: &str,
    detail: Option<Value>,
) -> Result<(), sqlx::Error> {
    // What staff typed is kept as typed, bar the NUL that neither `text` nor `jsonb`
    // can hold: it becomes the visible `␀` (a search for `%00` is audited, not a 503).
    let detail = detail.map(storable);
    sqlx::query("INSERT INTO audit (login, action, subject, detail) VALUES ($1, $2, $3, $4)")
        .bind(login)
        .bind(action.as_str())
        .bind(shared::db::storable_text(subject).as_ref())
        .bind(detail)
        .execute(pool)
        .await?;
    Ok(())
}

/// `value` with every NUL in its strings as `␀` (`jsonb` refuses `\u0000`).
fn storable(value: Value) -> Value {
    match value {
        Value::String(s) => Value::String(shared::db::storable_text(&s).into_owned()),
        Value::Array(items) => Value::Array(items.into_iter().map(storable).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (shared::db::storable_text(&k).into_owned(), storable(v)))
                .collect(),
        ),
        other => other,
    }
}
