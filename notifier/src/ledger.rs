//! The record of effects: one row per event's SMS or e-mail (`deliveries`), so that a
//! resident is answered once however often the broker delivers the event.
//!
//! A worker *claims* deliveries before sending (a batch of them per transaction): the claim turns the row into
//! `sending` under a lease (database time) and bumps `attempts`, which is the lease's
//! fencing token. Outcomes:
//! - a crash before sending leaves `pending`, or a `sending` whose lease runs out: the
//!   redelivered event sends it;
//! - a crash after the peer accepted but before `sent` was written leaves an expired
//!   `sending` whose outcome nobody knows: the channel decides ([`AfterUnknown`]) —
//!   resend with the same idempotency key / Message-ID, or give up rather than
//!   answer twice;
//! - two copies of one event in flight at once, or a redelivery after the lease
//!   holder died: one holds the lease, the other is told when it ends
//!   ([`Claim::Busy`]) and comes back then — to find `sent`, or an expired lease it
//!   may take over. A lease is never taken over while it runs: nothing tells a dead
//!   holder from a slow one still sending.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;

use crate::failure::{FailureKind, SendFailure};
use crate::limits::{ReplyLimits, Suppressed};
use shared::phone::PhoneNumber;

/// The channel a delivery goes out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Sms,
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Sms => "sms",
            Channel::Email => "email",
        }
    }
}

/// Where a delivery stands (the `state` column; the migration says what each means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Nothing known to have reached the peer: safe to send.
    Pending,
    /// An attempt is in flight until `lease_until`; after that, its outcome is unknown.
    Sending,
    /// The peer accepted it (terminal).
    Sent,
    /// A guard said no (terminal).
    Suppressed,
    /// The peer refused it; dead-lettered, a replay tries again.
    Failed,
    /// Sent without an answer on a channel that cannot deduplicate (terminal).
    Unknown,
}

impl State {
    const ALL: [State; 6] = [
        State::Pending,
        State::Sending,
        State::Sent,
        State::Suppressed,
        State::Failed,
        State::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Sending => "sending",
            State::Sent => "sent",
            State::Suppressed => "suppressed",
            State::Failed => "failed",
            State::Unknown => "unknown",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Self> {
        State::ALL.into_iter().find(|state| state.as_str() == s)
    }

    /// Where a failed attempt leaves the row.
    fn after(kind: FailureKind) -> Self {
        match kind {
            FailureKind::Transient => State::Pending,
            FailureKind::Permanent => State::Failed,
            FailureKind::Unknown => State::Unknown,
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One effect to claim.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `reply:<message_id>` or `email:<reading_id>`.
    pub key: String,
    pub channel: Channel,
    pub recipient: String,
}

/// What to do with an attempt whose outcome is unknown (sent, then no answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterUnknown {
    /// The peer deduplicates (idempotency key, Message-ID): send again.
    Resend,
    /// The peer cannot deduplicate: record `unknown` and never send again.
    GiveUp,
}

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Send now; `attempt` fences this worker's outcome against a later takeover.
    Send { attempt: i32 },
    /// The effect is settled already (`sent`, `suppressed`, `unknown`): nothing to do.
    Settled(State),
    /// A guard refused it just now.
    Suppressed(Suppressed),
    /// Another worker holds a live lease on it, for `remaining` more (database time).
    Busy { remaining: Duration },
    /// An earlier attempt's outcome is unknown and the channel cannot resend: now `unknown`.
    GaveUp,
}

/// One effect to claim in a batch.
pub struct ClaimRequest<'a> {
    pub delivery: &'a Delivery,
    /// The reply guards (per-number daily cap, hourly budget) to apply if the delivery
    /// is new: the number they count against.
    pub quota: Option<&'a PhoneNumber>,
    pub after_unknown: AfterUnknown,
}

/// What one claiming transaction settled for a batch.
#[derive(Debug)]
pub struct Claims {
    /// Per refused delivery: whether this is its first record (count it once).
    pub refused_new: Vec<bool>,
    /// Per request, in order.
    pub claims: Vec<Claim>,
}

/// Records `refused` deliveries (refused before any counting: number, country) and
/// claims `requests` for sending, in one transaction with one statement per step.
/// Keys must be distinct across both lists (the caller sends copies of one event in a
/// batch to the first copy's outcome).
///
/// Rows are locked in one order — deliveries by key, then quota buckets by name — so
/// concurrent batches wait for each other instead of deadlocking.
pub async fn claim_batch(
    pool: &PgPool,
    refused: &[(&Delivery, Suppressed)],
    requests: &[ClaimRequest<'_>],
    limits: &ReplyLimits,
    lease: Duration,
) -> Result<Claims, sqlx::Error> {
    let mut tx = shared::db::begin_batch(pool).await?;
    let fresh = insert_rows(&mut tx, refused, requests).await?;
    let refused_new = refused
        .iter()
        .map(|(d, _)| fresh.contains(d.key.as_str()))
        .collect();

    // The guards, once per event: only for deliveries seen for the first time.
    let counted: Vec<usize> = (0..requests.len())
        .filter(|&i| {
            requests[i].quota.is_some() && fresh.contains(requests[i].delivery.key.as_str())
        })
        .collect();
    let numbers: Vec<&PhoneNumber> = counted.iter().filter_map(|&i| requests[i].quota).collect();
    let verdicts = limits.reserve_batch(&mut tx, &numbers, Utc::now()).await?;
    let mut refused_now: HashMap<usize, Suppressed> = HashMap::new();
    for (&i, verdict) in counted.iter().zip(verdicts) {
        if let Err(reason) = verdict {
            refused_now.insert(i, reason);
        }
    }

    let states = held_states(&mut tx, requests, &fresh).await?;
    let (steps, settle) = next_steps(requests, &refused_now, &states);
    let attempts = take_leases(&mut tx, requests, &steps, lease).await?;
    if !settle.is_empty() {
        set_states(&mut tx, &settle).await?;
    }
    tx.commit().await?;

    let claims = requests
        .iter()
        .zip(steps)
        .map(|(r, step)| match step {
            Step::Decided(claim) => claim,
            Step::Lease => match attempts.get(r.delivery.key.as_str()) {
                Some(&attempt) => Claim::Send { attempt },
                // The row was locked by this transaction: it cannot have gone.
                None => Claim::Busy {
                    remaining: Duration::ZERO,
                },
            },
        })
        .collect();
    Ok(Claims {
        refused_new,
        claims,
    })
}

/// Every delivery's row, new ones `pending` (or `suppressed` when refused); returns
/// the keys inserted now (seen for the first time). A concurrent insert of the same
/// key waits here until the other transaction ends.
async fn insert_rows(
    tx: &mut sqlx::PgConnection,
    refused: &[(&Delivery, Suppressed)],
    requests: &[ClaimRequest<'_>],
) -> Result<HashSet<String>, sqlx::Error> {
    let mut rows: Vec<(&Delivery, State, Option<&str>)> = refused
        .iter()
        .map(|(d, why)| (*d, State::Suppressed, Some(why.as_str())))
        .chain(requests.iter().map(|r| (r.delivery, State::Pending, None)))
        .collect();
    rows.sort_unstable_by(|a, b| a.0.key.cmp(&b.0.key));
    let inserted: Vec<String> = sqlx::query_scalar(
        "INSERT INTO deliveries (key, channel, recipient, state, detail)
         SELECT key, channel, recipient, state, detail
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
              AS t(key, channel, recipient, state, detail)
         ORDER BY key
         ON CONFLICT (key) DO NOTHING
         RETURNING key",
    )
    .bind(rows.iter().map(|r| r.0.key.as_str()).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|r| r.0.channel.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|r| r.0.recipient.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    Ok(inserted.into_iter().collect())
}

/// A delivery's state as a claim finds it, and the time left on its lease if live.
type Held = (State, Option<Duration>);

/// The state of the deliveries seen before (a redelivery, a retry), locked for the
/// rest of the transaction; new ones are `pending` and this transaction holds them.
async fn held_states(
    tx: &mut sqlx::PgConnection,
    requests: &[ClaimRequest<'_>],
    fresh: &HashSet<String>,
) -> Result<HashMap<String, Held>, sqlx::Error> {
    let mut seen: Vec<&str> = requests
        .iter()
        .map(|r| r.delivery.key.as_str())
        .filter(|k| !fresh.contains(*k))
        .collect();
    seen.sort_unstable();
    let mut states = HashMap::new();
    if seen.is_empty() {
        return Ok(states);
    }
    #[derive(sqlx::FromRow)]
    struct HeldRow {
        key: String,
        state: String,
        /// Seconds left on a live lease; `NULL` when there is none or it ran out.
        lease_left: Option<f64>,
    }
    let held: Vec<HeldRow> = sqlx::query_as(
        "SELECT key, state,
                CASE WHEN lease_until > now()
                     THEN extract(epoch FROM lease_until - now())::float8 END AS lease_left
         FROM deliveries
         WHERE key = ANY($1) ORDER BY key FOR UPDATE",
    )
    .bind(&seen)
    .fetch_all(&mut *tx)
    .await?;
    for row in held {
        // The column's CHECK admits only these; another would be a newer schema's.
        let state = State::parse(&row.state).ok_or_else(|| {
            sqlx::Error::Decode(
                format!("delivery {}: unknown state {:?}", row.key, row.state).into(),
            )
        })?;
        let left = row
            .lease_left
            .and_then(|s| Duration::try_from_secs_f64(s).ok());
        states.insert(row.key, (state, left));
    }
    Ok(states)
}

/// What a claim does with one request.
enum Step {
    Lease,
    Decided(Claim),
}

/// Each request's step, by the guards' verdict and the state the row is in; and the
/// `(key, state, detail)` rows to write for those decided without a send.
fn next_steps<'a>(
    requests: &'a [ClaimRequest<'_>],
    refused_now: &HashMap<usize, Suppressed>,
    states: &HashMap<String, Held>,
) -> (Vec<Step>, Vec<(&'a str, State, &'static str)>) {
    let mut steps = Vec::with_capacity(requests.len());
    let mut settle = Vec::new();
    for (i, r) in requests.iter().enumerate() {
        let key = r.delivery.key.as_str();
        if let Some(&reason) = refused_now.get(&i) {
            settle.push((key, State::Suppressed, reason.as_str()));
            steps.push(Step::Decided(Claim::Suppressed(reason)));
            continue;
        }
        let (state, leased) = states.get(key).copied().unwrap_or((State::Pending, None));
        steps.push(match (state, leased) {
            (State::Pending | State::Failed, _) => Step::Lease,
            (State::Sending, Some(remaining)) => Step::Decided(Claim::Busy { remaining }),
            (State::Sending, None) => match r.after_unknown {
                AfterUnknown::Resend => Step::Lease,
                AfterUnknown::GiveUp => {
                    settle.push((
                        key,
                        State::Unknown,
                        "an earlier attempt was interrupted; the peer may have it",
                    ));
                    Step::Decided(Claim::GaveUp)
                }
            },
            (settled @ (State::Sent | State::Suppressed | State::Unknown), _) => {
                Step::Decided(Claim::Settled(settled))
            }
        });
    }
    (steps, settle)
}

/// Leases the rows whose step is a send (`sending`, one more attempt, `lease` long);
/// returns each one's attempt number.
async fn take_leases(
    tx: &mut sqlx::PgConnection,
    requests: &[ClaimRequest<'_>],
    steps: &[Step],
    lease: Duration,
) -> Result<HashMap<String, i32>, sqlx::Error> {
    let mut to_lease: Vec<&str> = requests
        .iter()
        .zip(steps)
        .filter(|(_, s)| matches!(s, Step::Lease))
        .map(|(r, _)| r.delivery.key.as_str())
        .collect();
    if to_lease.is_empty() {
        return Ok(HashMap::new());
    }
    to_lease.sort_unstable();
    #[derive(sqlx::FromRow)]
    struct Leased {
        key: String,
        attempts: i32,
    }
    Ok(sqlx::query_as::<_, Leased>(
        "UPDATE deliveries
         SET state = $3, attempts = attempts + 1,
             lease_until = now() + make_interval(secs => $2), updated_at = now()
         WHERE key = ANY($1)
         RETURNING key, attempts",
    )
    .bind(&to_lease)
    .bind(lease.as_secs_f64())
    .bind(State::Sending.as_str())
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|l| (l.key, l.attempts))
    .collect())
}

/// Writes `(key, state, detail)` for each row, ending any lease.
async fn set_states(
    tx: &mut sqlx::PgConnection,
    rows: &[(&str, State, &str)],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE deliveries d
         SET state = v.state, detail = v.detail, lease_until = NULL, updated_at = now()
         FROM unnest($1::text[], $2::text[], $3::text[]) AS v(key, state, detail)
         WHERE d.key = v.key",
    )
    .bind(rows.iter().map(|r| r.0).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.2).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// How one attempt of a batch ended.
#[derive(Debug)]
pub struct Finished<'a> {
    pub key: &'a str,
    pub attempt: i32,
    /// `None`: sent. Otherwise the failure's kind decides the row's state: `pending`
    /// (to be sent again), `failed`, or `unknown`.
    pub failure: Option<&'a SendFailure>,
}

/// Writes how each attempt ended, in one transaction. `Sent` is written whatever the
/// lease says (it is the truth); the others only while their attempt still holds the
/// row, so a stale worker cannot undo a newer attempt's state.
pub async fn finish_batch(pool: &PgPool, done: &[Finished<'_>]) -> Result<(), sqlx::Error> {
    let mut sent: Vec<&str> = Vec::new();
    let mut ended: Vec<(&str, i32, State, String)> = Vec::new();
    for f in done {
        let Some(failure) = f.failure else {
            sent.push(f.key);
            continue;
        };
        let state = State::after(failure.kind);
        // A peer's words: a NUL in them must not make the outcome unrecordable.
        let detail = shared::db::storable_text(&failure.to_string())
            .chars()
            .take(500)
            .collect();
        ended.push((f.key, f.attempt, state, detail));
    }
    sent.sort_unstable();
    ended.sort_unstable_by_key(|e| e.0);
    let mut tx = shared::db::begin_batch(pool).await?;
    if !sent.is_empty() {
        sqlx::query(
            // A confirmation sent, its address is masked (SPEC §4.7) as
            // `shared::phone::mask` writes it: `i***@mail.ru`. A reply's number stays
            // (operators answer "did you get my SMS?" by it) until the row ages out.
            "UPDATE deliveries SET state = $2, sent_at = now(), lease_until = NULL,
                 detail = NULL, updated_at = now(),
                 recipient = CASE WHEN channel = 'email' AND recipient LIKE '%@%'
                                  THEN left(split_part(recipient, '@', 1), 1) || '***@'
                                       || substr(recipient, strpos(recipient, '@') + 1)
                                  ELSE recipient END
             WHERE key = ANY($1)",
        )
        .bind(&sent)
        .bind(State::Sent.as_str())
        .execute(&mut *tx)
        .await?;
    }
    if !ended.is_empty() {
        sqlx::query(
            "UPDATE deliveries d
             SET state = v.state, detail = v.detail, lease_until = NULL, updated_at = now()
             FROM unnest($1::text[], $2::int[], $3::text[], $4::text[])
                  AS v(key, attempt, state, detail)
             WHERE d.key = v.key AND d.state = $5 AND d.attempts = v.attempt",
        )
        .bind(ended.iter().map(|e| e.0).collect::<Vec<_>>())
        .bind(ended.iter().map(|e| e.1).collect::<Vec<_>>())
        .bind(ended.iter().map(|e| e.2.as_str()).collect::<Vec<_>>())
        .bind(ended.iter().map(|e| e.3.as_str()).collect::<Vec<_>>())
        .bind(State::Sending.as_str())
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The states are the ones the migration's CHECK admits, each read back as itself.
    #[test]
    fn states_match_the_schema() {
        let migration = include_str!("../migrations/0001_deliveries.sql");
        for state in State::ALL {
            assert_eq!(State::parse(state.as_str()), Some(state));
            assert!(
                migration.contains(&format!("'{}'", state.as_str())),
                "{state} is not in the CHECK"
            );
        }
        assert_eq!(State::parse("delivered"), None);
    }
}
