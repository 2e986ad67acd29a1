use std::process::ExitCode;

use clap::Parser;
use shared::cli::Standard;

/// Takes inbound SMS from the gateways and publishes them to RabbitMQ.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Standard>,
    #[command(flatten)]
    config: ingest::Config,
}

/// jemalloc instead of the C library's allocator: glibc's malloc and free were ~18 % of
/// the services' CPU under load (perf, docs/performance.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.config.runtime.log_format;
    shared::cli::run_main("ingest", format, || async move {
        match cli.command.unwrap_or(Standard::Serve) {
            Standard::Migrate => {
                tracing::info!("ingest keeps no tables; nothing to migrate");
                Ok(())
            }
            Standard::Serve => {
                let listener = shared::cli::bind(cli.config.http_addr).await?;
                ingest::run(cli.config, listener, shared::shutdown::on_signals()).await
            }
        }
    })
}
