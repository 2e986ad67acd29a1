//! `OTEL_SDK_DISABLED` on the real binary: with `true` the service runs without
//! tracing — what it publishes carries no `traceparent` — and without it every
//! published message starts a trace of its own.

use std::process::Stdio;

use shared::testing::{Broker, READY_WAIT, TestEnv, eventually, listening_port};

const TOKEN: &str = "ingest-test-token-0123";

/// Runs the ingest binary with `otel_sdk_disabled` (if any), posts one SMS without a
/// `traceparent` and returns the `traceparent` of the message it published.
async fn published_traceparent(env: &TestEnv, otel_sdk_disabled: Option<&str>) -> Option<String> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingest"));
    cmd.arg("serve")
        .env_clear()
        .env("AMQP_URL", &env.amqp_url)
        .env("INGEST_TOKEN", TOKEN)
        // The kernel picks the port; the harness reads it from /proc.
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(v) = otel_sdk_disabled {
        cmd.env("OTEL_SDK_DISABLED", v);
    }
    let mut child = cmd.spawn().expect("ingest binary starts");
    let pid = child.id().expect("ingest pid");
    let port = listening_port(pid, "ingest").await;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("ingest ready", READY_WAIT, || async {
        let r = http.get(format!("{base}/readyz")).send().await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    let resp = http
        .post(format!("{base}/v1/sms"))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({
            "message_id": "otel-1", "from": "89001234567", "to": "7377",
            "text": "1234567 12345", "received_at": "2026-11-20T10:00:00+05:00"
        }))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 202);
    let broker = Broker::connect(env).await;
    let msg = broker
        .take("validator")
        .await
        .expect("the message is in the validator queue");
    broker.close().await;
    child.kill().await.ok();
    msg.header("traceparent")
}

#[tokio::test]
async fn otel_sdk_disabled_publishes_without_trace_context() {
    let env = TestEnv::new().await;
    assert_eq!(published_traceparent(&env, Some("true")).await, None);
    let traced = published_traceparent(&env, None).await;
    assert!(
        traced.as_deref().is_some_and(|tp| tp.starts_with("00-")),
        "tracing on by default: {traced:?}"
    );
    let not_disabled = published_traceparent(&env, Some("false")).await;
    assert!(not_disabled.is_some(), "only `true` disables");
    env.cleanup().await;
}
