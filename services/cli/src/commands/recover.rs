//! `hookfleet recover --endpoint ID --since TIME`: start a recovery on the
//! ledger and follow it until it is done, with a progress bar on a
//! terminal and a line per change otherwise.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Api, Body, Service, decode, segment};
use crate::cli::RecoverArgs;
use crate::error::CliError;
use crate::output::{Printer, line};
use crate::when::{parse_point, show};

/// How often the progress is asked for.
const POLL: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Deserialize)]
struct Recovery {
    id: String,
    endpoint_id: String,
    since: String,
    state: String,
    total: i32,
    sent: i32,
    error: Option<String>,
}

pub async fn run(args: RecoverArgs, api: &Api, printer: Printer) -> Result<(), CliError> {
    let since = parse_point("--since", &args.since, time::OffsetDateTime::now_utc())?;
    let mut answer = api
        .post(
            Service::Ledger,
            &format!("/v1/endpoints/{}/recover", segment(&args.endpoint)),
            Body::Json(json!({ "since": since })),
        )
        .await?;
    let mut recovery: Recovery = decode(answer.clone())?;
    if !args.no_wait {
        let mut progress = Progress::new(&recovery);
        while recovery.state == "running" {
            tokio::time::sleep(POLL).await;
            answer = api
                .get(
                    Service::Ledger,
                    &format!("/v1/recoveries/{}", segment(&recovery.id)),
                    &[],
                )
                .await?;
            recovery = decode(answer.clone())?;
            progress.update(&recovery);
        }
        progress.finish();
    }
    report(&recovery, &answer, printer)
}

fn report(recovery: &Recovery, answer: &Value, printer: Printer) -> Result<(), CliError> {
    if printer.json() {
        printer.print_json(answer);
    } else {
        line(&format!(
            "recovery {} of {} since {}: {}, {} of {} event(s) resent",
            recovery.id,
            recovery.endpoint_id,
            show(&recovery.since),
            recovery.state,
            recovery.sent,
            recovery.total
        ));
    }
    if recovery.state == "failed" {
        return Err(CliError::api(
            "recovery_failed",
            format!(
                "recovery {}: {}",
                recovery.id,
                recovery.error.as_deref().unwrap_or("no reason given")
            ),
        ));
    }
    Ok(())
}

/// A bar on a terminal; elsewhere (a pipe, a CI log) a line on stderr each
/// time the count changes, so stdout keeps only the result.
#[derive(Debug)]
enum Progress {
    Bar(ProgressBar),
    Lines { last: Option<(i32, i32)> },
}

impl Progress {
    fn new(recovery: &Recovery) -> Self {
        let mut progress = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(recovery.total.max(0) as u64);
            if let Ok(style) =
                ProgressStyle::with_template("{spinner} recovering {msg} [{bar:30}] {pos}/{len}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(recovery.id.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            Self::Bar(bar)
        } else {
            Self::Lines { last: None }
        };
        progress.update(recovery);
        progress
    }

    fn update(&mut self, recovery: &Recovery) {
        match self {
            Self::Bar(bar) => {
                bar.set_length(recovery.total.max(0) as u64);
                bar.set_position(recovery.sent.max(0) as u64);
            }
            Self::Lines { last } => {
                let now = Some((recovery.sent, recovery.total));
                if *last != now {
                    *last = now;
                    if recovery.state == "running" && recovery.total == 0 {
                        eprintln!("recovering {}: counting what to resend", recovery.id);
                    } else {
                        eprintln!(
                            "recovering {}: {}/{} sent",
                            recovery.id, recovery.sent, recovery.total
                        );
                    }
                }
            }
        }
    }

    fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
