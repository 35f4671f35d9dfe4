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

/// Clap's message without its usage block: the error and any tip, to fit
/// on one line.
fn clap_message(rendered: &str) -> String {
    let text = rendered
        .split("\n\n")
        .filter(|part| !part.starts_with("Usage:") && !part.starts_with("For more information"))
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "{} (see --help)",
        text.trim().trim_start_matches("error:").trim()
    )
}

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print on stdout and exit 0.
        Err(error) if !error.use_stderr() => error.exit(),
        Err(error) => {
            let error = error::CliError::usage(clap_message(&error.to_string()));
            eprintln!("{}", error.one_line());
            return error.exit_code();
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clap_error_keeps_its_message_and_tip_without_the_usage() {
        let rendered = "error: unrecognized subcommand 'lst'\n\n  tip: a similar subcommand exists: 'list'\n\nUsage: hookfleet endpoints <COMMAND>\n\nFor more information, try '--help'.\n";
        let error = error::CliError::usage(clap_message(rendered));
        assert_eq!(
            error.one_line(),
            "error: usage: unrecognized subcommand 'lst'; tip: a similar subcommand exists: 'list' (see --help)"
        );
    }
}
