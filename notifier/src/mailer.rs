//! Where confirmations go: an SMTP server (`SMTP_URL`, as lettre's `from_url` reads
//! it: `smtp://`, `smtps://`, `?tls=required` for STARTTLS, `user:password@`), or,
//! when none is configured, `.eml` files in `EMAIL_DIR` for local runs.
//!
//! The directory transport names each file after the reading (`<reading_id>.eml`,
//! written to a temporary name and renamed), rather than lettre's random file names,
//! so that writing a confirmation twice leaves one file.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::config::EmailConfig;
use crate::failure::SendFailure;
use crate::ledger::AfterUnknown;

#[derive(Clone)]
pub enum Mailer {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    Dir(PathBuf),
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The URL may carry a password: never shown.
            Mailer::Smtp(_) => f.write_str("Mailer::Smtp"),
            Mailer::Dir(d) => f.debug_tuple("Mailer::Dir").field(d).finish(),
        }
    }
}

impl Mailer {
    pub async fn from_config(config: &EmailConfig, timeout: Duration) -> anyhow::Result<Self> {
        match &config.smtp_url {
            Some(url) => {
                // lettre's error would quote nothing secret, but say which variable it is.
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .context("SMTP_URL is not a valid smtp:// or smtps:// URL")?
                    .timeout(Some(timeout))
                    .build();
                Ok(Mailer::Smtp(transport))
            }
            None => {
                tokio::fs::create_dir_all(&config.email_dir)
                    .await
                    .with_context(|| {
                        format!("cannot create EMAIL_DIR {}", config.email_dir.display())
                    })?;
                tracing::info!(dir = %config.email_dir.display(), "SMTP_URL unset: e-mails are written to EMAIL_DIR");
                Ok(Mailer::Dir(config.email_dir.clone()))
            }
        }
    }

    pub fn transport(&self) -> &'static str {
        match self {
            Mailer::Smtp(_) => "smtp",
            Mailer::Dir(_) => "dir",
        }
    }

    pub async fn send(&self, message: &Message, reading_id: Uuid) -> Result<(), SendFailure> {
        match self {
            Mailer::Smtp(smtp) => smtp.send(message.clone()).await.map(drop).map_err(classify),
            Mailer::Dir(dir) => write_eml(dir, message, reading_id)
                .await
                .map_err(SendFailure::retry),
        }
    }
}

/// SMTP's own split: 5xx is permanent, 4xx transient — except `503` (bad sequence of
/// commands), which says our connection was out of step, not that the message can never
/// go: a send cancelled by the send timeout mid-transaction leaves its pooled connection
/// after `MAIL FROM`, and the next send on it hears `503 nested MAIL command` (seen in a
/// kill -9 drill under load: a confirmation dead-lettered, lost). lettre closes a
/// connection that answered an error, so the retry gets a fresh one. Anything else
/// (refused connection, TLS, timeout, a dropped line) may have happened before or after
/// the server took the message: unanswered, and resending is acceptable for e-mail
/// (same Message-ID).
fn classify(e: lettre::transport::smtp::Error) -> SendFailure {
    let out_of_step = e.status().map(u16::from) == Some(BAD_SEQUENCE);
    let permanent = e.is_permanent() && !out_of_step;
    let transient = e.is_transient() || out_of_step;
    let e = anyhow::Error::new(e).context("SMTP delivery");
    if permanent {
        SendFailure::refused(e)
    } else if transient {
        SendFailure::retry(e)
    } else {
        SendFailure::unanswered(AfterUnknown::Resend, e)
    }
}

/// RFC 5321 §4.2.2: "Bad sequence of commands".
const BAD_SEQUENCE: u16 = 503;

async fn write_eml(dir: &std::path::Path, message: &Message, id: Uuid) -> anyhow::Result<()> {
    let path = dir.join(format!("{id}.eml"));
    let tmp = dir.join(format!(".{id}.eml.tmp"));
    tokio::fs::write(&tmp, message.formatted())
        .await
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    tokio::fs::rename(&tmp, &path)
        .await
        .with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}
