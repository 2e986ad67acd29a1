//! Bad-input drills (issue 7):
//! - garbage, truncated, oversized, wrong-typed and wrongly encoded HTTP requests to
//!   every endpoint of docs/openapi.yaml, over a raw socket so that nothing a client
//!   library would refuse to send is out of reach: every answer must be the documented
//!   success or a 4xx — with a JSON `{"error", "message"}` body from the API
//!   operations — never a 5xx, never a dropped or hung connection; the services stay
//!   alive;
//! - garbage and wrong-schema messages published straight onto `meter.events` with
//!   each routing key: each ends in its consumer's dead-letter queue with an
//!   `x-last-error` header and a logged reason, and good messages behind them still go
//!   through;
//! - a parser fuzz run over the validator's grammar and the phone-number parser
//!   (seeded generator on stable Rust; `FUZZ_CASES` per parser: 50,000 in the normal
//!   run, 1,000,000 in the `#[ignore]`d long run; `FUZZ_SEED`).
//!
//! Each prints its counts (tried, failures).

#[path = "bad_input/fuzz.rs"]
mod fuzz;
#[path = "bad_input/http.rs"]
mod http;

use std::collections::HashMap;
use std::time::Duration;

use e2e::drill::plan::Rng;
use e2e::system::TOKEN;
use e2e::{BillingDouble, Gateway, System, fixtures};
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use shared::testing::eventually;

use fuzz::{fuzz_cases, run_fuzz};
use http::{
    Answer, Probe, export_probes, kannel_probes, ops_probes, post_sms_probes, protocol_probes,
    request, send,
};

const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------- HTTP ----------

#[tokio::test]
async fn http_garbage_is_refused_with_4xx_and_the_services_stay_up() {
    let system = System::start(fixtures::options(Gateway::Log)).await;
    let mut rng = Rng::new(20261120);
    let mut probes = post_sms_probes(&mut rng);
    probes.extend(kannel_probes(&mut rng));
    probes.extend(export_probes(&mut rng));
    probes.extend(ops_probes(&mut rng));
    probes.extend(protocol_probes(&mut rng));
    // A few methods and paths the API does not have (routing answers these).
    for (service, method, path) in [
        ("ingest", "GET", "/v1/sms"),
        ("ingest", "DELETE", "/v1/sms"),
        ("ingest", "POST", "/v1/sms/kannel"),
        ("ingest", "GET", "/v1/nothing"),
        ("billing-export", "POST", "/v1/exports/2026-11.csv"),
        (
            "billing-export",
            "GET",
            "/v1/exports/2026-11/extra/missing.csv",
        ),
    ] {
        probes.push(Probe {
            service,
            label: format!("routing {method} {path}"),
            raw: request(method, path, &[], b""),
            api: false,
            cut_at: None,
        });
    }

    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut failures = Vec::new();
    let mut routing_without_json = Vec::new();
    for probe in &probes {
        let port = system.ports[probe.service];
        match send(port, probe).await {
            Answer::Dropped => failures.push(format!(
                "{}: connection dropped without an answer",
                probe.label
            )),
            Answer::Hung => failures.push(format!(
                "{}: no answer within 15 s ({:?})",
                probe.label,
                String::from_utf8_lossy(&probe.raw[..probe.raw.len().min(100)])
            )),
            Answer::Status { code, body } => {
                *statuses.entry(code).or_default() += 1;
                let json_reason = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .is_some_and(|v| v["error"].is_string() && v["message"].is_string());
                if !(200..300).contains(&code) && !(400..500).contains(&code) {
                    failures.push(format!(
                        "{}: {code} {}",
                        probe.label,
                        String::from_utf8_lossy(&body)
                    ));
                } else if (400..500).contains(&code) && probe.api && !json_reason {
                    failures.push(format!(
                        "{}: {code} without a JSON reason: {:?}",
                        probe.label,
                        String::from_utf8_lossy(&body)
                    ));
                } else if (400..500).contains(&code)
                    && probe.label.starts_with("routing")
                    && !json_reason
                {
                    routing_without_json.push(format!("{} → {code}", probe.label));
                }
            }
        }
    }
    let mut codes: Vec<_> = statuses.into_iter().collect();
    codes.sort();
    println!(
        "HTTP bad input: {} requests tried, {} failures; statuses {codes:?}",
        probes.len(),
        failures.len()
    );
    if !routing_without_json.is_empty() {
        println!(
            "answered by routing without a JSON body (not an API operation): {routing_without_json:?}"
        );
    }
    system.assert_all_alive("the bad HTTP input").await;
    assert!(
        failures.is_empty(),
        "{} of {} bad requests were not answered with a 4xx and a JSON reason:\n{}",
        failures.len(),
        probes.len(),
        failures.join("\n")
    );
    system.stop().await;
}

// -------------------------------------------------------------- broker ----------

async fn publish(channel: &lapin::Channel, key: &str, body: &[u8], content_type: &str) {
    let props = BasicProperties::default()
        .with_content_type(content_type.into())
        .with_delivery_mode(2);
    let confirm = channel
        .basic_publish(
            "meter.events".into(),
            key.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .expect("publish");
    assert!(
        confirm.await.is_ok_and(|c| c.is_ack()),
        "broker confirmed {key}"
    );
}

fn header(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

#[tokio::test]
async fn garbage_on_the_exchange_is_dead_lettered_and_good_messages_still_flow() {
    let billing = BillingDouble::start().await;
    let sms = BillingDouble::start().await;
    let mut opts = fixtures::options(Gateway::Http(sms.url.clone()));
    opts.billing_url = Some(billing.url.clone());
    let system = System::start(opts).await;
    let conn = Connection::connect(&system.env.amqp_url, ConnectionProperties::default())
        .await
        .expect("broker");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");

    let huge = format!(
        "{{\"schema\":\"sms.received/v1\",\"text\":\"{}\"}}",
        "9".repeat(4 * 1024 * 1024)
    );
    let bodies: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "non-JSON",
            b"\x00\xffthis is not JSON".to_vec(),
            "application/json",
        ),
        ("empty", Vec::new(), "application/json"),
        ("JSON array", b"[1,2,3]".to_vec(), "application/json"),
        (
            "wrong schema",
            br#"{"hello":"world"}"#.to_vec(),
            "application/json",
        ),
        (
            "unknown schema version",
            br#"{"schema":"sms.received/v2","message_id":"x"}"#.to_vec(),
            "application/json",
        ),
        ("huge", huge.into_bytes(), "application/json"),
        (
            "wrong content type",
            b"<event schema='x'/>".to_vec(),
            "application/xml",
        ),
    ];
    let missing_fields: [(&str, &[u8]); 3] = [
        ("sms.received", br#"{"schema":"sms.received/v1","message_id":"m-1","from":"+79001234567","to":"7377","received_at":"2026-11-20T10:00:00+05:00","channel":"sms"}"#),
        ("reading.accepted", br#"{"schema":"reading.accepted/v1","message_id":"m-2","account":"1000001","meter":"EM-1","period":"2026-11","values":[45100],"received_at":"2026-11-20T10:00:00+05:00","channel":"sms","email":null,"supersedes":null}"#),
        ("reading.rejected", br#"{"schema":"reading.rejected/v1","message_id":"m-3","from":"+79001234567","account":null,"reply":"x","received_at":"2026-11-20T10:00:00+05:00","channel":"sms"}"#),
    ];
    // Which dead-letter queues each routing key's garbage must reach.
    let consumers: [(&str, &[&str]); 3] = [
        ("sms.received", &["validator"]),
        ("reading.accepted", &["notifier", "billing-export"]),
        ("reading.rejected", &["notifier"]),
    ];
    let mut expected: HashMap<&str, u64> = HashMap::new();
    let mut published = 0;
    for (key, queues) in consumers {
        for (_, body, content_type) in &bodies {
            publish(&channel, key, body, content_type).await;
            published += 1;
        }
        for (k, body) in missing_fields.iter().filter(|(k, _)| *k == key) {
            publish(&channel, k, body, "application/json").await;
            published += 1;
        }
        for q in queues {
            *expected.entry(q).or_default() += bodies.len() as u64 + 1;
        }
    }
    // A well-formed event of another kind on a consumer's key.
    let stray = br#"{"schema":"sms.received/v1","message_id":"stray-1","from":"+79001234567","to":"7377","text":"1000001 45100","received_at":"2026-11-20T10:00:00+05:00","channel":"sms"}"#;
    publish(&channel, "reading.accepted", stray, "application/json").await;
    published += 1;
    *expected.entry("notifier").or_default() += 1;
    *expected.entry("billing-export").or_default() += 1;

    // Good messages behind the garbage: an accepted and a refused SMS through ingest.
    assert_eq!(
        system
            .post_sms_at(
                "good-1",
                "+79001110001",
                "1000001 45100",
                Some("2026-11-20T10:00:00+05:00")
            )
            .await,
        202
    );
    assert_eq!(
        system
            .post_sms_at(
                "good-2",
                "+79001110002",
                "1000001 44000",
                Some("2026-11-20T10:00:00+05:00")
            )
            .await,
        202
    );
    eventually("the good reading billed", WAIT, || async {
        billing
            .posts()
            .iter()
            .any(|p| p.2["message_id"] == "good-1")
            .then_some(())
    })
    .await;
    eventually("the refusal answered", WAIT, || async {
        sms.posts()
            .iter()
            .any(|p| p.2["reply_to"] == "good-2")
            .then_some(())
    })
    .await;

    for (queue, n) in &expected {
        let dead = format!("{queue}.dead");
        eventually(&format!("{n} dead letters in {dead}"), WAIT, || async {
            (system.env.queue_depth(&dead).await == Some(*n)).then_some(())
        })
        .await;
        let mut with_reason = 0;
        while let Some(msg) = channel
            .basic_get(dead.as_str().into(), BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            let headers = msg
                .delivery
                .properties
                .headers()
                .clone()
                .unwrap_or_default();
            let reason = header(&headers, "x-last-error").unwrap_or_default();
            assert!(
                !reason.trim().is_empty(),
                "{dead}: a dead letter without x-last-error"
            );
            assert!(
                header(&headers, "x-original-routing-key").is_some(),
                "{dead}: no original routing key"
            );
            with_reason += 1;
        }
        assert_eq!(with_reason, *n, "{dead}");
        println!("{dead}: {with_reason} dead letters, each with x-last-error");
    }
    for s in ["validator", "notifier", "billing-export"] {
        let logged = system.logs(s).matches("dead-lettering message").count() as u64;
        let want = expected.get(s).copied().unwrap_or(0);
        assert!(
            logged >= want,
            "{s}: {logged} dead letters logged, {want} expected"
        );
    }
    for q in ["validator", "notifier", "billing-export"] {
        eventually(&format!("{q} drained"), WAIT, || async {
            (system.env.queue_depth(q).await == Some(0)).then_some(())
        })
        .await;
    }
    system.assert_all_alive("the garbage on the exchange").await;
    println!(
        "broker bad input: {published} garbage messages published, {} dead letters checked, 0 failures",
        expected.values().sum::<u64>()
    );
    conn.close(200, "bye".into()).await.ok();
    system.stop().await;
    billing.stop();
    sms.stop();
}

// --------------------------------------------------------------- parser ---------

#[test]
fn parser_fuzz() {
    run_fuzz(fuzz_cases(50_000));
}

#[test]
#[ignore = "long fuzz run: cargo nextest run -p e2e --test bad_input --run-ignored only parser_fuzz_long (FUZZ_CASES)"]
fn parser_fuzz_long() {
    run_fuzz(fuzz_cases(1_000_000));
}

// ---------------------------------------------------------- schemathesis ---------

/// The console's API token in the schemathesis run (CONSOLE_API_TOKEN).
const CONSOLE_TOKEN: &str = "e2e-console-api-token-0123";
/// The aggregator's token (SMS_HTTP_TOKEN, as `System` gives the notifier), which
/// its delivery reports present.
const SMS_TOKEN: &str = "sms-secret";
/// The password of the console user schemathesis logs in as.
const CONSOLE_PASSWORD: &str = "schemathesis-password-0123";

/// The console as a process beside `system` (the harness runs the other four), on
/// the system's vhost and database, its port read from `/proc` as the harness does.
async fn start_console(system: &System) -> (tokio::process::Child, u16) {
    let log = std::fs::File::create(system.work.path().join("console.log")).expect("log");
    let child = tokio::process::Command::new(e2e::system::bin("console"))
        .arg("serve")
        .env("AMQP_URL", &system.env.amqp_url)
        .env("DATABASE_URL", &system.env.database_url)
        .env("DATABASE_MAX_CONNECTIONS", "5")
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("CONSOLE_API_TOKEN", CONSOLE_TOKEN)
        .env("CONSOLE_INSECURE_COOKIES", "true")
        .env("BILLING_EXPORT_URL", system.base("billing-export"))
        .env("CONSOLE_EXPORT_TOKEN", e2e::system::EXPORT_TOKEN)
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("the console binary (cargo build --workspace --bins)");
    let pid = child.id().expect("a started child has a pid");
    let port = shared::testing::listening_port(pid, "console").await;
    let ready = format!("http://127.0.0.1:{port}/readyz");
    eventually("the console ready", WAIT, || async {
        let r = reqwest::get(&ready).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    (child, port)
}

/// A supervisor's session on the console at `base` (`console add-user`, then the login
/// form as a browser fills it): the cookie that gets schemathesis past the login to
/// the pages' own handling of what it sends.
async fn console_session(system: &System, base: &str) -> String {
    use tokio::io::AsyncWriteExt as _;
    let mut add = tokio::process::Command::new(e2e::system::bin("console"))
        .args(["add-user", "schemathesis", "--role", "supervisor"])
        .env("DATABASE_URL", &system.env.database_url)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("console add-user");
    let mut stdin = add.stdin.take().expect("stdin");
    stdin
        .write_all(CONSOLE_PASSWORD.as_bytes())
        .await
        .expect("password");
    drop(stdin);
    assert!(
        add.wait().await.expect("add-user ran").success(),
        "console add-user failed"
    );

    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let cookie = |r: &reqwest::Response, name: &str| -> String {
        r.headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                v.strip_prefix(&format!("{name}="))
                    .and_then(|v| v.split(';').next())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no {name} cookie"))
    };
    let form = http
        .get(format!("{base}/login"))
        .send()
        .await
        .expect("GET /login");
    let login_cookie = cookie(&form, "console_login");
    let page = form.text().await.expect("the login page");
    let marker = r#"name="csrf" value=""#;
    let csrf = page
        .split_once(marker)
        .and_then(|(_, rest)| rest.split('"').next())
        .expect("the login form's csrf field");
    let done = http
        .post(format!("{base}/login"))
        .header(
            reqwest::header::COOKIE,
            format!("console_login={login_cookie}"),
        )
        .form(&[
            ("csrf", csrf),
            ("username", "schemathesis"),
            ("password", CONSOLE_PASSWORD),
        ])
        .send()
        .await
        .expect("POST /login");
    assert_eq!(done.status(), 303, "the supervisor's login");
    format!("console_session={}", cookie(&done, "console_session"))
}

/// schemathesis (PyPI) against every service, from docs/openapi.yaml, each with the
/// credentials its operations take: `scripts/test.sh` runs it at CI size
/// (`SCHEMATHESIS_EXAMPLES=25`), `scripts/bad-input.sh` at full size (1,000); both
/// install schemathesis if missing. `SCHEMATHESIS_EXAMPLES` per operation (default 200).
#[tokio::test]
#[ignore = "needs schemathesis (pip install schemathesis): scripts/test.sh, scripts/bad-input.sh"]
async fn schemathesis_every_endpoint() {
    let sms = BillingDouble::start().await;
    let mut opts = fixtures::options(Gateway::Http(sms.url.clone()));
    // Delivery reports from Kannel and Jasmin are answered only with signing keys.
    opts.env
        .push(("DLR_SECRET".into(), "e2e-dlr-secret-0123456789".into()));
    opts.env
        .push(("DLR_BASE_URL".into(), "http://127.0.0.1:9".into()));
    // Past the web form's rate per address, its posts would all be 429: untested.
    opts.env
        .push(("FORM_RATE_PER_MINUTE".into(), "10000".into()));
    let system = System::start(opts).await;
    let (mut console, console_port) = start_console(&system).await;
    let examples = std::env::var("SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "200".into());
    let spec = e2e::repo_root().join("docs/openapi.yaml");
    let reports = tempfile::tempdir().expect("report dir");
    // Kannel's and Jasmin's token is a query parameter, not a security scheme: give
    // schemathesis the right one, so its cases get past authentication (the Rust
    // probes above try wrong ones). `positive_data_acceptance` is off: a schema cannot
    // say which phone numbers libphonenumber holds valid, nor make a delivery report's
    // signature or a form's CSRF token, so a schema-valid request may rightly be a 4xx.
    let config = reports.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            "[parameters]\n\"query.token\" = \"{TOKEN}\"\n\n[checks.positive_data_acceptance]\nenabled = false\n"
        ),
    )
    .expect("schemathesis.toml");
    let console_base = format!("http://127.0.0.1:{console_port}");
    let session = console_session(&system, &console_base).await;
    // Service, base URL, bearer token, the session cookie (the console's pages), tags.
    let runs: [(&str, String, &str, &str, &[&str]); 5] = [
        (
            "ingest",
            system.base("ingest"),
            TOKEN,
            "",
            &["ingest", "ops"],
        ),
        ("validator", system.base("validator"), "", "", &["ops"]),
        (
            "notifier",
            system.base("notifier"),
            SMS_TOKEN,
            "",
            &["notifier", "ops"],
        ),
        (
            "billing-export",
            system.base("billing-export"),
            e2e::system::EXPORT_TOKEN,
            "",
            &["billing-export", "ops"],
        ),
        (
            "console",
            console_base,
            CONSOLE_TOKEN,
            &session,
            &["console", "console-pages", "ops"],
        ),
    ];
    let mut failed = Vec::new();
    let mut counts = Vec::new();
    for (service, base, token, cookie, tags) in runs {
        let mut cmd = tokio::process::Command::new("st");
        // schemathesis keeps a `.schemathesis/` state directory in its working directory.
        cmd.current_dir(reports.path())
            .arg("--config-file")
            .arg(&config)
            .arg("run")
            .arg(&spec)
            .args(["--url", &base])
            .args(["--max-examples", &examples])
            .args(["--request-timeout", "30"])
            .args(["--seed", "1", "--no-color", "--generation-database", "none"])
            .args(["--report", "junit"])
            .arg("--report-junit-path")
            .arg(reports.path().join(format!("{service}.xml")));
        if !token.is_empty() {
            cmd.args(["--header", &format!("Authorization: Bearer {token}")]);
        }
        if !cookie.is_empty() {
            cmd.args(["--header", &format!("Cookie: {cookie}")]);
        }
        for t in tags {
            cmd.args(["--include-tag", t]);
        }
        let out = cmd.output().await.expect("st (pip install schemathesis)");
        let text = String::from_utf8_lossy(&out.stdout);
        println!(
            "==== schemathesis: {service} ====\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            failed.push(service);
        }
        // "Test cases:\n  287 generated, 287 passed" (or "…, N found M unique failures").
        let summary = text
            .lines()
            .skip_while(|l| !l.starts_with("Test cases:"))
            .nth(1)
            .unwrap_or("(no summary)")
            .trim()
            .to_owned();
        counts.push(format!("{service}: {summary}"));
    }
    println!("schemathesis: {}", counts.join("; "));
    system.assert_all_alive("schemathesis").await;
    assert!(
        console.try_wait().ok().flatten().is_none(),
        "the console exited under schemathesis: {}",
        std::fs::read_to_string(system.work.path().join("console.log")).unwrap_or_default()
    );
    console.kill().await.ok();
    system.stop().await;
    sms.stop();
    assert!(
        failed.is_empty(),
        "schemathesis found failures against {failed:?}"
    );
}
