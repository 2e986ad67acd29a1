//! TLS on every link, with one rule for whom to trust, and `REQUIRE_TLS`.
//!
//! **Whom to trust.** Every client verifies the server's certificate chain and name
//! against the certificates in `SSL_CERT_FILE` (and `SSL_CERT_DIR`) when either is set —
//! the convention OpenSSL, curl and libpq users know — and otherwise against the
//! system's store (`/etc/ssl/certs` on Debian and in the distroless image). The rule is
//! rustls-native-certs' `load_native_certs`, and every client is built on it with
//! rustls and the ring provider:
//!
//! | link | client | how it gets the rule |
//! |---|---|---|
//! | RabbitMQ `amqps://` | lapin (`rustls--ring`, `rustls-native-certs`) | lapin's own connector |
//! | PostgreSQL `sslmode=verify-full` | sqlx (`tls-rustls-ring-native-roots`) | sqlx's own connector |
//! | SMTP `smtps://`, `tls=required` | lettre (`ring`, `rustls-native-certs`) | lettre's default store |
//! | billing, SMS aggregator, Kannel (HTTPS) | reqwest | [`client_config`] |
//!
//! lapin, sqlx and lettre build their rustls configuration per connection and take no
//! ready-made one; they are compiled with the same root source instead, so a bundle in
//! `SSL_CERT_FILE` means the same for all of them. [`check_trust`] runs at start: a
//! bundle that cannot be read, or holds no certificate, stops the service with the
//! variable named, instead of every TLS handshake failing later with "unknown issuer".
//! [`install_provider`] makes ring the process's provider, so that reqwest (whose own
//! default is aws-lc-rs) and anything else that asks rustls for the default uses it too.
//!
//! **`REQUIRE_TLS=true`** (production): a service refuses to start when a link it
//! would open is plaintext — [`plaintext`] says which setting and why; the skeleton
//! (`shared::service`) checks the broker and database, each service its own peers.

use std::sync::Arc;

use lapin::uri::{AMQPScheme, AMQPUri};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// Makes ring the process-wide rustls provider (idempotent; the first call wins).
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why the trusted certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{variable}={path}: cannot load the trusted certificates: {errors}")]
    Unreadable {
        variable: &'static str,
        path: String,
        errors: String,
    },
    #[error("{variable}={path}: holds no certificate (a PEM file of CA certificates is expected)")]
    Empty {
        variable: &'static str,
        path: String,
    },
    #[error("TLS configuration")]
    Config(#[from] rustls::Error),
}

/// The bundle variable in force, if any: (name, value).
fn bundle_variable() -> Option<(&'static str, String)> {
    ["SSL_CERT_FILE", "SSL_CERT_DIR"].into_iter().find_map(|v| {
        std::env::var(v)
            .ok()
            .filter(|s| !s.is_empty())
            .map(|s| (v, s))
    })
}

/// The certificates every client trusts (see the module's documentation).
///
/// A bundle named by `SSL_CERT_FILE`/`SSL_CERT_DIR` that cannot be read or holds no
/// certificate is an error; a system store that cannot be read is only logged (a
/// plaintext-only deployment needs none), and TLS links then fail with "unknown issuer".
pub fn roots() -> Result<rustls::RootCertStore, TrustError> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut store = rustls::RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
    let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
    match bundle_variable() {
        Some((variable, path)) if !errors.is_empty() => Err(TrustError::Unreadable {
            variable,
            path,
            errors: errors.join("; "),
        }),
        Some((variable, path)) if added == 0 => Err(TrustError::Empty { variable, path }),
        Some(_) => Ok(store),
        None => {
            if !errors.is_empty() || added == 0 {
                tracing::warn!(
                    errors = errors.join("; "),
                    certificates = added,
                    "the system's trusted certificates could not be loaded: TLS links will fail (set SSL_CERT_FILE)"
                );
            }
            Ok(store)
        }
    }
}

/// Checks at start that the trusted certificates can be loaded ([`roots`]).
pub fn check_trust() -> Result<(), TrustError> {
    roots().map(drop)
}

/// A rustls client configuration with the ring provider and [`roots`]: for clients that
/// take one (reqwest's `tls_backend_preconfigured`).
pub fn client_config() -> Result<rustls::ClientConfig, TrustError> {
    let roots = roots()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// What kind of link a URL names, for [`plaintext`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// RabbitMQ: `amqps://`, every node of a comma-separated list.
    Broker,
    /// PostgreSQL: `sslmode=verify-full` (in the URL or `PGSSLMODE`).
    Database,
    /// SMTP: `smtps://`, or `smtp://…?tls=required` (STARTTLS that must succeed).
    Smtp,
    /// An HTTP peer (billing, the SMS aggregator, Kannel): `https://`.
    Https,
}

/// Why `url` (the value of `setting`) is not a verified TLS link, or `None` when it is.
/// The reason names the setting and never repeats the URL (it may hold a password).
pub fn plaintext(setting: &str, link: Link, url: &str) -> Option<String> {
    match link {
        // Every node as a full URL: a short `host:port` entry takes the first URL's
        // scheme (shared::broker::Nodes), so it is checked as what it will connect to.
        Link::Broker => match crate::broker::Nodes::parse(url) {
            Ok(nodes) => nodes.from_offset(0).find_map(|node| broker(setting, node)),
            Err(_) => Some(format!(
                "{setting} is not a valid AMQP URL list, so it cannot be checked for TLS"
            )),
        },
        Link::Database => database(setting, url),
        Link::Smtp => smtp(setting, url),
        Link::Https => https(setting, url),
    }
}

fn broker(setting: &str, node: &str) -> Option<String> {
    match node.parse::<AMQPUri>() {
        Ok(uri) if uri.scheme == AMQPScheme::AMQPS => None,
        Ok(uri) => Some(format!(
            "{setting} names amqp://{}:{}: the broker link (credentials, every message) \
             would cross the network in clear; use amqps:// (TLS, usually port 5671)",
            uri.authority.host, uri.authority.port
        )),
        Err(_) => Some(format!(
            "{setting} is not a valid AMQP URL, so it cannot be checked for TLS"
        )),
    }
}

fn database(setting: &str, url: &str) -> Option<String> {
    let options = match url.parse::<PgConnectOptions>() {
        Ok(options) => options,
        Err(_) => {
            return Some(format!(
                "{setting} is not a valid PostgreSQL URL, so it cannot be checked for TLS"
            ));
        }
    };
    let mode = options.get_ssl_mode();
    if matches!(mode, PgSslMode::VerifyFull) {
        return None;
    }
    let why = match mode {
        PgSslMode::Disable | PgSslMode::Allow | PgSslMode::Prefer => {
            "the connection may be unencrypted"
        }
        PgSslMode::Require => {
            "the server's certificate is not verified (anyone in the path can answer)"
        }
        PgSslMode::VerifyCa => {
            "the server's name is not checked against its certificate (any server with a certificate from the same CA can answer)"
        }
        PgSslMode::VerifyFull => unreachable!("returned above"),
    };
    Some(format!(
        "{setting} has sslmode={} (host {}): {why}; add sslmode=verify-full",
        ssl_mode_name(mode),
        options.get_host()
    ))
}

fn ssl_mode_name(mode: PgSslMode) -> &'static str {
    match mode {
        PgSslMode::Disable => "disable",
        PgSslMode::Allow => "allow",
        PgSslMode::Prefer => "prefer (the default)",
        PgSslMode::Require => "require",
        PgSslMode::VerifyCa => "verify-ca",
        PgSslMode::VerifyFull => "verify-full",
    }
}

fn smtp(setting: &str, url: &str) -> Option<String> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Some(format!(
            "{setting} is not a valid SMTP URL, so it cannot be checked for TLS"
        ));
    };
    let tls = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let host = parsed.host_str().unwrap_or("?");
    match (parsed.scheme(), tls.as_deref()) {
        ("smtps", _) | ("smtp", Some("required")) => None,
        ("smtp", Some("opportunistic")) => Some(format!(
            "{setting} is smtp://{host} with tls=opportunistic: STARTTLS is skipped when the \
             server (or anyone in the path) does not offer it; use smtps:// or tls=required"
        )),
        (scheme, _) => Some(format!(
            "{setting} is {scheme}://{host} without tls=required: the password and every \
             e-mail would cross the network in clear; use smtps:// or smtp://…?tls=required"
        )),
    }
}

fn https(setting: &str, url: &str) -> Option<String> {
    let Ok(parsed) = url::Url::parse(url) else {
        return Some(format!(
            "{setting} is not a valid URL, so it cannot be checked for TLS"
        ));
    };
    match parsed.scheme() {
        "https" => None,
        scheme => Some(format!(
            "{setting} is {scheme}://{}: the token and every request would cross the network \
             in clear; use https://",
            parsed.host_str().unwrap_or("?")
        )),
    }
}

/// The start-up refusal when `REQUIRE_TLS=true` and some links are plaintext.
pub fn refusal(reasons: &[String]) -> anyhow::Error {
    anyhow::anyhow!(
        "REQUIRE_TLS=true, and {} link(s) are not verified TLS: {}",
        reasons.len(),
        reasons.join("; ")
    )
}

/// For one-off commands outside the skeleton (`migrate`, `import-registry`): refuses a
/// plaintext database link when `REQUIRE_TLS=true`, and checks the trusted certificates.
pub fn require_database(
    runtime: &crate::config::RuntimeConfig,
    database: &crate::config::DatabaseConfig,
) -> anyhow::Result<()> {
    check_trust()?;
    if runtime.require_tls
        && let Some(reason) = plaintext("DATABASE_URL", Link::Database, database.url())
    {
        return Err(refusal(&[reason]));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_urls_pass() {
        for (link, url) in [
            (Link::Broker, "amqps://u:p@rabbit.example:5671/meter"),
            (
                Link::Broker,
                "amqps://u:p@a.example:5671/m,amqps://u:p@b.example:5671/m",
            ),
            // Short entries take the first URL's scheme: amqps too.
            (
                Link::Broker,
                "amqps://u:p@a.example:5671/m,b.example:5671,c.example",
            ),
            (
                Link::Database,
                "postgres://u:p@db.example:5432/meter?sslmode=verify-full",
            ),
            (Link::Smtp, "smtps://u:p@smtp.example:465"),
            (Link::Smtp, "smtp://u:p@smtp.example:587?tls=required"),
            (Link::Https, "https://billing.example/api"),
        ] {
            assert_eq!(plaintext("X", link, url), None, "{url}");
        }
    }

    #[test]
    fn plaintext_urls_are_named_with_the_reason_and_without_the_password() {
        for (link, url, says) in [
            (
                Link::Broker,
                "amqp://u:hunter2@rabbit.example:5672/m",
                "amqps://",
            ),
            (
                Link::Broker,
                "amqps://u:hunter2@a.example/m, amqp://u:hunter2@b.example/m",
                "amqp://b.example",
            ),
            (
                Link::Database,
                "postgres://u:hunter2@db.example/m",
                "prefer",
            ),
            (
                Link::Database,
                "postgres://u:hunter2@db.example/m?sslmode=require",
                "not verified",
            ),
            (
                Link::Database,
                "postgres://u:hunter2@db.example/m?sslmode=verify-ca",
                "name is not checked",
            ),
            (
                Link::Smtp,
                "smtp://u:hunter2@smtp.example:25",
                "without tls=required",
            ),
            (
                Link::Smtp,
                "smtp://u:hunter2@smtp.example:587?tls=opportunistic",
                "opportunistic",
            ),
            (
                Link::Https,
                "http://u:hunter2@billing.example/api",
                "use https://",
            ),
        ] {
            let reason = plaintext("THE_URL", link, url).unwrap_or_else(|| panic!("{url} passed"));
            assert!(reason.starts_with("THE_URL "), "{reason}");
            assert!(reason.contains(says), "{url}: {reason}");
            assert!(!reason.contains("hunter2"), "{reason}");
        }
    }

    #[test]
    fn a_bundle_that_cannot_be_read_is_named() {
        let dir = std::env::temp_dir().join(format!("tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let missing = dir.join("missing.pem");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        // `set_var` is unsafe (edition 2024) and the workspace forbids unsafe code: the
        // check runs in a child process with the variable set.
        let exe = std::env::current_exe().expect("test binary");
        let mut cases = vec![(missing, "cannot load"), (empty, "holds no certificate")];
        let system = std::path::PathBuf::from("/etc/ssl/certs/ca-certificates.crt");
        if system.is_file() {
            cases.push((system, "probe: ok"));
        }
        for (path, says) in &cases {
            let out = std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "tls::tests::trust_probe",
                    "--nocapture",
                    "--include-ignored",
                ])
                .env("SSL_CERT_FILE", path)
                .env_remove("SSL_CERT_DIR")
                .output()
                .expect("run the probe");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(says), "{path:?}: {text}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Run by `a_bundle_that_cannot_be_read_is_named` in a child with SSL_CERT_FILE set.
    #[test]
    #[ignore = "a probe run by another test in a child process"]
    fn trust_probe() {
        assert!(
            std::env::var_os("SSL_CERT_FILE").is_some(),
            "run by a_bundle_that_cannot_be_read_is_named, with SSL_CERT_FILE set"
        );
        match check_trust() {
            Ok(()) => println!("probe: ok"),
            Err(e) => println!("probe: {e}"),
        }
    }
}
