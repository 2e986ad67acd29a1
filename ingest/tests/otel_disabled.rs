//! `OTEL_SDK_DISABLED` on the real binary: with `true` the service runs without
//! tracing — what it publishes carries no `traceparent` — and without it every
//! published message starts a trace of its own.

use std::process::Stdio;
use std::time::Duration;

use lapin::options::BasicGetOptions;
use lapin::{Connection, ConnectionProperties};
use shared::testing::{TestEnv, eventually};
use shared::tracecontext::header_str;

const TOKEN: &str = "test-token-123";

/// Runs the ingest binary with `otel_sdk_disabled` (if any), posts one SMS without a
/// `traceparent` and returns the `traceparent` of the message it published.
async fn published_traceparent(env: &TestEnv, otel_sdk_disabled: Option<&str>) -> Option<String> {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingest"));
    cmd.arg("serve")
        .env_clear()
        .env("AMQP_URL", &env.amqp_url)
        .env("INGEST_TOKEN", TOKEN)
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(v) = otel_sdk_disabled {
        cmd.env("OTEL_SDK_DISABLED", v);
    }
    let mut child = cmd.spawn().expect("ingest binary starts");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    eventually("ingest ready", Duration::from_secs(20), || async {
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
    let conn = Connection::connect(&env.amqp_url, ConnectionProperties::default())
        .await
        .expect("broker");
    let ch = conn.create_channel().await.expect("channel");
    let msg = ch
        .basic_get("validator".into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get")
        .expect("the message is in the validator queue");
    conn.close(200, "bye".into()).await.ok();
    child.kill().await.ok();
    let headers = msg
        .delivery
        .properties
        .headers()
        .clone()
        .unwrap_or_default();
    header_str(&headers, "traceparent").map(str::to_owned)
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
