//! SMS replies and their delivery reports through a real Jasmin 0.11.1 (SPEC §4.3,
//! `SMS_GATEWAY=jasmin`): jasmind started by `scripts/jasmin.py` with its HTTP API, its
//! DLR lookup and thrower, an SMPP client connector to `scripts/smpp-smsc.py` (the
//! SMSC, which takes each submit_sm and sends the handset's receipt back as a
//! deliver_sm), on its own RabbitMQ vhost (the test's) and Redis database 11, on leased
//! ports (`shared::testing::PortLease`). The notifier posts each reply to `/send`; the
//! SMSC records what it received (the text must be the Cyrillic reply, UCS-2); Jasmin's
//! DLR thrower posts the receipt to the notifier's signed dlr-url, which must record
//! `delivered` or `failed`. Nothing here calls the notifier's report endpoint itself.
//!
//! Needs Jasmin in its venv with the DLR fix of jookies/jasmin#1236
//! (`scripts/jasmin.py install`, which `.ci/run` does) and Redis on 127.0.0.1:6379.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{App, Broker, WAIT, config, ledger, rejected};
use notifier::config::GatewayKind;
use notifier::report::SigningKeys;
use shared::testing::{PortLease, TestEnv, eventually, with_leases};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

const JASMIN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/jasmin.py");
const SMSC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/smpp-smsc.py");
/// Jasmin's Redis database in tests (its DLR maps, keyed by fresh UUIDs).
const REDIS_DB: &str = "11";
const USER: &str = "notifier";
const PASSWORD: &str = "jasmin-pw-1";
/// The SMSC's receipt for this number says UNDELIV.
const UNDELIVERABLE: &str = "+79991234567";
/// The SMSC refuses a submit_sm to this number (ESME_RINVDSTADR).
const REFUSED: &str = "+79881234567";

/// jasmind and the SMSC; stopped when dropped, even on failure.
struct Jasmin {
    dir: PathBuf,
    send_url: String,
    smsc: tokio::process::Child,
    /// The SMSC's JSON lines after "listening".
    events: mpsc::UnboundedReceiver<serde_json::Value>,
    /// jcli, router, client manager, SMPP server, SMSC and HTTP API ports.
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

impl Jasmin {
    /// Starts the SMSC (taking `messages` submit_sm), then Jasmin with its MT side.
    async fn start(dir: &Path, vhost: &str, messages: usize) -> Jasmin {
        with_leases(6, 3, |ports| Jasmin::try_start(dir, vhost, messages, ports)).await
    }

    async fn try_start(
        dir: &Path,
        vhost: &str,
        messages: usize,
        ports: Vec<PortLease>,
    ) -> Result<Jasmin, String> {
        let [jcli, router, cm, smpps, smsc_port, api] =
            [0, 1, 2, 3, 4, 5].map(|i| ports[i].port().to_string());
        let mut smsc = tokio::process::Command::new("python3")
            .arg(SMSC)
            .args(["--port", &smsc_port, "--mt", &messages.to_string()])
            .args(["--undeliv", UNDELIVERABLE, "--reject", REFUSED])
            .args(["--timeout", "300"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start smpp-smsc.py: {e}"))?;
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
            .args(["--jcli-port", &jcli, "--router-port", &router])
            .args(["--cm-port", &cm, "--smpps-port", &smpps])
            .args(["--smsc-port", &smsc_port, "--http-api-port", &api])
            .args(["--mt-user", USER, "--mt-password", PASSWORD])
            .output()
            .map_err(|e| format!("run scripts/jasmin.py: {e}"))?;
        if !out.status.success() {
            // The next try starts from a clean directory.
            let _ = std::process::Command::new(JASMIN)
                .arg("stop")
                .arg(dir)
                .output();
            return Err(format!(
                "jasmin.py start failed (scripts/jasmin.py install makes its venv):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let (tx, events) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<serde_json::Value>(&line) {
                    Ok(event) => {
                        let _ = tx.send(event);
                    }
                    Err(e) => eprintln!("smpp-smsc.py printed {line:?}: {e}"),
                }
            }
        });
        Ok(Jasmin {
            dir: dir.to_owned(),
            send_url: format!("http://127.0.0.1:{api}/send"),
            smsc,
            events,
            _ports: ports,
        })
    }

    /// The next submit_sm the SMSC took (events in between skipped), within `WAIT`.
    async fn next_submit(&mut self) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no submit_sm reached the SMSC in time; Jasmin's logs: {}",
                        self.dir.join("var/log/jasmin").display()
                    )
                })
                .expect("smpp-smsc.py exited early");
            if event["event"] == "submit_sm" {
                return event;
            }
        }
    }
}

/// The report recorded for a reply, once there is one: `(report, report_detail)`.
async fn wait_report(pool: &sqlx::PgPool, message_id: &str) -> (String, String) {
    eventually(
        &format!("a delivery report for {message_id}"),
        WAIT,
        || async {
            sqlx::query_as::<_, (Option<String>, Option<String>)>(
                "SELECT report, report_detail FROM deliveries WHERE key = $1",
            )
            .bind(format!("reply:{message_id}"))
            .fetch_optional(pool)
            .await
            .expect("ledger query")
            .and_then(|(report, detail)| Some((report?, detail.unwrap_or_default())))
        },
    )
    .await
}

#[tokio::test]
async fn replies_go_out_through_jasmin_and_its_dlr_callback_reports_their_fate() {
    let env = TestEnv::new().await;
    let scratch = tempfile::tempdir().expect("tmp");
    let vhost = env.amqp_url.rsplit('/').next().expect("vhost").to_owned();
    let mut jasmin = Jasmin::start(&scratch.path().join("jasmin"), &vhost, 4).await;

    let mut cfg = config(&env, &scratch);
    cfg.sms.sms_gateway = GatewayKind::Jasmin;
    cfg.sms.jasmin_send_url = Some(jasmin.send_url.parse().expect("url"));
    cfg.sms.jasmin_user = Some(USER.into());
    cfg.sms.jasmin_password = Some(PASSWORD.to_owned().into());
    cfg.sms.sms_sender = Some("7377".into());
    cfg.reports.dlr_secret = Some(SigningKeys::parse("dlr-secret-for-tests-0123").expect("keys"));
    let app = App::spawn_with_reports(cfg).await;
    let broker = Broker::connect(&env).await;
    let pool = ledger(&env);
    let reply = "Неверный формат. Пример: 1000001 12345";

    // Delivered: the SMSC received the Cyrillic text intact, as UCS-2, and its receipt
    // came back through Jasmin's DLR thrower.
    broker
        .publish(&rejected("jasmin-1", "+79001234567", Some(reply)))
        .await;
    let got = jasmin.next_submit().await;
    assert_eq!(got["to"], "+79001234567", "{got}");
    assert_eq!(got["source"], "7377", "{got}");
    assert_eq!(got["data_coding"], 8, "UCS-2: {got}");
    assert_eq!(got["text"], reply, "Cyrillic intact: {got}");
    assert_eq!(got["registered_delivery"], 1, "a receipt asked for: {got}");
    let (report, detail) = wait_report(&pool, "jasmin-1").await;
    assert_eq!(report, "delivered");
    assert!(detail.starts_with("jasmin DELIVRD err:000 id:"), "{detail}");
    common::wait_state(&pool, "reply:jasmin-1", "sent").await;

    // Not delivered (the SMSC's receipt says UNDELIV): failed, and not sent again.
    broker
        .publish(&rejected("jasmin-2", UNDELIVERABLE, Some(reply)))
        .await;
    assert_eq!(jasmin.next_submit().await["to"], UNDELIVERABLE);
    let (report, detail) = wait_report(&pool, "jasmin-2").await;
    assert_eq!(report, "failed");
    assert!(detail.starts_with("jasmin UNDELIV err:001 id:"), "{detail}");

    // Refused by the SMSC after Jasmin took it (`/send` said Success): Jasmin's level-1
    // report says so, and the reply is failed.
    broker
        .publish(&rejected("jasmin-3", REFUSED, Some(reply)))
        .await;
    let got = jasmin.next_submit().await;
    assert_eq!(
        (&got["to"], &got["refused"]),
        (&REFUSED.into(), &true.into())
    );
    let (report, detail) = wait_report(&pool, "jasmin-3").await;
    assert_eq!(report, "failed");
    assert!(detail.starts_with("jasmin ESME_RINVDSTADR id:"), "{detail}");

    // Longer than one UCS-2 segment: Jasmin splits it (UDH), the SMSC reassembles it.
    let long = "Показания принимаются с 15 по 25 число. Отправьте их снова в эти дни, пожалуйста.";
    assert!(long.chars().count() > 70);
    broker
        .publish(&rejected("jasmin-4", "+79001234567", Some(long)))
        .await;
    let got = jasmin.next_submit().await;
    assert_eq!(got["text"], long, "{got}");
    assert_eq!(wait_report(&pool, "jasmin-4").await.0, "delivered");

    app.wait_settled("acked", 4.0).await;
    assert_eq!(
        app.metric("notifier_replies_sent_total", &[("gateway", "jasmin")])
            .await,
        4.0
    );
    // Each final report counted once, as recorded — or as early, when the thrower
    // posted before the notifier had written `/send`'s answer.
    for (status, n) in [("delivered", 2.0), ("failed", 2.0)] {
        let mut taken = 0.0;
        for outcome in ["recorded", "early"] {
            taken += app
                .metric(
                    "notifier_delivery_reports_total",
                    &[
                        ("source", "jasmin"),
                        ("status", status),
                        ("outcome", outcome),
                    ],
                )
                .await;
        }
        assert_eq!(taken, n, "{status} reports");
    }
    for id in ["jasmin-2", "jasmin-3"] {
        let (state, attempts): (String, i32) =
            sqlx::query_as("SELECT state, attempts FROM deliveries WHERE key = $1")
                .bind(format!("reply:{id}"))
                .fetch_one(&pool)
                .await
                .expect("ledger row");
        assert_eq!((state.as_str(), attempts), ("sent", 1), "{id}: not re-sent");
    }
    // Jasmin got its ACK/Jasmin for every report: nothing is thrown again.
    assert_eq!(
        app.metric(
            "notifier_delivery_reports_refused_total",
            &[("source", "jasmin"), ("reason", "unauthorized")]
        )
        .await,
        0.0
    );

    // The SMSC took its four messages and saw every receipt answered.
    let status = tokio::time::timeout(Duration::from_secs(60), jasmin.smsc.wait())
        .await
        .expect("the SMSC finished in time")
        .expect("smpp-smsc.py");
    assert!(status.success(), "smpp-smsc.py exited with {status}");

    broker.close().await;
    app.stop().await;
    drop(jasmin);
    env.cleanup().await;
}
