//! `hookfleet dlq list | requeue`: the tenant's part of the dead-letter
//! queue, through the ledger.

use serde::Deserialize;
use serde_json::json;

use crate::api::{Api, Body, Service, decode};
use crate::cli::DlqCommand;
use crate::error::CliError;
use crate::output::{Printer, line, or_dash, table};

#[derive(Debug, Deserialize)]
struct ParkedList {
    data: Vec<Parked>,
    /// A listing's cursor to its next page.
    #[serde(default)]
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Parked {
    message_id: Option<String>,
    kind: String,
    reason: Option<String>,
    parked_by: Option<String>,
    event_id: Option<String>,
    endpoint_id: Option<String>,
}

pub async fn run(command: DlqCommand, api: &Api, printer: Printer) -> Result<(), CliError> {
    let (answer, verb) = match command {
        DlqCommand::List { limit, after } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(after.map(|after| ("after", after)));
            (api.get(Service::Ledger, "/v1/dlq", &query).await?, "parked")
        }
        DlqCommand::Requeue {
            message_ids,
            all,
            limit,
        } => {
            let body = if all {
                json!({ "all": true, "limit": limit })
            } else {
                json!({ "message_ids": message_ids, "limit": limit })
            };
            (requeue(api, body).await?, "requeued")
        }
    };
    if printer.json() {
        printer.print_json(&answer);
        return Ok(());
    }
    let parked: ParkedList = decode(answer)?;
    line(&format!("{} message(s) {verb}", parked.data.len()));
    if !parked.data.is_empty() {
        line(&table(
            &[
                "message",
                "kind",
                "event",
                "endpoint",
                "reason",
                "parked by",
            ],
            parked.data.iter().map(|p| {
                vec![
                    or_dash(p.message_id.clone()),
                    p.kind.clone(),
                    or_dash(p.event_id.clone()),
                    or_dash(p.endpoint_id.clone()),
                    or_dash(p.reason.clone()),
                    or_dash(p.parked_by.clone()),
                ]
            }),
        ));
    }
    if let Some(next) = &parked.next {
        line(&format!("more: --after {next}"));
    }
    Ok(())
}

/// Requeues in calls of `limit` until the ledger says none of those asked
/// for is left; the answers' `data` together.
async fn requeue(api: &Api, body: serde_json::Value) -> Result<serde_json::Value, CliError> {
    let mut data = Vec::new();
    loop {
        let answer = api
            .post(Service::Ledger, "/v1/dlq/requeue", Body::Json(body.clone()))
            .await?;
        let page = answer["data"].as_array().cloned().unwrap_or_default();
        let more = answer["more"].as_bool().unwrap_or(false);
        let done = page.is_empty() || !more;
        data.extend(page);
        if done {
            return Ok(json!({ "data": data, "more": more }));
        }
    }
}
