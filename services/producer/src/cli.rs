//! The command line of `hookfleet-producer`.

use std::path::PathBuf;

use crate::Settings;
use clap::{Parser, Subcommand};

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

/// The service's command line: `serve` (the default), `migrate`.
#[tokio::main]
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings = hookfleet_config::load(cli.config.as_deref(), std::env::vars())?;
    let _telemetry =
        hookfleet_telemetry::init(&settings.log, &settings.tracing, "hookfleet-producer");
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            hookfleet_db::migrate(&settings.database).await?;
            tracing::info!("database is up to date");
        }
        Command::Serve => {
            let cancel = tokio_util::sync::CancellationToken::new();
            let running = crate::start(settings, cancel.clone()).await?;
            hookfleet_telemetry::run_until_signal("hookfleet-producer", running, cancel).await?;
        }
    }
    Ok(())
}
