//! End-to-end harness: the four service binaries as separate processes (as in
//! production) on a test's own vhost and database, with the real peers that exist as
//! software — Kannel with its fake SMSC, an SMTP server process — and an HTTP double
//! for the billing system we cannot have.

pub mod billing;
pub mod drill;
pub mod fixtures;
pub mod phone;
pub mod smtp;
pub mod system;
pub mod tls;

pub use billing::BillingDouble;
pub use phone::Phone;
pub use smtp::SmtpSink;
pub use system::{Gateway, System, SystemOptions};
pub use tls::TlsBackends;

/// The repository root (scripts live there).
pub fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}
