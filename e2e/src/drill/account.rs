//! After a drill: wait until the system is quiet, then account for every message and
//! every effect — the audit row, the billing delivery, the reply SMS, the e-mail —
//! against the plan, and for what is left in the queues.
//!
//! Web forms are accounted as SMS are, by the id ingest gave the form, with what
//! differs for them: no SMS reply ever (a reply to a form is *wrong*: its refusal is
//! on its answer page, which must agree with the plan when it shows a decision), the
//! `channel` `web` in the audit, in what billing is sent and in the export, and an
//! answer page naming another id than the form's (a re-submit that became a second
//! message) is *wrong* too.
//!
//! "Quiet" is judged on what can still produce an effect: the validator's outbox and
//! every queue of the drill's vhost (main, retry and dead-letter queues; a message
//! being handled counts as unacknowledged). The management API refreshes its numbers
//! every 5 s (`collect_statistics_interval`), so quiet must hold for longer than that.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::drill::plan::{Channel, Expect, Plan};
use crate::drill::stream::{Page, StreamReport, page_agrees};
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
    /// Of the above, the web forms': messages taken, `POST /form`s made (re-submits
    /// and second submits included), audit rows by outcome, e-mails, readings billed.
    pub web_sent: usize,
    pub web_posts: u64,
    pub web_accepted: usize,
    pub web_rejected: usize,
    pub web_emails: usize,
    pub web_billed: usize,
    /// Form posts that were not taken and were submitted again.
    pub web_resubmits: u64,
    /// Answer pages that showed the decision (the rest said it was being checked).
    pub web_decided_on_page: usize,
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
    /// Each of sent, accepted, rejected, e-mails and billed as `all (web)`.
    pub const HEADER: &'static str = "| drill | sent (web) | web posts | accepted (web) | rejected (web) | replies | e-mails (web) | billed (web) | lost | duplicated | wrong | dead letters | left in queues | re-sends | edge retries | web re-submits | consumer retries | peer 5xx | redelivered | seconds |\n|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|";

    pub fn row(&self) -> String {
        format!(
            "| {} | {} ({}) | {} | {} ({}) | {} ({}) | {} | {} ({}) | {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            self.drill,
            self.sent,
            self.web_sent,
            self.web_posts,
            self.accepted,
            self.web_accepted,
            self.rejected,
            self.web_rejected,
            self.replies,
            self.emails,
            self.web_emails,
            self.billed,
            self.web_billed,
            self.lost,
            self.duplicated,
            self.wrong,
            self.dead_letters,
            self.left_in_queues,
            self.resends,
            self.edge_retries,
            self.web_resubmits,
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
    /// The period the web forms fall in (today's, company time).
    pub web_period: &'a str,
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
    let want_replies = o.plan.expected_replies();
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
    t.web_sent = plan
        .of_channel(Channel::Web)
        .filter(|m| !failed.contains(m.id.as_str()))
        .count();
    t.web_posts = stream.form_posts;
    t.web_resubmits = stream.form_resubmits;
    t.reposted = plan.order.len() - plan.messages.len();
    let ids = stream.message_ids(plan);
    forms(&mut t, plan, stream);
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

    audit(&mut t, plan, &ids, pool).await;
    billing(&mut t, plan, &ids, o.billing);
    replies(&mut t, plan, &ids, o.sms);
    emails(&mut t, plan, o.smtp);
    exports(&mut t, plan, o).await;

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

/// What the stream saw of the web forms: answer pages that disagree with the plan,
/// ids that changed between a form's posts.
fn forms(t: &mut Tally, plan: &Plan, stream: &StreamReport) {
    let mut first_id: HashMap<usize, &str> = HashMap::new();
    for f in &stream.forms {
        let Some(m) = plan.messages.get(f.index) else {
            continue;
        };
        if f.page != Page::Pending {
            t.web_decided_on_page += 1;
        }
        if !page_agrees(f.page, &m.expect) {
            t.wrong += 1;
            t.problem(format!(
                "web form {} ({}): the answer page says {:?}, expected {:?}",
                m.id, f.id, f.page, m.expect
            ));
        }
        if let Some(other) = &f.page_id {
            t.wrong += 1;
            t.problem(format!(
                "web form {} was shown as {} but answered as {other}",
                m.id, f.id
            ));
        }
        if let Some(id) = first_id.insert(f.index, &f.id)
            && id != f.id
        {
            t.wrong += 1;
            t.problem(format!(
                "web form {} posted twice as two messages: {id}, {}",
                m.id, f.id
            ));
        }
    }
}

/// `ids`: each plan message's message id (a web form's as ingest made it).
async fn audit(t: &mut Tally, plan: &Plan, ids: &[Option<String>], pool: &sqlx::PgPool) {
    let rows: Vec<(String, String, Option<String>, String)> =
        match sqlx::query_as("SELECT message_id, outcome, reason, channel FROM validator.messages")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows,
            Err(e) => {
                t.problem(format!("cannot read the audit: {e}"));
                Vec::new()
            }
        };
    let mut audit: HashMap<String, (String, Option<String>, String)> = HashMap::new();
    for (id, outcome, reason, channel) in rows {
        let web = channel == Channel::Web.as_str();
        match outcome.as_str() {
            "accepted" => {
                t.accepted += 1;
                t.web_accepted += usize::from(web);
            }
            _ => {
                t.rejected += 1;
                t.web_rejected += usize::from(web);
            }
        }
        audit.insert(id, (outcome, reason, channel));
    }
    let planned: HashSet<&str> = ids.iter().flatten().map(String::as_str).collect();
    for id in audit.keys().filter(|id| !planned.contains(id.as_str())) {
        t.wrong += 1;
        t.problem(format!("audit: {id} was never sent"));
    }
    for (m, id) in plan.messages.iter().zip(ids) {
        let found = id.as_ref().and_then(|id| audit.get(id));
        let Some((outcome, reason, channel)) = found else {
            t.lost += 1;
            t.problem(format!("audit: {} ({id:?}) missing ({:?})", m.id, m.text));
            continue;
        };
        if channel != m.channel.as_str() {
            t.wrong += 1;
            t.problem(format!(
                "audit: {} came by {:?} but is recorded as `{channel}`",
                m.id, m.channel
            ));
        }
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

/// The ids of the plan messages that `keep`s.
fn ids_where<'a>(
    plan: &Plan,
    ids: &'a [Option<String>],
    keep: impl Fn(&crate::drill::plan::Message) -> bool,
) -> Vec<&'a str> {
    plan.messages
        .iter()
        .zip(ids)
        .filter(|(m, _)| keep(m))
        .filter_map(|(_, id)| id.as_deref())
        .collect()
}

fn billing(t: &mut Tally, plan: &Plan, ids: &[Option<String>], double: &BillingDouble) {
    let (by_message, per_key, conflicts) = peer_posts(double, "message_id");
    t.billed = per_key.len();
    t.resends += conflicts;
    let expected = ids_where(plan, ids, |m| matches!(m.expect, Expect::Accepted { .. }));
    once_each(t, "billing", &expected, &by_message, &per_key);
    // Each reading is sent to billing with the channel it came by.
    let channel_of: HashMap<&str, Channel> = plan
        .messages
        .iter()
        .zip(ids)
        .filter_map(|(m, id)| Some((id.as_deref()?, m.channel)))
        .collect();
    let mut web_keys = HashSet::new();
    for (key, status, body) in double.posts() {
        if status != 200 {
            continue;
        }
        let id = body["message_id"].as_str().unwrap_or("");
        let sent_as = body["channel"].as_str().unwrap_or("(none)");
        let Some(channel) = channel_of.get(id) else {
            continue;
        };
        if *channel == Channel::Web {
            web_keys.insert(key);
        }
        if sent_as != channel.as_str() {
            t.wrong += 1;
            t.problem(format!(
                "billing: {id} came by {channel:?} but was sent as `{sent_as}`"
            ));
        }
    }
    t.web_billed = web_keys.len();
}

/// An SMS refusal is answered once; a web form never (a reply to one is unexpected,
/// hence wrong).
fn replies(t: &mut Tally, plan: &Plan, ids: &[Option<String>], double: &BillingDouble) {
    let (by_message, per_key, conflicts) = peer_posts(double, "reply_to");
    t.replies = per_key.len();
    t.resends += conflicts;
    let expected = ids_where(plan, ids, |m| {
        m.channel == Channel::Sms && matches!(m.expect, Expect::Rejected { .. })
    });
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
            if m.channel == Channel::Web {
                t.web_emails += message_ids.get(&e).map_or(0, HashSet::len);
            }
            expected.insert(e);
        }
    }
    for to in message_ids.keys().filter(|to| !expected.contains(*to)) {
        t.wrong += 1;
        t.problem(format!("e-mail: unexpected, to {to}"));
    }
}

/// The exports billing reads (`GET /v1/exports/{period}.csv`): the SMS period's and
/// the web forms' (today's). Every row's `channel` is its account's: `web` for the
/// web accounts (`3…`), `sms` for the others; the web period lists exactly the web
/// accounts a form was accepted for (one row per meter: their latest reading).
async fn exports(t: &mut Tally, plan: &Plan, o: &Observed<'_>) {
    let http = reqwest::Client::new();
    let base = o.system.base("billing-export");
    let mut periods = vec![crate::drill::plan::SMS_PERIOD, o.web_period];
    periods.dedup();
    let web_accepted: HashSet<&str> = plan
        .of_channel(Channel::Web)
        .filter(|m| matches!(m.expect, Expect::Accepted { .. }))
        .filter_map(|m| m.form.as_ref().map(|f| f.account.as_str()))
        .collect();
    for period in periods {
        let url = format!("{base}/v1/exports/{period}.csv");
        let csv = match http
            .get(&url)
            .bearer_auth(crate::system::EXPORT_TOKEN)
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => r.text().await.ok(),
            Ok(r) => {
                t.problem(format!("export {period}: {}", r.status()));
                None
            }
            Err(e) => {
                t.problem(format!("export {period}: {e}"));
                None
            }
        };
        let Some(csv) = csv else {
            t.wrong += 1;
            continue;
        };
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (Some(account_at), Some(channel_at)) = (col("account"), col("channel")) else {
            t.wrong += 1;
            t.problem(format!("export {period}: no account or channel column"));
            continue;
        };
        let mut web_listed = HashSet::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let fields: Vec<&str> = line.split(',').collect();
            let account = fields.get(account_at).copied().unwrap_or("");
            let channel = fields.get(channel_at).copied().unwrap_or("");
            let web = account.starts_with('3');
            let want = if web { Channel::Web } else { Channel::Sms };
            if web {
                web_listed.insert(account.to_owned());
            }
            if channel != want.as_str() {
                t.wrong += 1;
                t.problem(format!(
                    "export {period}: account {account} listed with channel `{channel}`"
                ));
            }
        }
        if period == o.web_period {
            for a in web_accepted.iter().filter(|a| !web_listed.contains(**a)) {
                t.lost += 1;
                t.problem(format!("export {period}: web account {a} not listed"));
            }
            for a in web_listed
                .iter()
                .filter(|a| !web_accepted.contains(a.as_str()))
            {
                t.wrong += 1;
                t.problem(format!(
                    "export {period}: web account {a} listed, none accepted"
                ));
            }
        }
    }
}
