//! Issue 6's observability promises, proved on the four service binaries as processes:
//!
//! - traces: every service exports its spans over OTLP/HTTP to a receiver run by the
//!   test (`scripts/otlp-receiver.py`), and one SMS is one trace whose spans come from
//!   each service it went through, linked parent → child across the broker by the
//!   `traceparent` header, with OpenTelemetry messaging attributes;
//! - metrics: after a known mix of traffic, each service's `/metrics` (OpenMetrics text)
//!   shows exactly the counters that traffic must have moved, and `/healthz`,
//!   `/readyz` answer 200.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use e2e::{BillingDouble, Gateway, System, fixtures};
use serde_json::Value;
use shared::testing::{Metrics, eventually, listening_port};

const WAIT: Duration = Duration::from_secs(60);

/// `scripts/otlp-receiver.py` as a child process, writing one JSON line per span.
struct OtlpReceiver {
    port: u16,
    out: PathBuf,
    _dir: tempfile::TempDir,
    child: Option<tokio::process::Child>,
}

impl OtlpReceiver {
    async fn start() -> OtlpReceiver {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("spans.jsonl");
        // Port 0: the receiver binds its own, and we read it from /proc.
        let child = tokio::process::Command::new("python3")
            .arg(e2e::repo_root().join("scripts/otlp-receiver.py"))
            .arg("--port")
            .arg("0")
            .arg("--out")
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 scripts/otlp-receiver.py (pip install opentelemetry-proto)");
        let pid = child.id().expect("receiver pid");
        let port = listening_port(pid, "OTLP receiver").await;
        OtlpReceiver {
            port,
            out,
            _dir: dir,
            child: Some(child),
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Span> {
        read_spans(&self.out)
    }

    /// SIGTERM, and the receiver must exit cleanly.
    async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            let _ = tokio::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        let status = tokio::time::timeout(shared::testing::STOP_WAIT, child.wait()).await;
        assert!(
            matches!(status, Ok(Ok(s)) if s.success()),
            "the OTLP receiver exits 0 on SIGTERM: {status:?}"
        );
    }
}

/// One exported span, as the receiver wrote it.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    kind: String,
    service: String,
    attributes: serde_json::Map<String, Value>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).and_then(Value::as_str)
    }
}

fn read_spans(path: &Path) -> Vec<Span> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
            Span {
                trace_id: s("trace_id"),
                span_id: s("span_id"),
                parent_span_id: s("parent_span_id"),
                name: s("name"),
                kind: s("kind"),
                service: s("service.name"),
                attributes: v["attributes"].as_object().cloned().unwrap_or_default(),
            }
        })
        .collect()
}

/// The trace of one SMS: the trace id of ingest's span for `message_id`, and every
/// span of that trace.
fn trace_of(spans: &[Span], message_id: &str) -> Option<(String, Vec<Span>)> {
    let root = spans
        .iter()
        .find(|s| s.service == "ingest" && s.attr("messaging.message.id") == Some(message_id))?;
    let trace: Vec<Span> = spans
        .iter()
        .filter(|s| s.trace_id == root.trace_id)
        .cloned()
        .collect();
    Some((root.trace_id.clone(), trace))
}

/// The consumer span of `queue` in a trace.
fn consumer<'a>(trace: &'a [Span], queue: &str) -> Option<&'a Span> {
    trace
        .iter()
        .find(|s| s.kind == "consumer" && s.attr("messaging.consumer.group.name") == Some(queue))
}

/// The event's routing key: semconv's `messaging.rabbitmq.destination.routing_key`
/// if the span has it, else `messaging.destination.name` (which the services set to
/// the routing key today).
fn routing_key(span: &Span) -> Option<&str> {
    span.attr("messaging.rabbitmq.destination.routing_key")
        .or_else(|| span.attr("messaging.destination.name"))
}

fn services(trace: &[Span]) -> HashSet<&str> {
    trace.iter().map(|s| s.service.as_str()).collect()
}

/// A trace is complete for these purposes once each `queue` has its consumer span.
fn complete(trace: &[Span], queues: &[&str]) -> bool {
    queues.iter().all(|q| consumer(trace, q).is_some())
}

fn describe(trace: &[Span]) -> String {
    trace
        .iter()
        .map(|s| {
            format!(
                "  {} {} [{}] {} parent={} {:?}",
                s.service, s.span_id, s.kind, s.name, s.parent_span_id, s.attributes
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// One SMS = one trace: connected, from the services it crossed, linked across the
/// broker, with messaging attributes.
fn assert_one_trace(trace: &[Span], expected: &[(&str, &str)], message_id: &str) {
    let dump = describe(trace);
    let by_id: HashMap<&str, &Span> = trace.iter().map(|s| (s.span_id.as_str(), s)).collect();

    // One root (ingest's request span), and every other span's parent is in the trace.
    let roots: Vec<&Span> = trace
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "{message_id}: one root span\n{dump}");
    assert_eq!(
        roots[0].service, "ingest",
        "{message_id}: the trace starts at ingest\n{dump}"
    );
    assert_eq!(
        roots[0].kind, "server",
        "{message_id}: the root is the HTTP request\n{dump}"
    );
    for s in trace {
        if !s.parent_span_id.is_empty() {
            assert!(
                by_id.contains_key(s.parent_span_id.as_str()),
                "{message_id}: parent of {} ({}) is not in the trace\n{dump}",
                s.name,
                s.service
            );
        }
    }

    // ingest publishes: a producer span with messaging attributes.
    let producer = trace
        .iter()
        .find(|s| s.service == "ingest" && s.kind == "producer")
        .unwrap_or_else(|| panic!("{message_id}: ingest's publish span\n{dump}"));
    assert_eq!(
        producer.attr("messaging.system"),
        Some("rabbitmq"),
        "{dump}"
    );
    assert!(
        producer
            .attr("messaging.destination.name")
            .is_some_and(|d| !d.is_empty()),
        "{message_id}: publish span has messaging.destination.name\n{dump}"
    );
    assert_eq!(routing_key(producer), Some("sms.received"), "{dump}");
    assert_eq!(
        producer.attr("messaging.operation.type"),
        Some("publish"),
        "{dump}"
    );
    assert_eq!(
        producer.attr("messaging.message.id"),
        Some(message_id),
        "{dump}"
    );

    // Each consumer: a consumer span in its own service, whose parent is a span of the
    // service that published the event (the context crossed the broker).
    for (queue, from_service) in expected {
        let c = consumer(trace, queue)
            .unwrap_or_else(|| panic!("{message_id}: no `{queue}` consumer span\n{dump}"));
        // Queues are named after the service that consumes them.
        assert_eq!(
            c.service, *queue,
            "{message_id}: `{queue}` consumed by {queue}\n{dump}"
        );
        assert_eq!(
            c.attr("messaging.system"),
            Some("rabbitmq"),
            "{message_id}: {queue}\n{dump}"
        );
        assert!(
            c.attr("messaging.destination.name")
                .is_some_and(|d| !d.is_empty()),
            "{message_id}: {queue} has messaging.destination.name\n{dump}"
        );
        assert_eq!(
            c.attr("messaging.operation.type"),
            Some("process"),
            "{dump}"
        );
        let parent = by_id.get(c.parent_span_id.as_str()).unwrap_or_else(|| {
            panic!("{message_id}: `{queue}` consumer has no parent in the trace\n{dump}")
        });
        assert_eq!(
            parent.service, *from_service,
            "{message_id}: `{queue}` consumer's parent is a span of {from_service} (across the broker)\n{dump}"
        );
        assert_ne!(parent.service, c.service, "{dump}");
    }
}

#[tokio::test]
async fn one_sms_is_one_trace_across_the_services() {
    let receiver = OtlpReceiver::start().await;
    let billing = BillingDouble::start().await;
    let sms = BillingDouble::start().await;
    let mut opts = fixtures::options(Gateway::Http(sms.url.clone()));
    opts.billing_url = Some(billing.url.clone());
    opts.env.extend([
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            receiver.endpoint(),
        ),
        // The SDK's batch processor reads it (opentelemetry_sdk BatchConfigBuilder).
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned()),
    ]);
    let mut system = System::start(opts).await;

    // Refused (fewer readings than the meter's two zones): validator refuses it, the
    // notifier answers it. Accepted with an e-mail address: validator accepts,
    // billing-export pushes it, the notifier confirms it by e-mail. (An accepted
    // reading without an address never reaches the notifier: its filter drops it.)
    assert_eq!(
        system
            .post_sms("trace-refused", "+79000000101", "1000002 45100")
            .await,
        202
    );
    assert_eq!(
        system
            .post_sms(
                "trace-accepted",
                "+79000000102",
                "1000001 45100 ivan@example.ru"
            )
            .await,
        202
    );

    eventually("the refusal answered by SMS", WAIT, || async {
        (!sms.posts().is_empty()).then_some(())
    })
    .await;
    eventually("the accepted reading pushed to billing", WAIT, || async {
        (!billing.delivered().is_empty()).then_some(())
    })
    .await;

    // The spans arrive after the batch delay; wait on the file for both traces.
    let wanted = [
        ("trace-refused", vec!["validator", "notifier"]),
        (
            "trace-accepted",
            vec!["validator", "notifier", "billing-export"],
        ),
    ];
    let arrived = tokio::time::timeout(WAIT, async {
        loop {
            let spans = receiver.spans();
            if wanted
                .iter()
                .all(|(id, queues)| trace_of(&spans, id).is_some_and(|(_, t)| complete(&t, queues)))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if arrived.is_err() {
        panic!(
            "spans did not arrive within {WAIT:?}; received:\n{}\ningest log:\n{}\nnotifier log:\n{}",
            describe(&receiver.spans()),
            system.logs("ingest"),
            system.logs("notifier")
        );
    }
    // The consumer spans end after the ack; let those still in the batch queues out
    // with the shutdown flush (SIGTERM → TelemetryGuard), then read everything.
    for service in e2e::system::SERVICES {
        let status = system.terminate(service).await;
        assert!(
            status.is_some_and(|st| st.success()),
            "{service} exits cleanly on SIGTERM: {status:?}"
        );
    }
    let spans = receiver.spans();

    let (refused_trace, refused) = trace_of(&spans, "trace-refused").expect("refused trace");
    let (accepted_trace, accepted) = trace_of(&spans, "trace-accepted").expect("accepted trace");
    assert_ne!(refused_trace, accepted_trace, "each SMS is its own trace");

    assert_one_trace(
        &refused,
        &[("validator", "ingest"), ("notifier", "validator")],
        "trace-refused",
    );
    let expected: HashSet<&str> = ["ingest", "validator", "notifier"].into();
    assert!(
        services(&refused).is_superset(&expected),
        "refused: {:?}",
        services(&refused)
    );

    assert_one_trace(
        &accepted,
        &[
            ("validator", "ingest"),
            ("notifier", "validator"),
            ("billing-export", "validator"),
        ],
        "trace-accepted",
    );
    let expected: HashSet<&str> = ["ingest", "validator", "notifier", "billing-export"].into();
    assert!(
        services(&accepted).is_superset(&expected),
        "accepted: {:?}",
        services(&accepted)
    );

    // Each consumer span names the event it processed (its routing key).
    let key = |trace: &[Span], queue: &str| {
        consumer(trace, queue)
            .and_then(routing_key)
            .map(str::to_owned)
    };
    assert_eq!(
        key(&refused, "notifier").as_deref(),
        Some("reading.rejected")
    );
    assert_eq!(
        key(&accepted, "notifier").as_deref(),
        Some("reading.accepted")
    );
    assert_eq!(
        key(&accepted, "billing-export").as_deref(),
        Some("reading.accepted")
    );
    assert_eq!(key(&accepted, "validator").as_deref(), Some("sms.received"));

    // The steps inside the services: receive → publish → consume → validate → store →
    // notify / export, each a span of the same trace.
    let names =
        |trace: &[Span]| -> HashSet<String> { trace.iter().map(|s| s.name.clone()).collect() };
    for step in ["validate", "store", "sms send"] {
        assert!(
            names(&refused).contains(step),
            "refused trace has `{step}`: {:?}",
            names(&refused)
        );
    }
    for step in ["validate", "store", "billing push", "email send"] {
        assert!(
            names(&accepted).contains(step),
            "accepted trace has `{step}`: {:?}",
            names(&accepted)
        );
    }

    system.stop().await;
    receiver.stop().await;
    billing.stop();
    sms.stop();
}

/// The sample with exactly these labels; `0` while it was never counted.
fn sample(samples: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples.exact(name, labels).unwrap_or(0.0)
}

struct Scrape {
    content_type: String,
    text: String,
    samples: Metrics,
}

async fn scrape(http: &reqwest::Client, system: &System, service: &str) -> Scrape {
    let r = http
        .get(format!("{}/metrics", system.base(service)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{service} /metrics: {e}"));
    assert_eq!(r.status(), 200, "{service} /metrics");
    let content_type = r
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let text = r.text().await.unwrap_or_default();
    let samples = Metrics::parse(&text);
    Scrape {
        content_type,
        text,
        samples,
    }
}

#[tokio::test]
async fn metrics_move_with_traffic_and_probes_answer() {
    let billing = BillingDouble::start().await;
    let sms = BillingDouble::start().await;
    let mut opts = fixtures::options(Gateway::Http(sms.url.clone()));
    opts.billing_url = Some(billing.url.clone());
    let system = System::start(opts).await;
    let http = reqwest::Client::new();

    // Probes.
    for s in e2e::system::SERVICES {
        for path in ["/healthz", "/readyz"] {
            let r = http
                .get(format!("{}{path}", system.base(s)))
                .send()
                .await
                .expect("probe");
            assert_eq!(r.status(), 200, "{s} {path}");
        }
    }

    // Three accepted (one with an e-mail), three refused, each from its own number.
    let traffic = [
        ("m-ok-1", "+79000000201", "1000001 45100 ivan@example.ru"),
        ("m-ok-2", "+79000000202", "1000002 45100 12100"),
        ("m-ok-3", "+79000000203", "1000003 10100 20100 30100"),
        ("m-fmt", "+79000000204", "привет"),
        ("m-unknown", "+79000000205", "9999999 100"),
        ("m-zones", "+79000000206", "1000002 45100"),
    ];
    for (id, from, text) in traffic {
        assert_eq!(system.post_sms(id, from, text).await, 202, "{id}");
    }
    // A request without the token: counted under its own status.
    let r = http
        .post(format!("{}/v1/sms", system.base("ingest")))
        .json(&serde_json::json!({"from": "+79000000299", "to": "7377", "text": "1"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);

    // Wait for the effects to be counted (each counter moves after its effect).
    let counted = |service: &'static str, name: &'static str, n: f64| {
        let system = &system;
        async move {
            eventually(&format!("{service} {name} ≥ {n}"), WAIT, || async {
                (system.metric(service, name, &[]).await >= n).then_some(())
            })
            .await
        }
    };
    counted("validator", "validator_consumer_messages_total", 6.0).await;
    counted("notifier", "notifier_consumer_messages_total", 4.0).await;
    counted("notifier", "notifier_replies_sent_total", 3.0).await;
    counted("notifier", "notifier_emails_sent_total", 1.0).await;
    counted("billing-export", "billing_consumer_messages_total", 3.0).await;
    counted("billing-export", "billing_pushes_total", 3.0).await;

    let ingest = scrape(&http, &system, "ingest").await;
    let validator = scrape(&http, &system, "validator").await;
    let notifier = scrape(&http, &system, "notifier").await;
    let billing_export = scrape(&http, &system, "billing-export").await;

    for (name, s) in [
        ("ingest", &ingest),
        ("validator", &validator),
        ("notifier", &notifier),
        ("billing-export", &billing_export),
    ] {
        assert!(
            s.content_type.starts_with("application/openmetrics-text")
                || s.content_type.starts_with("text/plain; version=0.0.4"),
            "{name}: /metrics content type is Prometheus/OpenMetrics text: {}",
            s.content_type
        );
        if s.content_type.starts_with("application/openmetrics-text") {
            assert!(
                s.text.trim_end().ends_with("# EOF"),
                "{name}: OpenMetrics ends with # EOF"
            );
        }
        assert!(s.text.contains("# TYPE "), "{name}: typed metric families");
    }

    // ingest: six received (202), one refused for its token (401); six publishes timed.
    let i = &ingest.samples;
    assert_eq!(
        sample(
            i,
            "ingest_requests_total",
            &[("endpoint", "sms"), ("status", "202")]
        ),
        6.0,
        "{}",
        ingest.text
    );
    assert_eq!(
        sample(
            i,
            "ingest_requests_total",
            &[("endpoint", "sms"), ("status", "401")]
        ),
        1.0,
        "{}",
        ingest.text
    );
    assert_eq!(
        sample(i, "ingest_publish_seconds_count", &[]),
        6.0,
        "{}",
        ingest.text
    );

    // validator: by outcome and reason; its consumer acked all six.
    let v = &validator.samples;
    let outcome = |o: &str, r: &str| {
        sample(
            v,
            "validator_messages_total",
            &[("outcome", o), ("reason", r)],
        )
    };
    assert_eq!(outcome("accepted", ""), 3.0, "{}", validator.text);
    assert_eq!(outcome("rejected", "format"), 1.0, "{}", validator.text);
    assert_eq!(
        outcome("rejected", "unknown_account"),
        1.0,
        "{}",
        validator.text
    );
    assert_eq!(
        outcome("rejected", "zone_mismatch"),
        1.0,
        "{}",
        validator.text
    );
    let acked = |s: &Metrics, prefix: &str, queue: &str| {
        sample(
            s,
            &format!("{prefix}_consumer_messages_total"),
            &[("queue", queue), ("outcome", "acked")],
        )
    };
    assert_eq!(
        acked(v, "validator", "validator"),
        6.0,
        "{}",
        validator.text
    );
    assert_eq!(
        sample(
            v,
            "validator_consumer_processing_seconds_count",
            &[("queue", "validator")]
        ),
        6.0
    );

    // notifier: four events acked (three refusals, the acceptance with an e-mail
    // address; its filter kept the two without an address from it), three replies
    // through the HTTP gateway, one e-mail (to the directory), nothing failed.
    let n = &notifier.samples;
    assert_eq!(acked(n, "notifier", "notifier"), 4.0, "{}", notifier.text);
    assert_eq!(
        sample(n, "notifier_replies_sent_total", &[("gateway", "http")]),
        3.0,
        "{}",
        notifier.text
    );
    assert_eq!(
        sample(n, "notifier_emails_sent_total", &[("transport", "dir")]),
        1.0,
        "{}",
        notifier.text
    );
    assert_eq!(
        sample(n, "notifier_reply_budget_exhausted", &[]),
        0.0,
        "{}",
        notifier.text
    );
    let failures = n.sum("notifier_send_failures_total", &[]);
    assert_eq!(failures, 0.0, "{}", notifier.text);

    // billing-export: three acked, three pushes delivered.
    let b = &billing_export.samples;
    assert_eq!(
        acked(b, "billing", "billing-export"),
        3.0,
        "{}",
        billing_export.text
    );
    assert_eq!(
        sample(b, "billing_pushes_total", &[("result", "delivered")]),
        3.0,
        "{}",
        billing_export.text
    );
    assert_eq!(billing.delivered().len(), 3);

    // Nothing was retried or dead-lettered anywhere.
    for (name, s) in [("validator", v), ("notifier", n), ("billing", b)] {
        for outcome in ["retried", "dead_lettered"] {
            let total = s.sum(
                &format!("{name}_consumer_messages_total"),
                &[("outcome", outcome)],
            );
            assert_eq!(total, 0.0, "{name} {outcome}");
        }
    }

    // A scrape does not reset counters (they are cumulative).
    assert_eq!(
        system
            .metric(
                "ingest",
                "ingest_requests_total",
                &[("endpoint", "sms"), ("status", "202")]
            )
            .await,
        6.0
    );

    system.stop().await;
    billing.stop();
    sms.stop();
}
