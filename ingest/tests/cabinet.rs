//! The personal cabinet's `POST /v1/readings` (SPEC §4.9) against the real RabbitMQ:
//! its token, its checks, the canonical text on the `cabinet` channel, the decision in
//! the response (the validator played by the test, as a third party would publish
//! it), `202` when none comes in time, and one message per request.

mod common;

use common::{CABINET_TOKEN, taken};
use shared::events::{Channel, Event, RejectReason};
use shared::testing::{Broker, Service, TestEnv};

fn reading(request_id: &str) -> serde_json::Value {
    serde_json::json!({
        "request_id": request_id,
        "resident_id": "resident-77",
        "account": "1000001",
        "values": [45100, 12100],
        "email": null
    })
}

async fn post(app: &Service, token: Option<&str>, body: &serde_json::Value) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/readings", app.base))
        .json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("request")
}

#[tokio::test]
async fn the_cabinet_gets_the_validators_decision_in_the_response() {
    let env = TestEnv::new().await;
    let app = common::spawn(common::config(&env.amqp_url)).await;
    for accept in [true, false] {
        let request_id = format!("req-{accept}");
        let posting = {
            let base = app.base.clone();
            let body = reading(&request_id);
            tokio::spawn(async move {
                let response = reqwest::Client::new()
                    .post(format!("{base}/v1/readings"))
                    .bearer_auth(CABINET_TOKEN)
                    .json(&body)
                    .send()
                    .await
                    .expect("request");
                let status = response.status().as_u16();
                (
                    status,
                    response.json::<serde_json::Value>().await.expect("json"),
                )
            })
        };
        // The validator's part: the message arrives, its decision is published.
        let broker = Broker::connect(&env).await;
        let Event::SmsReceived(sms) = broker.wait_take("validator").await.event() else {
            panic!("an sms.received");
        };
        assert_eq!(sms.channel, Channel::Cabinet);
        assert_eq!(sms.from, "cabinet:resident-77");
        assert_eq!(sms.to, "cabinet");
        assert_eq!(sms.text, "1000001 45100 12100");
        let decision = if accept {
            common::accepted(&sms, "2026-12", vec![45100, 12100])
        } else {
            common::rejected(
                &sms,
                RejectReason::ReadingDecreased,
                "Показание 45100 меньше прошлого: проверьте",
            )
        };
        broker.publish(&decision).await;
        broker.close().await;
        let (status, body) = posting.await.expect("the post");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["message_id"], sms.message_id.as_str());
        if accept {
            assert_eq!(body["decision"], "accepted");
            assert_eq!(body["reason"], serde_json::Value::Null);
            assert_eq!(body["period"], "2026-12");
        } else {
            assert_eq!(body["decision"], "rejected");
            assert_eq!(body["reason"], "reading_decreased");
            assert_eq!(body["reply"], "Показание 45100 меньше прошлого: проверьте");
        }
    }
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn without_a_decision_in_time_202_and_a_repeated_request_is_the_same_message() {
    let env = TestEnv::new().await;
    let app = common::spawn(common::config(&env.amqp_url)).await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let response = post(&app, Some(CABINET_TOKEN), &reading("req-1")).await;
        assert_eq!(response.status(), 202);
        let body: serde_json::Value = response.json().await.expect("json");
        ids.push(body["message_id"].as_str().expect("message_id").to_owned());
    }
    assert_eq!(ids[0], ids[1]);
    let published = taken(&env).await;
    assert_eq!(published.len(), 2);
    assert!(published.iter().all(|m| m.event().message_id() == ids[0]));
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn the_cabinet_needs_its_own_token() {
    let env = TestEnv::new().await;
    let app = common::spawn(common::config(&env.amqp_url)).await;
    for token in [
        None,
        Some("wrong-token-0123456789"),
        Some(common::INGEST_TOKEN),
    ] {
        let response = post(&app, token, &reading("r")).await;
        assert_eq!(response.status(), 401, "{token:?}");
        assert_eq!(
            response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok()),
            Some("Bearer")
        );
    }
    assert!(taken(&env).await.is_empty());
    app.stop().await;

    let mut config = common::config(&env.amqp_url);
    config.channels.cabinet_token = None;
    let app = common::spawn(config).await;
    let response = post(&app, Some(CABINET_TOKEN), &reading("r")).await;
    assert_eq!(response.status(), 503);
    let reason: serde_json::Value = response.json().await.expect("json");
    assert!(
        reason["message"]
            .as_str()
            .is_some_and(|m| m.contains("CABINET_TOKEN")),
        "{reason}"
    );
    app.stop().await;
    env.cleanup().await;
}

#[tokio::test]
async fn what_cannot_be_a_reading_is_400_with_the_reason_and_publishes_nothing() {
    let env = TestEnv::new().await;
    let app = common::spawn(common::config(&env.amqp_url)).await;
    let mut bad = vec![
        serde_json::json!({"request_id": "r", "resident_id": "u", "account": "1000001", "values": []}),
        serde_json::json!({"request_id": "r", "resident_id": "u", "account": "10-01", "values": [1]}),
        serde_json::json!({"request_id": "r", "resident_id": "u", "account": "1000001", "values": [1, 2, 3, 4]}),
        serde_json::json!({"request_id": "r", "resident_id": "u", "account": "1000001", "values": ["45100"]}),
        serde_json::json!({"request_id": "r", "resident_id": "u", "account": "1000001", "values": [1], "email": "ivan"}),
        serde_json::json!({"resident_id": "u", "account": "1000001", "values": [1]}),
    ];
    bad.push(serde_json::Value::String("not an object".into()));
    for body in &bad {
        let response = post(&app, Some(CABINET_TOKEN), body).await;
        assert_eq!(response.status(), 400, "{body}");
        let reason: serde_json::Value = response.json().await.expect("json");
        assert_eq!(reason["error"], "bad_request", "{body}");
        assert!(reason["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    assert!(taken(&env).await.is_empty());
    app.stop().await;
    env.cleanup().await;
}
