//! `hookfleet`: the command line of the producer's and the ledger's APIs,
//! and a local webhook receiver for developers.
//!
//! Exit codes scripts can rely on: 0 ok, 1 an API or network error, 2 a
//! usage error (clap's own, and a missing token or unreadable file too).
//! Every error is one line on stderr: `error: <code>: <message>`.

mod api;
mod cli;
mod commands;
mod error;
mod output;
mod settings;
mod when;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", error.one_line());
            error.exit_code()
        }
    }
}
