//! After a drill: wait until the system is quiet, then account for every message and
//! every effect — the audit row, the billing delivery, the reply SMS, the e-mail —
//! against the plan, and for what is left in the queues.
//!
//! "Quiet" is judged on what can still produce an effect: the validator's outbox and
//! every queue of the drill's vhost (main, retry and dead-letter queues; a message
//! being handled counts as unacknowledged). The management API refreshes its numbers
//! every 5 s (`collect_statistics_interval`), so quiet must hold for longer than that.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::drill::plan::{Expect, Plan};
use crate::drill::stream::StreamReport;
use crate::smtp::SmtpSink;
use crate::{BillingDouble, System};
use shared::testing::TestEnv;

/// Longer than the management API's statistics interval (5 s).
const QUIET_FOR: Duration = Duration::from_secs(7);
/// Quiet this long with effects still missing: nothing more is coming (they are lost).
const QUIET_GIVE_UP: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(500);

/// One line of the drill table, and what it is made of.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub drill: String,
    /// Distinct messages the gateway delivered (each `202` once at least).
    pub sent: usize,
    /// Extra posts of a message already sent (gateway re-deliveries).
    pub reposted: usize,
    pub accepted: usize,
    pub rejected: usize,
    /// Distinct replies the SMS gateway took.
    pub replies: usize,
    /// Distinct e-mails received by the SMTP server (recipient and `Message-ID`).
    pub emails: usize,
    /// Distinct readings billing took.
    pub billed: usize,
    /// Expected effects (audit row, bill, reply, e-mail) that never happened.
    pub lost: usize,
    /// Effects that happened more than once.
    pub duplicated: usize,
    /// Outcomes or effects other than the plan says (wrong reason, unexpected effect).
    pub wrong: usize,
    pub dead_letters: u64,
    /// Messages still in main or retry queues at the end.
    pub left_in_queues: u64,
    /// Idempotent re-sends: re-posts billing or the SMS gateway answered `409` (same
    /// `Idempotency-Key`) and e-mail copies with a `Message-ID` already received.
    pub resends: usize,
    /// Posts the gateway had to retry (503, refused connection).
    pub edge_retries: u64,
    /// Messages the consumers put on a retry queue (since each service's last start).
    pub consumer_retries: u64,
    /// Posts billing or the SMS gateway answered with a 5xx: evidence the fault bit.
    pub peer_5xx: usize,
    /// Messages the broker delivered again (consumer killed or cut off before its ack).
    pub redelivered: u64,
    pub seconds: f64,
    pub quiet: bool,
    /// The first few discrepancies, for the failure message.
    pub problems: Vec<String>,
}

impl Tally {
    pub const HEADER: &'static str = "| drill | sent | accepted | rejected | replies | e-mails | billed | lost | duplicated | wrong | dead letters | left in queues | re-sends | edge retries | consumer retries | peer 5xx | redelivered | seconds |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|";

    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            self.drill,
            self.sent,
            self.accepted,
            self.rejected,
            self.replies,
            self.emails,
            self.billed,
            self.lost,
            self.duplicated,
            self.wrong,
            self.dead_letters,
            self.left_in_queues,
            self.resends,
            self.edge_retries,
            self.consumer_retries,
            self.peer_5xx,
            self.redelivered,
            self.seconds
        )
    }

    pub fn is_clean(&self) -> bool {
        self.quiet
            && self.lost == 0
            && self.duplicated == 0
            && self.wrong == 0
            && self.dead_letters == 0
            && self.left_in_queues == 0
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 20 {
            self.problems.push(p);
        }
    }
}

/// Everything the accounting looks at.
pub struct Observed<'a> {
    pub system: &'a System,
    pub plan: &'a Plan,
    pub billing: &'a BillingDouble,
    pub sms: &'a BillingDouble,
    pub smtp: &'a SmtpSink,
}

/// One queue as the management API reports it.
#[derive(Debug, Clone)]
pub struct QueueStat {
    pub name: String,
    /// Ready + unacknowledged.
    pub messages: u64,
    /// Deliveries the broker made again (a consumer died or its channel closed before
    /// acking): the evidence that a kill hit work in flight.
    pub redelivered: u64,
}

/// Every queue of the vhost, from the management API of any node that answers.
pub async fn queues(http: &reqwest::Client, env: &TestEnv) -> Option<Vec<QueueStat>> {
    let list: Vec<serde_json::Value> = env
        .broker
        .api(http, |h, api| {
            h.get(format!("{api}/api/queues/{}", env.name))
                .query(&[("columns", "name,messages,message_stats.redeliver")])
        })
        .await?
        .error_for_status()
        .ok()?
        .json()
        .await
        .ok()?;
    list.iter()
        .map(|q| {
            Some(QueueStat {
                name: q["name"].as_str()?.to_owned(),
                messages: q["messages"].as_u64().unwrap_or(0),
                redelivered: q["message_stats"]["redeliver"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}

async fn scalar(pool: &sqlx::PgPool, sql: &'static str) -> Option<i64> {
    sqlx::query_scalar(sql).fetch_one(pool).await.ok()
}

fn eml_count(smtp: &SmtpSink) -> usize {
    std::fs::read_dir(smtp.dir.path())
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                .count()
        })
        .unwrap_or(0)
}

/// Waits until nothing can produce an effect any more: every expected effect seen and
/// all quiet for `QUIET_FOR`, or all quiet for `QUIET_GIVE_UP` with effects missing
/// (they are lost; the accounting says which). `false` if `deadline` passed first.
pub async fn wait_quiet(o: &Observed<'_>, pool: &sqlx::PgPool, deadline: Duration) -> bool {
    let http = reqwest::Client::new();
    let until = tokio::time::Instant::now() + deadline;
    let want_audit = o.plan.messages.len() as i64;
    let want_billed = o.plan.expected_accepted();
    let want_replies = o.plan.expected_rejected();
    let want_emails = o.plan.expected_emails();
    let mut quiet_since: Option<tokio::time::Instant> = None;
    while tokio::time::Instant::now() < until {
        let outbox = scalar(pool, "SELECT count(*) FROM validator.outbox").await;
        let busy_queues = queues(&http, &o.system.env).await.map(|qs| {
            qs.iter()
                .filter(|q| !q.name.ends_with(".dead"))
                .map(|q| q.messages)
                .sum::<u64>()
        });
        let idle = outbox == Some(0) && busy_queues == Some(0);
        let complete = idle
            && scalar(pool, "SELECT count(*) FROM validator.messages").await == Some(want_audit)
            && o.billing.delivered().len() >= want_billed
            && o.sms.delivered().len() >= want_replies
            && eml_count(o.smtp) >= want_emails;
        let now = tokio::time::Instant::now();
        if idle {
            let since = *quiet_since.get_or_insert(now);
            if (complete && now - since >= QUIET_FOR) || now - since >= QUIET_GIVE_UP {
                return true;
            }
        } else {
            quiet_since = None;
        }
        tokio::time::sleep(POLL).await;
    }
    false
}

/// Counts every message and effect against the plan.
pub async fn account(
    drill: &str,
    o: &Observed<'_>,
    pool: &sqlx::PgPool,
    stream: &StreamReport,
    quiet: bool,
) -> Tally {
    let mut t = Tally {
        drill: drill.to_owned(),
        quiet,
        edge_retries: stream.retries,
        ..Tally::default()
    };
    let plan = o.plan;
    let failed: HashSet<&str> = stream
        .failures
        .iter()
        .map(|f| f.message_id.as_str())
        .collect();
    t.sent = plan
        .messages
        .iter()
        .filter(|m| !failed.contains(m.id.as_str()))
        .count();
    t.reposted = plan.order.len() - plan.messages.len();
    for f in &stream.failures {
        t.wrong += 1;
        t.problem(format!(
            "gateway: {} not taken after {} attempts (last answer {})",
            f.message_id, f.attempts, f.last_status
        ));
    }
    if !quiet {
        t.problem("the system did not become quiet before the deadline".into());
    }

    audit(&mut t, plan, pool).await;
    billing(&mut t, plan, o.billing);
    replies(&mut t, plan, o.sms);
    emails(&mut t, plan, o.smtp);

    for instance in o.system.all_instances() {
        t.consumer_retries += consumer_retries(&o.system.metrics(instance).await);
    }
    let http = reqwest::Client::new();
    t.peer_5xx = [o.billing, o.sms]
        .iter()
        .flat_map(|d| d.posts())
        .filter(|(_, status, _)| *status >= 500)
        .count();
    match queues(&http, &o.system.env).await {
        Some(qs) => {
            for q in qs {
                if q.name.ends_with(".dead") {
                    t.dead_letters += q.messages;
                } else {
                    t.left_in_queues += q.messages;
                }
                t.redelivered += q.redelivered;
                if q.messages > 0 {
                    t.problem(format!("queue {}: {} messages", q.name, q.messages));
                }
            }
        }
        None => t.problem("cannot list the queues (management API)".into()),
    }
    t
}

/// `*_consumer_messages_total{…outcome="retried"}` of one service.
fn consumer_retries(metrics: &shared::testing::Metrics) -> u64 {
    metrics
        .samples
        .iter()
        .filter(|s| {
            s.name.ends_with("_consumer_messages_total")
                && s.labels.get("outcome").is_some_and(|o| o == "retried")
        })
        .map(|s| s.value)
        .sum::<f64>() as u64
}

async fn audit(t: &mut Tally, plan: &Plan, pool: &sqlx::PgPool) {
    let rows: Vec<(String, String, Option<String>)> =
        match sqlx::query_as("SELECT message_id, outcome, reason FROM validator.messages")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                t.problem(format!("cannot read the audit: {e}"));
                Vec::new()
            }
        };
    let mut audit: HashMap<String, (String, Option<String>)> = HashMap::new();
    for (id, outcome, reason) in rows {
        match outcome.as_str() {
            "accepted" => t.accepted += 1,
            _ => t.rejected += 1,
        }
        audit.insert(id, (outcome, reason));
    }
    let planned: HashSet<&str> = plan.messages.iter().map(|m| m.id.as_str()).collect();
    for id in audit.keys().filter(|id| !planned.contains(id.as_str())) {
        t.wrong += 1;
        t.problem(format!("audit: {id} was never sent"));
    }
    for m in &plan.messages {
        let Some((outcome, reason)) = audit.get(&m.id) else {
            t.lost += 1;
            t.problem(format!("audit: {} missing ({:?})", m.id, m.text));
            continue;
        };
        let matches = match &m.expect {
            Expect::Accepted { .. } => outcome == "accepted",
            Expect::Rejected { reason: want } => {
                outcome == "rejected" && reason.as_deref() == Some(*want)
            }
        };
        if !matches {
            t.wrong += 1;
            t.problem(format!(
                "audit: {} ({:?} at {}) is {outcome}/{reason:?}, expected {:?}",
                m.id, m.text, m.received_at, m.expect
            ));
        }
    }
}

/// Successful posts grouped by the message they are about; counts per key; 409s.
fn peer_posts(
    double: &BillingDouble,
    about: &str,
) -> (
    HashMap<String, HashSet<String>>,
    HashMap<String, u32>,
    usize,
) {
    let mut by_message: HashMap<String, HashSet<String>> = HashMap::new();
    let mut per_key: HashMap<String, u32> = HashMap::new();
    let mut conflicts = 0;
    for (key, status, body) in double.posts() {
        match status {
            200 => {
                let id = body[about].as_str().unwrap_or("(none)").to_owned();
                by_message.entry(id).or_default().insert(key.clone());
                *per_key.entry(key).or_default() += 1;
            }
            409 => conflicts += 1,
            _ => {}
        }
    }
    (by_message, per_key, conflicts)
}

fn once_each(
    t: &mut Tally,
    what: &str,
    expected: &[&str],
    by_message: &HashMap<String, HashSet<String>>,
    per_key: &HashMap<String, u32>,
) {
    let expected_set: HashSet<&str> = expected.iter().copied().collect();
    for id in expected {
        match by_message.get(*id).map_or(0, HashSet::len) {
            0 => {
                t.lost += 1;
                t.problem(format!("{what}: nothing for {id}"));
            }
            1 => {}
            n => {
                t.duplicated += n - 1;
                t.problem(format!("{what}: {n} different keys for {id}"));
            }
        }
    }
    for (key, n) in per_key.iter().filter(|(_, n)| **n > 1) {
        t.duplicated += usize::try_from(*n).unwrap_or(1) - 1;
        t.problem(format!("{what}: key {key} taken {n} times"));
    }
    for id in by_message
        .keys()
        .filter(|id| !expected_set.contains(id.as_str()))
    {
        t.wrong += 1;
        t.problem(format!("{what}: unexpected for {id}"));
    }
}

fn billing(t: &mut Tally, plan: &Plan, double: &BillingDouble) {
    let (by_message, per_key, conflicts) = peer_posts(double, "message_id");
    t.billed = per_key.len();
    t.resends += conflicts;
    let expected: Vec<&str> = plan
        .messages
        .iter()
        .filter(|m| matches!(m.expect, Expect::Accepted { .. }))
        .map(|m| m.id.as_str())
        .collect();
    once_each(t, "billing", &expected, &by_message, &per_key);
}

fn replies(t: &mut Tally, plan: &Plan, double: &BillingDouble) {
    let (by_message, per_key, conflicts) = peer_posts(double, "reply_to");
    t.replies = per_key.len();
    t.resends += conflicts;
    let expected: Vec<&str> = plan
        .messages
        .iter()
        .filter(|m| matches!(m.expect, Expect::Rejected { .. }))
        .map(|m| m.id.as_str())
        .collect();
    once_each(t, "reply", &expected, &by_message, &per_key);
    // Each reply goes to the sender of the message it answers.
    let senders: HashMap<&str, &str> = plan
        .messages
        .iter()
        .map(|m| (m.id.as_str(), m.from.as_str()))
        .collect();
    for (_, status, body) in double.posts() {
        let reply_to = body["reply_to"].as_str().unwrap_or("");
        let to = body["to"].as_str().unwrap_or("");
        if status == 200 && senders.get(reply_to).is_some_and(|from| *from != to) {
            t.wrong += 1;
            t.problem(format!("reply to {reply_to} went to {to}"));
        }
    }
}

/// E-mails are counted by recipient and `Message-ID`: the notifier resends a
/// confirmation whose outcome it does not know (killed between the server's `250` and
/// its own record) with the same `Message-ID`, SMTP's only idempotency mechanism, as
/// billing and the SMS gateway get a re-post with the same `Idempotency-Key`. Such a
/// copy is counted as a re-send; a second *different* e-mail for one reading is a
/// duplicate.
fn emails(t: &mut Tally, plan: &Plan, smtp: &SmtpSink) {
    let mails = smtp.mails();
    let mut message_ids: HashMap<String, HashSet<String>> = HashMap::new();
    for (i, m) in mails.iter().enumerate() {
        let to = m.envelope_to.trim().trim_matches(['<', '>']).to_lowercase();
        // Without a Message-ID, nothing says two copies are one e-mail.
        let id = if m.message_id.is_empty() {
            format!("(none #{i})")
        } else {
            m.message_id.clone()
        };
        message_ids.entry(to).or_default().insert(id);
    }
    let distinct: usize = message_ids.values().map(HashSet::len).sum();
    t.emails = distinct;
    t.resends += mails.len() - distinct;
    let mut expected: HashSet<String> = HashSet::new();
    for m in &plan.messages {
        if let Expect::Accepted { email: Some(e) } = &m.expect {
            let e = e.to_lowercase();
            match message_ids.get(&e).map_or(0, HashSet::len) {
                0 => {
                    t.lost += 1;
                    t.problem(format!("e-mail: none to {e} ({})", m.id));
                }
                1 => {}
                n => {
                    t.duplicated += n - 1;
                    t.problem(format!("e-mail: {n} different e-mails to {e} ({})", m.id));
                }
            }
            expected.insert(e);
        }
    }
    for to in message_ids.keys().filter(|to| !expected.contains(*to)) {
        t.wrong += 1;
        t.problem(format!("e-mail: unexpected, to {to}"));
    }
}
