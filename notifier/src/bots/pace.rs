//! Pacing of the answers in chats: at most one a second to a Telegram chat (two to a
//! MAX chat) and 30 a second to each platform (SPEC §4.9) — whatever the number of
//! notifier replicas, because the schedule lives in the notifier's database, as the
//! reply quotas do.
//!
//! A platform's second is cut into 30 slots; a send takes one (`chat_slots`), so two
//! sends never share one. A chat has a lane (`chat_pace`): the earliest moment its
//! next answer may go. Each send goes in the first free slot at or after its chat's
//! lane, and moves the lane on by the chat's gap — so one chat's backlog takes later
//! slots and leaves the earlier ones to the other chats. [`schedule`] is that rule, a
//! pure function; [`Pacer::reserve`] runs it for a batch in one transaction that first
//! locks the platform's row, so reservations on a platform take turns, on the
//! database's clock (the one every replica shares). A slot further off than the
//! horizon is not taken: the send comes back then ([`Slot::Later`]) rather than hold
//! its claim's lease while it waits.
//!
//! The cost is one short transaction per batch of answers. A wait counts from the
//! reservation; the milliseconds between it and the sleep only make a send later.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;

use super::Platform;

/// Farthest ahead a send's slot is reserved.
pub const HORIZON: Duration = Duration::from_secs(5);
/// How long spent lanes and slots are kept: after that they hold nothing.
const KEEP_SPENT: Duration = Duration::from_secs(3600);
const MICROS: i64 = 1_000_000;

/// How fast a platform's answers may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Between two answers to one chat.
    pub per_chat: Duration,
    /// Answers a second to everyone on the platform: the slots of a second.
    pub per_second: i64,
}

impl Platform {
    /// Telegram: about one message a second to a chat, 30 a second in all; MAX: two a
    /// second to a chat, 30 requests a second to its API.
    pub fn pace(self) -> Pace {
        match self {
            Platform::Telegram => Pace {
                per_chat: Duration::from_secs(1),
                per_second: 30,
            },
            Platform::Max => Pace {
                per_chat: Duration::from_millis(500),
                per_second: 30,
            },
        }
    }
}

impl Pace {
    /// The first slot that starts at or after `at`.
    fn slot_at(self, at: DateTime<Utc>) -> i64 {
        (at.timestamp_micros() * self.per_second + MICROS - 1).div_euclid(MICROS)
    }

    /// When slot `k` starts.
    fn start(self, k: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(k * MICROS / self.per_second)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// When one send may go, counted from its reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Reserved: send after this wait (zero: now).
    After(Duration),
    /// Not reserved — the chat's lane or the platform's slots are taken past the
    /// horizon: come back after this.
    Later(Duration),
}

/// A platform's schedule as a reservation finds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lanes {
    /// The platform's slots taken from now on.
    pub taken: BTreeSet<i64>,
    /// When each chat's next answer may go (a chat not listed: any time).
    pub chats: HashMap<String, DateTime<Utc>>,
}

/// The slot of each send to `chats` (one entry per send, in the order of their
/// messages) at `now`; the reserved ones are added to `lanes`.
pub fn schedule(
    now: DateTime<Utc>,
    pace: Pace,
    horizon: Duration,
    lanes: &mut Lanes,
    chats: &[&str],
) -> Vec<Slot> {
    let horizon = TimeDelta::from_std(horizon).unwrap_or(TimeDelta::MAX);
    let per_chat = TimeDelta::from_std(pace.per_chat).unwrap_or(TimeDelta::MAX);
    let wait = |at: DateTime<Utc>| (at - now).to_std().unwrap_or(Duration::ZERO);
    chats
        .iter()
        .map(|&chat| {
            let free = lanes.chats.get(chat).copied().unwrap_or(now).max(now);
            let mut k = pace.slot_at(free);
            while lanes.taken.contains(&k) {
                k += 1;
            }
            let at = pace.start(k);
            if at - now > horizon {
                return Slot::Later(wait(at));
            }
            lanes.taken.insert(k);
            lanes.chats.insert(chat.to_owned(), at + per_chat);
            Slot::After(wait(at))
        })
        .collect()
}

/// The schedule in the notifier's database.
#[derive(Debug, Clone)]
pub struct Pacer {
    pool: PgPool,
    horizon: Duration,
}

#[derive(sqlx::FromRow)]
struct LaneRow {
    lane: String,
    next_at: DateTime<Utc>,
    /// The database's clock at the reservation.
    now: DateTime<Utc>,
}

impl Pacer {
    pub fn new(pool: PgPool) -> Pacer {
        Pacer {
            pool,
            horizon: HORIZON,
        }
    }

    /// Reserves the slots of sends on `platform` to `chats` (one entry per send, in
    /// the order of their messages).
    pub async fn reserve(
        &self,
        platform: Platform,
        chats: &[&str],
    ) -> Result<Vec<Slot>, sqlx::Error> {
        if chats.is_empty() {
            return Ok(Vec::new());
        }
        let pace = platform.pace();
        let name = platform.as_str();
        // The platform's own row sorts first: every reservation locks it before its
        // chats' rows, so reservations on a platform take turns and never deadlock.
        let mut lanes: Vec<String> = chats.iter().map(|c| lane(platform, c)).collect();
        lanes.push(name.to_owned());
        lanes.sort_unstable();
        lanes.dedup();

        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO chat_pace (lane, next_at)
             SELECT l, now() FROM unnest($1::text[]) AS t(l) ORDER BY l
             ON CONFLICT (lane) DO NOTHING",
        )
        .bind(&lanes)
        .execute(&mut *tx)
        .await?;
        let rows: Vec<LaneRow> = sqlx::query_as(
            "SELECT lane, next_at, now() AS now FROM chat_pace
             WHERE lane = ANY($1) ORDER BY lane FOR UPDATE",
        )
        .bind(&lanes)
        .fetch_all(&mut *tx)
        .await?;
        let now = rows.first().map(|r| r.now).unwrap_or_else(Utc::now);
        let prefix = format!("{name}:");
        let chat_lanes = rows
            .into_iter()
            .filter_map(|r| Some((r.lane.strip_prefix(&prefix)?.to_owned(), r.next_at)))
            .collect();
        let taken: Vec<i64> =
            sqlx::query_scalar("SELECT slot FROM chat_slots WHERE platform = $1 AND slot >= $2")
                .bind(name)
                .bind(pace.slot_at(now))
                .fetch_all(&mut *tx)
                .await?;
        let before: BTreeSet<i64> = taken.into_iter().collect();
        let mut schedule_now = Lanes {
            taken: before.clone(),
            chats: chat_lanes,
        };
        let slots = schedule(now, pace, self.horizon, &mut schedule_now, chats);

        let new: Vec<i64> = schedule_now.taken.difference(&before).copied().collect();
        sqlx::query("INSERT INTO chat_slots (platform, slot) SELECT $1, unnest($2::bigint[])")
            .bind(name)
            .bind(&new)
            .execute(&mut *tx)
            .await?;
        let (names, times): (Vec<String>, Vec<DateTime<Utc>>) = schedule_now
            .chats
            .into_iter()
            .map(|(chat, at)| (lane(platform, &chat), at))
            .unzip();
        sqlx::query(
            "UPDATE chat_pace p SET next_at = v.next_at
             FROM unnest($1::text[], $2::timestamptz[]) AS v(lane, next_at)
             WHERE p.lane = v.lane",
        )
        .bind(&names)
        .bind(&times)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(slots)
    }

    /// Holds a chat's lane for `wait` (the platform answered `429` with it), so that
    /// the chat's other answers wait too.
    pub async fn hold(
        &self,
        platform: Platform,
        chat: &str,
        wait: Duration,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO chat_pace (lane, next_at) VALUES ($1, now() + make_interval(secs => $2))
             ON CONFLICT (lane) DO UPDATE SET next_at = greatest(chat_pace.next_at, excluded.next_at)",
        )
        .bind(lane(platform, chat))
        .bind(wait.as_secs_f64())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes the lanes and slots whose time passed long ago; returns how many rows.
    pub async fn prune(&self) -> Result<u64, sqlx::Error> {
        let keep = KEEP_SPENT.as_secs_f64();
        let lanes =
            sqlx::query("DELETE FROM chat_pace WHERE next_at < now() - make_interval(secs => $1)")
                .bind(keep)
                .execute(&self.pool)
                .await?
                .rows_affected();
        let mut slots = 0;
        for platform in [Platform::Telegram, Platform::Max] {
            let pace = platform.pace();
            let cut = pace
                .slot_at(Utc::now() - TimeDelta::from_std(KEEP_SPENT).unwrap_or(TimeDelta::zero()));
            slots += sqlx::query("DELETE FROM chat_slots WHERE platform = $1 AND slot < $2")
                .bind(platform.as_str())
                .bind(cut)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(lanes + slots)
    }
}

/// A chat's lane: `<platform>:<chat>`.
fn lane(platform: Platform, chat: &str) -> String {
    format!("{}:{chat}", platform.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A moment on a slot boundary (a whole second).
    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
            .expect("time")
            .to_utc()
    }

    /// Waits in whole milliseconds, `l` for not reserved (1/30 s is not one).
    fn waits(slots: &[Slot]) -> Vec<(char, u128)> {
        slots
            .iter()
            .map(|s| match s {
                Slot::After(d) => ('a', d.as_millis()),
                Slot::Later(d) => ('l', d.as_millis()),
            })
            .collect()
    }

    /// The waits of sends to `chats` on a schedule with nothing taken yet.
    fn fresh(platform: Platform, chats: &[&str]) -> Vec<(char, u128)> {
        waits(&schedule(
            t0(),
            platform.pace(),
            HORIZON,
            &mut Lanes::default(),
            chats,
        ))
    }

    #[test]
    fn different_chats_go_a_thirtieth_of_a_second_apart() {
        assert_eq!(
            fresh(Platform::Telegram, &["1", "2", "3"]),
            vec![('a', 0), ('a', 33), ('a', 66)]
        );
    }

    #[test]
    fn one_chats_answers_go_a_second_apart_in_order_and_do_not_hold_up_the_others() {
        // Chat 1 at 0, 1 s, 2 s; chats 2 and 3 take the slots right after the first.
        assert_eq!(
            fresh(Platform::Telegram, &["1", "1", "2", "1", "3"]),
            vec![('a', 0), ('a', 1000), ('a', 33), ('a', 2000), ('a', 66)]
        );
        // MAX's chats take two a second.
        assert_eq!(
            fresh(Platform::Max, &["9", "9", "9"]),
            vec![('a', 0), ('a', 500), ('a', 1000)]
        );
    }

    #[test]
    fn a_slot_taken_by_another_replica_is_passed_over() {
        let pace = Platform::Telegram.pace();
        let first = pace.slot_at(t0());
        let mut lanes = Lanes {
            taken: BTreeSet::from([first, first + 1, first + 3]),
            chats: HashMap::new(),
        };
        let slots = schedule(t0(), pace, HORIZON, &mut lanes, &["1", "2"]);
        assert_eq!(waits(&slots), vec![('a', 66), ('a', 133)]);
    }

    #[test]
    fn beyond_the_horizon_nothing_is_reserved() {
        let mut lanes = Lanes::default();
        let chats = ["7"; 8];
        let slots = schedule(t0(), Platform::Telegram.pace(), HORIZON, &mut lanes, &chats);
        assert_eq!(
            waits(&slots),
            vec![
                ('a', 0),
                ('a', 1000),
                ('a', 2000),
                ('a', 3000),
                ('a', 4000),
                ('a', 5000),
                ('l', 6000),
                ('l', 6000)
            ]
        );
        // The lane holds the sixth answer's gap, not the unreserved ones'.
        assert_eq!(lanes.chats["7"], t0() + TimeDelta::seconds(6));
        assert_eq!(lanes.taken.len(), 6);
    }

    #[test]
    fn a_chat_held_until_later_waits_and_a_past_lane_is_now() {
        let mut lanes = Lanes {
            taken: BTreeSet::new(),
            chats: HashMap::from([
                ("1".to_owned(), t0() + TimeDelta::milliseconds(700)),
                ("2".to_owned(), t0() - TimeDelta::hours(1)),
            ]),
        };
        let slots = schedule(
            t0(),
            Platform::Telegram.pace(),
            HORIZON,
            &mut lanes,
            &["1", "2"],
        );
        // 700 ms is slot 21 (700); chat 2 may go at once.
        assert_eq!(waits(&slots), vec![('a', 700), ('a', 0)]);
    }

    #[test]
    fn slots_are_thirtieths_of_a_second_from_the_epoch() {
        let pace = Platform::Max.pace();
        let k = pace.slot_at(t0());
        assert_eq!(pace.start(k), t0());
        assert_eq!(pace.slot_at(t0() + TimeDelta::microseconds(1)), k + 1);
        assert_eq!(pace.start(k + 30), t0() + TimeDelta::seconds(1));
    }
}
