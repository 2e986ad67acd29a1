//! The two period reports billing pulls (SPEC §4.5): the latest reading per meter,
//! and the active meters without one. Each is produced row by row from a database
//! cursor into CSV chunks of about 64 KiB sent through a small bounded channel, so
//! the HTTP body and the EXPORT_DIR file both see a million rows go by without
//! ever holding more than a few chunks; a slow reader slows the query, not memory.

pub mod estimate;
pub mod files;
pub mod http;
pub mod missing;
pub mod readings;

use bytes::Bytes;
use chrono_tz::Tz;
use shared::events::Period;
use sqlx::PgConnection;
use tokio::sync::mpsc;

/// Bytes per chunk handed to the reader.
const CHUNK_BYTES: usize = 64 * 1024;
/// Chunks in flight between the producer and the reader.
pub(crate) const CHUNKS_IN_FLIGHT: usize = 4;

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// `{YYYY-MM}.csv`: the latest accepted reading per meter.
    Readings,
    /// `{YYYY-MM}/missing.csv`: active meters with no reading, and their estimate.
    Missing,
}

impl Report {
    pub fn name(self) -> &'static str {
        match self {
            Report::Readings => "readings",
            Report::Missing => "missing",
        }
    }

    /// The file name, over HTTP (`Content-Disposition`) and in EXPORT_DIR.
    pub fn file_name(self, period: Period) -> String {
        format!("{}-{period}.csv", self.name())
    }
}

/// Why a report could not be produced (completely).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    /// Stored data that does not fit the report (never expected; named, not hidden).
    #[error("unexpected stored data: {0}")]
    Data(String),
    /// The reader went away (an HTTP client disconnected): stop quietly.
    #[error("the reader went away")]
    ReaderGone,
    /// The export ran longer than EXPORT_TIMEOUT_SECONDS.
    #[error("the export took longer than {} s (EXPORT_TIMEOUT_SECONDS)", .0.as_secs())]
    TimedOut(std::time::Duration),
}

pub type Chunk = Result<Bytes, ExportError>;

/// CSV rows, written into chunks that go to the reader as they fill.
pub struct CsvChunks {
    writer: csv::Writer<Vec<u8>>,
    out: mpsc::Sender<Chunk>,
    rows: u64,
}

fn new_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(CHUNK_BYTES + 4096))
}

impl CsvChunks {
    pub fn new(out: mpsc::Sender<Chunk>) -> Self {
        CsvChunks {
            writer: new_writer(),
            out,
            rows: 0,
        }
    }

    pub fn header(&mut self, columns: &[&str]) -> Result<(), ExportError> {
        self.writer.write_record(columns)?;
        Ok(())
    }

    /// Writes one data row (quoted as needed by the `csv` crate).
    pub async fn row<I, T>(&mut self, fields: I) -> Result<(), ExportError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        self.writer.write_record(fields)?;
        self.rows += 1;
        // The writer buffers internally; flushing moves the bytes into the Vec so
        // its length says when a chunk is full.
        self.writer.flush().map_err(csv::Error::from)?;
        if self.writer.get_ref().len() >= CHUNK_BYTES {
            self.send().await?;
        }
        Ok(())
    }

    async fn send(&mut self) -> Result<(), ExportError> {
        let full = std::mem::replace(&mut self.writer, new_writer());
        let bytes = full
            .into_inner()
            .map_err(|e| ExportError::Csv(csv::Error::from(e.into_error())))?;
        if bytes.is_empty() {
            return Ok(());
        }
        self.out
            .send(Ok(Bytes::from(bytes)))
            .await
            .map_err(|_| ExportError::ReaderGone)
    }

    /// Sends what is left; returns the number of data rows.
    pub async fn finish(mut self) -> Result<u64, ExportError> {
        self.send().await?;
        Ok(self.rows)
    }
}

/// Produces `report` for `period` on `conn` into `out`; returns the data rows sent.
pub async fn produce(
    conn: &mut PgConnection,
    report: Report,
    period: Period,
    zone: Tz,
    out: mpsc::Sender<Chunk>,
) -> Result<u64, ExportError> {
    let mut csv = CsvChunks::new(out);
    match report {
        Report::Readings => readings::write(conn, period, zone, &mut csv).await?,
        Report::Missing => missing::write(conn, period, &mut csv).await?,
    }
    csv.finish().await
}
