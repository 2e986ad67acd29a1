//! Configuration shared by every service, from environment variables (12-factor) or
//! the matching command-line flags. clap validates at start and names the variable
//! in its message; secrets are `SecretString`, so they never reach a log or `Debug`.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// Parses a secret without ever echoing it.
pub fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s.to_owned()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (local runs).
    Text,
    /// One JSON object per line (production).
    Json,
}

/// Parses `AMQP_URL` (one node, or several comma-separated: `broker::Nodes`) and
/// keeps it secret. A bad list is refused at start with the entry named; unlike
/// clap's own validation errors the message does not quote the value (it holds the
/// password).
#[derive(Debug, Clone, Copy)]
pub struct BrokerNodesParser;

impl clap::builder::TypedValueParser for BrokerNodesParser {
    type Value = SecretString;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<SecretString, clap::Error> {
        let refuse = |msg: String| {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{msg}\n"))
        };
        let text = value
            .to_str()
            .ok_or_else(|| refuse("AMQP_URL is not valid UTF-8".into()))?;
        crate::broker::Nodes::parse(text).map_err(|e| refuse(e.to_string()))?;
        Ok(SecretString::from(text.to_owned()))
    }
}

/// The broker connection every service needs.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerConfig {
    /// RabbitMQ URL, vhost URL-encoded (`%2f` is `/`); several nodes of one cluster
    /// comma-separated (full URLs, or `host:port` after the first URL).
    #[arg(long, env = "AMQP_URL", hide_env_values = true, value_parser = BrokerNodesParser,
          default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: SecretString,
}

impl BrokerConfig {
    pub fn url(&self) -> &str {
        self.amqp_url.expose_secret()
    }
}

/// The database connection of the services that own tables.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseConfig {
    /// PostgreSQL URL; each service keeps its tables in its own schema.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_parser = secret,
          default_value = "postgres://postgres@127.0.0.1:5432/meter")]
    pub database_url: SecretString,

    /// Connections in the pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_max_connections: u32,

    /// Days personal data is kept (SPEC §4.7; three years, the limitation period for
    /// billing disputes): each service purges its own older rows daily.
    #[arg(long, env = "RETENTION_DAYS", default_value_t = DEFAULT_RETENTION_DAYS,
          value_parser = clap::value_parser!(u32).range(1..=36_500))]
    pub retention_days: u32,
}

/// `RETENTION_DAYS` unless set.
pub const DEFAULT_RETENTION_DAYS: u32 = 1095;

impl DatabaseConfig {
    pub fn url(&self) -> &str {
        self.database_url.expose_secret()
    }
}

/// Logging, tracing, shutdown and the HTTP server's bounds.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeConfig {
    /// `text` for people, `json` for log collectors.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// How long in-flight work may take to finish after SIGTERM.
    #[arg(long, env = "SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,

    #[command(flatten)]
    pub http: HttpLimits,
    /// Refuse to start when a link the service opens (broker, database, SMTP, billing,
    /// SMS gateway) is not verified TLS, naming the setting (production: `true`).
    #[arg(long, env = "REQUIRE_TLS", default_value_t = false, action = clap::ArgAction::Set)]
    pub require_tls: bool,
}

impl RuntimeConfig {
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }
}

impl Default for RuntimeConfig {
    /// The defaults of the command line (a test changes what it needs).
    fn default() -> Self {
        RuntimeConfig {
            log_format: LogFormat::Text,
            shutdown_grace_seconds: 30,
            http: HttpLimits::default(),
            require_tls: false,
        }
    }
}

/// What a client may take of a service's HTTP server (SPEC §5: slow clients cannot
/// exhaust a service). Every service serves through `shared::http::serve` with these.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpLimits {
    /// Longest a client may take to send a request's headers — and longest an idle
    /// keep-alive connection stays open; then the connection is closed.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_header_timeout_seconds: u64,

    /// Longest a client may take to send a request's body, counted from the end of
    /// its headers; then `408` and the connection is closed.
    #[arg(long, env = "HTTP_BODY_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub http_body_timeout_seconds: u64,

    /// Connections served at once. Beyond it new connections wait in the kernel's
    /// accept queue until one closes (the bounds above free one within seconds).
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", default_value_t = 512,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub http_max_connections: u32,
}

impl HttpLimits {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_secs(self.http_header_timeout_seconds)
    }

    pub fn body_timeout(&self) -> Duration {
        Duration::from_secs(self.http_body_timeout_seconds)
    }

    pub fn max_connections(&self) -> usize {
        self.http_max_connections as usize
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            http_header_timeout_seconds: 10,
            http_body_timeout_seconds: 30,
            http_max_connections: 512,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        broker: BrokerConfig,
        #[command(flatten)]
        db: DatabaseConfig,
    }

    #[test]
    fn secrets_are_not_printed_by_debug() {
        let probe = Probe::try_parse_from([
            "probe",
            "--amqp-url",
            "amqp://user:hunter2@host/%2f",
            "--database-url",
            "postgres://u:hunter3@h/db",
        ])
        .expect("parses");
        let shown = format!("{probe:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("hunter3"), "{shown}");
        assert_eq!(probe.broker.url(), "amqp://user:hunter2@host/%2f");
    }

    #[derive(Debug, Parser)]
    struct RuntimeProbe {
        #[command(flatten)]
        runtime: RuntimeConfig,
    }

    #[test]
    fn runtime_defaults_are_the_command_lines() {
        let parsed = RuntimeProbe::try_parse_from(["probe"])
            .expect("parses")
            .runtime;
        let default = RuntimeConfig::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
        assert_eq!(default.http.header_timeout(), Duration::from_secs(10));
        assert_eq!(default.http.body_timeout(), Duration::from_secs(30));
        assert_eq!(default.http.max_connections(), 512);
        assert!(
            RuntimeProbe::try_parse_from(["probe", "--http-max-connections", "0"]).is_err(),
            "no connection at all is no server"
        );
    }

    #[test]
    fn retention_is_three_years_unless_set_and_never_zero() {
        let probe = Probe::try_parse_from(["probe"]).expect("defaults");
        assert_eq!(probe.db.retention_days, 1095);
        let probe = Probe::try_parse_from(["probe", "--retention-days", "30"]).expect("30 days");
        assert_eq!(probe.db.retention_days, 30);
        let err = Probe::try_parse_from(["probe", "--retention-days", "0"])
            .expect_err("0 days would purge everything");
        assert!(err.to_string().contains("retention-days"), "{err}");
    }

    #[test]
    fn a_node_list_is_accepted_and_kept_whole() {
        let list = "amqp://u:hunter2@h1:5701/%2f,amqp://u:hunter2@h2:5702/%2f,h3:5703";
        let probe = Probe::try_parse_from(["probe", "--amqp-url", list]).expect("parses");
        assert_eq!(probe.broker.url(), list);
    }

    #[test]
    fn a_bad_node_is_refused_with_its_position_and_without_the_password() {
        let err = Probe::try_parse_from([
            "probe",
            "--amqp-url",
            "amqp://u:hunter2@h1:5701/%2f,amqp://u:hunter2@h2:notaport/%2f",
        ])
        .expect_err("a bad port is refused");
        let shown = err.to_string();
        assert!(shown.contains("AMQP_URL entry 2"), "{shown}");
        assert!(shown.contains("u:***@h2:notaport"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn invalid_values_are_refused_with_the_flag_named() {
        let err = Probe::try_parse_from(["probe", "--database-max-connections", "0"])
            .expect_err("0 connections is invalid");
        assert!(
            err.to_string().contains("database-max-connections"),
            "{err}"
        );
    }
}
