//! `hookfleet events send | show`: ingest on the producer, the record on
//! the ledger.

use std::io::Read;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::api::{Api, Body, Service, decode, segment};
use crate::cli::{EventsCommand, SendEvent};
use crate::commands::attempts::{Attempt, attempts_table};
use crate::error::CliError;
use crate::output::{Printer, fields, line, or_dash, table};
use crate::when::show;

pub async fn run(command: EventsCommand, api: &Api, printer: Printer) -> Result<(), CliError> {
    match command {
        EventsCommand::Send(send) => send_event(send, api, printer).await,
        EventsCommand::Show { id } => show_event(&id, api, printer).await,
    }
}

/// The request: the payload goes in as the very bytes given, so the
/// receivers get them unchanged.
#[derive(Debug, Serialize)]
struct EventRequest {
    #[serde(rename = "type")]
    event_type: String,
    payload: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Accepted {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
}

async fn send_event(send: SendEvent, api: &Api, printer: Printer) -> Result<(), CliError> {
    let payload = read_payload(send.payload.as_deref(), send.file.as_deref())?;
    let request = EventRequest {
        event_type: send.event_type,
        payload,
        id: send.id,
    };
    let body =
        serde_json::to_string(&request).map_err(|e| CliError::usage(format!("payload: {e}")))?;
    let answer = api
        .post(Service::Producer, "/v1/events", Body::Raw(body))
        .await?;
    if printer.json() {
        printer.print_json(&answer);
    } else {
        let accepted: Accepted = decode(answer)?;
        line(&format!(
            "accepted {} ({})",
            accepted.id, accepted.event_type
        ));
    }
    Ok(())
}

/// The payload from the argument, standard input (`-`) or a file. Not JSON,
/// or not readable: a usage error.
fn read_payload(
    argument: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Box<RawValue>, CliError> {
    let (text, source) = match (argument, file) {
        (_, Some(path)) => (
            std::fs::read_to_string(path)
                .map_err(|e| CliError::usage(format!("payload file {}: {e}", path.display())))?,
            format!("payload file {}", path.display()),
        ),
        (Some("-"), None) => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| CliError::usage(format!("payload from standard input: {e}")))?;
            (text, "payload from standard input".to_owned())
        }
        (Some(text), None) => (text.to_owned(), "payload".to_owned()),
        (None, None) => {
            return Err(CliError::usage(
                "give the payload as an argument, with --file, or `-` for standard input",
            ));
        }
    };
    // A trailing newline (from a file or `echo`) is not part of the JSON.
    let text = text.trim().to_owned();
    let raw = RawValue::from_string(text)
        .map_err(|e| CliError::usage(format!("{source} is not JSON: {e}")))?;
    if !raw.get().starts_with('{') {
        return Err(CliError::usage(format!("{source} must be a JSON object")));
    }
    Ok(raw)
}

#[derive(Debug, Deserialize)]
struct EventView {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created_at: String,
    /// The inbound source it came in through, if any.
    #[serde(default)]
    source: Option<String>,
    deliveries: Vec<Delivery>,
    attempts: Vec<Attempt>,
}

#[derive(Debug, Deserialize)]
struct Delivery {
    endpoint_id: String,
    state: String,
    attempts: i32,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    next_attempt_at: Option<String>,
}

async fn show_event(id: &str, api: &Api, printer: Printer) -> Result<(), CliError> {
    let answer = api
        .get(Service::Ledger, &format!("/v1/events/{}", segment(id)), &[])
        .await?;
    if printer.json() {
        printer.print_json(&answer);
        return Ok(());
    }
    let event: EventView = decode(answer)?;
    let mut pairs = vec![
        ("id", event.id),
        ("type", event.event_type),
        ("created", show(&event.created_at)),
    ];
    if let Some(source) = event.source {
        pairs.push(("source", source));
    }
    line(&fields(&pairs));
    line("");
    line(&table(
        &[
            "endpoint",
            "state",
            "attempts",
            "last status",
            "last error",
            "next attempt",
        ],
        event.deliveries.iter().map(|d| {
            vec![
                d.endpoint_id.clone(),
                d.state.clone(),
                d.attempts.to_string(),
                or_dash(d.last_status_code),
                or_dash(d.last_error.clone()),
                or_dash(d.next_attempt_at.as_deref().map(show)),
            ]
        }),
    ));
    if !event.attempts.is_empty() {
        line("");
        line(&attempts_table(&event.attempts));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_keeps_its_bytes_in_the_request() {
        let payload = read_payload(Some("{\"b\": 1,  \"a\": 2}\n"), None).unwrap();
        let body = serde_json::to_string(&EventRequest {
            event_type: "order.created".into(),
            payload,
            id: None,
        })
        .unwrap();
        assert_eq!(
            body,
            r#"{"type":"order.created","payload":{"b": 1,  "a": 2}}"#
        );
    }

    #[test]
    fn a_payload_that_is_not_a_json_object_is_a_usage_error() {
        assert!(matches!(
            read_payload(Some("{oops"), None),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            read_payload(Some("[1]"), None),
            Err(CliError::Usage(_))
        ));
        assert!(matches!(
            read_payload(None, Some(std::path::Path::new("/no/such/file.json"))),
            Err(CliError::Usage(m)) if m.contains("/no/such/file.json")
        ));
    }
}
