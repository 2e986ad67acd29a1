//! `GET /v1/exports/{YYYY-MM}/missing.csv`: every active meter (single- or
//! multi-meter account alike) of the registry with no accepted reading in the
//! period, with how long it has gone without one and what to bill instead.
//!
//! The registry is read only through the view the validator publishes for this
//! purpose (`validator.registry_meters`, SPEC §4.7). A meter whose registry baseline
//! is in the period itself is not listed: billing already holds a reading for it
//! (taken through another channel). The database gathers each meter's history;
//! the rule itself is [`super::estimate`], which falls back on billing's
//! `average_kwh` (the view's column since validator migration 0003) where the
//! system holds fewer than two readings.

use futures::TryStreamExt;
use shared::events::Period;
use sqlx::PgConnection;

use super::estimate::{self, Point};
use super::{CsvChunks, ExportError};

pub const COLUMNS: [&str; 5] = [
    "account",
    "meter",
    "months_missing",
    "method",
    "estimate_kwh",
];

/// One active meter without a reading in the period, with what the estimate needs.
#[derive(sqlx::FromRow)]
struct Row {
    account: String,
    meter: String,
    /// The registry's consumption norm, as PostgreSQL writes the number.
    normative_kwh: Option<String>,
    /// Billing's average monthly consumption from the registry, likewise.
    average_kwh: Option<String>,
    /// The registry's last reading (`YYYY-MM` and its values), if it has one.
    baseline_period: Option<String>,
    baseline_values: Option<Vec<i64>>,
    /// The periods with accepted readings before this one, oldest first, and their
    /// values as a JSON array of arrays (in the same order).
    periods: Option<Vec<String>>,
    vals: Option<String>,
}

/// Writes the report for `period`.
pub async fn write(
    conn: &mut PgConnection,
    period: Period,
    out: &mut CsvChunks,
) -> Result<(), ExportError> {
    out.header(&COLUMNS)?;
    // `cur`: the latest reading of each meter and earlier period (same rule as the
    // period export); `hist`: those per meter, oldest first, values as JSON arrays
    // (PostgreSQL arrays of arrays do not decode into Rust).
    let mut rows = sqlx::query_as::<_, Row>(
        "WITH cur AS (
             SELECT DISTINCT ON (r.account, r.meter, r.period) r.account, r.meter, r.period, r.vals
             FROM readings r
             WHERE r.period < $1
               AND NOT EXISTS (SELECT 1 FROM readings s WHERE s.supersedes = r.reading_id AND s.supersedes IS NOT NULL)
             ORDER BY r.account, r.meter, r.period, r.received_at DESC, r.seq DESC
         ), hist AS (
             SELECT account, meter,
                    array_agg(period ORDER BY period) AS periods,
                    json_agg(vals ORDER BY period)::text AS vals
             FROM cur GROUP BY account, meter
         )
         SELECT m.account, m.meter, m.normative_kwh::text AS normative_kwh, m.average_kwh::text AS average_kwh,
                m.baseline_period, m.baseline_values,
                h.periods, h.vals
         FROM validator.registry_meters m
         LEFT JOIN hist h ON h.account = m.account AND h.meter = m.meter
         WHERE m.status = 'active'
           AND m.baseline_period IS DISTINCT FROM $1
           AND NOT EXISTS (SELECT 1 FROM readings r
                           WHERE r.period = $1 AND r.account = m.account AND r.meter = m.meter)
         ORDER BY m.account, m.meter",
    )
    .bind(period.to_string())
    .fetch(&mut *conn);
    while let Some(Row {
        account,
        meter,
        normative_kwh,
        average_kwh,
        baseline_period,
        baseline_values,
        periods,
        vals,
    }) = rows.try_next().await?
    {
        let accepted = accepted_points(&account, &meter, periods, vals.as_deref())?;
        let baseline = baseline_point(baseline_period.as_deref(), baseline_values);
        let history = estimate::history(period, accepted, baseline);
        let registry = estimate::Registry {
            normative_kwh: normative_kwh.as_deref(),
            average_kwh: average_kwh.as_deref(),
        };
        let e = estimate::estimate(period, &history, registry);
        let months = e.months_missing.map(|m| m.to_string()).unwrap_or_default();
        out.row([
            account.as_str(),
            meter.as_str(),
            &months,
            e.method.as_str(),
            e.kwh.as_deref().unwrap_or(""),
        ])
        .await?;
    }
    Ok(())
}

fn accepted_points(
    account: &str,
    meter: &str,
    periods: Option<Vec<String>>,
    vals: Option<&str>,
) -> Result<Vec<Point>, ExportError> {
    let (Some(periods), Some(vals)) = (periods, vals) else {
        return Ok(Vec::new());
    };
    let bad = |why: String| ExportError::Data(format!("history of {account}/{meter}: {why}"));
    let vals: Vec<Vec<u64>> = serde_json::from_str(vals).map_err(|e| bad(e.to_string()))?;
    if vals.len() != periods.len() {
        return Err(bad("periods and values differ in length".into()));
    }
    periods
        .iter()
        .zip(vals)
        .map(|(p, values)| {
            let period = p
                .parse()
                .map_err(|e: shared::events::PeriodError| bad(e.to_string()))?;
            Ok(Point { period, values })
        })
        .collect()
}

/// The registry's baseline, if it is complete. A malformed one (the view is another
/// service's data) is ignored rather than failing the whole report.
fn baseline_point(period: Option<&str>, values: Option<Vec<i64>>) -> Option<Point> {
    let period = period?.parse().ok()?;
    let values = values?
        .into_iter()
        .map(|v| u64::try_from(v).ok())
        .collect::<Option<Vec<u64>>>()?;
    (!values.is_empty()).then_some(Point { period, values })
}
