//! Prometheus metrics. Each service builds its own `Registry` at start (nothing
//! global, so tests in one process never share counters) and `/metrics` encodes it.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets from 1 ms to 10 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]
    .into_iter()
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueOutcome {
    pub queue: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    pub queue: String,
}

/// What the consumer loop counts: messages by outcome (acked, retried,
/// dead_lettered, deferred) and processing latency.
#[derive(Clone)]
pub struct ConsumerMetrics {
    messages: Family<QueueOutcome, Counter>,
    processing: Family<QueueLabel, Histogram>,
    batch: Family<QueueLabel, Histogram>,
}

impl ConsumerMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let messages = Family::<QueueOutcome, Counter>::default();
        let processing = Family::<QueueLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "consumer_messages",
            "Messages consumed, by queue and outcome (acked, retried, dead_lettered, deferred)",
            messages.clone(),
        );
        registry.register(
            "consumer_processing_seconds",
            "Time to handle one message (for a batch, the whole batch's time, per message)",
            processing.clone(),
        );
        let batch = Family::<QueueLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
        });
        registry.register(
            "consumer_batch_size",
            "Deliveries handed to the handler at once",
            batch.clone(),
        );
        ConsumerMetrics {
            messages,
            processing,
            batch,
        }
    }

    pub fn count(&self, queue: &str, outcome: &str) {
        self.messages
            .get_or_create(&QueueOutcome {
                queue: queue.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    pub fn observe_batch(&self, queue: &str, size: usize) {
        self.batch
            .get_or_create(&QueueLabel {
                queue: queue.to_owned(),
            })
            .observe(size as f64);
    }

    pub fn observe_processing(&self, queue: &str, took: Duration) {
        self.processing
            .get_or_create(&QueueLabel {
                queue: queue.to_owned(),
            })
            .observe(took.as_secs_f64());
    }
}

/// The registry in the text exposition format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    out
}
