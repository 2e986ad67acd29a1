use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Pushes accepted readings to billing and serves the period exports.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: billing_export::Config,
}

#[derive(Subcommand)]
enum Command {
    /// Consume, push and serve the exports (the default).
    Serve,
    /// Apply database migrations (schema `billing`) and exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.config.runtime.log_format;
    shared::cli::run_main("billing-export", format, || async move {
        let shutdown = shared::shutdown::on_signals();
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                let listener = shared::cli::bind(cli.config.http_addr).await?;
                billing_export::run(cli.config, listener, shutdown).await
            }
            Command::Migrate => {
                let pool = shared::db::pool(&cli.config.database, billing_export::SCHEMA)?;
                billing_export::migrate(&pool, &shutdown).await?;
                pool.close().await;
                tracing::info!("billing-export migrations applied");
                Ok(())
            }
        }
    })
}
