//! What every service's `main` does: parse the command line (flags or environment),
//! start telemetry, build the runtime and run the chosen subcommand, exiting non-zero
//! with the error chain on failure.

use std::process::ExitCode;

use crate::config::LogFormat;

/// Runs `body` on a multi-threaded runtime with telemetry for `service` started.
pub fn run_main<F, Fut>(service: &'static str, log_format: LogFormat, body: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{service}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Before any TLS client is built (the OTLP exporter's is the first).
    crate::tls::install_provider();
    let result = runtime.block_on(async {
        // The OTLP batch exporter and the subscriber need the runtime entered.
        let _telemetry = crate::telemetry::init(service, log_format)?;
        body().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "{service} failed");
            eprintln!("{service}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Binds the HTTP listener, naming the address in the error.
pub async fn bind(addr: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context as _;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (HTTP_ADDR)"))
}

/// The subcommands every service has (validator adds its own beside them).
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum Standard {
    /// Run the service (the default).
    Serve,
    /// Apply the service's database migrations and exit (for a Kubernetes Job).
    Migrate,
}
