//! The account registry import (SPEC §4.6): `validator import-registry FILE.csv`.
//!
//! The billing system owns accounts and meters and exports them as CSV, one row per
//! meter. The import is an upsert: rows are checked one by one (a bad row is reported
//! with its line number and skipped; the good ones still load), streamed into a
//! temporary table with `COPY`, and merged into `meters` in one statement, so a million
//! rows load in seconds and a failed import changes nothing.

use std::io::Read;

use anyhow::Context as _;
use shared::events::Period;
use sqlx::PgPool;

/// Columns of the registry file, in the contract's order; [`AVERAGE_COLUMN`] may follow.
pub const HEADER: [&str; 10] = [
    "account",
    "meter",
    "zones",
    "digits",
    "status",
    "last_period",
    "last_t1",
    "last_t2",
    "last_t3",
    "normative_kwh",
];

/// The optional column after [`HEADER`]: billing's average monthly consumption of the
/// meter (SPEC §4.6). A file without it, or an empty value, stores none: an average
/// the billing system no longer states is not kept from an earlier import.
pub const AVERAGE_COLUMN: &str = "average_kwh";

/// Rows sent to PostgreSQL per COPY chunk.
const CHUNK_ROWS: usize = 20_000;
/// Row errors kept for the report (all are counted).
const MAX_REPORTED_ERRORS: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line in the file (the header is line 1).
    pub line: u64,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct ImportReport {
    pub rows_read: u64,
    pub rows_rejected: u64,
    /// Meters inserted or updated (a meter listed twice counts once: the last row wins).
    pub meters_upserted: u64,
    pub errors: Vec<RowError>,
}

/// One checked registry row.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistryRow {
    pub account: String,
    pub meter: String,
    pub zones: u8,
    pub digits: u8,
    pub active: bool,
    pub last: Option<(Period, Vec<u64>)>,
    pub normative_kwh: Option<String>,
    /// Billing's average monthly consumption, if the file gives one.
    pub average_kwh: Option<String>,
}

/// Positions of the contract's columns in the file's header (any order, any case),
/// and of the optional `average_kwh`.
struct Columns {
    required: [usize; 10],
    average: Option<usize>,
}

impl Columns {
    fn from_header(header: &csv::StringRecord) -> Result<Self, String> {
        let names: Vec<String> = header
            .iter()
            .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
            .collect();
        let mut idx = [0usize; 10];
        for (slot, wanted) in idx.iter_mut().zip(HEADER) {
            *slot = names.iter().position(|n| n == wanted).ok_or_else(|| {
                format!(
                    "header has no `{wanted}` column (expected: {})",
                    HEADER.join(",")
                )
            })?;
        }
        let average = names.iter().position(|n| n == AVERAGE_COLUMN);
        Ok(Columns {
            required: idx,
            average,
        })
    }

    fn get<'r>(&self, record: &'r csv::StringRecord, col: usize) -> &'r str {
        record.get(self.required[col]).map(str::trim).unwrap_or("")
    }

    fn average<'r>(&self, record: &'r csv::StringRecord) -> &'r str {
        self.average
            .and_then(|i| record.get(i))
            .map(str::trim)
            .unwrap_or("")
    }
}

fn parse_row(cols: &Columns, record: &csv::StringRecord) -> Result<RegistryRow, String> {
    let account = cols.get(record, 0);
    if account.is_empty() || account.len() > 32 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("account `{}` must be 1–32 digits", shown(account)));
    }
    let meter = cols.get(record, 1);
    if meter.is_empty() || meter.chars().count() > 64 || meter.chars().any(char::is_control) {
        return Err(format!(
            "meter `{}` must be 1–64 printable characters",
            shown(meter)
        ));
    }
    let zones: u8 = match cols.get(record, 2) {
        z @ ("1" | "2" | "3") => z.parse().map_err(|_| "zones".to_owned())?,
        other => return Err(format!("zones must be 1, 2 or 3 (got `{}`)", shown(other))),
    };
    let digits: u8 = cols
        .get(record, 3)
        .parse()
        .ok()
        .filter(|d| (1..=18).contains(d))
        .ok_or_else(|| format!("digits must be 1–18 (got `{}`)", shown(cols.get(record, 3))))?;
    let active = match cols.get(record, 4).to_ascii_lowercase().as_str() {
        "active" => true,
        "closed" => false,
        other => {
            return Err(format!(
                "status must be `active` or `closed` (got `{}`)",
                shown(other)
            ));
        }
    };
    let period = cols.get(record, 5);
    let values: Vec<&str> = (6..9).map(|c| cols.get(record, c)).collect();
    let last = if period.is_empty() {
        if values.iter().any(|v| !v.is_empty()) {
            return Err("last_t* given without last_period".into());
        }
        None
    } else {
        let period: Period = period
            .parse()
            .map_err(|e: shared::events::PeriodError| e.to_string())?;
        let mut parsed = Vec::with_capacity(usize::from(zones));
        for (i, v) in values.iter().enumerate() {
            let needed = i < usize::from(zones);
            match (needed, v.is_empty()) {
                (true, true) => {
                    return Err(format!(
                        "last_t{} is empty but the meter has {zones} zone(s)",
                        i + 1
                    ));
                }
                (false, false) => {
                    return Err(format!(
                        "last_t{} is given but the meter has {zones} zone(s)",
                        i + 1
                    ));
                }
                (false, true) => {}
                (true, false) => {
                    let value: u64 = v.parse().map_err(|_| {
                        format!("last_t{} `{}` is not a whole number", i + 1, shown(v))
                    })?;
                    if value.checked_ilog10().map_or(1, |l| l + 1) > u32::from(digits) {
                        return Err(format!(
                            "last_t{} {value} has more than {digits} digits",
                            i + 1
                        ));
                    }
                    parsed.push(value);
                }
            }
        }
        Some((period, parsed))
    };
    let normative_kwh = kwh("normative_kwh", cols.get(record, 9))?;
    let average_kwh = kwh(AVERAGE_COLUMN, cols.average(record))?;
    Ok(RegistryRow {
        account: account.to_owned(),
        meter: meter.to_owned(),
        zones,
        digits,
        active,
        last,
        normative_kwh,
        average_kwh,
    })
}

/// A monthly kWh figure of the file (`,` or `.` as the decimal mark), as the
/// `numeric(12, 3)` column takes it; empty is none.
fn kwh(column: &str, text: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let n = text.replace(',', ".");
    match n.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..1e9).contains(&v) => Ok(Some(n)),
        _ => Err(format!(
            "{column} `{}` is not a non-negative number",
            shown(text)
        )),
    }
}

fn shown(s: &str) -> String {
    let mut out: String = s.chars().take(24).collect();
    if s.chars().count() > 24 {
        out.push('…');
    }
    out
}

/// Appends a value in COPY text format.
fn copy_text(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

fn copy_line(out: &mut String, line: u64, row: &RegistryRow) {
    use std::fmt::Write as _;
    let _ = write!(out, "{line}\t");
    copy_text(out, &row.account);
    out.push('\t');
    copy_text(out, &row.meter);
    let _ = write!(
        out,
        "\t{}\t{}\t{}\t",
        row.zones,
        row.digits,
        if row.active { "active" } else { "closed" }
    );
    for figure in [&row.normative_kwh, &row.average_kwh] {
        match figure {
            Some(n) => out.push_str(n),
            None => out.push_str("\\N"),
        }
        out.push('\t');
    }
    match &row.last {
        Some((period, values)) => {
            let list: Vec<String> = values.iter().map(u64::to_string).collect();
            let _ = write!(out, "{period}\t{{{}}}", list.join(","));
        }
        None => out.push_str("\\N\t\\N"),
    }
    out.push('\n');
}

/// Imports a registry file. Errors in rows are reported, not fatal; an unreadable
/// file, a wrong header or a database failure is an error and changes nothing.
pub async fn import(pool: &PgPool, input: impl Read) -> anyhow::Result<ImportReport> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::None)
        .from_reader(input);
    let header = reader.headers().context("reading the header row")?.clone();
    let cols = Columns::from_header(&header).map_err(anyhow::Error::msg)?;

    let mut tx = pool
        .begin()
        .await
        .context("starting the import transaction")?;
    sqlx::query(
        "CREATE TEMP TABLE registry_import (
            line bigint, account text, meter text, zones smallint, digits smallint, status text,
            normative_kwh numeric(12,3), average_kwh numeric(12,3), baseline_period text, baseline_values bigint[]
         ) ON COMMIT DROP",
    )
    .execute(&mut *tx)
    .await?;

    let mut report = ImportReport::default();
    let mut buffer = String::with_capacity(CHUNK_ROWS * 64);
    let mut rows_in_buffer = 0usize;
    {
        let mut copy = tx
            .copy_in_raw(
                "COPY registry_import (line, account, meter, zones, digits, status, normative_kwh, average_kwh, baseline_period, baseline_values) FROM STDIN",
            )
            .await?;
        let mut record = csv::StringRecord::new();
        loop {
            let line = reader.position().line();
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(e) => {
                    // A broken record (bad UTF-8, unbalanced quotes) is one bad row.
                    report.rows_read += 1;
                    push_error(&mut report, line, format!("unreadable row: {e}"));
                    if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                        return Err(anyhow::Error::new(e).context("reading the registry file"));
                    }
                    continue;
                }
            }
            report.rows_read += 1;
            let line = record.position().map_or(line, |p| p.line());
            if record.iter().all(|f| f.trim().is_empty()) {
                report.rows_read -= 1; // blank line
                continue;
            }
            match parse_row(&cols, &record) {
                Ok(row) => {
                    copy_line(&mut buffer, line, &row);
                    rows_in_buffer += 1;
                }
                Err(message) => push_error(&mut report, line, message),
            }
            if rows_in_buffer >= CHUNK_ROWS {
                copy.send(std::mem::take(&mut buffer).into_bytes()).await?;
                buffer = String::with_capacity(CHUNK_ROWS * 64);
                rows_in_buffer = 0;
            }
        }
        if !buffer.is_empty() {
            copy.send(buffer.into_bytes()).await?;
        }
        copy.finish().await?;
    }

    let upserted = sqlx::query(
        "INSERT INTO meters AS m (account, meter, zones, digits, status, normative_kwh, average_kwh, baseline_period, baseline_values, imported_at)
         SELECT DISTINCT ON (account, meter) account, meter, zones, digits, status, normative_kwh, average_kwh, baseline_period, baseline_values, now()
         FROM registry_import ORDER BY account, meter, line DESC
         ON CONFLICT (account, meter) DO UPDATE SET
            zones = EXCLUDED.zones, digits = EXCLUDED.digits, status = EXCLUDED.status,
            normative_kwh = EXCLUDED.normative_kwh, average_kwh = EXCLUDED.average_kwh,
            baseline_period = EXCLUDED.baseline_period,
            baseline_values = EXCLUDED.baseline_values, imported_at = EXCLUDED.imported_at",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await.context("committing the import")?;
    // Fresh statistics now, not at autovacuum's next round: without them the planner
    // takes a batch's look-up of 64 accounts for a third of the table and scans it all.
    if let Err(e) = sqlx::query("ANALYZE meters").execute(pool).await {
        tracing::warn!(error = %e, "registry imported, but its statistics are not refreshed; autovacuum will");
    }
    report.meters_upserted = upserted;
    Ok(report)
}

fn push_error(report: &mut ImportReport, line: u64, message: String) {
    report.rows_rejected += 1;
    if report.errors.len() < MAX_REPORTED_ERRORS {
        report.errors.push(RowError { line, message });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(line: &str) -> Result<RegistryRow, String> {
        row_under(&HEADER.join(","), line)
    }

    fn row_under(header: &str, line: &str) -> Result<RegistryRow, String> {
        let text = format!("{header}\n{line}\n");
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes());
        let mut records = reader.records();
        let header = records.next().and_then(Result::ok).ok_or("header")?;
        let cols = Columns::from_header(&header)?;
        let record = records.next().and_then(Result::ok).ok_or("record")?;
        parse_row(&cols, &record)
    }

    #[test]
    fn good_rows() {
        let r = row("001234567,M-1,2,6,active,2026-10,045100,12000,,85.5").expect("valid");
        assert_eq!(r.account, "001234567");
        assert_eq!(r.zones, 2);
        assert_eq!(
            r.last,
            Some((Period::new(2026, 10).expect("p"), vec![45100, 12000]))
        );
        assert_eq!(r.normative_kwh.as_deref(), Some("85.5"));
        let r = row("1000001,M,1,5,closed,,,,,").expect("valid without history");
        assert!(!r.active);
        assert_eq!(r.last, None);
        assert_eq!(r.normative_kwh, None);
    }

    #[test]
    fn average_kwh_is_an_optional_last_column() {
        let with = format!("{},{AVERAGE_COLUMN}", HEADER.join(","));
        let r = row_under(&with, "1000001,M,1,5,active,2026-10,100,,,85,\"142,5\"").expect("valid");
        assert_eq!(r.average_kwh.as_deref(), Some("142.5"));
        assert_eq!(r.normative_kwh.as_deref(), Some("85"));
        let r = row_under(&with, "1000001,M,1,5,active,,,,,,").expect("empty average");
        assert_eq!(r.average_kwh, None);
        let r = row("1000001,M,1,5,active,,,,,85").expect("without the column");
        assert_eq!(r.average_kwh, None);
        let err = row_under(&with, "1000001,M,1,5,active,,,,,,-3").expect_err("negative");
        assert!(err.contains("average_kwh"), "{err}");
        let err = row_under(&with, "1000001,M,1,5,active,,,,,,many").expect_err("text");
        assert!(err.contains("average_kwh `many`"), "{err}");
    }

    #[test]
    fn bad_rows_say_what_is_wrong() {
        for (line, needle) in [
            ("12a,M,1,5,active,,,,,", "account"),
            (",M,1,5,active,,,,,", "account"),
            ("1000001,,1,5,active,,,,,", "meter"),
            ("1000001,M,4,5,active,,,,,", "zones"),
            ("1000001,M,1,0,active,,,,,", "digits"),
            ("1000001,M,1,5,open,,,,,", "status"),
            ("1000001,M,1,5,active,2026-13,1,,,", "period"),
            ("1000001,M,2,5,active,2026-10,1,,,", "last_t2 is empty"),
            ("1000001,M,1,5,active,2026-10,1,2,,", "last_t2 is given"),
            (
                "1000001,M,1,5,active,2026-10,123456,,,",
                "more than 5 digits",
            ),
            ("1000001,M,1,5,active,2026-10,-1,,,", "whole number"),
            ("1000001,M,1,5,active,,7,,,", "without last_period"),
            ("1000001,M,1,5,active,,,,,-3", "normative"),
        ] {
            let err = row(line).expect_err(line);
            assert!(err.contains(needle), "{line}: {err}");
        }
    }

    #[test]
    fn header_may_be_reordered_but_not_incomplete() {
        let rec = csv::StringRecord::from(vec!["meter", "account", "zones"]);
        assert!(Columns::from_header(&rec).is_err());
        let mut names: Vec<&str> = HEADER.to_vec();
        names.reverse();
        assert!(Columns::from_header(&csv::StringRecord::from(names)).is_ok());
    }

    #[test]
    fn copy_escaping() {
        let mut out = String::new();
        copy_text(&mut out, "a\tb\\c\nd");
        assert_eq!(out, "a\\tb\\\\c\\nd");
    }
}
