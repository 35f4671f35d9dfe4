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
        DlqCommand::List { scan } => (
            api.get(Service::Ledger, "/v1/dlq", &[("scan", scan.to_string())])
                .await?,
            "parked",
        ),
        DlqCommand::Requeue {
            message_ids,
            all,
            scan,
        } => {
            let body = if all {
                json!({ "all": true, "scan": scan })
            } else {
                json!({ "message_ids": message_ids, "scan": scan })
            };
            (
                api.post(Service::Ledger, "/v1/dlq/requeue", Body::Json(body))
                    .await?,
                "requeued",
            )
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
    Ok(())
}
