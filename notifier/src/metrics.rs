//! What the notifier counts, beyond the consumer loop's own metrics: replies sent per
//! gateway, replies held back per guard, e-mails sent, failures per kind and the
//! state of the hourly budget — the numbers an operator watches for cost and abuse.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::failure::FailureKind;
use crate::ledger::Channel;
use crate::limits::Suppressed;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GatewayLabel {
    gateway: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabel {
    channel: &'static str,
    kind: &'static str,
}

#[derive(Clone)]
pub struct NotifierMetrics {
    replies_sent: Family<GatewayLabel, Counter>,
    replies_suppressed: Family<ReasonLabel, Counter>,
    emails_sent: Family<TransportLabel, Counter>,
    send_failures: Family<FailureLabel, Counter>,
    duplicates: Family<ChannelLabel, Counter>,
    budget_exhausted: Gauge,
    /// The clock hour (hours since the epoch) in which the budget was last found spent.
    /// The budget is per clock hour, so the gauge stays up until the hour turns: a
    /// reply sent later in the same hour had reserved its unit before the budget ran out.
    exhausted_in_hour: std::sync::Arc<std::sync::atomic::AtomicI64>,
    budget_exhaustions: Counter,
}

fn current_hour() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(3600)
}

impl NotifierMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = NotifierMetrics {
            replies_sent: Family::default(),
            replies_suppressed: Family::default(),
            emails_sent: Family::default(),
            send_failures: Family::default(),
            duplicates: Family::default(),
            budget_exhausted: Gauge::default(),
            exhausted_in_hour: std::sync::Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
            budget_exhaustions: Counter::default(),
        };
        registry.register(
            "replies_sent",
            "SMS replies handed to the gateway, by gateway",
            m.replies_sent.clone(),
        );
        registry.register(
            "replies_suppressed",
            "SMS replies not sent, by reason (number, country, daily_cap, budget)",
            m.replies_suppressed.clone(),
        );
        registry.register(
            "emails_sent",
            "Confirmation e-mails delivered, by transport (smtp, dir)",
            m.emails_sent.clone(),
        );
        registry.register(
            "send_failures",
            "Failed sends by channel and kind (transient: retried, permanent: dead-lettered, unknown: not resent)",
            m.send_failures.clone(),
        );
        registry.register(
            "duplicates_skipped",
            "Events whose effect had already happened (redeliveries, duplicates)",
            m.duplicates.clone(),
        );
        registry.register(
            "reply_budget_exhausted",
            "1 while the global hourly reply budget is spent (as last seen by this replica, until the hour turns)",
            m.budget_exhausted.clone(),
        );
        registry.register(
            "reply_budget_exhaustions",
            "Replies refused because the global hourly budget was spent",
            m.budget_exhaustions.clone(),
        );
        m
    }

    pub fn reply_sent(&self, gateway: &'static str) {
        self.replies_sent
            .get_or_create(&GatewayLabel { gateway })
            .inc();
        let exhausted_in = self
            .exhausted_in_hour
            .load(std::sync::atomic::Ordering::Relaxed);
        if exhausted_in != current_hour() {
            self.budget_exhausted.set(0);
        }
    }

    pub fn reply_suppressed(&self, reason: Suppressed) {
        self.replies_suppressed
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
        if reason == Suppressed::Budget {
            self.exhausted_in_hour
                .store(current_hour(), std::sync::atomic::Ordering::Relaxed);
            self.budget_exhausted.set(1);
            self.budget_exhaustions.inc();
        }
    }

    pub fn email_sent(&self, transport: &'static str) {
        self.emails_sent
            .get_or_create(&TransportLabel { transport })
            .inc();
    }

    pub fn send_failed(&self, channel: Channel, kind: FailureKind) {
        self.send_failures
            .get_or_create(&FailureLabel {
                channel: channel.as_str(),
                kind: kind.as_str(),
            })
            .inc();
    }

    pub fn duplicate(&self, channel: Channel) {
        self.duplicates
            .get_or_create(&ChannelLabel {
                channel: channel.as_str(),
            })
            .inc();
    }
}
