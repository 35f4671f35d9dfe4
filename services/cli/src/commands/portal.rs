//! `hookfleet portal open`: a link into the web portal, with a new
//! short-lived session, for the operator to open or hand on.

use serde::Deserialize;
use serde_json::json;

use crate::api::{Api, Body, Service, decode};
use crate::cli::PortalCommand;
use crate::error::CliError;
use crate::output::{Printer, line};

#[derive(Debug, Deserialize)]
struct Session {
    url: String,
    expires_at: String,
}

pub async fn run(command: PortalCommand, api: &Api, printer: Printer) -> Result<(), CliError> {
    let PortalCommand::Open(args) = command;
    let mut body = json!({ "expires_in": args.expires_in, "read_only": args.read_only });
    if !args.endpoints.is_empty() {
        body["endpoint_ids"] = json!(args.endpoints);
    }
    let answer = api
        .post(Service::Producer, "/v1/portal/sessions", Body::Json(body))
        .await?;
    if printer.json() {
        printer.print_json(&answer);
        return Ok(());
    }
    let session: Session = decode(answer)?;
    // The answer's URL is relative to the API's base URL.
    line(&api.url(Service::Producer, &session.url));
    eprintln!("(works until {})", session.expires_at);
    Ok(())
}
