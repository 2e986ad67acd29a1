//! billing-export's configuration: environment variables (or the matching flags),
//! checked at start so a typo in a URL or a time zone stops the pod at once instead
//! of dead-lettering readings later.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;
use shared::calendar::Calendar;
use shared::config::{BrokerConfig, DatabaseConfig, RuntimeConfig, secret};
use shared::token::Tokens;

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Where the exports and the operational endpoints listen.
    #[arg(long, env = "HTTP_ADDR", default_value = "0.0.0.0:8083")]
    pub http_addr: SocketAddr,

    /// Billing's base URL; readings are posted to `$BILLING_URL/readings`. Unset:
    /// nothing is pushed, readings are only stored (exports still work).
    #[arg(long, env = "BILLING_URL", value_parser = billing_url)]
    pub billing_url: Option<Url>,

    /// Bearer token for billing (`Authorization: Bearer …`); required with BILLING_URL.
    #[arg(long, env = "BILLING_TOKEN", hide_env_values = true, value_parser = secret)]
    pub billing_token: Option<SecretString>,

    /// The window's days and the company's time zone: a period's files are written
    /// when its window closes, and `received_at` is written in the zone.
    #[command(flatten)]
    pub calendar: Calendar,

    /// Directory the period files are written to when a window closes. Unset: no files.
    #[arg(long, env = "EXPORT_DIR")]
    pub export_dir: Option<PathBuf>,

    /// Bearer tokens that may download the exports (`Authorization: Bearer …`): one or
    /// more, comma-separated (several during a rotation), each at least 16
    /// characters. Unset: every export answers `503` — they hold every account's
    /// readings and are never served without a token.
    #[arg(long, env = "EXPORT_TOKEN", hide_env_values = true,
          value_parser = shared::token::parse_tokens)]
    pub export_token: Option<Tokens>,

    /// Longest one export may take, query and transfer together; then it is `503`
    /// (nothing sent yet) or cut off (a truncated download never looks complete).
    #[arg(long, env = "EXPORT_TIMEOUT_SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub export_timeout_seconds: u64,

    #[command(flatten)]
    pub broker: BrokerConfig,

    #[command(flatten)]
    pub database: DatabaseConfig,

    #[command(flatten)]
    pub runtime: RuntimeConfig,
}

impl Config {
    pub fn export_timeout(&self) -> Duration {
        Duration::from_secs(self.export_timeout_seconds)
    }

    /// Checks what clap cannot check field by field.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.billing_url.is_some() && self.billing_token.is_none() {
            anyhow::bail!(
                "BILLING_URL is set but BILLING_TOKEN is not: billing needs the bearer token"
            );
        }
        Ok(())
    }
}

fn billing_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https (got `{}`)",
            url.scheme()
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a query or fragment: `/readings` is appended to it".into());
    }
    Ok(url)
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
    fn defaults_match_the_contract() {
        let probe = Probe::try_parse_from(["probe"]).expect("parses");
        let c = probe.config;
        assert_eq!(c.http_addr.to_string(), "0.0.0.0:8083");
        assert_eq!(c.calendar.timezone(), chrono_tz::Asia::Yekaterinburg);
        assert_eq!(c.calendar.window_end_day, 25);
        assert!(c.billing_url.is_none() && c.export_dir.is_none());
        assert!(c.export_token.is_none(), "no token: exports answer 503");
        assert_eq!(c.export_timeout(), Duration::from_secs(300));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn billing_url_is_checked() {
        for bad in ["ftp://billing/x", "not a url", "https://b/x?token=1"] {
            assert!(
                Probe::try_parse_from(["probe", "--billing-url", bad]).is_err(),
                "{bad}"
            );
        }
        let probe = Probe::try_parse_from([
            "probe",
            "--billing-url",
            "https://billing.example.com/api/meter",
        ])
        .expect("parses");
        assert!(probe.config.validate().is_err(), "token required");
    }

    #[test]
    fn token_is_not_printed() {
        let probe = Probe::try_parse_from([
            "probe",
            "--billing-url",
            "http://b",
            "--billing-token",
            "hunter2-secret",
        ])
        .expect("parses");
        assert!(probe.config.validate().is_ok());
        assert!(!format!("{probe:?}").contains("hunter2"));
    }

    #[test]
    fn export_tokens_are_a_list_of_long_tokens_never_printed() {
        let probe = Probe::try_parse_from([
            "probe",
            "--export-token",
            "export-token-new-1234, export-token-old-5678",
        ])
        .expect("parses");
        assert_eq!(probe.config.export_token.as_ref().map(Tokens::len), Some(2));
        assert!(!format!("{probe:?}").contains("export-token-new"));
        let short =
            Probe::try_parse_from(["probe", "--export-token", "export-token-ok-12345,short"])
                .expect_err("a short token is refused");
        assert!(short.to_string().contains("token 2"), "{short}");
    }
}
