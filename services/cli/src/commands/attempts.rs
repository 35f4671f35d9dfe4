//! `hookfleet attempts list`: delivery attempts from the ledger, of one
//! endpoint or of all of them.

use serde::Deserialize;
use serde_json::Value;

use crate::api::{Api, Service, decode, segment};
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

/// A page of attempts, newest first.
#[derive(Debug, Deserialize)]
pub struct Page<T = Value> {
    pub data: Vec<T>,
    pub next: Option<String>,
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
    let page = attempts_page(api, list.endpoint.as_deref(), &filter, list.limit, None).await?;
    if printer.json() {
        printer.print_json(&page);
        return Ok(());
    }
    let attempts = decode::<Page>(page)?.data;
    let attempts = attempts
        .into_iter()
        .map(decode::<Attempt>)
        .collect::<Result<Vec<_>, _>>()?;
    line(&attempts_table(&attempts));
    Ok(())
}

/// One page of an endpoint's attempts (of every endpoint's without one),
/// newest first.
pub async fn attempts_page(
    api: &Api,
    endpoint: Option<&str>,
    filter: &Filter,
    limit: i64,
    after: Option<&str>,
) -> Result<Value, CliError> {
    let mut query = filter.query(limit);
    if let Some(after) = after {
        query.push(("after", after.to_owned()));
    }
    let path = match endpoint {
        Some(endpoint) => format!("/v1/endpoints/{}/attempts", segment(endpoint)),
        None => "/v1/attempts".to_owned(),
    };
    api.get(Service::Ledger, &path, &query).await
}

/// Every attempt of an endpoint (of every endpoint without one) that
/// matches, following the pages.
pub async fn all_attempts(
    api: &Api,
    endpoint: Option<&str>,
    filter: &Filter,
) -> Result<Vec<Attempt>, CliError> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page: Page<Attempt> =
            decode(attempts_page(api, endpoint, filter, 500, after.as_deref()).await?)?;
        all.extend(page.data);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(all),
        }
    }
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
