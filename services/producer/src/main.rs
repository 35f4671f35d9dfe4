//! `hookfleet-producer`: the ingest API, endpoint registry and router.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hookfleet_producer::Settings;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "hookfleet producer: ingest API, endpoint registry, fan-out router"
)]
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
    /// Serve the API and run the router (the default).
    Serve,
    /// Bring the database schema up to date and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings = hookfleet_config::load(cli.config.as_deref(), std::env::vars())?;
    hookfleet_telemetry::init(&settings.log);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            hookfleet_db::migrate(&settings.database.url).await?;
            tracing::info!("database is up to date");
        }
        Command::Serve => {
            let cancel = tokio_util::sync::CancellationToken::new();
            let running = hookfleet_producer::start(settings, cancel.clone()).await?;
            tracing::info!(addr = %running.addr, "producer listening");
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
