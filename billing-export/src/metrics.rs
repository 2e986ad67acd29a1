//! billing-export's own counters (the registry's prefix is `billing`): pushes by
//! result, exports served and files written, each by report.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// The result of handling one `reading.accepted` delivery with respect to billing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushResult {
    /// 2xx.
    Delivered,
    /// 409: billing already had it.
    Conflict,
    /// Billing could not take it now; the event went to a retry queue.
    Retried,
    /// Billing refused it; the event went to the dead-letter queue.
    DeadLettered,
    /// Redelivered after it had been delivered: not posted again.
    AlreadyDelivered,
}

impl PushResult {
    fn as_str(self) -> &'static str {
        match self {
            PushResult::Delivered => "delivered",
            PushResult::Conflict => "conflict",
            PushResult::Retried => "retried",
            PushResult::DeadLettered => "dead_lettered",
            PushResult::AlreadyDelivered => "already_delivered",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReportLabel {
    report: &'static str,
}

#[derive(Clone)]
pub struct BillingMetrics {
    pushes: Family<ResultLabel, Counter>,
    /// Alerted on: billing answers 401/403, the token needs fixing.
    credentials_refused: Counter,
    exports_served: Family<ReportLabel, Counter>,
    files_written: Family<ReportLabel, Counter>,
}

impl BillingMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = BillingMetrics {
            pushes: Family::default(),
            credentials_refused: Counter::default(),
            exports_served: Family::default(),
            files_written: Family::default(),
        };
        registry.register(
            "pushes",
            "Readings pushed to billing, by result (delivered, conflict, retried, dead_lettered, already_delivered)",
            metrics.pushes.clone(),
        );
        registry.register(
            "credentials_refused",
            "Pushes billing answered 401 or 403 (BILLING_TOKEN wrong or rotated; retried until fixed)",
            metrics.credentials_refused.clone(),
        );
        registry.register(
            "exports_served",
            "CSV exports served over HTTP, by report (readings, missing)",
            metrics.exports_served.clone(),
        );
        registry.register(
            "files_written",
            "Period files written to EXPORT_DIR, by report (readings, missing)",
            metrics.files_written.clone(),
        );
        metrics
    }

    pub fn push(&self, result: PushResult) {
        self.pushes
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .inc();
    }

    pub fn credentials_refused(&self) {
        self.credentials_refused.inc();
    }

    pub fn export_served(&self, report: &'static str) {
        self.exports_served
            .get_or_create(&ReportLabel { report })
            .inc();
    }

    pub fn file_written(&self, report: &'static str) {
        self.files_written
            .get_or_create(&ReportLabel { report })
            .inc();
    }
}
