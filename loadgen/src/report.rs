//! The run's figures: a Markdown table for people, JSON for tools.

use serde_json::json;

use crate::baseline::Baseline;
use crate::probe::ProbeRow;

/// The machine and the build, at the start and the end of the run.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub started_utc: String,
    pub nproc: usize,
    pub load_start: String,
    pub load_end: String,
    pub git: Option<String>,
    pub profile: &'static str,
    pub plan_seconds: f64,
    pub system_start_seconds: f64,
    pub drain_seconds: f64,
    pub total_seconds: f64,
    start: Option<std::time::Instant>,
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn git_commit() -> Option<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    let dirty = std::process::Command::new("git")
        .arg("-C")
        .arg(&root)
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| !o.stdout.is_empty());
    Some(if dirty {
        format!("{commit}+dirty")
    } else {
        commit
    })
}

impl Facts {
    pub fn at_start() -> Facts {
        Facts {
            started_utc: chrono::Utc::now()
                .format("%Y-%m-%d %H:%M:%S UTC")
                .to_string(),
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            load_start: load_average(),
            git: git_commit(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            start: Some(std::time::Instant::now()),
            ..Facts::default()
        }
    }

    pub fn at_end(&mut self) {
        self.load_end = load_average();
        self.total_seconds = self.start.map_or(0.0, |s| s.elapsed().as_secs_f64());
    }
}

/// p50/p95/p99/max of a set of durations in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(mut values: Vec<f64>) -> Summary {
        values.sort_by(f64::total_cmp);
        // Nearest rank.
        let pick = |q: f64| -> f64 {
            if values.is_empty() {
                return 0.0;
            }
            let rank = (q * values.len() as f64).ceil() as usize;
            values[rank.clamp(1, values.len()) - 1]
        };
        Summary {
            count: values.len(),
            p50: pick(0.50),
            p95: pick(0.95),
            p99: pick(0.99),
            max: values.last().copied().unwrap_or(0.0),
        }
    }

    fn json(&self) -> serde_json::Value {
        json!({"count": self.count, "p50_ms": self.p50, "p95_ms": self.p95, "p99_ms": self.p99, "max_ms": self.max})
    }

    fn cells(&self) -> String {
        format!(
            "p50 {:.1} ms · p95 {:.1} ms · p99 {:.1} ms · max {:.1} ms (n = {})",
            self.p50, self.p95, self.p99, self.max, self.count
        )
    }
}

#[derive(Debug, Clone, Default)]
pub struct Latencies {
    /// HTTP request start → `reading.accepted`/`reading.rejected` event.
    pub event: Summary,
    /// HTTP request start → billing's `POST /readings` (accepted readings).
    pub billing: Summary,
    /// HTTP request start → ingest's `202`.
    pub ingest: Summary,
    /// How late each post started against its schedule (fixed rate).
    pub send_lag: Summary,
}

#[derive(Debug, Clone, Default)]
pub struct Throughput {
    /// Messages whose event was seen.
    pub processed: usize,
    /// First send → last event.
    pub events_span_s: Option<f64>,
    /// First send → last event or billing post, whichever is later.
    pub full_span_s: Option<f64>,
    pub billed: usize,
    /// Posts answered `202`.
    pub taken: usize,
    /// First send → last `202`.
    pub ingest_span_s: Option<f64>,
    /// First send → start of the last post.
    pub started_span_s: Option<f64>,
    pub attempted: usize,
}

fn per_second(n: usize, span: Option<f64>) -> Option<f64> {
    span.filter(|s| *s > 0.0).map(|s| n as f64 / s)
}

impl Throughput {
    /// Messages fully processed (event seen) per second: last event vs first send.
    pub fn processed_per_s(&self) -> Option<f64> {
        per_second(self.processed, self.events_span_s)
    }

    /// As above, counting until the last billing post too.
    pub fn full_per_s(&self) -> Option<f64> {
        per_second(self.processed, self.full_span_s)
    }

    pub fn ingest_per_s(&self) -> Option<f64> {
        per_second(self.taken, self.ingest_span_s)
    }

    pub fn offered_per_s(&self) -> Option<f64> {
        per_second(self.attempted.saturating_sub(1), self.started_span_s)
    }
}

/// Every message and every effect, against the plan.
#[derive(Debug, Clone, Default)]
pub struct Accounting {
    pub planned: usize,
    /// Messages whose post was started.
    pub attempted: usize,
    /// Posts answered `202`.
    pub sent: usize,
    /// Posts never answered `202` (given up, or refused).
    pub post_failures: usize,
    /// Extra attempts (503, no answer) before a `202`.
    pub post_retries: u64,
    pub expected_accepted: usize,
    pub expected_rejected: usize,
    pub expected_emails: usize,
    /// Distinct messages whose first event was `reading.accepted` / `.rejected`.
    pub accepted: usize,
    pub rejected: usize,
    pub events_total: usize,
    pub events_undecodable: usize,
    pub observer_link_lost: bool,
    pub observer_redeliveries: usize,
    pub billing_posts: usize,
    pub replies_posts: usize,
    pub emails: usize,
    pub audit_rows: usize,
    pub audit_extra: usize,
    pub lost_events: usize,
    pub lost_billing: usize,
    pub lost_replies: usize,
    pub lost_audit: usize,
    pub duplicated_events: usize,
    pub duplicated_billing: usize,
    pub duplicated_replies: usize,
    pub wrong_outcome: usize,
    pub wrong_billing: usize,
    pub wrong_replies: usize,
    pub wrong_audit: usize,
    /// Events or posts for messages loadgen did not send.
    pub unknown: usize,
    pub problems: Vec<String>,
}

impl Accounting {
    /// Deliveries from the system's quorum queues per planned message: its
    /// `sms.received`, then its event to billing-export (accepted) and to the notifier
    /// (refused, or accepted with an e-mail address; the notifier's filter drops the
    /// rest). loadgen's own observing queue is not counted.
    pub fn quorum_hops(&self) -> Option<f64> {
        (self.planned > 0).then(|| {
            let events = self.expected_accepted + self.expected_rejected + self.expected_emails;
            1.0 + events as f64 / self.planned as f64
        })
    }

    pub fn problem(&mut self, p: String) {
        if self.problems.len() < 20 {
            self.problems.push(p);
        }
    }

    pub fn lost(&self) -> usize {
        self.lost_events
            + self.lost_billing
            + self.lost_replies
            + self.lost_audit
            + self.expected_emails.saturating_sub(self.emails)
    }

    pub fn duplicated(&self) -> usize {
        self.duplicated_events
            + self.duplicated_billing
            + self.duplicated_replies
            + self.emails.saturating_sub(self.expected_emails)
            + self.audit_extra
    }

    pub fn wrong(&self) -> usize {
        self.wrong_outcome
            + self.wrong_billing
            + self.wrong_replies
            + self.wrong_audit
            + self.unknown
            + self.events_undecodable
    }

    /// Every message sent, each with exactly its expected effects, and nothing else.
    pub fn clean(&self) -> bool {
        self.post_failures == 0
            && self.sent == self.attempted
            && self.lost() == 0
            && self.duplicated() == 0
            && self.wrong() == 0
            && !self.observer_link_lost
            && self.accepted == self.expected_accepted
            && self.rejected == self.expected_rejected
            && self.audit_rows == self.sent
    }
}

/// One process measured over the pipeline phase: a replica of a service, or another
/// process loadgen was asked to watch (`--watch`, a broker node say).
#[derive(Debug, Clone)]
pub struct Process {
    /// The instance (`validator`, `validator-2`, …) or the watched name.
    pub name: String,
    /// The service it is a replica of; `None` for a watched process.
    pub service: Option<String>,
    /// `VmHWM`: the peak since the process started (for a watched process that may be
    /// long before the run).
    pub peak_rss_kb: Option<u64>,
    /// User + system CPU time over the pipeline phase.
    pub cpu_seconds: Option<f64>,
}

/// A service's replicas together.
#[derive(Debug, Clone)]
pub struct ServiceSum {
    pub service: String,
    pub replicas: usize,
    pub peak_rss_kb: Option<u64>,
    pub cpu_seconds: Option<f64>,
}

pub struct Report {
    pub label: String,
    pub accounts: usize,
    pub offered: String,
    /// A fixed offered rate (the throughput is then the offer, not the system's most).
    pub open_loop: bool,
    pub body_bytes: usize,
    pub baseline: Option<Baseline>,
    /// What one quorum-queue crossing costs, one message at a time (`--probe-messages`).
    pub probe: Vec<ProbeRow>,
    /// Where the system ran.
    pub broker: String,
    pub replicas: usize,
    pub throughput: Throughput,
    pub latencies: Latencies,
    /// Every replica, then the watched processes.
    pub processes: Vec<Process>,
    /// The services, in order (for the sums).
    pub services: Vec<String>,
    pub loadgen_rss_kb: Option<u64>,
    pub accounting: Accounting,
    pub facts: Facts,
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1}{unit}"))
}

fn mib(kb: Option<u64>) -> String {
    kb.map_or_else(
        || "–".into(),
        |kb| format!("{:.1} MiB ({kb} kB)", kb as f64 / 1024.0),
    )
}

fn per_message(secs: Option<f64>, processed: usize) -> String {
    match secs {
        Some(s) if processed > 0 => format!(
            "{s:.2} s ({:.3} ms per message)",
            s * 1000.0 / processed as f64
        ),
        other => opt(other, " s"),
    }
}

impl Report {
    /// Each service's replicas summed: peak RSS (the sum of the replicas' peaks, an
    /// upper bound of the peak together) and CPU time.
    pub fn service_sums(&self) -> Vec<ServiceSum> {
        self.services
            .iter()
            .map(|s| {
                let mine: Vec<&Process> = self
                    .processes
                    .iter()
                    .filter(|p| p.service.as_deref() == Some(s.as_str()))
                    .collect();
                ServiceSum {
                    service: s.clone(),
                    replicas: mine.len(),
                    peak_rss_kb: mine.iter().map(|p| p.peak_rss_kb).sum(),
                    cpu_seconds: mine.iter().map(|p| p.cpu_seconds).sum(),
                }
            })
            .collect()
    }

    /// Pipeline throughput (events) as a fraction of the bare broker's.
    pub fn ratio(&self) -> Option<f64> {
        let b = self.baseline.as_ref()?.rate();
        self.throughput
            .processed_per_s()
            .filter(|_| b > 0.0)
            .map(|t| t / b)
    }

    pub fn markdown(&self) -> String {
        let t = &self.throughput;
        let l = &self.latencies;
        let a = &self.accounting;
        let f = &self.facts;
        let mut rows: Vec<(String, String)> = vec![
            ("run".into(), self.label.clone()),
            (
                "machine".into(),
                format!(
                    "{} CPUs; load average {} at start, {} at end; {} build; commit {}; started {}",
                    f.nproc,
                    f.load_start,
                    f.load_end,
                    f.profile,
                    f.git.as_deref().unwrap_or("?"),
                    f.started_utc
                ),
            ),
            (
                "registry / plan".into(),
                format!(
                    "{} accounts imported; {} messages planned, {} posted; mean `sms.received` body {} B",
                    self.accounts, a.planned, a.attempted, self.body_bytes
                ),
            ),
            (
                "system".into(),
                format!(
                    "on {}; {} replica{} of each service{}",
                    self.broker,
                    self.replicas,
                    if self.replicas == 1 { "" } else { "s" },
                    if self.replicas > 1 {
                        " (posts round robin over the ingest replicas)"
                    } else {
                        ""
                    }
                ),
            ),
            ("offered rate".into(), self.offered.clone()),
            (
                "posts started per second".into(),
                opt(t.offered_per_s(), " msg/s"),
            ),
            (
                "ingest acceptance rate (202s / first send → last 202)".into(),
                format!("{} ({} in {})", opt(t.ingest_per_s(), " msg/s"), t.taken, opt(t.ingest_span_s, " s")),
            ),
            (
                "**throughput: messages processed per second** (event seen; first send → last event)".into(),
                format!("**{}** ({} in {})", opt(t.processed_per_s(), " msg/s"), t.processed, opt(t.events_span_s, " s")),
            ),
            (
                "throughput until the last billing post".into(),
                format!(
                    "{} ({} billed; last billing post at {})",
                    opt(t.full_per_s(), " msg/s"),
                    t.billed,
                    opt(t.full_span_s, " s")
                ),
            ),
        ];
        match &self.baseline {
            Some(b) => {
                rows.push((
                    "broker baseline (1 quorum queue, confirms ≤ 1,000 outstanding, persistent, 1 consumer acking each)".into(),
                    format!(
                        "{:.1} msg/s consumed ({} in {:.1} s; {:.1} msg/s confirmed, {} nacked; {} B bodies, prefetch {}, {} outstanding)",
                        b.rate(),
                        b.consumed,
                        b.seconds,
                        b.publish_rate(),
                        b.nacked,
                        b.body_bytes,
                        b.prefetch,
                        b.outstanding
                    ),
                ));
                let crossings = a.quorum_hops().map_or_else(
                    || "–".to_owned(),
                    |h| format!("{h:.2} times on this plan: ceiling ≈ {:.2}", 1.0 / h),
                );
                rows.push((
                    format!(
                        "**pipeline / baseline** (each SMS crosses the system's quorum queues {crossings}; plus loadgen's observing queue)"
                    ),
                    format!(
                        "**{}**{}",
                        self.ratio().map_or_else(|| "–".into(), |r| format!("{r:.3}")),
                        if self.open_loop {
                            " (at a fixed offered rate this measures the offer, not the ceiling)"
                        } else {
                            ""
                        }
                    ),
                ));
            }
            None => rows.push(("broker baseline".into(), "skipped".into())),
        }
        rows.extend([
            ("latency: request start → event".into(), l.event.cells()),
            (
                "latency: request start → billing post".into(),
                l.billing.cells(),
            ),
            (
                "latency: request start → ingest 202".into(),
                l.ingest.cells(),
            ),
            ("send lag behind schedule".into(), l.send_lag.cells()),
        ]);
        for p in &self.probe {
            rows.push((
                format!(
                    "crossing probe: {} queue, clients on node {} ({}; leader {})",
                    p.queue_type,
                    p.node,
                    match p.local_leader {
                        Some(true) => "the leader's node",
                        Some(false) => "not the leader's node",
                        None => "leader's node unknown",
                    },
                    p.leader
                ),
                format!(
                    "publish → confirm p50 {:.2} ms · p99 {:.2} ms; publish → delivery p50 {:.2} ms · p99 {:.2} ms (n = {}, one at a time)",
                    p.confirm.p50, p.confirm.p99, p.delivery.p50, p.delivery.p99, p.confirm.count
                ),
            ));
        }
        for p in &self.processes {
            let what = if p.service.is_some() {
                "peak RSS (VmHWM)"
            } else {
                "peak RSS (VmHWM, since it started)"
            };
            rows.push((format!("{what} {}", p.name), mib(p.peak_rss_kb)));
        }
        if self.replicas > 1 {
            for s in self.service_sums() {
                rows.push((
                    format!(
                        "peak RSS (VmHWM) {}, {} replicas summed",
                        s.service, s.replicas
                    ),
                    mib(s.peak_rss_kb),
                ));
            }
        }
        rows.push((
            "peak RSS (VmHWM) loadgen itself".into(),
            mib(self.loadgen_rss_kb),
        ));
        for p in &self.processes {
            rows.push((
                format!("CPU time {} (pipeline phase)", p.name),
                per_message(p.cpu_seconds, t.processed),
            ));
        }
        if self.replicas > 1 {
            for s in self.service_sums() {
                rows.push((
                    format!("CPU time {}, {} replicas summed", s.service, s.replicas),
                    per_message(s.cpu_seconds, t.processed),
                ));
            }
        }
        rows.extend([
            (
                "messages sent (202)".into(),
                format!("{} of {} posted ({} failed, {} retries)", a.sent, a.attempted, a.post_failures, a.post_retries),
            ),
            ("audit rows in validator.messages".into(), a.audit_rows.to_string()),
            (
                "events seen".into(),
                format!(
                    "{} ({} distinct messages; {} undecodable; {} redelivered to loadgen's queue{})",
                    a.events_total,
                    a.accepted + a.rejected,
                    a.events_undecodable,
                    a.observer_redeliveries,
                    if a.observer_link_lost { "; LINK LOST" } else { "" }
                ),
            ),
            (
                "accepted: expected / actual".into(),
                format!("{} / {}", a.expected_accepted, a.accepted),
            ),
            (
                "rejected: expected / actual".into(),
                format!("{} / {}", a.expected_rejected, a.rejected),
            ),
            ("billing posts seen".into(), a.billing_posts.to_string()),
            (
                "reply SMS seen (expected)".into(),
                format!("{} ({})", a.replies_posts, a.expected_rejected),
            ),
            (
                "e-mails written (expected)".into(),
                format!("{} ({})", a.emails, a.expected_emails),
            ),
            (
                "lost".into(),
                format!(
                    "{} (events {}, billing {}, replies {}, audit {}, e-mails {})",
                    a.lost(),
                    a.lost_events,
                    a.lost_billing,
                    a.lost_replies,
                    a.lost_audit,
                    a.expected_emails.saturating_sub(a.emails)
                ),
            ),
            (
                "duplicated".into(),
                format!(
                    "{} (events {}, billing {}, replies {}, e-mails {}, audit {})",
                    a.duplicated(),
                    a.duplicated_events,
                    a.duplicated_billing,
                    a.duplicated_replies,
                    a.emails.saturating_sub(a.expected_emails),
                    a.audit_extra
                ),
            ),
            (
                "wrong".into(),
                format!(
                    "{} (outcome {}, billing {}, replies {}, audit {}, unknown {})",
                    a.wrong(),
                    a.wrong_outcome,
                    a.wrong_billing,
                    a.wrong_replies,
                    a.wrong_audit,
                    a.unknown
                ),
            ),
            (
                "**all messages accounted for**".into(),
                if a.clean() { "**yes**".into() } else { "**NO**".into() },
            ),
            (
                "timings".into(),
                format!(
                    "plan {:.1} s; system start incl. registry import {:.1} s; drain after last post {:.1} s; total {:.1} s",
                    f.plan_seconds, f.system_start_seconds, f.drain_seconds, f.total_seconds
                ),
            ),
        ]);
        let mut out = String::from("| quantity | value |\n|---|---|\n");
        for (k, v) in rows {
            out.push_str(&format!("| {k} | {v} |\n"));
        }
        for p in &a.problems {
            out.push_str(&format!("\n- {p}"));
        }
        out
    }

    pub fn json(&self) -> serde_json::Value {
        let t = &self.throughput;
        let a = &self.accounting;
        let f = &self.facts;
        json!({
            "label": self.label,
            "machine": {
                "nproc": f.nproc,
                "load_average_start": f.load_start,
                "load_average_end": f.load_end,
                "git": f.git,
                "profile": f.profile,
                "started_utc": f.started_utc,
            },
            "accounts": self.accounts,
            "offered": self.offered,
            "open_loop": self.open_loop,
            "sms_received_mean_bytes": self.body_bytes,
            "quorum_hops_per_message": self.accounting.quorum_hops(),
            "throughput": {
                "posts_started_per_s": t.offered_per_s(),
                "ingest_accepted_per_s": t.ingest_per_s(),
                "processed_per_s": t.processed_per_s(),
                "processed_incl_billing_per_s": t.full_per_s(),
                "processed": t.processed,
                "events_span_s": t.events_span_s,
                "full_span_s": t.full_span_s,
                "ingest_span_s": t.ingest_span_s,
            },
            "baseline": self.baseline.as_ref().map(|b| json!({
                "seconds": b.seconds,
                "body_bytes": b.body_bytes,
                "outstanding": b.outstanding,
                "prefetch": b.prefetch,
                "confirmed": b.confirmed,
                "nacked": b.nacked,
                "consumed": b.consumed,
                "consumed_per_s": b.rate(),
                "confirmed_per_s": b.publish_rate(),
            })),
            "pipeline_to_baseline": self.ratio(),
            "latency_ms": {
                "event": self.latencies.event.json(),
                "billing": self.latencies.billing.json(),
                "ingest_202": self.latencies.ingest.json(),
                "send_lag": self.latencies.send_lag.json(),
            },
            "broker": self.broker,
            "replicas": self.replicas,
            "peak_rss_kb": self.processes.iter().map(|p| (p.name.clone(), json!(p.peak_rss_kb))).collect::<serde_json::Map<_, _>>(),
            "loadgen_peak_rss_kb": self.loadgen_rss_kb,
            "cpu_seconds": self.processes.iter().map(|p| (p.name.clone(), json!(p.cpu_seconds))).collect::<serde_json::Map<_, _>>(),
            "per_service": self.service_sums().iter().map(|s| (s.service.clone(), json!({
                "replicas": s.replicas,
                "peak_rss_kb_summed": s.peak_rss_kb,
                "cpu_seconds_summed": s.cpu_seconds,
                "cpu_ms_per_message": s.cpu_seconds.filter(|_| t.processed > 0).map(|c| c * 1000.0 / t.processed as f64),
            }))).collect::<serde_json::Map<_, _>>(),
            "probe": self.probe.iter().map(|p| json!({
                "queue_type": p.queue_type,
                "node": p.node,
                "leader": p.leader,
                "local_leader": p.local_leader,
                "confirm_ms": p.confirm.json(),
                "delivery_ms": p.delivery.json(),
            })).collect::<Vec<_>>(),
            "accounting": {
                "planned": a.planned,
                "attempted": a.attempted,
                "sent": a.sent,
                "post_failures": a.post_failures,
                "post_retries": a.post_retries,
                "audit_rows": a.audit_rows,
                "events_total": a.events_total,
                "events_distinct": a.accepted + a.rejected,
                "billing_posts": a.billing_posts,
                "reply_posts": a.replies_posts,
                "emails": a.emails,
                "expected_accepted": a.expected_accepted,
                "accepted": a.accepted,
                "expected_rejected": a.expected_rejected,
                "rejected": a.rejected,
                "expected_emails": a.expected_emails,
                "lost": a.lost(),
                "duplicated": a.duplicated(),
                "wrong": a.wrong(),
                "observer_link_lost": a.observer_link_lost,
                "all_accounted_for": a.clean(),
                "problems": a.problems,
            },
            "timings_s": {
                "plan": f.plan_seconds,
                "system_start": f.system_start_seconds,
                "drain": f.drain_seconds,
                "total": f.total_seconds,
            },
        })
    }
}
