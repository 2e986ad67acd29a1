//! W3C trace context across the broker: the current span's context is written into
//! an AMQP message's `traceparent` (and `tracestate`) header on publish, and a
//! consumer's span is parented on it, so one SMS is one trace across services.

use lapin::types::{AMQPValue, FieldTable, ShortString};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

pub const TRACEPARENT: &str = "traceparent";

struct HeaderInjector<'a>(&'a mut FieldTable);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0
            .insert(ShortString::from(key), AMQPValue::LongString(value.into()));
    }
}

struct HeaderExtractor<'a>(&'a FieldTable);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        header_str(self.0, key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
    }
}

/// A string-valued header, whichever AMQP string type the publisher chose.
pub fn header_str<'a>(headers: &'a FieldTable, key: &str) -> Option<&'a str> {
    match headers.inner().get(key)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Writes the current span's trace context into `headers`, unless a `traceparent`
/// is already there (a message passed on keeps the trace it arrived with).
pub fn inject_current(headers: &mut FieldTable) {
    if header_str(headers, TRACEPARENT).is_some() {
        return;
    }
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
}

/// Makes `span` a child of the trace context carried in `headers`, if any.
pub fn set_parent_from(span: &tracing::Span, headers: &FieldTable) {
    if header_str(headers, TRACEPARENT).is_none() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // Fails only when no OpenTelemetry layer is installed: then there is no trace to join.
    let _ = span.set_parent(cx);
}

/// Makes `span` a child of a W3C `traceparent` given as text (an HTTP header).
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) {
    let mut headers = FieldTable::default();
    headers.insert(
        TRACEPARENT.into(),
        AMQPValue::LongString(traceparent.into()),
    );
    set_parent_from(span, &headers);
}

/// The current span's `traceparent`, if the span is being traced.
pub fn current_traceparent() -> Option<String> {
    let mut headers = FieldTable::default();
    inject_current(&mut headers);
    header_str(&headers, TRACEPARENT).map(str::to_owned)
}
