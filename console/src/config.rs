//! The console's configuration: environment variables (or the matching flags),
//! checked at start.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;
use shared::calendar::Calendar;
use shared::config::{BrokerConfig, DatabaseConfig, RuntimeConfig, secret};
use shared::token::{Tokens, parse_tokens};

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where the console's pages, its API and the operational endpoints listen.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8084")]
    pub http_addr: SocketAddr,

    /// `true` drops the `Secure` flag of the session cookie, for a local run over
    /// plain HTTP. Never in production: the cookie would travel unencrypted.
    #[arg(long, env = "CONSOLE_INSECURE_COOKIES", default_value_t = false,
          action = clap::ArgAction::Set)]
    pub insecure_cookies: bool,

    /// How long a session lasts without logging in again (hours).
    #[arg(long, env = "CONSOLE_SESSION_HOURS", default_value_t = 12,
          value_parser = clap::value_parser!(u64).range(1..=168))]
    pub session_hours: u64,

    /// Bearer tokens for `/api/v1/…` without a session (comma-separated, each at least
    /// 16 characters, several for a rotation). Unset: the API takes sessions only.
    #[arg(long, env = "CONSOLE_API_TOKEN", hide_env_values = true, value_parser = parse_tokens)]
    pub api_token: Option<Tokens>,

    /// billing-export's base URL, for the missing-readings report (its
    /// `/v1/exports/{period}/missing.csv`, streamed through).
    #[arg(
        long,
        env = "BILLING_EXPORT_URL",
        default_value = "http://127.0.0.1:8083"
    )]
    pub billing_export_url: Url,

    /// One of billing-export's `EXPORT_TOKEN`s, sent as the bearer of that download.
    #[arg(long, env = "CONSOLE_EXPORT_TOKEN", hide_env_values = true, value_parser = secret)]
    pub export_token: Option<SecretString>,

    /// How often the start page's window and registry figures are counted again
    /// (seconds). They read a whole window of messages and the whole registry (~1.2 s
    /// at 1,000,000 accounts), so each request shows the last count and its time.
    #[arg(long, env = "CONSOLE_GLANCE_REFRESH_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub glance_refresh_seconds: u64,

    /// The window's days and the company's time zone: the start page's "this window"
    /// and "the last one", and every time shown.
    #[command(flatten)]
    pub calendar: Calendar,

    #[command(flatten)]
    pub broker: BrokerConfig,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub runtime: RuntimeConfig,
}

impl Config {
    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_hours * 3600)
    }

    pub fn glance_refresh(&self) -> Duration {
        Duration::from_secs(self.glance_refresh_seconds)
    }
}
