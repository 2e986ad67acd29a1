use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use shared::cli::Standard;

/// Checks inbound SMS against the account registry and emits accepted or rejected readings.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: validator::Config,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Standard(Standard),
    /// Load the account registry from the billing system's CSV (upsert).
    ImportRegistry {
        /// The CSV file: account,meter,zones,digits,status,last_period,last_t1,last_t2,last_t3,normative_kwh
        /// (`-`: standard input, e.g. `kubectl exec -i … import-registry - < FILE`, for an
        /// image without a shell or a volume to put the file on)
        file: PathBuf,
        /// Exit non-zero if any row was rejected (the good rows are still loaded).
        #[arg(long)]
        strict: bool,
    },
}

/// jemalloc instead of the C library's allocator: glibc's malloc and free were ~18 % of
/// the services' CPU under load (perf, docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.config.runtime.log_format;
    shared::cli::run_main("validator", format, || async move {
        let shutdown = shared::shutdown::on_signals();
        match cli.command.unwrap_or(Command::Standard(Standard::Serve)) {
            Command::Standard(Standard::Serve) => {
                let listener = shared::cli::bind(cli.config.http_addr).await?;
                validator::run(cli.config, listener, shutdown).await
            }
            Command::Standard(Standard::Migrate) => {
                shared::tls::require_database(&cli.config.runtime, &cli.config.database)?;
                validator::DATABASE
                    .migrate(&cli.config.database, &shutdown)
                    .await
            }
            Command::ImportRegistry { file, strict } => {
                shared::tls::require_database(&cli.config.runtime, &cli.config.database)?;
                let pool = validator::DATABASE
                    .open(&cli.config.database, &shutdown)
                    .await?;
                let input: Box<dyn std::io::Read + Send> = if file.as_os_str() == "-" {
                    Box::new(std::io::stdin())
                } else {
                    Box::new(
                        std::fs::File::open(&file)
                            .with_context(|| format!("cannot open {}", file.display()))?,
                    )
                };
                let started = std::time::Instant::now();
                let report = validator::registry::import(
                    &pool,
                    std::io::BufReader::with_capacity(1 << 20, input),
                )
                .await?;
                for e in &report.errors {
                    eprintln!("{}:{}: {}", file.display(), e.line, e.message);
                }
                if report.rows_rejected as usize > report.errors.len() {
                    eprintln!(
                        "… and {} more rejected rows",
                        report.rows_rejected as usize - report.errors.len()
                    );
                }
                let secs = started.elapsed().as_secs_f64();
                println!(
                    "imported {} meters from {} rows in {:.1} s ({:.0} rows/s); {} rows rejected",
                    report.meters_upserted,
                    report.rows_read,
                    secs,
                    report.rows_read as f64 / secs.max(1e-9),
                    report.rows_rejected
                );
                if strict && report.rows_rejected > 0 {
                    anyhow::bail!("{} rows rejected (--strict)", report.rows_rejected);
                }
                Ok(())
            }
        }
    })
}
