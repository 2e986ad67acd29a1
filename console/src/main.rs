use std::io::Read as _;
use std::process::ExitCode;

use clap::Parser;
use console::users::{Login, Role};

/// The staff's web console.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: console::Config,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Run the console (the default).
    Serve,
    /// Apply the console's database migrations and exit (for a Kubernetes Job).
    Migrate,
    /// Create a user, or set an existing user's role and password. The password is
    /// read from standard input (its first line), never from the command line.
    AddUser {
        login: String,
        #[arg(long, value_enum)]
        role: Role,
    },
}

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.config.runtime.log_format;
    shared::cli::run_main("console", format, || async move {
        let shutdown = shared::shutdown::on_signals();
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => {
                let listener = shared::cli::bind(cli.config.http_addr).await?;
                console::run(cli.config, listener, shutdown).await
            }
            Command::Migrate => {
                console::DATABASE
                    .migrate(&cli.config.database, &shutdown)
                    .await
            }
            Command::AddUser { login, role } => {
                let login = Login::parse(&login).map_err(anyhow::Error::msg)?;
                let mut input = String::new();
                std::io::stdin()
                    .take(4096)
                    .read_to_string(&mut input)
                    .map_err(|e| {
                        anyhow::anyhow!("reading the password from standard input: {e}")
                    })?;
                let password = input.lines().next().unwrap_or("").trim_end_matches('\r');
                let pool = console::DATABASE
                    .open(&cli.config.database, &shutdown)
                    .await?;
                console::users::add_user(&pool, &login, role, password).await?;
                pool.close().await;
                println!("user {} ({role}) saved", login.as_str());
                Ok(())
            }
        }
    })
}
