//! The exports hold every account's readings (SPEC §4.5): they need a bearer token of
//! `EXPORT_TOKEN` (several during a rotation), answer `503` while it is not set, log
//! every download with its period, rows and the token's fingerprint (never the
//! token), and give up with `503` when they run past `EXPORT_TIMEOUT_SECONDS`.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use common::{Events, Options, billing_pool, reading, spawn_app, wait_stored};
use shared::testing::{READY_WAIT, TestEnv, WAIT, eventually, listening_port};
use tokio::io::AsyncBufReadExt as _;

const NEW: &str = "export-token-new-0123456";
const OLD: &str = "export-token-old-6543210";

const PATHS: [&str; 2] = ["/v1/exports/2026-11.csv", "/v1/exports/2026-11/missing.csv"];

async fn error_of(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON reason"))
}

#[tokio::test]
async fn exports_need_a_bearer_token_of_export_token_and_take_either_during_a_rotation() {
    let env = TestEnv::new().await;
    let app = spawn_app(
        &env,
        Options {
            export_tokens: Some(format!("{NEW},{OLD}")),
            ..Options::default()
        },
    )
    .await;
    let events = Events::connect(&env).await;
    let r = reading(
        "1000001",
        "M-1",
        "2026-11",
        &[120, 60],
        "2026-11-18T09:00:00+05:00",
    );
    events.publish(&r).await;
    wait_stored(&billing_pool(&env), 1).await;

    let changed = format!("{}X", &NEW[..NEW.len() - 1]);
    for path in PATHS {
        for token in [
            None,
            Some("not-the-token-at-all"),
            Some(changed.as_str()),
            Some(""),
        ] {
            let resp = app.get_as(path, token).await;
            assert_eq!(
                resp.headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok()),
                Some("Bearer"),
                "{path} {token:?}"
            );
            let (status, body) = error_of(resp).await;
            assert_eq!(status, 401, "{path} {token:?}");
            assert_eq!(body["error"], "unauthorized", "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("EXPORT_TOKEN")),
                "{body}"
            );
        }
    }
    // Without a token nothing is learnt, not even whether the period is valid.
    assert_eq!(
        app.get_as("/v1/exports/2026-13.csv", None).await.status(),
        401
    );
    assert_eq!(
        app.get_as("/v1/exports/2026-13.csv", Some(NEW))
            .await
            .status(),
        400
    );
    for token in [NEW, OLD] {
        let resp = app.get_as(PATHS[0], Some(token)).await;
        assert_eq!(resp.status(), 200);
        let body = resp.text().await.expect("body");
        assert!(
            body.lines()
                .any(|l| l.starts_with("1000001,M-1,2026-11,120,60,")),
            "{body}"
        );
    }
    assert_eq!(
        app.metric("billing_exports_served_total", &[("report", "readings")])
            .await,
        Some(2.0),
        "refused requests are not served exports"
    );
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn without_export_token_every_export_is_503_saying_so() {
    let env = TestEnv::new().await;
    let app = spawn_app(
        &env,
        Options {
            no_export_token: true,
            ..Options::default()
        },
    )
    .await;
    for path in PATHS {
        for token in [None, Some(NEW)] {
            let resp = app.get_as(path, token).await;
            assert!(
                resp.headers().get("retry-after").is_none(),
                "waiting does not set a setting"
            );
            let (status, body) = error_of(resp).await;
            assert_eq!(status, 503, "{path} {token:?}");
            assert_eq!(body["error"], "not_configured", "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("EXPORT_TOKEN is not set")),
                "{body}"
            );
        }
    }
    // The service itself is up and ready: only the exports are closed.
    assert_eq!(app.get_as("/readyz", None).await.status(), 200);
    app.stop().await;
    env.cleanup().await;
}

/// A table locked by something else (a migration, a `VACUUM FULL`): the export waits
/// for at most EXPORT_TIMEOUT_SECONDS, then answers 503 with the reason, and works
/// again once the lock is gone.
#[tokio::test]
async fn an_export_past_export_timeout_seconds_is_503_with_the_reason() {
    let env = TestEnv::new().await;
    let app = spawn_app(
        &env,
        Options {
            export_timeout_seconds: Some(1),
            ..Options::default()
        },
    )
    .await;
    let pool = billing_pool(&env);
    let mut lock = pool.begin().await.expect("transaction");
    sqlx::query("LOCK TABLE readings IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .expect("lock");
    let resp = tokio::time::timeout(WAIT, app.get(PATHS[0]))
        .await
        .expect("the export gives up within its limit");
    assert_eq!(
        resp.headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("30")
    );
    let (status, body) = error_of(resp).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "timeout", "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("EXPORT_TIMEOUT_SECONDS (1 s)")),
        "{body}"
    );
    lock.rollback().await.expect("unlock");
    let again = app.get(PATHS[0]).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.text().await.expect("body"),
        "account,meter,period,t1,t2,t3,received_at,channel,reading_id\n"
    );
    app.stop().await;
    env.cleanup().await;
}

/// The real binary with JSON logs: a download is logged with its report, period,
/// rows and the token's fingerprint, and the token itself appears nowhere.
#[tokio::test]
async fn every_download_is_logged_with_period_rows_and_fingerprint_never_the_token() {
    let env = TestEnv::new().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_billing-export"))
        .arg("serve")
        .env_clear()
        .env("AMQP_URL", &env.amqp_url)
        .env("DATABASE_URL", &env.database_url)
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("EXPORT_TOKEN", format!("{NEW},{OLD}"))
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("OTEL_SDK_DISABLED", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("billing-export binary starts");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    for out in [
        child
            .stdout
            .take()
            .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|e| Box::new(e) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let lines = lines.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(out).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().expect("log lines").push(line);
            }
        });
    }
    let pid = child.id().expect("pid");
    let base = format!(
        "http://127.0.0.1:{}",
        listening_port(pid, "billing-export").await
    );
    let http = reqwest::Client::new();
    eventually("billing-export ready", READY_WAIT, || async {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let events = Events::connect(&env).await;
    for (account, meter) in [("1000001", "M-1"), ("1000002", "M-2")] {
        events
            .publish(&reading(
                account,
                meter,
                "2026-11",
                &[7],
                "2026-11-18T09:00:00+05:00",
            ))
            .await;
    }
    wait_stored(&billing_pool(&env), 2).await;
    let resp = http
        .get(format!("{base}{}", PATHS[0]))
        .bearer_auth(OLD)
        .send()
        .await
        .expect("export");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("body").lines().count(), 3);
    let refused = http
        .get(format!("{base}{}", PATHS[0]))
        .bearer_auth("a-wrong-token-of-some-length")
        .send()
        .await
        .expect("export");
    assert_eq!(refused.status(), 401);

    let fingerprint = shared::token::fingerprint(OLD);
    let logged = eventually("the download's log line", WAIT, || async {
        lines
            .lock()
            .expect("log lines")
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["fields"]["message"] == "export downloaded")
    })
    .await;
    let fields = &logged["fields"];
    assert_eq!(fields["report"], "readings", "{logged}");
    assert_eq!(fields["period"], "2026-11", "{logged}");
    assert_eq!(fields["rows"], 2, "{logged}");
    assert_eq!(fields["token"], fingerprint.as_str(), "{logged}");
    let _ = child.start_kill();
    let _ = child.wait().await;
    let all = lines.lock().expect("log lines").join("\n");
    for secret in [NEW, OLD, "a-wrong-token-of-some-length"] {
        assert!(!all.contains(secret), "a token in the log:\n{all}");
    }
    env.cleanup().await;
}
