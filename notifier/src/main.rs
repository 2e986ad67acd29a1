use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Answers refused meter readings by SMS and confirms accepted ones by e-mail.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: notifier::Config,
}

#[derive(Subcommand)]
enum Command {
    /// Consume events and send replies and confirmations (the default).
    Serve,
    /// Apply the notifier's database migrations and exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.config.runtime.log_format;
    shared::cli::run_main("notifier", format, || async move {
        let shutdown = shared::shutdown::on_signals();
        match cli.command.unwrap_or(Command::Serve) {
            Command::Migrate => {
                notifier::migrate(&cli.config.database, &shutdown).await?;
                tracing::info!("notifier migrations applied");
                Ok(())
            }
            Command::Serve => {
                let listener = shared::cli::bind(cli.config.http_addr).await?;
                notifier::run(cli.config, listener, shutdown).await
            }
        }
    })
}
