use std::process::ExitCode;

use clap::Parser;
use shared::cli::Standard;

/// Pushes accepted readings to billing and serves the period exports.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Standard>,
    #[command(flatten)]
    config: billing_export::Config,
}

/// jemalloc instead of the C library's allocator: glibc's malloc and free were ~18 % of
/// the services' CPU under load (perf, docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.config.runtime.log_format;
    shared::cli::run_main("billing-export", format, || async move {
        let shutdown = shared::shutdown::on_signals();
        match cli.command.unwrap_or(Standard::Serve) {
            Standard::Serve => {
                let listener = shared::cli::bind(cli.config.http_addr).await?;
                billing_export::run(cli.config, listener, shutdown).await
            }
            Standard::Migrate => {
                shared::tls::require_database(&cli.config.runtime, &cli.config.database)?;
                billing_export::DATABASE
                    .migrate(&cli.config.database, &shutdown)
                    .await
            }
        }
    })
}
