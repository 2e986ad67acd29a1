//! TLS on every link (SPEC §4; docs/operations-deploy.md, "TLS"): the four services
//! over `amqps://` to a RabbitMQ node that has no plaintext listener, over
//! `sslmode=verify-full` to a PostgreSQL that rejects connections without TLS, and to
//! an SMTP server over `smtps://` and billing over `https://` (both OpenSSL servers),
//! trusting only the test CA through `SSL_CERT_FILE`;
//! a server certificate from another CA is refused on each link; and `REQUIRE_TLS=true`
//! refuses plaintext settings by name. Backends: `scripts/tls-backends.sh`.

use std::process::Stdio;
use std::time::Duration;

use e2e::system::bin;
use e2e::{Gateway, SmtpSink, System, TlsBackends, fixtures};
use shared::testing::{WAIT, eventually, listening_port};

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), &uuid_like()[..12])
}

/// Enough uniqueness for a vhost/database name without another dependency.
fn uuid_like() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{nanos:024x}").chars().rev().collect()
}

fn tls_log_says_unknown_issuer(log: &str) -> bool {
    // rustls: "invalid peer certificate: UnknownIssuer".
    log.contains("UnknownIssuer")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reading_goes_through_on_tls_links_only_and_smtps_refuses_another_ca() {
    let tls = TlsBackends::start().await;
    let name = unique("tls_flow");
    let amqp_url = tls.vhost(&name).await;
    let database_url = tls.database(&name).await;

    // The SMTP server first presents a certificate from the other CA.
    let (other_cert, other_key) = tls.other_server_cert();
    let mut smtp = SmtpSink::start(&[
        "--tls",
        "implicit",
        "--tls-cert",
        &other_cert,
        "--tls-key",
        &other_key,
    ])
    .await;

    // Billing over HTTPS (an OpenSSL server, scripts/https-sink.py) with the test CA's
    // certificate.
    let (cert, key) = tls.server_cert();
    let billing_dir = tempfile::tempdir().expect("temp dir");
    let billing = tokio::process::Command::new("python3")
        .arg(e2e::repo_root().join("scripts/https-sink.py"))
        .args(["--port", "0", "--cert", &cert, "--key", &key, "--dir"])
        .arg(billing_dir.path())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 scripts/https-sink.py");
    let billing_port = listening_port(billing.id().expect("pid"), "https-sink").await;

    let mut opts = fixtures::options(Gateway::Log);
    opts.smtp_url = Some(format!("smtps://127.0.0.1:{}", smtp.port));
    opts.billing_url = Some(format!("https://127.0.0.1:{billing_port}/api"));
    opts.env.extend([
        ("AMQP_URL".into(), amqp_url),
        ("DATABASE_URL".into(), database_url),
        ("SSL_CERT_FILE".into(), tls.ca_file().display().to_string()),
        // Every link of this system is TLS: the services must start with it on.
        ("REQUIRE_TLS".into(), "true".into()),
    ]);
    // Ready = broker links up and migrations applied, over TLS (the node has no
    // plaintext listener, the cluster's pg_hba.conf rejects hostnossl).
    let system = System::start(opts).await;
    let (encrypted, clear) = tls.connections(&name).await;
    assert!(
        encrypted >= 3 && clear == 0,
        "connections to the services' database: {encrypted} over TLS, {clear} in clear"
    );

    assert_eq!(
        system
            .post_sms("tls-1", "+79001234567", "1000001 45100 ivan@example.ru")
            .await,
        202,
        "ingest takes the SMS once the broker confirmed it over amqps"
    );
    eventually("the reading stored by the validator", WAIT, || async {
        (tls.count(&name, "SELECT count(*) FROM validator.readings")
            .await
            == 1)
            .then_some(())
    })
    .await;
    eventually(
        "billing-export got the reading over amqps",
        WAIT,
        || async {
            (tls.count(&name, "SELECT count(*) FROM billing.readings")
                .await
                == 1)
                .then_some(())
        },
    )
    .await;

    let pushed = eventually("the reading pushed to billing over https", WAIT, || async {
        let posts: Vec<serde_json::Value> = std::fs::read_dir(billing_dir.path())
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .filter_map(|b| serde_json::from_slice(&b).ok())
                    .collect()
            })
            .unwrap_or_default();
        (!posts.is_empty()).then_some(posts)
    })
    .await;
    assert_eq!(pushed[0]["path"], "/api/readings", "{pushed:?}");
    assert!(
        pushed[0]["body"]
            .as_str()
            .is_some_and(|b| b.contains("1000001")),
        "{pushed:?}"
    );

    eventually(
        "the notifier refusing the SMTP server's certificate (another CA)",
        WAIT,
        || async { tls_log_says_unknown_issuer(&system.logs("notifier")).then_some(()) },
    )
    .await;
    assert!(smtp.mails().is_empty(), "no e-mail over an unverified link");

    // The same server with a certificate from the test CA: the retried confirmation goes.
    smtp.restart(&["--tls", "implicit", "--tls-cert", &cert, "--tls-key", &key])
        .await;
    let mails = eventually("the confirmation over smtps", WAIT, || async {
        let mails = smtp.mails();
        (!mails.is_empty()).then_some(mails)
    })
    .await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(
        mails[0].envelope_to.contains("ivan@example.ru"),
        "{mails:?}"
    );
    assert!(mails[0].text.contains("1000001"), "{}", mails[0].text);

    system.stop().await;
    drop(billing);
    tls.cleanup(&name).await;
}

/// One service process with `env`, on port 0; its port and its log file.
struct Lone {
    child: tokio::process::Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Lone {
    async fn start(service: &'static str, env: &[(&str, String)]) -> Lone {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join(format!("{service}.log"));
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = tokio::process::Command::new(bin(service))
            .arg("serve")
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .env("INGEST_TOKEN", "tls-test-token-0123456789")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()
            .expect("service binary (cargo build --workspace)");
        let pid = child.id().expect("pid");
        let port = listening_port(pid, service).await;
        Lone {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn readyz(&self) -> u16 {
        reqwest::get(format!("http://127.0.0.1:{}/readyz", self.port))
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn servers_with_a_certificate_from_another_ca_are_refused() {
    let tls = TlsBackends::start().await;
    let name = unique("tls_other_ca");
    let amqp_url = tls.vhost(&name).await;
    let database_url = tls.database(&name).await;
    let trust_other = ("SSL_CERT_FILE", tls.other_ca_file().display().to_string());

    // ingest has only the broker link; the validator reaches the database first.
    let mut ingest = Lone::start(
        "ingest",
        &[("AMQP_URL", amqp_url.clone()), trust_other.clone()],
    )
    .await;
    let mut validator = Lone::start(
        "validator",
        &[
            ("AMQP_URL", amqp_url),
            ("DATABASE_URL", database_url),
            trust_other,
        ],
    )
    .await;
    for (what, lone) in [
        ("broker (ingest)", &ingest),
        ("database (validator)", &validator),
    ] {
        eventually(
            &format!("the {what} certificate refused as of an unknown issuer"),
            WAIT,
            || async { tls_log_says_unknown_issuer(&lone.log()).then_some(()) },
        )
        .await;
        assert_eq!(
            lone.readyz().await,
            503,
            "{what}: not ready:\n{}",
            lone.log()
        );
    }
    // Still refusing, not given up: alive and retrying.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for lone in [&mut ingest, &mut validator] {
        assert!(
            matches!(lone.child.try_wait(), Ok(None)),
            "a service exited instead of retrying:\n{}",
            lone.log()
        );
        assert_eq!(lone.readyz().await, 503);
    }
    let (encrypted, _) = tls.connections(&name).await;
    assert_eq!(encrypted, 0, "no session was established");
    drop(ingest);
    drop(validator);
    tls.cleanup(&name).await;
}

/// Runs `service` with `env` and returns (exit success, what it printed).
async fn run_to_exit(service: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(bin(service))
            .args(args)
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("INGEST_TOKEN", "tls-test-token-0123456789")
            .env("REQUIRE_TLS", "true")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("a refusal is immediate")
    .expect("service binary");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn require_tls_refuses_each_plaintext_setting_by_name() {
    let tls_broker = ("AMQP_URL", "amqps://u:hunter2@rabbit.example:5671/meter");
    let tls_db = (
        "DATABASE_URL",
        "postgres://u:hunter2@db.example/meter?sslmode=verify-full",
    );
    /// (service, arguments, environment, what the refusal must say)
    type Case<'a> = (
        &'a str,
        &'a [&'a str],
        Vec<(&'a str, &'a str)>,
        &'a [&'a str],
    );
    let cases: [Case; 5] = [
        (
            "ingest",
            &["serve"],
            vec![("AMQP_URL", "amqp://u:hunter2@rabbit.example:5672/meter")],
            &["AMQP_URL", "amqps://"],
        ),
        (
            "validator",
            &["serve"],
            vec![
                tls_broker,
                (
                    "DATABASE_URL",
                    "postgres://u:hunter2@db.example/meter?sslmode=require",
                ),
            ],
            &["DATABASE_URL", "sslmode=require", "verify-full"],
        ),
        (
            "validator",
            &["migrate"],
            vec![("DATABASE_URL", "postgres://u:hunter2@db.example/meter")],
            &["DATABASE_URL", "sslmode=prefer"],
        ),
        (
            "notifier",
            &["serve"],
            vec![
                tls_broker,
                tls_db,
                ("SMTP_URL", "smtp://u:hunter2@smtp.example:587"),
                ("SMS_GATEWAY", "http"),
                ("SMS_HTTP_URL", "http://sms.example/send"),
                ("SMS_HTTP_TOKEN", "sms-token-0123456789"),
                ("SMS_SENDER", "7377"),
            ],
            &["SMTP_URL", "tls=required", "SMS_HTTP_URL", "https://"],
        ),
        (
            "billing-export",
            &["serve"],
            vec![
                tls_broker,
                tls_db,
                ("BILLING_URL", "http://billing.example/api"),
                ("BILLING_TOKEN", "billing-token-0123456789"),
            ],
            &["BILLING_URL", "https://"],
        ),
    ];
    for (service, args, env, says) in cases {
        let (ok, stderr) = run_to_exit(service, args, &env).await;
        assert!(
            !ok,
            "{service} {args:?} started with a plaintext link:\n{stderr}"
        );
        assert!(stderr.contains("REQUIRE_TLS=true"), "{service}: {stderr}");
        for s in says {
            assert!(
                stderr.contains(s),
                "{service} {args:?} does not say {s}:\n{stderr}"
            );
        }
        assert!(
            !stderr.contains("hunter2"),
            "{service} printed a password:\n{stderr}"
        );
    }
}
