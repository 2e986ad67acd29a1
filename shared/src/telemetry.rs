//! Telemetry set-up, once per process: `tracing` with an `EnvFilter` (`RUST_LOG`),
//! readable or JSON logs (`LOG_FORMAT`), and OpenTelemetry spans exported over
//! OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Spans get real trace ids even
//! without an exporter, so `traceparent` always crosses the broker and log lines
//! of one SMS can be correlated.

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;

/// Flushes and stops span export when dropped (end of `main`).
pub struct TelemetryGuard {
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("telemetry shutdown: {e}");
        }
    }
}

fn provider(service: &str) -> anyhow::Result<SdkTracerProvider> {
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
    let mut builder = SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(name).build());
    let endpoint_set = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()));
    if endpoint_set {
        use opentelemetry_otlp::WithExportConfig as _;
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
        // The exporter reads the signal-specific variable itself; the generic one
        // needs `/v1/traces` appended, as the OTLP specification says.
        if std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_err()
            && let Ok(base) = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        {
            exporter = exporter.with_endpoint(format!("{}/v1/traces", base.trim_end_matches('/')));
        }
        builder = builder.with_batch_exporter(exporter.build()?);
    }
    Ok(builder.build())
}

/// What becomes a span: our own at INFO and above; not the AMQP client's connection
/// loop, which would be one endless span per connection in the tracing backend.
fn span_filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("lapin", LevelFilter::OFF)
        .with_target("amq_protocol", LevelFilter::OFF)
}

/// `OTEL_SDK_DISABLED`, as the OpenTelemetry specification defines it: `true`
/// (case-insensitive) disables the SDK; anything else, or unset, does not.
fn sdk_disabled() -> bool {
    std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Installs the global subscriber for a service binary.
pub fn init(service: &'static str, format: LogFormat) -> anyhow::Result<TelemetryGuard> {
    let provider = provider(service)?;
    let tracer = provider.tracer(service);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .boxed(),
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
    };
    // RUST_LOG filters what is logged, not what is traced: a quiet log level must not
    // break trace propagation across the broker. `OTEL_SDK_DISABLED=true` (the
    // OpenTelemetry standard variable) leaves the layer out: no spans, no trace ids,
    // no `traceparent` on what the service publishes.
    let otel = (!sdk_disabled()).then(|| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(span_filter())
    });
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()?;
    Ok(TelemetryGuard { provider })
}

/// For tests: a subscriber with the OpenTelemetry layer (no exporter) and the test
/// writer, installed at most once per test binary.
pub fn init_for_tests() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let provider = SdkTracerProvider::builder().build();
        let tracer = provider.tracer("test");
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
        let _ = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_test_writer()
                    .with_filter(filter),
            )
            .with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(span_filter()),
            )
            .try_init();
        // The provider must outlive every span; tests end with the process.
        std::mem::forget(provider);
    });
}
