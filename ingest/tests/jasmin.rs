//! Jasmin's HTTP MO (SPEC §4.1) against the real RabbitMQ: the form POST that Jasmin
//! 0.11.1's deliver_sm thrower makes (`jasmin/routing/throwers.py`: `id`, `from`, `to`,
//! `origin-connector`, `content` as the PDU's raw bytes, `binary` as their hex,
//! `coding`, `priority`), answered `ACK/Jasmin` only once the message is in the queue,
//! and anything else — which makes Jasmin retry — when it is not; and the same
//! through a running Jasmin (`scripts/jasmin.py`), fed by a small SMPP SMSC
//! (`scripts/smpp-smsc.py`) that its SMPP client connector binds to.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::TOKEN;
use shared::events::{Channel, Event, SmsReceived};
use shared::testing::{Broker, PortLease, Service, TestEnv, WAIT, eventually, with_leases};
use tokio::io::{AsyncBufReadExt, BufReader};

mod common;

async fn spawn_app(amqp_url: &str) -> Service {
    let amqp_url = amqp_url.to_owned();
    let config = move |http_addr| ingest::Config {
        http_addr,
        ..common::config(&amqp_url)
    };
    Service::spawn("ingest", config, ingest::run).await
}

/// Percent-encodes every byte that is not unreserved, as Python's `urlencode` does
/// with the raw bytes of `content`.
fn form_bytes(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_owned(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The body Jasmin posts for a deliver_sm with `short_message` = `bytes`.
fn jasmin_form(id: &str, from: &str, bytes: &[u8], coding: u8) -> String {
    format!(
        "id={id}&from={from}&to=7377&origin-connector=smppc_upstream&content={}&binary={}&priority=0&coding={}",
        form_bytes(bytes),
        hex(bytes),
        // As a running Jasmin 0.11.1 sends it: the data_coding byte itself (`%08`).
        form_bytes(&[coding])
    )
}

async fn post(app: &Service, query: &str, body: String) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/v1/sms/jasmin{query}", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("user-agent", "Jasmin gateway/1.0 deliverSmHttpThrower")
        .body(body)
        .send()
        .await
        .expect("POST /v1/sms/jasmin")
}

async fn take(env: &TestEnv) -> Option<SmsReceived> {
    let broker = Broker::connect(env).await;
    let got = broker.take("validator").await;
    broker.close().await;
    got.map(|msg| match msg.event() {
        Event::SmsReceived(e) => e,
        other => panic!("unexpected {other:?}"),
    })
}

#[tokio::test]
async fn jasmin_mo_is_acked_once_it_is_in_the_queue() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url).await;
    app.ready().await;

    // UCS-2 (coding 8): `content` is UTF-16BE bytes, not UTF-8; `binary` is their hex.
    let text = "Показания 1000001 12345";
    let ucs2: Vec<u8> = text.encode_utf16().flat_map(u16::to_be_bytes).collect();
    let id = "2d1c6f3e-9f4b-4c4e-8a51-0c2f3b5d7e10";
    let resp = post(
        &app,
        &format!("?token={TOKEN}"),
        jasmin_form(id, "79001234567", &ucs2, 8),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body").trim(), "ACK/Jasmin");
    let event = take(&env).await.expect("the MO in the validator's queue");
    assert_eq!(event.message_id, format!("jasmin-{id}"));
    assert_eq!(event.from, "+79001234567");
    assert_eq!(event.to, "7377");
    assert_eq!(event.text, text);
    assert_eq!(event.channel, Channel::Sms);

    // The SMSC's default alphabet (coding 0) for a plain reading; a bearer token works too.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/sms/jasmin", app.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(jasmin_form("m-2", "89001234567", b"1000001 12345", 0))
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.text().await.expect("body"), "ACK/Jasmin");
    let event = take(&env).await.expect("second MO");
    assert_eq!(
        (event.message_id.as_str(), event.text.as_str()),
        ("jasmin-m-2", "1000001 12345")
    );
    assert_eq!(
        app.metric(
            "ingest_requests_total",
            &[("endpoint", "jasmin"), ("status", "200")]
        )
        .await,
        2.0
    );

    // A wrong token, or a sender that is no phone number: no ACK, nothing queued.
    let resp = post(
        &app,
        "?token=wrong-token-000",
        jasmin_form("m-3", "79001234567", b"1", 0),
    )
    .await;
    assert_eq!(resp.status(), 401);
    assert_ne!(resp.text().await.expect("body").trim(), "ACK/Jasmin");
    let resp = post(
        &app,
        &format!("?token={TOKEN}"),
        jasmin_form("m-4", "abc", b"1", 0),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert!(
        take(&env).await.is_none(),
        "nothing published without an ACK"
    );

    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn jasmin_gets_no_ack_while_the_broker_cannot_take_it() {
    let app = spawn_app("amqp://guest:guest@127.0.0.1:1/%2f").await;
    let resp = post(
        &app,
        &format!("?token={TOKEN}"),
        jasmin_form("m-1", "79001234567", b"1000001 12345", 0),
    )
    .await;
    assert_eq!(resp.status(), 503);
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert_ne!(resp.text().await.expect("body").trim(), "ACK/Jasmin");
    app.stop().await;
}

const JASMIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/jasmin.py");
const SMSC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/smpp-smsc.py");
/// Jasmin's Redis database in tests (its DLR maps; nothing a parallel run minds).
const REDIS_DB: &str = "11";

/// jasmind started from a directory of its own; stopped when dropped, even on failure.
struct Jasmin {
    dir: PathBuf,
    /// jcli, router, client manager and SMPP server ports, held while it runs.
    _ports: Vec<PortLease>,
}

impl Drop for Jasmin {
    fn drop(&mut self) {
        let _ = std::process::Command::new(JASMIN)
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

/// Starts the SMSC (it sends `mo` once bound), then Jasmin with its connector to it
/// and its MO route to `ingest_url`.
async fn start_jasmin(
    dir: &Path,
    vhost: &str,
    ingest_url: &str,
    mo: &str,
    ports: Vec<PortLease>,
) -> Result<(Jasmin, Smsc), String> {
    let [jcli, router, cm, smpps, smsc_port] = [0, 1, 2, 3, 4].map(|i| ports[i].port());
    let mut smsc = tokio::process::Command::new("python3")
        .arg(SMSC)
        .args([
            "--port",
            &smsc_port.to_string(),
            "--mo",
            mo,
            "--timeout",
            "180",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start smpp-smsc.py: {e}"))?;
    // Its first line says it listens (or it exits: the port was taken).
    let stdout = smsc.stdout.take().ok_or("smsc stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    match lines.next_line().await {
        Ok(Some(line)) if line.contains("listening") => {}
        other => return Err(format!("smpp-smsc.py did not listen: {other:?}")),
    }
    let out = std::process::Command::new(JASMIN)
        .arg("start")
        .arg(dir)
        .args(["--vhost", vhost, "--redis-db", REDIS_DB])
        .args([
            "--jcli-port",
            &jcli.to_string(),
            "--router-port",
            &router.to_string(),
        ])
        .args([
            "--cm-port",
            &cm.to_string(),
            "--smpps-port",
            &smpps.to_string(),
        ])
        .args([
            "--smsc-port",
            &smsc_port.to_string(),
            "--ingest-url",
            ingest_url,
        ])
        .output()
        .map_err(|e| format!("run scripts/jasmin.py: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "jasmin.py start failed (scripts/jasmin.py install makes its venv):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // The rest of the SMSC's output, for the caller once it has exited.
    let output = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line);
        }
        seen
    });
    Ok((
        Jasmin {
            dir: dir.to_owned(),
            _ports: ports,
        },
        Smsc {
            child: smsc,
            output,
        },
    ))
}

/// The SMSC process and the lines it printed after "listening".
struct Smsc {
    child: tokio::process::Child,
    output: tokio::task::JoinHandle<Vec<String>>,
}

#[tokio::test]
async fn a_running_jasmin_throws_its_smscs_mo_to_ingest_and_is_acked() {
    let env = TestEnv::new().await;
    let app = spawn_app(&env.amqp_url).await;
    app.ready().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let vhost = env.amqp_url.rsplit('/').next().expect("vhost").to_owned();
    let ingest_url = format!("{}/v1/sms/jasmin?token={TOKEN}", app.base);
    let text = "Показания 1000001 12345";
    let mo = format!("79001234567 7377 ucs2 {text}");
    let dir = scratch.path().join("jasmin");
    let (jasmin, mut smsc) = with_leases(5, 3, |ports| {
        start_jasmin(&dir, &vhost, &ingest_url, &mo, ports)
    })
    .await;

    // The SMSC's deliver_sm went through Jasmin's MO route and HTTP client connector.
    let event = eventually("the MO in the validator's queue", WAIT, || take(&env)).await;
    assert!(
        event.message_id.starts_with("jasmin-"),
        "{}",
        event.message_id
    );
    assert_eq!(event.from, "+79001234567");
    assert_eq!(event.to, "7377");
    assert_eq!(event.text, text, "UCS-2 decoded from `binary`");
    assert_eq!(event.channel, Channel::Sms);

    // Jasmin acknowledged the deliver_sm to its SMSC, and got its ACK/Jasmin once.
    let status = tokio::time::timeout(WAIT, smsc.child.wait())
        .await
        .expect("the SMSC saw its MO answered in time")
        .expect("smpp-smsc.py");
    let lines = smsc.output.await.expect("SMSC output");
    assert!(status.success(), "smpp-smsc.py: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("deliver_sm_resp") && l.contains("\"status\": 0")),
        "{lines:?}"
    );
    app.wait_metric(
        "ingest_requests_total",
        &[("endpoint", "jasmin"), ("status", "200")],
        1.0,
    )
    .await;
    assert!(take(&env).await.is_none(), "one MO, published once");

    drop(jasmin);
    app.stop().await;
    env.cleanup().await;
}
