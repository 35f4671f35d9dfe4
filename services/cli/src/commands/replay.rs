//! `hookfleet replay EVENT`: send an event again through the ledger.

use serde::Deserialize;
use serde_json::json;

use crate::api::{Api, Body, Service, decode, segment};
use crate::cli::ReplayArgs;
use crate::error::CliError;
use crate::output::{Printer, line, table};

#[derive(Debug, Deserialize)]
struct Replayed {
    data: Vec<ReplayedDelivery>,
}

#[derive(Debug, Deserialize)]
struct ReplayedDelivery {
    delivery_id: String,
    endpoint_id: String,
    attempt: u32,
}

pub async fn run(args: ReplayArgs, api: &Api, printer: Printer) -> Result<(), CliError> {
    let body = match &args.endpoint {
        Some(endpoint) => Body::Json(json!({ "endpoint_id": endpoint })),
        None => Body::None,
    };
    let answer = api
        .post(
            Service::Ledger,
            &format!("/v1/events/{}/replay", segment(&args.event_id)),
            body,
        )
        .await?;
    if printer.json() {
        printer.print_json(&answer);
        return Ok(());
    }
    let replayed: Replayed = decode(answer)?;
    line(&format!(
        "replayed {} to {} endpoint(s)",
        args.event_id,
        replayed.data.len()
    ));
    line(&table(
        &["endpoint", "delivery", "attempt"],
        replayed.data.iter().map(|d| {
            vec![
                d.endpoint_id.clone(),
                d.delivery_id.clone(),
                d.attempt.to_string(),
            ]
        }),
    ));
    Ok(())
}
