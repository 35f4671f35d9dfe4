//! `hookfleet tail`: follows deliveries as the ledger records them, one
//! line per attempt.
//!
//! It polls the tenant's attempts (or one endpoint's) over a window
//! reaching back [`LOOKBACK`] from the newest attempt seen: an attempt is
//! recorded when
//! it ends, up to a delivery timeout after the `started_at` it is ordered
//! by, so a window that only moved forward would miss slow ones. Attempts
//! already printed are remembered by id until they leave the window.

use std::collections::HashMap;

use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::api::{Api, Page, decode};
use crate::cli::TailArgs;
use crate::commands::attempts::{Attempt, Filter, all_attempts, attempts_page};
use crate::error::CliError;
use crate::output::{Printer, line, or_dash};
use crate::when::{parse_api, parse_point, show};

/// How far before the newest attempt seen each poll looks again.
const LOOKBACK: time::Duration = time::Duration::minutes(2);

pub async fn run(args: TailArgs, api: &Api, printer: Printer) -> Result<(), CliError> {
    let mut follower = Follower::default();
    let history = args
        .since
        .as_deref()
        .map(|s| parse_point("--since", s, OffsetDateTime::now_utc()))
        .transpose()?;
    let endpoint = args.endpoint.as_deref();
    match history {
        // What happened since then is printed first.
        Some(since) => {
            follower.watermark = parse_api(&since);
            for attempt in follower.poll(api, endpoint).await? {
                print(&attempt, printer);
            }
        }
        // Only what happens from now on: what the ledger has now is seen.
        None => {
            let page = attempts_page(api, endpoint, &Filter::default(), 500).await?;
            follower.remember(&decode::<Page<Attempt>>(page)?.data);
            // With nothing recorded yet, start the window from now.
            follower.watermark.get_or_insert(OffsetDateTime::now_utc());
        }
    }
    eprintln!(
        "following deliveries of {} (Ctrl-C to stop)",
        endpoint.unwrap_or("every endpoint")
    );
    loop {
        tokio::time::sleep(args.interval).await;
        for attempt in follower.poll(api, endpoint).await? {
            print(&attempt, printer);
        }
    }
}

/// What has been printed, and from when to ask.
#[derive(Debug, Default)]
struct Follower {
    /// The newest `started_at` seen; `None` until there is one.
    watermark: Option<OffsetDateTime>,
    seen: HashMap<String, OffsetDateTime>,
}

impl Follower {
    /// The attempts not seen before, oldest first.
    async fn poll(&mut self, api: &Api, endpoint: Option<&str>) -> Result<Vec<Attempt>, CliError> {
        let filter = Filter {
            since: self
                .watermark
                .map(|w| w - LOOKBACK)
                .and_then(|since| since.format(&Rfc3339).ok()),
            ..Filter::default()
        };
        let fresh = all_attempts(api, endpoint, &filter).await?;
        Ok(self.remember(&fresh))
    }

    /// Records `attempts` as seen; returns those that were new, oldest
    /// first, and forgets those that left the window.
    fn remember(&mut self, attempts: &[Attempt]) -> Vec<Attempt> {
        let mut fresh: Vec<(OffsetDateTime, Attempt)> = attempts
            .iter()
            .filter(|a| !self.seen.contains_key(&a.id))
            .filter_map(|a| parse_api(&a.started_at).map(|at| (at, a.clone())))
            .collect();
        fresh.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.id.cmp(&y.id)));
        for (at, attempt) in &fresh {
            self.seen.insert(attempt.id.clone(), *at);
            self.watermark = Some(self.watermark.map_or(*at, |w| w.max(*at)));
        }
        if let Some(watermark) = self.watermark {
            self.seen.retain(|_, at| *at >= watermark - LOOKBACK * 2);
        }
        fresh.into_iter().map(|(_, a)| a).collect()
    }
}

/// One line per attempt; with `--output json`, one JSON object per line.
fn print(attempt: &Attempt, printer: Printer) {
    if printer.json() {
        line(
            &json!({
                "id": attempt.id,
                "started_at": attempt.started_at,
                "endpoint_id": attempt.endpoint_id,
                "event_id": attempt.event_id,
                "attempt": attempt.attempt,
                "result": attempt.result,
                "status_code": attempt.status_code,
                "duration_ms": attempt.duration_ms,
                "error": attempt.error,
            })
            .to_string(),
        );
    } else {
        line(&format!(
            "{}  {:<9}  {:>3}  {}  {}  #{}  {}ms{}",
            show(&attempt.started_at),
            attempt.result,
            or_dash(attempt.status_code),
            attempt.endpoint_id,
            attempt.event_id,
            attempt.attempt,
            attempt.duration_ms,
            attempt
                .error
                .as_deref()
                .map(|e| format!("  {e}"))
                .unwrap_or_default(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(id: &str, started_at: &str) -> Attempt {
        Attempt {
            id: id.into(),
            event_id: "evt_1".into(),
            endpoint_id: "ep_1".into(),
            attempt: 1,
            result: "succeeded".into(),
            status_code: Some(200),
            error: None,
            started_at: started_at.into(),
            duration_ms: 3,
        }
    }

    #[test]
    fn each_attempt_is_new_once_and_in_time_order() {
        let mut follower = Follower::default();
        let first = follower.remember(&[
            attempt("att_b", "2026-11-27T12:00:02+00:00"),
            attempt("att_a", "2026-11-27T12:00:01+00:00"),
        ]);
        let ids: Vec<&str> = first.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["att_a", "att_b"]);
        // The next poll sees them again, with one recorded late that
        // started earlier than the newest.
        let second = follower.remember(&[
            attempt("att_b", "2026-11-27T12:00:02+00:00"),
            attempt("att_late", "2026-11-27T12:00:00+00:00"),
            attempt("att_a", "2026-11-27T12:00:01+00:00"),
        ]);
        let ids: Vec<&str> = second.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["att_late"]);
    }

    #[test]
    fn ids_are_forgotten_once_out_of_the_window() {
        let mut follower = Follower::default();
        follower.remember(&[attempt("att_old", "2026-11-27T12:00:00+00:00")]);
        follower.remember(&[attempt("att_new", "2026-11-27T13:00:00+00:00")]);
        assert!(!follower.seen.contains_key("att_old"));
        assert!(follower.seen.contains_key("att_new"));
    }
}
