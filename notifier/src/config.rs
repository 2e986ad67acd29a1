//! The notifier's configuration: environment variables (SPEC §4, §4.3, §4.4) or the
//! matching flags. Everything has a local default, so `notifier` runs on a laptop
//! with replies in the log and e-mails as files; the gateways check at start that
//! the variables they need are set, naming the missing one.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use lettre::message::Mailbox;
use secrecy::{ExposeSecret, SecretString};
use shared::calendar::CompanyZone;
use shared::config::{BrokerConfig, DatabaseConfig, RuntimeConfig, secret};
use shared::tls::Link;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8082")]
    pub http_addr: SocketAddr,

    /// The company's time zone: the day of the per-number cap and the time of receipt
    /// shown in e-mails.
    #[command(flatten)]
    pub zone: CompanyZone,

    /// Longest one SMS gateway request or one SMTP delivery may take. A claimed
    /// delivery's lease is this plus a margin, so a slow attempt is never overtaken.
    #[arg(long, env = "SEND_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=120))]
    pub send_timeout_seconds: u64,

    #[command(flatten)]
    pub sms: SmsConfig,

    #[command(flatten)]
    pub reports: ReportConfig,

    #[command(flatten)]
    pub email: EmailConfig,

    #[command(flatten)]
    pub limits: LimitsConfig,

    #[command(flatten)]
    pub bots: crate::bots::BotConfig,

    #[command(flatten)]
    pub broker: BrokerConfig,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub runtime: RuntimeConfig,
}

impl Config {
    pub fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.send_timeout_seconds)
    }

    /// The peers the notifier itself talks to, by setting, for `REQUIRE_TLS`
    /// (`shared::tls`): the SMTP server and the SMS transport in use.
    pub fn links(&self) -> Vec<(&'static str, Link, &str)> {
        let mut links = Vec::new();
        if let Some(url) = &self.email.smtp_url {
            links.push(("SMTP_URL", Link::Smtp, url.expose_secret()));
        }
        let sms = match self.sms.sms_gateway {
            GatewayKind::Log => None,
            GatewayKind::Http => self.sms.sms_http_url.as_ref().map(|u| ("SMS_HTTP_URL", u)),
            GatewayKind::Kannel => self
                .sms
                .kannel_sendsms_url
                .as_ref()
                .map(|u| ("KANNEL_SENDSMS_URL", u)),
            GatewayKind::Jasmin => self
                .sms
                .jasmin_send_url
                .as_ref()
                .map(|u| ("JASMIN_SEND_URL", u)),
        };
        if let Some((setting, url)) = sms {
            links.push((setting, Link::Https, url.as_str()));
        }
        if self.bots.telegram_bot_token.is_some() {
            links.push((
                "TELEGRAM_API_URL",
                Link::Https,
                self.bots.telegram_api_url.as_str(),
            ));
        }
        if self.bots.max_bot_token.is_some() {
            links.push(("MAX_API_URL", Link::Https, self.bots.max_api_url.as_str()));
        }
        links
    }
}

/// Which transport carries SMS replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GatewayKind {
    /// Write the reply to the service log (local runs).
    Log,
    /// An aggregator's JSON API with idempotency keys.
    Http,
    /// Kannel's `/cgi-bin/sendsms`.
    Kannel,
    /// Jasmin's HTTP API `/send`.
    Jasmin,
}

impl GatewayKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GatewayKind::Log => "log",
            GatewayKind::Http => "http",
            GatewayKind::Kannel => "kannel",
            GatewayKind::Jasmin => "jasmin",
        }
    }
}

/// Outbound SMS (SPEC §4.3).
#[derive(Debug, Clone, clap::Args)]
pub struct SmsConfig {
    /// `log`, `http`, `kannel` or `jasmin`.
    #[arg(long, env = "SMS_GATEWAY", value_enum, default_value_t = GatewayKind::Log)]
    pub sms_gateway: GatewayKind,

    /// The sender the resident sees (`from`); required by `http`, Kannel's
    /// `default-sender` (Jasmin: the user's default `source_address`) applies when unset.
    #[arg(long, env = "SMS_SENDER")]
    pub sms_sender: Option<String>,

    /// The aggregator's endpoint (`SMS_GATEWAY=http`).
    #[arg(long, env = "SMS_HTTP_URL")]
    pub sms_http_url: Option<reqwest::Url>,

    /// Bearer token for the aggregator.
    #[arg(long, env = "SMS_HTTP_TOKEN", hide_env_values = true, value_parser = secret)]
    pub sms_http_token: Option<SecretString>,

    /// Kannel's sendsms URL, e.g. `http://kannel:13013/cgi-bin/sendsms` (`SMS_GATEWAY=kannel`).
    #[arg(long, env = "KANNEL_SENDSMS_URL")]
    pub kannel_sendsms_url: Option<reqwest::Url>,

    /// Kannel `sendsms-user` name.
    #[arg(long, env = "KANNEL_USER")]
    pub kannel_user: Option<String>,

    /// Kannel `sendsms-user` password.
    #[arg(long, env = "KANNEL_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub kannel_password: Option<SecretString>,

    /// Jasmin's HTTP API send URL, e.g. `http://jasmin:1401/send` (`SMS_GATEWAY=jasmin`).
    #[arg(long, env = "JASMIN_SEND_URL")]
    pub jasmin_send_url: Option<reqwest::Url>,

    /// Jasmin user (jCli `user -a`; 1–16 characters).
    #[arg(long, env = "JASMIN_USER")]
    pub jasmin_user: Option<String>,

    /// Jasmin user's password (1–16 characters).
    #[arg(long, env = "JASMIN_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub jasmin_password: Option<SecretString>,
}

/// Delivery reports (SPEC §4.3): where Kannel and Jasmin send them, and the keys that
/// sign the reply each report names. The HTTP aggregator's reports use `SMS_HTTP_TOKEN`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReportConfig {
    /// The notifier's own address as the gateway reaches it, e.g. `http://notifier:8082`:
    /// Kannel's `dlr-url` points at `/v1/dlr/kannel` there, Jasmin's at `/v1/dlr/jasmin`.
    /// Unset (or without `DLR_SECRET`): the gateway is not asked for reports.
    #[arg(long, env = "DLR_BASE_URL")]
    pub dlr_base_url: Option<reqwest::Url>,

    /// Keys that sign the reply id in the `dlr-url` (HMAC-SHA256), so that nobody
    /// else can report on a reply: comma-separated, each at least 16 characters; the
    /// first signs, every one is accepted (rotation).
    #[arg(long, env = "DLR_SECRET", hide_env_values = true,
          value_parser = crate::report::SigningKeys::parse)]
    pub dlr_secret: Option<crate::report::SigningKeys>,
}

/// Confirmation e-mails (SPEC §4.4).
#[derive(Debug, Clone, clap::Args)]
pub struct EmailConfig {
    /// `smtp://host:port`, `smtps://host:port`, `smtp://host:port?tls=required`
    /// (STARTTLS), with optional `user:password@`. Unset: e-mails go to `EMAIL_DIR`.
    #[arg(long, env = "SMTP_URL", hide_env_values = true, value_parser = secret)]
    pub smtp_url: Option<SecretString>,

    /// The sender of confirmations; its domain also names the `Message-ID`.
    #[arg(
        long,
        env = "EMAIL_FROM",
        default_value = "Показания счётчиков <noreply@localhost>"
    )]
    pub email_from: Mailbox,

    /// Where `.eml` files are written when `SMTP_URL` is unset.
    #[arg(long, env = "EMAIL_DIR", default_value = "./.local/mail")]
    pub email_dir: PathBuf,
}

/// Cost and abuse guards on replies (SPEC §4 table).
#[derive(Debug, Clone, clap::Args)]
pub struct LimitsConfig {
    /// Country calling codes replies may go to, comma-separated, without `+`.
    #[arg(long, env = "REPLY_COUNTRY_CODES", default_value = "7")]
    pub reply_country_codes: CountryCodes,

    /// Replies per number per day (company time zone).
    #[arg(long, env = "REPLY_DAILY_CAP_PER_NUMBER", default_value_t = 5)]
    pub reply_daily_cap_per_number: u32,

    /// Replies per clock hour to all numbers together; once spent, replies stop.
    #[arg(long, env = "REPLY_HOURLY_BUDGET", default_value_t = 2000)]
    pub reply_hourly_budget: u32,
}

/// A set of country calling codes, e.g. `7` or `7,375`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountryCodes(BTreeSet<String>);

impl CountryCodes {
    pub fn contains(&self, code: &str) -> bool {
        self.0.contains(code)
    }
}

impl FromStr for CountryCodes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut codes = BTreeSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let valid = (1..=3).contains(&part.len()) && part.bytes().all(|b| b.is_ascii_digit());
            if !valid || part.starts_with('0') {
                return Err(format!(
                    "`{part}` is not a country calling code (1–3 digits, no `+`)"
                ));
            }
            codes.insert(part.to_owned());
        }
        if codes.is_empty() {
            return Err("at least one country calling code is needed".into());
        }
        Ok(CountryCodes(codes))
    }
}

impl fmt::Display for CountryCodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joined: Vec<&str> = self.0.iter().map(String::as_str).collect();
        f.write_str(&joined.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn country_codes_parse() {
        let codes: CountryCodes = " 7, 375 ,".parse().expect("valid");
        assert!(codes.contains("7"));
        assert!(codes.contains("375"));
        assert!(!codes.contains("38"));
        assert_eq!(codes.to_string(), "375,7");
        for bad in ["", ",", "+7", "7a", "1234", "07"] {
            assert!(bad.parse::<CountryCodes>().is_err(), "{bad}");
        }
    }

    #[test]
    fn defaults_run_locally() {
        let probe = Probe::try_parse_from(["notifier"]).expect("defaults parse");
        let c = probe.config;
        assert_eq!(c.http_addr.port(), 8082);
        assert_eq!(c.zone.timezone, chrono_tz::Asia::Yekaterinburg);
        assert_eq!(c.sms.sms_gateway, GatewayKind::Log);
        assert!(c.email.smtp_url.is_none());
        assert_eq!(c.email.email_from.email.domain(), "localhost");
        assert_eq!(c.limits.reply_daily_cap_per_number, 5);
        assert_eq!(c.limits.reply_hourly_budget, 2000);
        assert!(c.limits.reply_country_codes.contains("7"));
    }

    #[test]
    fn secrets_stay_out_of_debug() {
        let probe = Probe::try_parse_from([
            "notifier",
            "--smtp-url",
            "smtp://u:hunter2@mail:25",
            "--kannel-password",
            "hunter3",
            "--sms-http-token",
            "hunter4",
            "--dlr-secret",
            "hunter5-hunter5-hunter5",
            "--jasmin-password",
            "hunter6",
        ])
        .expect("parses");
        let shown = format!("{probe:?}");
        for secret in ["hunter2", "hunter3", "hunter4", "hunter5", "hunter6"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn bad_time_zone_is_refused_by_name() {
        let err = Probe::try_parse_from(["notifier", "--timezone", "Mars/Olympus"])
            .expect_err("unknown zone");
        assert!(err.to_string().contains("IANA"), "{err}");
    }
}
