//! The command line of `hookfleet-worker`.

use std::path::PathBuf;

use crate::Settings;
use clap::{Parser, Subcommand};

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

/// The service's command line: `serve` (the default).
#[tokio::main]
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings: Settings = hookfleet_config::load(cli.config.as_deref(), std::env::vars())?;
    let _telemetry =
        hookfleet_telemetry::init(&settings.log, &settings.tracing, "hookfleet-worker");
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let cancel = tokio_util::sync::CancellationToken::new();
            let running = crate::start(settings, cancel.clone()).await?;
            hookfleet_telemetry::run_until_signal("hookfleet-worker", running, cancel).await?;
        }
    }
    Ok(())
}
