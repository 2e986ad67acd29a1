//! Load generator (issue #8). Starts a whole system of its own with the e2e harness —
//! the four service binaries next to this executable, on a fresh vhost and database,
//! with a billing HTTP double and an SMS-aggregator HTTP double in this process and
//! e-mails written to `EMAIL_DIR` — imports a generated registry (100,000 accounts by
//! default) through `validator import-registry`, and posts a plan of SMS whose every
//! outcome is known in advance (e2e's drill plan; each message posted once — the plan's
//! gateway re-deliveries are not replayed, so every latency has one start) to ingest.
//! Reply SMS go to an HTTP double of an SMS aggregator (`SMS_GATEWAY=http`), as in
//! production, and are accounted too. It measures, per message,
//! the time from the start of its HTTP request to its `reading.accepted` /
//! `reading.rejected` event (loadgen's own queue on `meter.events`) and to billing's
//! `POST /readings`, and accounts for every message. Before that, with nothing else of
//! loadgen's running, it measures a bare-broker baseline (one quorum queue, one
//! confirming publisher, one acking consumer) to put the pipeline's throughput in scale.
//!
//! By default the system runs on the machine's broker with one process per service.
//! `--broker cluster` runs it on the project's three-node cluster (scripts/cluster.sh;
//! every service's `AMQP_URL` lists the three nodes, SPEC §4) and `--replicas N` starts
//! N replicas of every service (e2e's [`Scale`]); the posts are then spread over the
//! ingest replicas round robin, as a load balancer would, and memory and CPU time are
//! reported per replica and summed per service. The baseline and the crossing probe
//! (`--probe-messages`, [`probe`]) run on the same broker as the system.
//!
//!   loadgen --rate max --messages 30000          # throughput
//!   loadgen --rate 200 --seconds 30              # latency at a steady offered rate
//!   loadgen --rate 200 --seconds 30 --broker cluster --replicas 2
//!
//! Exit status: 0 when every message is accounted for, 1 when anything was lost,
//! duplicated or wrong, 2 when the run itself failed.

mod baseline;
mod observe;
mod probe;
mod report;
mod send;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use e2e::drill::plan::{Expect, Plan, Registry, Rng};
use e2e::system::{SERVICES, Scale, TOKEN, service_of};
use e2e::{BillingDouble, Gateway, System, SystemOptions};
use shared::testing::TestBroker;

use report::{Accounting, Facts, Latencies, Process, Report, Throughput};
use send::{Rate, SendConfig};

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Load generator: throughput, latency, memory and exact accounting of a whole system"
)]
struct Args {
    /// Accounts in the generated registry (imported before the run).
    #[arg(long, default_value_t = 100_000)]
    accounts: usize,
    /// Messages in the plan (with `--seconds`, at most this many are sent).
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Send for this long instead (with a fixed rate: rate × seconds messages).
    #[arg(long)]
    seconds: Option<f64>,
    /// Messages per second (open loop), or `max`: as fast as the system takes them.
    #[arg(long, default_value = "max", value_parser = Rate::parse)]
    rate: Rate,
    /// Requests to ingest in flight at most.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Length of the bare-broker baseline; 0 skips it.
    #[arg(long, default_value_t = 10.0)]
    baseline_seconds: f64,
    /// Unconfirmed publishes the baseline's publisher keeps outstanding.
    #[arg(long, default_value_t = 1000)]
    baseline_outstanding: usize,
    /// After the last post, wait at most this long for every effect.
    #[arg(long, default_value_t = 300.0)]
    drain_seconds: f64,
    /// Seed of the registry and the plan.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A name for this run in the report (e.g. `throughput`).
    #[arg(long, default_value = "loadgen")]
    label: String,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where the system's work directory goes (the e-mail sink's files). The default,
    /// tmpfs, keeps the sink's own cost out of the figures: on this machine's ext4
    /// volume, creating each e-mail file cost ~0.9 ms of kernel CPU.
    #[arg(long, default_value = "/dev/shm")]
    work_in: PathBuf,
    /// Extra environment for every service, `NAME=value`, repeatable (after loadgen's
    /// own settings, so it can override them): to measure a configuration, e.g.
    /// `--service-env RUST_LOG=warn`.
    #[arg(long = "service-env", value_name = "NAME=value", value_parser = parse_env_pair)]
    service_env: Vec<(String, String)>,
    /// The broker the system (and the baseline) runs on: `machine` — the machine's
    /// (`TEST_AMQP_BASE`, default 127.0.0.1:5672) — or `cluster`: the project's
    /// three-node cluster (`scripts/cluster.sh start` first; `TEST_CLUSTER_AMQP_BASES`,
    /// `TEST_CLUSTER_APIS`), every service's `AMQP_URL` listing all its nodes.
    #[arg(long, value_enum, default_value_t = BrokerKind::Machine)]
    broker: BrokerKind,
    /// Replicas of every service (1-3). Posts go round robin over the ingest replicas.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    replicas: u8,
    /// Before the system starts: this many persistent publishes into a quorum queue
    /// (and a classic one), one at a time, from each node, timed to the confirm and to
    /// the delivery — what one queue crossing costs on this broker. 0 skips it.
    #[arg(long, default_value_t = 0)]
    probe_messages: usize,
    /// Another process to report the CPU time (over the pipeline phase) and peak RSS
    /// of, `NAME=PID`, repeatable: a broker node, say (`scripts/cluster.sh pid 1`).
    #[arg(long = "watch", value_name = "NAME=PID", value_parser = parse_watch)]
    watch: Vec<(String, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BrokerKind {
    Machine,
    Cluster,
}

fn parse_watch(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = parse_env_pair(s)?;
    match pid.parse::<u32>() {
        Ok(pid) if pid > 0 => Ok((name, pid)),
        _ => Err(format!("expected NAME=PID, got {s:?}")),
    }
}

fn parse_env_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("expected NAME=value, got {s:?}")),
    }
}

/// Quiet this long with effects missing: nothing more is coming (they are lost).
const QUIET_GIVE_UP: Duration = Duration::from_secs(30);
/// After every expected effect arrived, keep watching this long for duplicates.
const SETTLE: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(100);

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(report) if report.accounting.clean() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loadgen failed: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<Report> {
    let mut facts = Facts::at_start();
    let messages = match (args.rate, args.seconds) {
        (Rate::Fixed(rate), Some(s)) => (rate * s).ceil().max(1.0) as usize,
        _ => args.messages,
    };

    let began = Instant::now();
    let mut rng = Rng::new(args.seed);
    let registry = Registry::generate(args.accounts, &mut rng);
    let registry_csv = registry.csv();
    let prefix = format!("lg{}", std::process::id());
    let plan = Arc::new(Plan::generate(&registry, messages, &prefix, &mut rng));
    drop(registry);
    facts.plan_seconds = began.elapsed().as_secs_f64();
    let body_bytes = mean_sms_received_bytes(&plan);
    eprintln!(
        "loadgen: {} accounts, {} messages planned ({} to be accepted, {} rejected, {} with e-mail)",
        args.accounts,
        plan.messages.len(),
        plan.expected_accepted(),
        plan.expected_rejected(),
        plan.expected_emails()
    );

    let scale = Scale {
        broker: match args.broker {
            BrokerKind::Machine => TestBroker::machine(),
            BrokerKind::Cluster => TestBroker::cluster(),
        },
        replicas: usize::from(args.replicas),
    };
    // The baseline first, with nothing else of loadgen's running.
    let baseline = if args.baseline_seconds > 0.0 {
        eprintln!("loadgen: broker baseline for {} s", args.baseline_seconds);
        Some(
            baseline::run(
                &scale.broker,
                args.baseline_seconds,
                body_bytes,
                args.baseline_outstanding,
            )
            .await?,
        )
    } else {
        None
    };
    let probe = if args.probe_messages > 0 {
        eprintln!(
            "loadgen: crossing probe, {} messages one at a time per node",
            args.probe_messages
        );
        probe::run(&scale.broker, args.probe_messages, body_bytes).await?
    } else {
        Vec::new()
    };

    eprintln!("loadgen: starting the system and importing the registry");
    let billing = BillingDouble::start().await;
    let sms = BillingDouble::start().await;
    let options = SystemOptions {
        gateway: Gateway::Http(sms.url.clone()),
        smtp_url: None,
        billing_url: Some(billing.url.clone()),
        registry_csv,
        env: [
            // The production default pool size (the harness's is 5).
            ("DATABASE_MAX_CONNECTIONS".into(), "10".into()),
            // Every rejection is answered; the cost guards are not what is measured.
            ("REPLY_HOURLY_BUDGET".into(), "100000000".into()),
        ]
        .into_iter()
        .chain(args.service_env.iter().cloned())
        .collect(),
        work_in: args.work_in.is_dir().then(|| args.work_in.clone()),
    };
    let started = Instant::now();
    let broker_nodes = scale.broker.amqp.len();
    let system = System::start_scaled(options, scale).await;
    facts.system_start_seconds = started.elapsed().as_secs_f64();
    // Every replica of every service, then the watched processes.
    let mut watched: Vec<(String, String, u32)> = system
        .all_instances()
        .into_iter()
        .filter_map(|i| Some((i.to_owned(), service_of(i).to_owned(), system.pid(i)?)))
        .collect();
    watched.extend(
        args.watch
            .iter()
            .map(|(name, pid)| (name.clone(), String::new(), *pid)),
    );
    let cpu_before: Vec<Option<f64>> = watched.iter().map(|w| cpu_seconds_of(w.2)).collect();

    let result = drive(&args, &system, &billing, &sms, plan.clone(), &mut facts).await;
    let processes: Vec<Process> = watched
        .into_iter()
        .zip(cpu_before)
        .map(|((name, service, pid), before)| Process {
            peak_rss_kb: vm_hwm_kb(&format!("/proc/{pid}/status")),
            cpu_seconds: cpu_seconds_of(pid).zip(before).map(|(a, b)| a - b),
            name,
            service: (!service.is_empty()).then_some(service),
        })
        .collect();
    billing.stop();
    sms.stop();
    system.stop().await;
    let (throughput, latencies, accounting) = result?;

    facts.at_end();
    let report = Report {
        label: args.label.clone(),
        accounts: args.accounts,
        offered: {
            let offered = match args.rate {
                Rate::Fixed(r) => format!("{r} msg/s (open loop, ≤ {} in flight)", args.in_flight),
                Rate::Max => format!("max ({} in flight)", args.in_flight),
            };
            if args.service_env.is_empty() {
                offered
            } else {
                let env: Vec<String> = args
                    .service_env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                format!("{offered}; services run with {}", env.join(" "))
            }
        },
        open_loop: matches!(args.rate, Rate::Fixed(_)),
        body_bytes,
        baseline,
        probe,
        broker: match args.broker {
            BrokerKind::Machine => "the machine's broker (1 node)".to_owned(),
            BrokerKind::Cluster => format!(
                "the project's cluster ({broker_nodes} nodes, scripts/cluster.sh; every AMQP_URL lists them)"
            ),
        },
        replicas: usize::from(args.replicas),
        throughput,
        latencies,
        processes,
        services: SERVICES.iter().map(|s| (*s).to_owned()).collect(),
        loadgen_rss_kb: vm_hwm_kb("/proc/self/status"),
        accounting,
        facts,
    };
    println!("{}", report.markdown());
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report.json())?)?;
    }
    Ok(report)
}

/// The pipeline phase: observe, send, drain, account.
async fn drive(
    args: &Args,
    system: &System,
    billing: &BillingDouble,
    sms: &BillingDouble,
    plan: Arc<Plan>,
    facts: &mut Facts,
) -> anyhow::Result<(Throughput, Latencies, Accounting)> {
    let observer = observe::Observer::start(&system.env.amqp_url).await?;
    let ingest_urls: Vec<String> = system
        .bases("ingest")
        .into_iter()
        .map(|base| format!("{base}/v1/sms"))
        .collect();
    eprintln!(
        "loadgen: sending ({})",
        match args.rate {
            Rate::Fixed(r) => format!("{r}/s"),
            Rate::Max => "max".into(),
        }
    );
    let config = SendConfig {
        urls: ingest_urls,
        token: TOKEN.to_owned(),
        rate: args.rate,
        in_flight: args.in_flight,
        seconds: args.seconds,
        give_up_after: Duration::from_secs(120),
    };
    let (records, t0) = send::run(plan.clone(), config).await?;
    let sent_done = Instant::now();
    let taken: Vec<&send::SendRecord> = records.iter().filter(|r| r.status == 202).collect();
    let expect_accepted = taken
        .iter()
        .filter(|r| matches!(plan.messages[r.index].expect, Expect::Accepted { .. }))
        .count();
    let expect_emails = taken
        .iter()
        .filter(|r| {
            matches!(
                plan.messages[r.index].expect,
                Expect::Accepted { email: Some(_) }
            )
        })
        .count();
    let expect_rejected = taken.len() - expect_accepted;
    eprintln!(
        "loadgen: {} posts taken in {:.1} s; waiting for the effects",
        taken.len(),
        sent_done.duration_since(t0).as_secs_f64()
    );

    // Drain: until every expected effect arrived (then a short settle for duplicates),
    // or nothing happened for QUIET_GIVE_UP, or the drain deadline.
    let mail_dir = system.mail_dir();
    let deadline = sent_done + Duration::from_secs_f64(args.drain_seconds.max(0.0));
    let mut last_total = usize::MAX;
    let mut last_progress = Instant::now();
    let mut complete_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let (events, bills, replies, mails) = (
            observer.count(),
            billing.started() as usize,
            sms.started() as usize,
            eml_count(&mail_dir),
        );
        let complete = events >= taken.len()
            && bills >= expect_accepted
            && replies >= expect_rejected
            && mails >= expect_emails;
        let total = events + bills + replies + mails;
        if total != last_total {
            last_total = total;
            last_progress = now;
        }
        if complete {
            if now - *complete_since.get_or_insert(now) >= SETTLE {
                break;
            }
        } else {
            complete_since = None;
        }
        if now - last_progress >= QUIET_GIVE_UP || now >= deadline {
            eprintln!(
                "loadgen: gave up waiting (events {events}/{}, billing {bills}/{expect_accepted}, replies {replies}/{expect_rejected}, e-mails {mails}/{expect_emails})",
                taken.len()
            );
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    facts.drain_seconds = sent_done.elapsed().as_secs_f64();

    let seen = observer.seen();
    let observer_broken = observer.broken();
    let undecodable = observer.undecodable();
    observer.stop().await;
    let bills = billing.timed_posts();
    let replies = sms.timed_posts();
    let emails = eml_count(&mail_dir);
    let audit = audit_rows(&system.env.database_url).await?;

    let index_of: HashMap<&str, usize> = plan
        .messages
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id.as_str(), i))
        .collect();
    let record_of: HashMap<usize, &send::SendRecord> =
        taken.iter().map(|r| (r.index, *r)).collect();

    let mut acc = Accounting {
        planned: plan.messages.len(),
        attempted: records.len(),
        sent: taken.len(),
        post_failures: records.len() - taken.len(),
        post_retries: records
            .iter()
            .map(|r| u64::from(r.attempts.saturating_sub(1)))
            .sum(),
        expected_accepted: expect_accepted,
        expected_rejected: expect_rejected,
        expected_emails: expect_emails,
        events_total: seen.len(),
        events_undecodable: undecodable,
        observer_link_lost: observer_broken,
        billing_posts: bills.len(),
        replies_posts: replies.len(),
        emails,
        audit_rows: audit.len(),
        ..Accounting::default()
    };

    // Events: the first of each message counts; a later one is a duplicate unless the
    // broker flagged it as a redelivery to loadgen's own queue.
    let mut first_event: HashMap<usize, &observe::Seen> = HashMap::new();
    for e in &seen {
        let Some(&i) = index_of.get(e.message_id.as_str()) else {
            acc.problem(format!(
                "event for a message not in the plan: {}",
                e.message_id
            ));
            acc.unknown += 1;
            continue;
        };
        if !record_of.contains_key(&i) {
            acc.problem(format!("event for a message never taken: {}", e.message_id));
            acc.unknown += 1;
            continue;
        }
        if first_event.contains_key(&i) {
            if e.redelivered {
                acc.observer_redeliveries += 1;
            } else {
                acc.duplicated_events += 1;
                acc.problem(format!("second event for {}", e.message_id));
            }
            continue;
        }
        first_event.insert(i, e);
    }
    let mut first_bill: HashMap<usize, Instant> = HashMap::new();
    for (at, key, _status, body) in &bills {
        let id = body["message_id"].as_str().unwrap_or("");
        let Some(&i) = index_of.get(id) else {
            acc.problem(format!(
                "billing post for an unknown message `{id}` (key {key})"
            ));
            acc.unknown += 1;
            continue;
        };
        if first_bill.insert(i, *at).is_some() {
            acc.duplicated_billing += 1;
            acc.problem(format!("second billing post for {id}"));
        }
        if !matches!(plan.messages[i].expect, Expect::Accepted { .. }) {
            acc.wrong_billing += 1;
            acc.problem(format!("billing post for {id}, which must be rejected"));
        }
    }
    let mut replied: HashMap<usize, u32> = HashMap::new();
    for (_, _, _, body) in &replies {
        let id = body["reply_to"].as_str().unwrap_or("");
        match index_of.get(id) {
            Some(&i) => *replied.entry(i).or_default() += 1,
            None => {
                acc.unknown += 1;
                acc.problem(format!("reply SMS for an unknown message `{id}`"));
            }
        }
    }
    let audit: HashMap<&str, &(String, String, Option<String>)> =
        audit.iter().map(|row| (row.0.as_str(), row)).collect();

    let mut event_ms = Vec::with_capacity(taken.len());
    let mut billing_ms = Vec::with_capacity(expect_accepted);
    let mut ingest_ms = Vec::with_capacity(taken.len());
    let mut lag_ms = Vec::with_capacity(taken.len());
    for r in &taken {
        let m = &plan.messages[r.index];
        if let Some(done) = r.taken_at {
            ingest_ms.push(ms(done.saturating_duration_since(r.started)));
        }
        lag_ms.push(ms(r.lag));
        match first_event.get(&r.index) {
            None => {
                acc.lost_events += 1;
                acc.problem(format!("no event for {}", m.id));
            }
            Some(e) => {
                event_ms.push(ms(e.at.saturating_duration_since(r.started)));
                let right = match &m.expect {
                    Expect::Accepted { .. } => e.accepted,
                    Expect::Rejected { reason } => {
                        !e.accepted && e.reason.as_deref() == Some(*reason)
                    }
                };
                if e.accepted {
                    acc.accepted += 1;
                } else {
                    acc.rejected += 1;
                }
                if !right {
                    acc.wrong_outcome += 1;
                    acc.problem(format!(
                        "{}: expected {:?}, event {} {:?}",
                        m.id,
                        m.expect,
                        if e.accepted { "accepted" } else { "rejected" },
                        e.reason
                    ));
                }
            }
        }
        let accepted = matches!(m.expect, Expect::Accepted { .. });
        if accepted {
            match first_bill.get(&r.index) {
                Some(at) => billing_ms.push(ms(at.saturating_duration_since(r.started))),
                None => {
                    acc.lost_billing += 1;
                    acc.problem(format!("no billing post for {}", m.id));
                }
            }
        }
        match (accepted, replied.get(&r.index).copied().unwrap_or(0)) {
            (true, 0) | (false, 1) => {}
            (true, _) => {
                acc.wrong_replies += 1;
                acc.problem(format!("reply SMS for accepted {}", m.id));
            }
            (false, 0) => {
                acc.lost_replies += 1;
                acc.problem(format!("no reply SMS for {}", m.id));
            }
            (false, _) => {
                acc.duplicated_replies += 1;
                acc.problem(format!("several reply SMS for {}", m.id));
            }
        }
        match audit.get(m.id.as_str()) {
            None => {
                acc.lost_audit += 1;
                acc.problem(format!("no audit row for {}", m.id));
            }
            Some((_, outcome, reason)) => {
                let right = match &m.expect {
                    Expect::Accepted { .. } => outcome == "accepted",
                    Expect::Rejected { reason: want } => {
                        outcome == "rejected" && reason.as_deref() == Some(*want)
                    }
                };
                if !right {
                    acc.wrong_audit += 1;
                    acc.problem(format!("{}: audit row says {outcome} {reason:?}", m.id));
                }
            }
        }
    }
    acc.audit_extra = acc.audit_rows.saturating_sub(taken.len() - acc.lost_audit);

    let first_send = taken.iter().map(|r| r.started).min().unwrap_or(t0);
    let last_event = first_event.values().map(|e| e.at).max();
    let last_bill = first_bill.values().copied().max();
    let last_taken = taken.iter().filter_map(|r| r.taken_at).max();
    let last_start = records.iter().map(|r| r.started).max();
    let since_first =
        |t: Option<Instant>| t.map(|t| t.saturating_duration_since(first_send).as_secs_f64());
    let throughput = Throughput {
        processed: first_event.len(),
        events_span_s: since_first(last_event),
        full_span_s: since_first(last_event.max(last_bill)),
        billed: first_bill.len(),
        taken: taken.len(),
        ingest_span_s: since_first(last_taken),
        started_span_s: since_first(last_start),
        attempted: records.len(),
    };
    let latencies = Latencies {
        event: report::Summary::of(event_ms),
        billing: report::Summary::of(billing_ms),
        ingest: report::Summary::of(ingest_ms),
        send_lag: report::Summary::of(lag_ms),
    };
    Ok((throughput, latencies, acc))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The mean size of the `sms.received` bodies ingest will publish for this plan.
fn mean_sms_received_bytes(plan: &Plan) -> usize {
    use shared::events::{Channel, Event, SmsReceived};
    let mut total = 0usize;
    let mut n = 0usize;
    for m in &plan.messages {
        let Ok(received_at) = chrono::DateTime::parse_from_rfc3339(&m.received_at) else {
            continue;
        };
        let event = Event::SmsReceived(SmsReceived {
            message_id: m.id.clone(),
            from: m.from.clone(),
            to: "7377".into(),
            text: m.text.clone(),
            received_at,
            channel: Channel::Sms,
            chat: None,
            contact: None,
        });
        total += event.to_json().len();
        n += 1;
    }
    total.checked_div(n).unwrap_or(200)
}

fn eml_count(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .count()
        })
        .unwrap_or(0)
}

/// `validator.messages`: (message_id, outcome, reason) of every audited message.
async fn audit_rows(database_url: &str) -> anyhow::Result<Vec<(String, String, Option<String>)>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(database_url)
        .await?;
    let rows = sqlx::query_as("SELECT message_id, outcome, reason FROM validator.messages")
        .fetch_all(&pool)
        .await?;
    pool.close().await;
    Ok(rows)
}

/// Peak resident set (`VmHWM`) from a `/proc/<pid>/status` file, in kB.
fn vm_hwm_kb(path: &str) -> Option<u64> {
    let status = std::fs::read_to_string(path).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// CPU time (user + system) process `pid` has used so far, in seconds.
fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the file; the state (field 3) is index 0.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}
