use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Takes inbound SMS from the gateways and publishes them to RabbitMQ.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: ingest::Config,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply database migrations and exit (ingest keeps no tables: nothing to do).
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.config.runtime.log_format;
    shared::cli::run_main("ingest", format, || async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Migrate => {
                tracing::info!("ingest keeps no tables; nothing to migrate");
                Ok(())
            }
            Command::Serve => {
                let listener = shared::cli::bind(cli.config.http_addr).await?;
                ingest::run(cli.config, listener, shared::shutdown::on_signals()).await
            }
        }
    })
}
