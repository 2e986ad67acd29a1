//! EXPORT_DIR: when a period's window closes, its two reports are written there as
//! `readings-YYYY-MM.csv` and `missing-YYYY-MM.csv`, once per period.
//!
//! - Atomic: each file is written to a temporary name in the same directory,
//!   fsynced, renamed over the final name, and the directory fsynced; a reader never
//!   sees half a file, and a crash leaves at most a stray `.tmp` (removed when the
//!   writer can).
//! - Once: `period_exports` records a period after both files are in place; a
//!   PostgreSQL advisory lock keeps two replicas from writing the same period at
//!   the same time. A crash before the record means the next check writes again.
//! - When: checked at start and every minute; only the latest closed period is
//!   considered (a period missed by more than a month of downtime is still served
//!   over HTTP).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use chrono_tz::Tz;
use shared::events::Period;
use sqlx::{PgConnection, PgPool};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{CHUNKS_IN_FLIGHT, Chunk, Report};
use crate::metrics::BillingMetrics;
use shared::calendar::Window;

/// How often the scheduler looks for a newly closed period.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);
/// First key of the advisory lock ("bill"); the second is the period (YYYYMM).
const LOCK_CLASS: i32 = 0x6269_6c6c;

/// What one check did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written {
        readings: u64,
        missing: u64,
    },
    AlreadyWritten,
    /// Another replica holds the period's lock: it is writing the files.
    InProgressElsewhere,
}

/// Writes period files into one directory.
#[derive(Clone)]
pub struct PeriodFiles {
    pub pool: PgPool,
    pub dir: PathBuf,
    pub window: Window,
    pub metrics: BillingMetrics,
}

impl PeriodFiles {
    fn zone(&self) -> Tz {
        self.window.zone
    }

    /// Checks at start and then every [`CHECK_EVERY`] until `shutdown`. A write cut
    /// short by shutdown leaves no record, so the next start writes the period.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let period = self.window.latest_closed(Utc::now());
            tokio::select! {
                result = self.write_period(period) => match result {
                    Ok(Outcome::Written { readings, missing }) => tracing::info!(
                        %period, readings, missing, dir = %self.dir.display(), "period files written"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(%period, error = %format!("{e:#}"), "could not write the period files; trying again later"),
                },
                _ = shutdown.cancelled() => break,
            }
            tokio::select! {
                _ = tokio::time::sleep(CHECK_EVERY) => {}
                _ = shutdown.cancelled() => break,
            }
        }
    }

    /// Writes `period`'s files unless they were written before.
    pub async fn write_period(&self, period: Period) -> anyhow::Result<Outcome> {
        if self.recorded(&self.pool, period).await? {
            return Ok(Outcome::AlreadyWritten);
        }
        let mut conn = self
            .pool
            .acquire()
            .await
            .context("no database connection")?;
        // The session lock goes with the connection: closing it (also on error or
        // cancellation) is the surest release, and this path runs once per period.
        conn.close_on_drop();
        let key = period.year() * 100 + i32::try_from(period.month()).unwrap_or(0);
        let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        if !locked {
            return Ok(Outcome::InProgressElsewhere);
        }
        if self.recorded(&mut *conn, period).await? {
            return Ok(Outcome::AlreadyWritten);
        }
        let readings = self.write_file(&mut conn, Report::Readings, period).await?;
        let missing = self.write_file(&mut conn, Report::Missing, period).await?;
        sqlx::query(
            "INSERT INTO period_exports (period, readings_rows, missing_rows) VALUES ($1, $2, $3)
             ON CONFLICT (period) DO NOTHING",
        )
        .bind(period.to_string())
        .bind(i64::try_from(readings).unwrap_or(i64::MAX))
        .bind(i64::try_from(missing).unwrap_or(i64::MAX))
        .execute(&mut *conn)
        .await
        .context("recording the written period")?;
        Ok(Outcome::Written { readings, missing })
    }

    async fn recorded<'c, E>(&self, db: E, period: Period) -> Result<bool, sqlx::Error>
    where
        E: sqlx::PgExecutor<'c>,
    {
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM period_exports WHERE period = $1")
                .bind(period.to_string())
                .fetch_optional(db)
                .await?;
        Ok(found.is_some())
    }

    /// Writes one report atomically; returns its data rows.
    async fn write_file(
        &self,
        conn: &mut PgConnection,
        report: Report,
        period: Period,
    ) -> anyhow::Result<u64> {
        let name = report.file_name(period);
        let target = self.dir.join(&name);
        let temp = TempFile(Some(
            self.dir
                .join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple())),
        ));
        let temp_path = temp.path().to_owned();
        let mut file = tokio::fs::File::create(&temp_path)
            .await
            .with_context(|| format!("creating {}", temp_path.display()))?;
        let (tx, rx) = mpsc::channel::<Chunk>(CHUNKS_IN_FLIGHT);
        let producing = async {
            super::produce(conn, report, period, self.zone(), tx)
                .await
                .with_context(|| format!("producing {name}"))
        };
        let (rows, ()) = tokio::try_join!(producing, drain_into(rx, &mut file, &temp_path))?;
        file.flush().await?;
        file.sync_all()
            .await
            .with_context(|| format!("fsync {}", temp_path.display()))?;
        drop(file);
        tokio::fs::rename(&temp_path, &target)
            .await
            .with_context(|| format!("renaming into {}", target.display()))?;
        temp.keep();
        sync_dir(&self.dir).await?;
        self.metrics.file_written(report.name());
        Ok(rows)
    }
}

async fn drain_into(
    mut rx: mpsc::Receiver<Chunk>,
    file: &mut tokio::fs::File,
    path: &Path,
) -> anyhow::Result<()> {
    while let Some(chunk) = rx.recv().await {
        let bytes = chunk?;
        file.write_all(&bytes)
            .await
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Makes the rename itself durable.
async fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    let handle = tokio::fs::File::open(dir)
        .await
        .with_context(|| format!("opening {}", dir.display()))?;
    handle
        .sync_all()
        .await
        .with_context(|| format!("fsync {}", dir.display()))
}

/// A temporary file removed when dropped, unless kept (renamed into place).
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Whether `name` is one of the period files this service writes
/// (`readings-YYYY-MM.csv`, `missing-YYYY-MM.csv`): the only files it ever removes.
fn is_period_file(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".csv") else {
        return false;
    };
    let Some(period) = stem
        .strip_prefix("readings-")
        .or_else(|| stem.strip_prefix("missing-"))
    else {
        return false;
    };
    period.parse::<Period>().is_ok()
}

/// Removes the period files of `dir` last written more than `days` days ago (SPEC
/// §4.7: the exports hold every account's readings); returns how many went. Other
/// files in the directory are left alone.
pub async fn expire(dir: &Path, days: u32) -> std::io::Result<u64> {
    let max_age = Duration::from_secs(u64::from(days) * 24 * 60 * 60);
    let mut removed = 0;
    let mut entries = tokio::fs::read_dir(dir).await?;
    while let Some(entry) = entries.next_entry().await? {
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_period_file) {
            continue;
        }
        let modified = entry.metadata().await?.modified()?;
        let old = modified.elapsed().is_ok_and(|age| age > max_age);
        if old {
            tokio::fs::remove_file(entry.path()).await?;
            tracing::info!(file = %entry.path().display(), days, "period file past the retention period removed");
            removed += 1;
        }
    }
    Ok(removed)
}

/// [`expire`] at start and then daily, until `stop`; counted in the retention metric.
pub async fn expire_daily(
    dir: PathBuf,
    days: u32,
    metrics: shared::retention::RetentionMetrics,
    stop: CancellationToken,
) {
    loop {
        match expire(&dir, days).await {
            Ok(n) => metrics.expired("export_files", n),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "could not expire period files; trying again tomorrow")
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(shared::retention::EVERY) => {}
            _ = stop.cancelled() => break,
        }
    }
}
