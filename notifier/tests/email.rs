//! Confirmation e-mails (SPEC §4.4) against a real SMTP server process:
//! `scripts/smtp-sink.py` (Python + aiosmtpd) on a port of its own (it binds port 0;
//! the test reads the port from /proc), saving each message as a file. Also the `EMAIL_DIR` mode.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{App, Broker, WAIT, accepted, config, ledger, wait_state};
use mail_parser::{MessageParser, MimeHeaders};
use shared::testing::{TestEnv, eventually, listening_port};
use tokio::io::{AsyncBufReadExt, BufReader};
use uuid::Uuid;

const RESIDENT: &str = "ivan.petrov@example.ru";

/// A running `smtp-sink.py`, killed when dropped (also when a test fails).
struct SmtpSink {
    child: tokio::process::Child,
    port: u16,
    dir: PathBuf,
}

impl SmtpSink {
    /// Starts the sink on port 0 and reads the port it bound.
    async fn start(dir: &Path, extra: &[&str]) -> SmtpSink {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/smtp-sink.py");
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .arg("--dir")
            .arg(dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs (the SMTP sink needs python3 and `pip install aiosmtpd`)");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("smtp-sink started in time")
            .expect("smtp-sink stdout");
        assert!(
            first.as_deref().is_some_and(|l| l.contains("listening")),
            "smtp-sink did not start (is aiosmtpd installed? `pip install aiosmtpd`): {first:?}"
        );
        let pid = child.id().expect("smtp-sink pid");
        let port = listening_port(pid, "smtp-sink").await;
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("{line}");
            }
        });
        SmtpSink {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages saved so far (complete ones only: `.eml` is renamed into place last).
    fn saved(&self) -> Vec<PathBuf> {
        eml_files(&self.dir)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn eml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// What the tests check in one saved message.
struct Saved {
    rcpt_tos: Vec<String>,
    to: Vec<String>,
    cc_or_bcc: bool,
    subject: String,
    message_id: String,
    root_type: String,
    plain: String,
    html: String,
}

fn read_saved(eml: &Path) -> Saved {
    let sidecar = eml.with_extension("json");
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sidecar).expect("sidecar")).expect("json");
    let raw = std::fs::read(eml).expect("eml");
    let msg = MessageParser::default()
        .parse(&raw)
        .expect("a MIME message");
    let part_text = |part: Option<&mail_parser::MessagePart>, subtype: &str| -> String {
        let part = part.expect("part present");
        let ct = part.content_type().expect("content type");
        assert_eq!(
            (ct.ctype(), ct.subtype()),
            ("text", Some(subtype)),
            "part type"
        );
        part.text_contents().expect("text part").to_owned()
    };
    Saved {
        rcpt_tos: meta["rcpt_tos"]
            .as_array()
            .expect("rcpt_tos")
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        to: msg
            .to()
            .map(|a| {
                a.iter()
                    .filter_map(|a| a.address().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        cc_or_bcc: msg.cc().is_some() || msg.bcc().is_some(),
        subject: msg.subject().unwrap_or_default().to_owned(),
        message_id: msg.message_id().unwrap_or_default().to_owned(),
        root_type: msg
            .header_raw("Content-Type")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        plain: part_text(msg.text_part(0), "plain"),
        html: part_text(msg.html_part(0), "html"),
    }
}

fn smtp_config(env: &TestEnv, scratch: &tempfile::TempDir, url: String) -> notifier::Config {
    let mut cfg = config(env, scratch);
    cfg.email.smtp_url = Some(url.into());
    cfg
}

#[tokio::test]
async fn one_confirmation_per_accepted_reading_even_when_redelivered() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let sink = SmtpSink::start(&scratch.path().join("smtp"), &[]).await;
    let app = App::spawn(smtp_config(&env, &scratch, sink.url())).await;
    let broker = Broker::connect(&env).await;

    let reading_id = Uuid::new_v4();
    let event = accepted(reading_id, Some(RESIDENT), vec![45100, 12000]);
    broker.publish(&event).await;
    broker.publish(&event).await;
    app.wait_settled("acked", 2.0).await;
    wait_state(&ledger(&env), &format!("email:{reading_id}"), "sent").await;

    let saved = sink.saved();
    assert_eq!(saved.len(), 1, "exactly one message: {saved:?}");
    let m = read_saved(&saved[0]);
    assert_eq!(m.rcpt_tos, vec![RESIDENT.to_owned()], "the only recipient");
    assert_eq!(m.to, vec![RESIDENT.to_owned()]);
    assert!(!m.cc_or_bcc);
    assert_eq!(
        m.subject,
        "Показания приняты: лицевой счёт 001234567, ноябрь 2026"
    );
    assert_eq!(
        m.message_id,
        format!("{reading_id}.confirmation@energo.example")
    );
    assert!(
        m.root_type.starts_with("multipart/alternative"),
        "{}",
        m.root_type
    );
    for body in [&m.plain, &m.html] {
        assert!(body.contains("001234567"), "account: {body}");
        assert!(body.contains("ноябрь 2026"), "period: {body}");
        assert!(
            body.contains("День (T1)") && body.contains("45100"),
            "day: {body}"
        );
        assert!(
            body.contains("Ночь (T2)") && body.contains("12000"),
            "night: {body}"
        );
        // Received 05:30 UTC: 10:30 in Yekaterinburg.
        assert!(
            body.contains("20.11.2026 10:30 (UTC+05:00)"),
            "time: {body}"
        );
    }
    assert!(m.html.contains("<table>"), "{}", m.html);
    assert_eq!(
        app.metric("notifier_emails_sent_total", &[("transport", "smtp")])
            .await,
        1.0
    );

    broker.close().await;
    app.stop().await;
    sink.stop().await;
    env.cleanup().await;
}

/// SPEC §2: `ivan@почта.рф` is a valid address, and the confirmation must reach it
/// through a relay that, like most, offers no SMTPUTF8: the domain goes in IDNA form.
#[tokio::test]
async fn an_internationalised_domain_is_sent_in_idna_form() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let sink = SmtpSink::start(&scratch.path().join("smtp"), &["--no-smtputf8"]).await;
    let app = App::spawn(smtp_config(&env, &scratch, sink.url())).await;
    let broker = Broker::connect(&env).await;

    let reading_id = Uuid::new_v4();
    broker
        .publish(&accepted(reading_id, Some("ivan@почта.рф"), vec![45100]))
        .await;
    wait_state(&ledger(&env), &format!("email:{reading_id}"), "sent").await;
    let saved = sink.saved();
    assert_eq!(saved.len(), 1);
    let m = read_saved(&saved[0]);
    assert_eq!(m.rcpt_tos, vec!["ivan@xn--80a1acny.xn--p1ai".to_owned()]);
    assert_eq!(m.to, vec!["ivan@xn--80a1acny.xn--p1ai".to_owned()]);
    assert!(m.plain.contains("Показание: 45100"), "{}", m.plain);

    broker.close().await;
    app.stop().await;
    sink.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn an_interrupted_smtp_attempt_is_resent_with_the_same_message_id() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let sink = SmtpSink::start(&scratch.path().join("smtp"), &[]).await;
    let app = App::spawn(smtp_config(&env, &scratch, sink.url())).await;
    let pool = ledger(&env);
    let reading_id = Uuid::new_v4();
    let key = format!("email:{reading_id}");
    // The process died mid-send; its lease has run out.
    sqlx::query(
        "INSERT INTO deliveries (key, channel, recipient, state, attempts, lease_until)
         VALUES ($1, 'email', $2, 'sending', 1, now() - interval '1 second')",
    )
    .bind(&key)
    .bind(RESIDENT)
    .execute(&pool)
    .await
    .expect("seed");

    let broker = Broker::connect(&env).await;
    broker
        .publish(&accepted(reading_id, Some(RESIDENT), vec![45100]))
        .await;
    wait_state(&pool, &key, "sent").await;
    let saved = sink.saved();
    assert_eq!(saved.len(), 1);
    let m = read_saved(&saved[0]);
    assert_eq!(
        m.message_id,
        format!("{reading_id}.confirmation@energo.example")
    );
    assert!(m.plain.contains("Показание: 45100"), "{}", m.plain);

    broker.close().await;
    app.stop().await;
    sink.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn smtp_4xx_is_retried_until_delivered() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let sink = SmtpSink::start(
        &scratch.path().join("smtp"),
        &["--fail-with", "451", "--fail-times", "1"],
    )
    .await;
    let app = App::spawn(smtp_config(&env, &scratch, sink.url())).await;
    let broker = Broker::connect(&env).await;

    let reading_id = Uuid::new_v4();
    broker
        .publish(&accepted(reading_id, Some(RESIDENT), vec![7]))
        .await;
    wait_state(&ledger(&env), &format!("email:{reading_id}"), "sent").await;
    app.wait_settled("acked", 1.0).await;
    assert_eq!(
        app.metric(
            "notifier_consumer_messages_total",
            &[("outcome", "retried")]
        )
        .await,
        1.0
    );
    assert_eq!(
        app.metric(
            "notifier_send_failures_total",
            &[("channel", "email"), ("kind", "transient")]
        )
        .await,
        1.0
    );
    assert_eq!(sink.saved().len(), 1);

    broker.close().await;
    app.stop().await;
    sink.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn smtp_5xx_is_dead_lettered_and_counted() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let sink = SmtpSink::start(&scratch.path().join("smtp"), &["--fail-with", "550"]).await;
    let app = App::spawn(smtp_config(&env, &scratch, sink.url())).await;
    let broker = Broker::connect(&env).await;

    let reading_id = Uuid::new_v4();
    broker
        .publish(&accepted(reading_id, Some(RESIDENT), vec![7]))
        .await;
    let dead = common::dead_letter(&broker).await;
    let reason = dead.header("x-last-error").unwrap_or_default();
    assert!(reason.contains("550"), "{reason}");
    app.wait_settled("dead_lettered", 1.0).await;
    assert_eq!(
        app.metric(
            "notifier_send_failures_total",
            &[("channel", "email"), ("kind", "permanent")]
        )
        .await,
        1.0
    );
    assert!(sink.saved().is_empty());

    broker.close().await;
    app.stop().await;
    sink.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn smtp_credentials_come_from_the_url() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let sink = SmtpSink::start(&scratch.path().join("smtp"), &["--auth", "mailer:p@ss"]).await;
    // The password's `@` percent-encoded, as in any URL.
    let url = format!("smtp://mailer:p%40ss@127.0.0.1:{}", sink.port);
    let app = App::spawn(smtp_config(&env, &scratch, url)).await;
    let broker = Broker::connect(&env).await;

    let reading_id = Uuid::new_v4();
    broker
        .publish(&accepted(reading_id, Some(RESIDENT), vec![1, 2, 3]))
        .await;
    wait_state(&ledger(&env), &format!("email:{reading_id}"), "sent").await;
    let saved = sink.saved();
    assert_eq!(saved.len(), 1);
    let m = read_saved(&saved[0]);
    assert!(
        m.plain.contains("T1 (пик)") && m.plain.contains("T3 (ночь)"),
        "{}",
        m.plain
    );

    broker.close().await;
    app.stop().await;
    sink.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn email_dir_mode_writes_one_eml_per_reading() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let cfg = config(&env, &scratch);
    let dir = cfg.email.email_dir.clone();
    let app = App::spawn(cfg).await;
    let broker = Broker::connect(&env).await;

    let reading_id = Uuid::new_v4();
    let event = accepted(reading_id, Some(RESIDENT), vec![45100, 12000]);
    broker.publish(&event).await;
    broker.publish(&event).await;
    // Without an address: no e-mail.
    broker
        .publish(&accepted(Uuid::new_v4(), None, vec![1]))
        .await;
    app.wait_settled("acked", 3.0).await;

    let files = eventually("the .eml file", WAIT, || async {
        let files = eml_files(&dir);
        (!files.is_empty()).then_some(files)
    })
    .await;
    assert_eq!(
        files,
        vec![dir.join(format!("{reading_id}.eml"))],
        "one file, named after the reading"
    );
    let raw = std::fs::read(&files[0]).expect("eml");
    let msg = MessageParser::default().parse(&raw).expect("MIME");
    assert_eq!(
        msg.to().and_then(|a| a.first()).and_then(|a| a.address()),
        Some(RESIDENT)
    );
    assert!(
        msg.body_text(0)
            .is_some_and(|t| t.contains("Лицевой счёт: 001234567"))
    );
    assert_eq!(
        app.metric("notifier_emails_sent_total", &[("transport", "dir")])
            .await,
        1.0
    );

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

/// SPEC §4.7: once the confirmation is sent, the ledger keeps its address masked; a
/// redelivered event still finds it sent and sends nothing.
#[tokio::test]
async fn a_sent_confirmation_leaves_its_address_masked() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let cfg = config(&env, &scratch);
    let dir = cfg.email.email_dir.clone();
    let app = App::spawn(cfg).await;
    let broker = Broker::connect(&env).await;
    let reading_id = Uuid::new_v4();
    let event = accepted(reading_id, Some(RESIDENT), vec![45100]);
    broker.publish(&event).await;
    let key = format!("email:{reading_id}");
    let pool = ledger(&env);
    wait_state(&pool, &key, "sent").await;
    let recipient = || async {
        sqlx::query_scalar::<_, String>("SELECT recipient FROM deliveries WHERE key = $1")
            .bind(&key)
            .fetch_one(&pool)
            .await
            .expect("the delivery")
    };
    assert_eq!(recipient().await, "i***@example.ru");
    assert_eq!(recipient().await, shared::phone::mask(RESIDENT));

    broker.publish(&event).await;
    app.wait_settled("acked", 2.0).await;
    assert_eq!(eml_files(&dir).len(), 1, "sent once");
    broker.close().await;
    app.stop().await;
    env.cleanup().await;
}

/// SPEC §4.7: deliveries older than `RETENTION_DAYS` are purged at start (and daily),
/// newer ones kept, and the rows counted.
#[tokio::test]
async fn deliveries_past_the_retention_period_are_purged() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let pool = ledger(&env);
    notifier::DATABASE
        .apply(&pool, &tokio_util::sync::CancellationToken::new())
        .await
        .expect("migrations");
    sqlx::query(
        "INSERT INTO deliveries (key, channel, recipient, state, created_at) VALUES
             ('reply:old', 'sms', '+79001234567', 'sent', now() - interval '1096 days'),
             ('reply:new', 'sms', '+79001234568', 'sent', now() - interval '1094 days')",
    )
    .execute(&pool)
    .await
    .expect("rows");
    let app = App::spawn(config(&env, &scratch)).await;
    app.wait_metric(
        "notifier_retention_purged_rows_total",
        &[("table", "deliveries")],
        1.0,
    )
    .await;
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM deliveries ORDER BY key")
        .fetch_all(&pool)
        .await
        .expect("rows");
    assert_eq!(keys, ["reply:new"]);
    app.stop().await;
    env.cleanup().await;
}
