//! The start page, "the window at a glance" (SPEC §4.8): messages per day of this
//! reading window against the last one, accepted and refused by reason, the share of
//! active meters with a reading this period, the billing backlog. (Dead letters come
//! from the broker, [`crate::dead::depths`].) The figures that read a whole window or
//! the whole registry are [`Figures`], counted in the background ([`crate::kept`]);
//! the cheap ones are [`Live`], read on each request.

use chrono::{DateTime, Datelike as _, Days, NaiveDate, TimeZone as _, Utc};
use chrono_tz::Tz;
use serde::Serialize;
use shared::calendar::Window;
use shared::events::Period;
use sqlx::{PgConnection, PgPool};

/// One reading window: its period and its first and last instant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Span {
    pub period: Period,
    pub opens: DateTime<Utc>,
    pub closes: DateTime<Utc>,
}

impl Span {
    pub fn of(window: &Window, period: Period) -> Span {
        let opens = NaiveDate::from_ymd_opt(period.year(), period.month(), window.start_day)
            .or_else(|| NaiveDate::from_ymd_opt(period.year(), period.month(), 1))
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .and_then(|t| window.zone.from_local_datetime(&t).earliest())
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or(DateTime::<Utc>::UNIX_EPOCH);
        Span {
            period,
            opens,
            closes: window.closes_at(period),
        }
    }

    /// The window's days, in the company zone.
    pub fn days(&self, zone: Tz) -> Vec<NaiveDate> {
        let first = self.opens.with_timezone(&zone).date_naive();
        let last = (self.closes - chrono::Duration::seconds(1))
            .with_timezone(&zone)
            .date_naive();
        let mut days = Vec::new();
        let mut d = first;
        while d <= last && days.len() < 31 {
            days.push(d);
            d = d
                .checked_add_days(Days::new(1))
                .unwrap_or(last.succ_opt().unwrap_or(last));
        }
        days
    }
}

/// The window to show at `now`: the current month's once it has opened, else the
/// previous one (which is then the last closed window).
pub fn current(window: &Window, now: DateTime<Utc>) -> Span {
    let this = Period::of(&now.with_timezone(&window.zone));
    let span = Span::of(window, this);
    if now >= span.opens {
        span
    } else {
        Span::of(window, this.previous())
    }
}

/// The figures that read a window's messages or the whole registry: ~1.2 s a time at
/// 1,000,000 accounts and 5,000,000 messages (docs/performance.md), so they are
/// counted in the background and kept ([`crate::kept`]), never per request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Figures {
    pub this: Span,
    pub last: Span,
    /// Messages per day of the window, in the order of its days.
    pub this_days: Vec<(NaiveDate, i64)>,
    pub last_days: Vec<(NaiveDate, i64)>,
    pub accepted: i64,
    /// Refused messages per reason code, most first.
    pub refused: Vec<(String, i64)>,
    pub active_meters: i64,
    pub meters_with_reading: i64,
    /// When they were counted: taken just before the snapshot they were all read in,
    /// so the data is at least this recent.
    pub as_of: DateTime<Utc>,
}

/// What the start page reads on every request: index lookups of well under a
/// millisecond (docs/performance.md), so always current.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Live {
    /// Readings billing-export has not yet delivered to billing.
    pub billing_backlog: i64,
    pub replies_sent_today: i64,
}

/// Messages of a window per day of the company zone, `(day, outcome, reason, count)`.
/// One pass over the window's rows gives both the chart and the decisions (a second
/// pass over ~140,000 rows of a month cost ~100 ms at 5,000,000 messages,
/// docs/performance.md).
async fn decisions_per_day(
    db: &mut PgConnection,
    span: &Span,
    zone: Tz,
) -> Result<Vec<(NaiveDate, String, Option<String>, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT (received_at AT TIME ZONE $3)::date AS day, outcome, reason, count(*)
         FROM validator.console_messages
         WHERE received_at >= $1 AND received_at < $2 GROUP BY day, outcome, reason",
    )
    .bind(span.opens)
    .bind(span.closes)
    .bind(zone.name())
    .fetch_all(db)
    .await
}

async fn per_day(
    db: &mut PgConnection,
    span: &Span,
    zone: Tz,
) -> Result<Vec<(NaiveDate, i64)>, sqlx::Error> {
    let rows: Vec<(NaiveDate, i64)> = sqlx::query_as(
        "SELECT (received_at AT TIME ZONE $3)::date AS day, count(*)
         FROM validator.console_messages
         WHERE received_at >= $1 AND received_at < $2 GROUP BY day",
    )
    .bind(span.opens)
    .bind(span.closes)
    .bind(zone.name())
    .fetch_all(db)
    .await?;
    Ok(days_of(span, zone, &rows))
}

/// Every day of the window with its count (0 where nothing came).
fn days_of(span: &Span, zone: Tz, rows: &[(NaiveDate, i64)]) -> Vec<(NaiveDate, i64)> {
    span.days(zone)
        .into_iter()
        .map(|d| (d, rows.iter().filter(|r| r.0 == d).map(|r| r.1).sum()))
        .collect()
}

/// Counts the [`Figures`] of the window open at `now`, all in one read-only snapshot
/// (the chart, the decisions and the share of meters agree with one another).
pub async fn count(
    pool: &PgPool,
    window: &Window,
    now: DateTime<Utc>,
) -> Result<Figures, sqlx::Error> {
    let this = current(window, now);
    let last = Span::of(window, this.period.previous());
    let zone = window.zone;
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let as_of = Utc::now();
    let decided = decisions_per_day(&mut tx, &this, zone).await?;
    let this_days = days_of(
        &this,
        zone,
        &decided.iter().map(|d| (d.0, d.3)).collect::<Vec<_>>(),
    );
    let last_days = per_day(&mut tx, &last, zone).await?;
    let mut outcomes: Vec<(String, Option<String>, i64)> = Vec::new();
    for (_, outcome, reason, n) in decided {
        match outcomes
            .iter_mut()
            .find(|o| o.0 == outcome && o.1 == reason)
        {
            Some(o) => o.2 += n,
            None => outcomes.push((outcome, reason, n)),
        }
    }
    let accepted = outcomes
        .iter()
        .filter(|o| o.0 == "accepted")
        .map(|o| o.2)
        .sum();
    let mut refused: Vec<(String, i64)> = outcomes
        .into_iter()
        .filter(|o| o.0 != "accepted")
        .map(|o| (o.1.unwrap_or_else(|| "?".into()), o.2))
        .collect();
    refused.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    // The period's readings from billing-export's view: it holds every accepted
    // reading too, and its index (period, account, meter, …) is what its export reads
    // them by; validator.console_readings has no index leading with the period, and
    // scanning all its rows took 2 s at 5,000,000 messages (docs/performance.md).
    let (active_meters, meters_with_reading): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM validator.console_registry WHERE status = 'active'),
                (SELECT count(*) FROM (SELECT DISTINCT b.account, b.meter
                   FROM billing.console_deliveries b
                   JOIN validator.console_registry m USING (account, meter)
                   WHERE b.period = $1 AND m.status = 'active') d)",
    )
    .bind(this.period.to_string())
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Figures {
        this,
        last,
        this_days,
        last_days,
        accepted,
        refused,
        active_meters,
        meters_with_reading,
        as_of,
    })
}

/// Reads the [`Live`] figures at `now`.
pub async fn live(pool: &PgPool, zone: Tz, now: DateTime<Utc>) -> Result<Live, sqlx::Error> {
    let billing_backlog: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM billing.console_deliveries WHERE delivery = 'pending'",
    )
    .fetch_one(pool)
    .await?;
    let today = now.with_timezone(&zone).date_naive();
    let day_start = today
        .and_hms_opt(0, 0, 0)
        .and_then(|t| zone.from_local_datetime(&t).earliest())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now);
    let replies_sent_today: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM notifier.console_deliveries
         WHERE channel = 'sms' AND state = 'sent' AND sent_at >= $1",
    )
    .bind(day_start)
    .fetch_one(pool)
    .await?;
    Ok(Live {
        billing_backlog,
        replies_sent_today,
    })
}

/// The day of the month, for chart labels.
pub fn day_label(d: NaiveDate) -> String {
    d.day().to_string()
}
