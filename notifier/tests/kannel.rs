//! SMS replies through a real Kannel (SPEC §4.3): bearerbox + smsbox started by
//! `scripts/kannel.sh` on leased loopback ports (`shared::testing::PortLease`), with the test itself playing the phone
//! network on the fake SMSC port (one line per message, see `scripts/fake-phone.py`).
//! The reply must come out as UCS-2 that decodes to the Cyrillic text; an accepted
//! reading must produce nothing.
//!
//! Needs the Debian packages `kannel` and `kannel-extras` (`scripts/kannel.sh install`,
//! which `.ci/run` does). Without them the test fails, saying so: a skipped Kannel test
//! would pass a gateway nobody checked.

mod common;

use common::{App, Broker, WAIT, accepted, config, dead_letter, ledger, rejected};
use notifier::config::GatewayKind;
use notifier::report::SigningKeys;
use shared::testing::{PortLease, TestEnv, eventually, with_leases};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

const BEARERBOX: &str = "/usr/sbin/bearerbox";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/kannel.sh");

/// Kannel started from a directory of its own; stopped when dropped, even on failure.
struct Kannel {
    dir: PathBuf,
    smsc_port: u16,
    sendsms_port: u16,
    /// Bearerbox and smsbox need fixed ports in their config: held for as long as
    /// Kannel runs, so that no parallel test is given them.
    _ports: Vec<PortLease>,
}

impl Kannel {
    /// Starts Kannel on four leased ports; on the rare failure (a port of the range
    /// taken by something outside the lease scheme) once more on new ones.
    async fn start(dir: &Path) -> Kannel {
        Kannel::start_with(dir, &[]).await
    }

    /// [`Kannel::start`] with more of `kannel.sh`'s settings.
    async fn start_with(dir: &Path, env: &[(&str, &str)]) -> Kannel {
        assert!(
            Path::new(BEARERBOX).exists(),
            "Kannel is not installed ({BEARERBOX} missing): run `scripts/kannel.sh install` \
             as root (Debian packages kannel and kannel-extras); .ci/run does this"
        );
        with_leases(
            4,
            3,
            |ports| async move { Kannel::try_start(dir, ports, env) },
        )
        .await
    }

    fn try_start(
        dir: &Path,
        ports: Vec<PortLease>,
        env: &[(&str, &str)],
    ) -> Result<Kannel, String> {
        let [admin, smsbox, smsc, sendsms] = [0, 1, 2, 3].map(|i| ports[i].port());
        let out = std::process::Command::new(SCRIPT)
            .args(["start"])
            .arg(dir)
            .envs(env.iter().copied())
            .env("KANNEL_ADMIN_PORT", admin.to_string())
            .env("KANNEL_SMSBOX_PORT", smsbox.to_string())
            .env("KANNEL_SMSC_PORT", smsc.to_string())
            .env("KANNEL_SENDSMS_PORT", sendsms.to_string())
            .env("KANNEL_USER", "notifier")
            .env("KANNEL_PASSWORD", "secret")
            .env("KANNEL_SENDER", "7377")
            .env("KANNEL_LOG_LEVEL", "1")
            // A busy machine: the script's own default (20 s) is for a quiet one.
            .env("KANNEL_START_TIMEOUT", "60")
            .output()
            .expect("run scripts/kannel.sh");
        if !out.status.success() {
            return Err(format!(
                "kannel.sh start failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Kannel {
            dir: dir.to_owned(),
            smsc_port: smsc,
            sendsms_port: sendsms,
            _ports: ports,
        })
    }
}

impl Drop for Kannel {
    fn drop(&mut self) {
        let _ = std::process::Command::new(SCRIPT)
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

/// The phone network side of Kannel's fake SMSC.
struct Phones {
    lines: Lines<BufReader<OwnedReadHalf>>,
    /// Kept so bearerbox sees the SMSC connected.
    _write: tokio::net::tcp::OwnedWriteHalf,
}

/// A message Kannel sent to a phone.
#[derive(Debug, PartialEq)]
struct ToPhone {
    from: String,
    to: String,
    text: String,
    parts: usize,
}

impl Phones {
    async fn connect(port: u16) -> Phones {
        let stream = shared::testing::eventually("fake SMSC accepts", WAIT, || async {
            TcpStream::connect(("127.0.0.1", port)).await.ok()
        })
        .await;
        let (read, write) = stream.into_split();
        Phones {
            lines: BufReader::new(read).lines(),
            _write: write,
        }
    }

    /// The next complete message (multi-part ones reassembled), within `WAIT`.
    async fn next(&mut self) -> ToPhone {
        let mut parts: Vec<(u8, Vec<u8>)> = Vec::new();
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.next_line())
                .await
                .expect("a message from Kannel in time")
                .expect("fake SMSC connection")
                .expect("bearerbox kept the connection");
            let fields: Vec<&str> = line.split(' ').collect();
            match fields.as_slice() {
                [from, to, "ucs-2", data] => {
                    return ToPhone {
                        from: (*from).to_owned(),
                        to: (*to).to_owned(),
                        text: ucs2(&url_decode(data)),
                        parts: 1,
                    };
                }
                [from, to, "udh", udh, "data", data] => {
                    // Concatenation IE: 00 03 <ref> <total> <seq>.
                    let udh = url_decode(udh);
                    let (total, seq) = match udh.as_slice() {
                        [_, 0x00, 0x03, _, total, seq, ..] => (*total, *seq),
                        other => panic!("unexpected UDH {other:02x?} in {line}"),
                    };
                    parts.push((seq, url_decode(data)));
                    if parts.len() == usize::from(total) {
                        parts.sort_by_key(|(seq, _)| *seq);
                        let bytes: Vec<u8> = parts.iter().flat_map(|(_, d)| d.clone()).collect();
                        return ToPhone {
                            from: (*from).to_owned(),
                            to: (*to).to_owned(),
                            text: ucs2(&bytes),
                            parts: parts.len(),
                        };
                    }
                }
                _ => panic!("not a UCS-2 message from Kannel: {line}"),
            }
        }
    }
}

/// Kannel's URL encoding: `%XX` is a byte, `+` a space.
fn url_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).expect("ascii");
                out.push(u8::from_str_radix(hex, 16).expect("hex escape"));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn ucs2(bytes: &[u8]) -> String {
    assert!(bytes.len().is_multiple_of(2), "UCS-2 has an even length");
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16(&units).expect("valid UTF-16")
}

/// The notifier's configuration for `kannel`'s sendsms.
fn kannel_config(env: &TestEnv, scratch: &tempfile::TempDir, kannel: &Kannel) -> notifier::Config {
    let mut cfg = config(env, scratch);
    cfg.sms.sms_gateway = GatewayKind::Kannel;
    cfg.sms.kannel_sendsms_url = Some(
        format!("http://127.0.0.1:{}/cgi-bin/sendsms", kannel.sendsms_port)
            .parse()
            .expect("url"),
    );
    cfg.sms.kannel_user = Some("notifier".into());
    cfg.sms.kannel_password = Some("secret".to_owned().into());
    cfg.sms.sms_sender = Some("7377".into());
    cfg
}

#[tokio::test]
async fn cyrillic_reply_leaves_kannel_as_ucs2_and_accepted_readings_send_nothing() {
    let scratch = tempfile::tempdir().expect("tmp");
    let kannel = Kannel::start(&scratch.path().join("kannel")).await;
    let mut phones = Phones::connect(kannel.smsc_port).await;
    let env = TestEnv::new().await;

    let app = App::spawn(kannel_config(&env, &scratch, &kannel)).await;
    let broker = Broker::connect(&env).await;

    // An accepted reading (even with an address) is never an SMS. It is settled before
    // the refusal is published, so had it produced an SMS, Kannel's single SMSC queue
    // would hand that over first.
    broker
        .publish(&accepted(
            uuid::Uuid::new_v4(),
            Some("ivan@example.ru"),
            vec![45100],
        ))
        .await;
    app.wait_settled("acked", 1.0).await;

    let reply = "Неверный формат. Пример: 1000001 12345";
    broker
        .publish(&rejected("kannel-1", "+79001234567", Some(reply)))
        .await;
    let got = phones.next().await;
    assert_eq!(
        got,
        ToPhone {
            from: "7377".into(),
            to: "+79001234567".into(),
            text: reply.into(),
            parts: 1,
        }
    );

    // Longer than one UCS-2 segment (70): two concatenated parts, same text.
    let long = "Показания принимаются с 15 по 25 число. Отправьте их снова в эти дни, пожалуйста.";
    assert!(long.chars().count() > 70);
    broker
        .publish(&rejected("kannel-2", "+79001234567", Some(long)))
        .await;
    let got = phones.next().await;
    assert_eq!((got.text.as_str(), got.parts), (long, 2));

    app.wait_settled("acked", 3.0).await;
    assert_eq!(
        app.metric("notifier_replies_sent_total", &[("gateway", "kannel")])
            .await,
        2.0
    );

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
    drop(kannel);
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

/// SPEC §4.3 through the real Kannel: the notifier asks sendsms for `dlr-mask=3` and a
/// signed `dlr-url` back to itself. Kannel 1.4.5's fake SMSC reports status 1
/// (delivered) once it has handed the message to the phone side — smsc_fake.c makes the
/// final report itself, since fakesmsc has no message ids — and bearerbox reports 16
/// (refused by the SMSC) for a number no SMSC may route (`denied-prefix`), while sendsms
/// answers that one `403 Not routable`. Both reports reach the notifier only through
/// smsbox fetching the dlr-url: nothing here calls the notifier's endpoint itself.
#[tokio::test]
async fn kannel_reports_each_replys_fate_to_the_signed_dlr_url() {
    let scratch = tempfile::tempdir().expect("tmp");
    let kannel = Kannel::start_with(
        &scratch.path().join("kannel"),
        &[("KANNEL_DENIED_PREFIX", "+7999")],
    )
    .await;
    let mut phones = Phones::connect(kannel.smsc_port).await;
    let env = TestEnv::new().await;
    let mut cfg = kannel_config(&env, &scratch, &kannel);
    cfg.reports.dlr_secret = Some(SigningKeys::parse("dlr-secret-for-tests-0123").expect("keys"));
    let app = App::spawn_with_reports(cfg).await;
    let broker = Broker::connect(&env).await;
    let pool = ledger(&env);
    let reply = "Неверный формат. Пример: 1000001 12345";

    broker
        .publish(&rejected("kannel-dlr-1", "+79001234567", Some(reply)))
        .await;
    assert_eq!(phones.next().await.text, reply);
    assert_eq!(
        wait_report(&pool, "kannel-dlr-1").await,
        ("delivered".to_owned(), "kannel 1".to_owned())
    );
    common::wait_state(&pool, "reply:kannel-dlr-1", "sent").await;

    // No route to +7999…: sendsms refuses (dead letter, never re-sent) and Kannel
    // reports the failure.
    broker
        .publish(&rejected("kannel-dlr-2", "+79991234567", Some(reply)))
        .await;
    let dead = dead_letter(&broker).await;
    assert!(
        String::from_utf8_lossy(&dead.body).contains("kannel-dlr-2"),
        "the refused reply is the dead letter"
    );
    assert_eq!(
        wait_report(&pool, "kannel-dlr-2").await,
        ("failed".to_owned(), "kannel 16".to_owned())
    );
    common::wait_state(&pool, "reply:kannel-dlr-2", "failed").await;

    // Each report counted once, as recorded — or as early, when smsbox fetched the
    // dlr-url before the notifier had written sendsms's answer.
    for status in ["delivered", "failed"] {
        let mut taken = 0.0;
        for outcome in ["recorded", "early"] {
            taken += app
                .metric(
                    "notifier_delivery_reports_total",
                    &[
                        ("source", "kannel"),
                        ("status", status),
                        ("outcome", outcome),
                    ],
                )
                .await;
        }
        assert_eq!(taken, 1.0, "{status} reports");
    }
    let attempts: i32 =
        sqlx::query_scalar("SELECT attempts FROM deliveries WHERE key = 'reply:kannel-dlr-2'")
            .fetch_one(&pool)
            .await
            .expect("attempts");
    assert_eq!(attempts, 1, "a failed reply is not sent again");

    broker.close().await;
    app.stop().await;
    env.cleanup().await;
    drop(kannel);
}
