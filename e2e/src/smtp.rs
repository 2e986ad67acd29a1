//! A real SMTP server process (scripts/smtp-sink.py, aiosmtpd) that saves each message
//! as an `.eml` file, and a reader that parses them for assertions. It binds port 0
//! the first time (the port is read from /proc) and the same port when restarted
//! after an outage, since the notifier's `SMTP_URL` names it.

use std::path::PathBuf;
use std::process::Stdio;

use mail_parser::MessageParser;

pub struct SmtpSink {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
    extra: Vec<String>,
}

/// One received e-mail, decoded.
#[derive(Debug, Clone)]
pub struct Mail {
    pub envelope_to: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub message_id: String,
}

impl SmtpSink {
    /// Starts the sink; `extra` are flags such as `["--fail-with", "451"]`.
    pub async fn start(extra: &[&str]) -> SmtpSink {
        let mut sink = SmtpSink {
            port: 0,
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        sink.spawn().await;
        sink
    }

    async fn spawn(&mut self) {
        let script = crate::repo_root().join("scripts/smtp-sink.py");
        let child = tokio::process::Command::new("python3")
            .arg(script)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--dir",
            ])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 scripts/smtp-sink.py (pip install aiosmtpd)");
        let pid = child.id().expect("smtp-sink pid");
        self.child = Some(child);
        // On a restart this is the port asked for; the first time, the one it got.
        self.port = shared::testing::listening_port(pid, "smtp-sink").await;
    }

    /// Stops the server (an outage) until `restart`.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    pub async fn restart(&mut self, extra: &[&str]) {
        self.stop().await;
        self.extra = extra.iter().map(|s| (*s).to_owned()).collect();
        self.spawn().await;
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far.
    pub fn mails(&self) -> Vec<Mail> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| {
                d.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|f| std::fs::read(f).ok())
            .filter_map(|raw| parse(&raw))
            .collect()
    }
}

fn parse(raw: &[u8]) -> Option<Mail> {
    let msg = MessageParser::default().parse(raw)?;
    let header = |name: &str| {
        msg.header_raw(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    Some(Mail {
        envelope_to: header("X-Envelope-To"),
        to: header("To"),
        subject: msg.subject().unwrap_or("").to_owned(),
        text: msg.body_text(0).map(|t| t.to_string()).unwrap_or_default(),
        html: msg.body_html(0).map(|t| t.to_string()).unwrap_or_default(),
        message_id: msg.message_id().unwrap_or("").to_owned(),
    })
}
