//! `hookfleet attempts list`: delivery attempts from the ledger, of one
//! endpoint or of all of them.

use serde::Deserialize;
use serde_json::Value;

use crate::api::{Api, Page, Service, decode, segment};
use crate::cli::{AttemptsCommand, ListAttempts};
use crate::error::CliError;
use crate::output::{Printer, line, or_dash, table};
use crate::when::{parse_point, show};

/// One attempt as the ledger shows it.
#[derive(Debug, Clone, Deserialize)]
pub struct Attempt {
    pub id: String,
    pub event_id: String,
    pub endpoint_id: String,
    pub attempt: i32,
    pub result: String,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub started_at: String,
    pub duration_ms: i32,
}

/// The filters of the ledger's attempts query.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub result: Option<&'static str>,
    pub since: Option<String>,
    pub until: Option<String>,
}

impl Filter {
    fn query(&self, limit: i64) -> Vec<(&'static str, String)> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(result) = self.result {
            query.push(("result", result.to_owned()));
        }
        if let Some(since) = &self.since {
            query.push(("since", since.clone()));
        }
        if let Some(until) = &self.until {
            query.push(("until", until.clone()));
        }
        query
    }
}

pub async fn run(command: AttemptsCommand, api: &Api, printer: Printer) -> Result<(), CliError> {
    match command {
        AttemptsCommand::List(list) => list_attempts(list, api, printer).await,
    }
}

async fn list_attempts(list: ListAttempts, api: &Api, printer: Printer) -> Result<(), CliError> {
    let now = time::OffsetDateTime::now_utc();
    let filter = Filter {
        result: list.state.map(|s| s.as_str()),
        since: list
            .since
            .map(|s| parse_point("--since", &s, now))
            .transpose()?,
        until: list
            .until
            .map(|s| parse_point("--until", &s, now))
            .transpose()?,
    };
    // One endpoint's page, or the tenant's across every endpoint.
    let page = attempts_page(api, list.endpoint.as_deref(), &filter, list.limit).await?;
    if printer.json() {
        printer.print_json(&page);
        return Ok(());
    }
    line(&attempts_table(&decode::<Page<Attempt>>(page)?.data));
    Ok(())
}

/// Where an endpoint's attempts are listed (every endpoint's without one).
fn attempts_path(endpoint: Option<&str>) -> String {
    match endpoint {
        Some(endpoint) => format!("/v1/endpoints/{}/attempts", segment(endpoint)),
        None => "/v1/attempts".to_owned(),
    }
}

/// One page of attempts, newest first.
pub async fn attempts_page(
    api: &Api,
    endpoint: Option<&str>,
    filter: &Filter,
    limit: i64,
) -> Result<Value, CliError> {
    api.get(
        Service::Ledger,
        &attempts_path(endpoint),
        &filter.query(limit),
    )
    .await
}

/// Every attempt that matches, following the pages.
pub async fn all_attempts(
    api: &Api,
    endpoint: Option<&str>,
    filter: &Filter,
) -> Result<Vec<Attempt>, CliError> {
    api.all_pages(Service::Ledger, &attempts_path(endpoint), filter.query(500))
        .await
}

pub fn attempts_table(attempts: &[Attempt]) -> String {
    table(
        &[
            "started", "endpoint", "event", "attempt", "result", "status", "duration", "error",
        ],
        attempts.iter().map(|a| {
            vec![
                show(&a.started_at),
                a.endpoint_id.clone(),
                a.event_id.clone(),
                a.attempt.to_string(),
                a.result.clone(),
                or_dash(a.status_code),
                format!("{}ms", a.duration_ms),
                or_dash(a.error.clone()),
            ]
        }),
    )
}
