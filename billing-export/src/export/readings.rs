//! `GET /v1/exports/{YYYY-MM}.csv`: the latest accepted reading per meter in the
//! period.
//!
//! "Latest" follows the supersession chain first: a reading that another stored
//! reading names in `supersedes` is never listed, whatever order the events arrived
//! in. If more than one reading of a meter is left (a link of the chain has not
//! arrived yet), the one received last wins (`received_at`, then arrival order).

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use futures::TryStreamExt;
use shared::events::Period;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{CsvChunks, ExportError};

pub const COLUMNS: [&str; 9] = [
    "account",
    "meter",
    "period",
    "t1",
    "t2",
    "t3",
    "received_at",
    "channel",
    "reading_id",
];

/// One line of the report: the latest reading of one meter in the period.
#[derive(sqlx::FromRow)]
struct Row {
    account: String,
    meter: String,
    period: String,
    /// One value per zone (T1, T2, T3).
    vals: Vec<i64>,
    received_at: DateTime<Utc>,
    channel: String,
    reading_id: Uuid,
}

/// Writes the report for `period`; `received_at` is written in `zone`.
pub async fn write(
    conn: &mut PgConnection,
    period: Period,
    zone: Tz,
    out: &mut CsvChunks,
) -> Result<(), ExportError> {
    out.header(&COLUMNS)?;
    // readings_period_meter finds the period (and gives the order, where the planner
    // prefers an index scan to a sort); any sort happens in PostgreSQL (work_mem,
    // spilling to disk), never here: rows reach us one by one either way. The
    // `IS NOT NULL` lets the anti-join use the small partial index on `supersedes`.
    let mut rows = sqlx::query_as::<_, Row>(
        "SELECT DISTINCT ON (r.account, r.meter)
                r.account, r.meter, r.period, r.vals, r.received_at, r.channel, r.reading_id
         FROM readings r
         WHERE r.period = $1
           AND NOT EXISTS (SELECT 1 FROM readings s WHERE s.supersedes = r.reading_id AND s.supersedes IS NOT NULL)
         ORDER BY r.account, r.meter, r.received_at DESC, r.seq DESC",
    )
    .bind(period.to_string())
    .fetch(&mut *conn);
    while let Some(Row {
        account,
        meter,
        period,
        vals,
        received_at,
        channel,
        reading_id,
    }) = rows.try_next().await?
    {
        let zone_value = |i: usize| vals.get(i).map(i64::to_string).unwrap_or_default();
        let received = received_at
            .with_timezone(&zone)
            .to_rfc3339_opts(SecondsFormat::AutoSi, false);
        out.row([
            account.as_str(),
            meter.as_str(),
            period.as_str(),
            &zone_value(0),
            &zone_value(1),
            &zone_value(2),
            &received,
            channel.as_str(),
            &reading_id.to_string(),
        ])
        .await?;
    }
    Ok(())
}
