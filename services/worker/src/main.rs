//! `hookfleet-worker`: the delivery fleet.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hookfleet_worker::Settings;

#[derive(Debug, Parser)]
#[command(version, about = "hookfleet worker: signs and delivers webhooks")]
struct Cli {
    /// A TOML settings file (also HOOKFLEET_CONFIG). HOOKFLEET__SECTION__KEY
    /// variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Deliver webhooks (the default).
    Serve,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings = hookfleet_config::load(cli.config.as_deref(), std::env::vars())?;
    hookfleet_telemetry::init(&settings.log);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let cancel = tokio_util::sync::CancellationToken::new();
            let running = hookfleet_worker::start(settings, cancel.clone()).await?;
            tracing::info!(addr = %running.addr, "worker health probes listening");
            shutdown_signal().await;
            tracing::info!("shutting down");
            cancel.cancel();
            running.task.await?;
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
