//! Answers in the bots' chats (SPEC §4.9): one text to one chat through the
//! platform's send API — Telegram's `sendMessage`, MAX's `POST /messages` — with,
//! for the greeting, the button that shares the resident's phone number.
//!
//! Each platform's answer is mapped once, here at the edge, into the split every send
//! has (`failure.rs`): sent; retry later (`429` after the wait the platform asks for,
//! `5xx`, a refused connection); never succeeds (another `4xx`: our request, or the
//! bot's token); fate unknown (no answer after the request went out: neither API takes
//! an idempotency key, so such an answer is never sent again — [`AFTER_UNKNOWN`]).
//! A `403` — the resident blocked or stopped the bot — is an answer the platform
//! settled, not a failure: [`Answered::Blocked`], final and recorded, never a dead
//! letter (nothing anyone could fix).
//!
//! Sends are paced per chat and per platform across every replica ([`pace`]).

mod max;
pub mod pace;
mod telegram;

use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;
use shared::events::Channel;

use crate::failure::SendFailure;
use crate::ledger::AfterUnknown;

pub use max::MaxClient;
pub use telegram::TelegramClient;

/// The text of the button that shares the resident's own phone number.
pub const CONTACT_BUTTON: &str = "Отправить мой номер телефона";

/// Neither platform deduplicates a send: an attempt without an answer is not repeated.
pub const AFTER_UNKNOWN: AfterUnknown = AfterUnknown::GiveUp;

/// A messenger the bot answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    Telegram,
    Max,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        self.channel().as_str()
    }

    pub fn channel(self) -> Channel {
        match self {
            Platform::Telegram => Channel::Telegram,
            Platform::Max => Channel::Max,
        }
    }

    /// The platform of a bot channel; `None` for every other channel.
    pub fn of(channel: Channel) -> Option<Platform> {
        match channel {
            Channel::Telegram => Some(Platform::Telegram),
            Channel::Max => Some(Platform::Max),
            _ => None,
        }
    }
}

/// One answer to one chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatAnswer {
    /// The chat's id as the platform gave it (`chat` of the event).
    pub chat: String,
    pub text: String,
    /// Show the button that shares the resident's phone number (the greeting).
    pub share_contact: bool,
}

/// How a platform settled a send it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answered {
    /// The platform took it.
    Sent,
    /// The resident blocked or stopped the bot (`403`): final, with the platform's
    /// words, for the ledger and the console.
    Blocked(String),
}

/// Where and as whom the notifier answers in chats (SPEC §4.9). A platform without
/// its token is not answered on.
#[derive(Debug, Clone, clap::Args)]
pub struct BotConfig {
    /// The Telegram bot's token (from @BotFather); unset: no answers in Telegram.
    #[arg(long, env = "TELEGRAM_BOT_TOKEN", hide_env_values = true,
          value_parser = shared::config::secret)]
    pub telegram_bot_token: Option<SecretString>,

    /// The Telegram Bot API (a local Bot API server, or a test's double).
    #[arg(
        long,
        env = "TELEGRAM_API_URL",
        default_value = "https://api.telegram.org"
    )]
    pub telegram_api_url: reqwest::Url,

    /// The MAX bot's token (from the MAX partner platform); unset: no answers in MAX.
    #[arg(long, env = "MAX_BOT_TOKEN", hide_env_values = true,
          value_parser = shared::config::secret)]
    pub max_bot_token: Option<SecretString>,

    /// The MAX Bot API.
    #[arg(
        long,
        env = "MAX_API_URL",
        default_value = "https://platform-api2.max.ru"
    )]
    pub max_api_url: reqwest::Url,
}

impl Default for BotConfig {
    fn default() -> Self {
        BotConfig {
            telegram_bot_token: None,
            telegram_api_url: reqwest::Url::parse("https://api.telegram.org")
                .unwrap_or_else(|_| unreachable!("a constant URL")),
            max_bot_token: None,
            max_api_url: reqwest::Url::parse("https://platform-api2.max.ru")
                .unwrap_or_else(|_| unreachable!("a constant URL")),
        }
    }
}

/// The send clients of the platforms that have a token.
#[derive(Debug, Clone, Default)]
pub struct BotClients {
    telegram: Option<TelegramClient>,
    max: Option<MaxClient>,
}

impl BotClients {
    pub fn from_config(config: &BotConfig, timeout: Duration) -> anyhow::Result<Self> {
        let telegram = match &config.telegram_bot_token {
            Some(token) => Some(
                TelegramClient::new(config.telegram_api_url.clone(), token, timeout)
                    .context("TELEGRAM_API_URL")?,
            ),
            None => None,
        };
        let max = match &config.max_bot_token {
            Some(token) => Some(
                MaxClient::new(config.max_api_url.clone(), token.clone(), timeout)
                    .context("MAX_API_URL")?,
            ),
            None => None,
        };
        Ok(BotClients { telegram, max })
    }

    /// Whether answers on `platform` can go out.
    pub fn answers_on(&self, platform: Platform) -> bool {
        match platform {
            Platform::Telegram => self.telegram.is_some(),
            Platform::Max => self.max.is_some(),
        }
    }

    /// Sends `answer` on `platform`. A platform without a token refuses it (the
    /// setting is missing: dead-lettered, to be re-queued once it is set).
    pub async fn send(
        &self,
        platform: Platform,
        answer: &ChatAnswer,
    ) -> Result<Answered, SendFailure> {
        match platform {
            Platform::Telegram => match &self.telegram {
                Some(client) => client.send(answer).await,
                None => Err(not_configured("TELEGRAM_BOT_TOKEN")),
            },
            Platform::Max => match &self.max {
                Some(client) => client.send(answer).await,
                None => Err(not_configured("MAX_BOT_TOKEN")),
            },
        }
    }
}

fn not_configured(setting: &str) -> SendFailure {
    SendFailure::refused(anyhow::anyhow!(
        "{setting} is not set: answers in this messenger cannot go out"
    ))
}

/// A client for one platform's API: a fresh connection per send (a kept-alive one the
/// platform closed meanwhile could fail mid-request, and an answer whose fate is
/// unknown is never sent again), certificates checked as on every link.
fn http_client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(0)
        .tls_backend_preconfigured(shared::tls::client_config()?)
        .build()?)
}

/// `base` with `segments` appended to its path (a base with a path of its own, as a
/// local Bot API server may have, keeps it).
fn endpoint(base: &reqwest::Url, segments: &[&str]) -> anyhow::Result<reqwest::Url> {
    let mut url = base.clone();
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("`{base}` cannot be a base URL"))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// Sends `request` and reads the platform's answer: a `2xx` is sent; otherwise its
/// status, body (read up to a bound) and `Retry-After` go to the platform's
/// `classify`. A failure on the way is mapped as every peer's is (`from_reqwest`,
/// which also drops the URL and with it Telegram's token).
async fn answered(
    request: reqwest::RequestBuilder,
    classify: fn(reqwest::StatusCode, &str, Option<Duration>) -> Result<Answered, SendFailure>,
) -> Result<Answered, SendFailure> {
    let response = request
        .send()
        .await
        .map_err(|e| crate::failure::from_reqwest(e, AFTER_UNKNOWN))?;
    let status = response.status();
    if status.is_success() {
        return Ok(Answered::Sent);
    }
    let wait = shared::retry_after::parse(response.headers(), chrono::Utc::now());
    let body = shared::peer::error_body(response).await;
    classify(status, &body, wait)
}

/// What a refusal means — the same for both platforms once each has read its error
/// object into the platform's `words` and the `wait` it asked for: `429` and `408`
/// retry later, not before the wait; `403` (blocked, stopped, deleted) is settled;
/// `5xx` retry later; any other status never succeeds.
fn verdict(
    platform: &str,
    status: reqwest::StatusCode,
    words: String,
    wait: Option<Duration>,
) -> Result<Answered, SendFailure> {
    use reqwest::StatusCode;
    let what = || anyhow::anyhow!("{platform} answered {status}: {words}");
    let wait = wait.map(|w| w.min(shared::retry_after::MAX));
    match status {
        StatusCode::FORBIDDEN => Ok(Answered::Blocked(words)),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::REQUEST_TIMEOUT => {
            Err(SendFailure::retry(what()).not_before(wait))
        }
        s if s.is_server_error() => Err(SendFailure::retry(what()).not_before(wait)),
        _ => Err(SendFailure::refused(what())),
    }
}

/// The chat id as the number both APIs take; anything else can never be sent to.
fn chat_number(chat: &str) -> Result<i64, SendFailure> {
    chat.parse().map_err(|_| {
        SendFailure::refused(anyhow::anyhow!(
            "chat `{}` is not a chat id",
            chat.chars().take(32).collect::<String>()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_keep_the_bases_path() {
        let base = reqwest::Url::parse("http://127.0.0.1:9/api/").expect("url");
        assert_eq!(
            endpoint(&base, &["messages"]).expect("url").as_str(),
            "http://127.0.0.1:9/api/messages"
        );
        let base = reqwest::Url::parse("https://api.telegram.org").expect("url");
        assert_eq!(
            endpoint(&base, &["botT", "sendMessage"])
                .expect("url")
                .as_str(),
            "https://api.telegram.org/botT/sendMessage"
        );
    }

    #[test]
    fn platforms_are_the_bot_channels() {
        assert_eq!(Platform::of(Channel::Telegram), Some(Platform::Telegram));
        assert_eq!(Platform::of(Channel::Max), Some(Platform::Max));
        assert_eq!(Platform::of(Channel::Sms), None);
        assert_eq!(Platform::Max.as_str(), "max");
    }
}
