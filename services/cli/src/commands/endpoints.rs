//! `hookfleet endpoints ...`: the endpoint registry on the producer.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::{Api, Body, Service, decode, segment};
use crate::cli::{CreateEndpoint, EndpointsCommand, UpdateEndpoint};
use crate::error::CliError;
use crate::output::{Printer, fields, line, or_dash, table};
use crate::when::show;

/// An endpoint as the API shows it (with its secret after a creation or a
/// rotation).
#[derive(Debug, Deserialize)]
pub struct Endpoint {
    pub id: String,
    /// `None` for an AMQP destination.
    pub url: Option<String>,
    #[serde(default)]
    pub destination: Option<Destination>,
    #[serde(default)]
    pub description: String,
    pub event_types: Vec<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub ed25519_public_key: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<String>,
    #[serde(default)]
    pub ordered: bool,
    #[serde(default)]
    pub rate_limit: Option<u32>,
    pub created_at: String,
    pub updated_at: String,
    pub secret: Option<String>,
}

/// An AMQP destination, as the API shows it.
#[derive(Debug, Deserialize)]
pub struct Destination {
    pub exchange: String,
    pub routing_key: String,
    /// Another broker's URL, its password masked.
    #[serde(default)]
    pub url: Option<String>,
}

impl Endpoint {
    /// The URL, or the destination in a URL-like form.
    fn target(&self) -> String {
        match (&self.url, &self.destination) {
            (Some(url), _) => url.clone(),
            (None, Some(d)) => match &d.url {
                None => format!("amqp exchange {} key {}", d.exchange, d.routing_key),
                Some(url) => format!(
                    "amqp exchange {} key {} at {url}",
                    d.exchange, d.routing_key
                ),
            },
            (None, None) => "-".to_owned(),
        }
    }

    fn state(&self) -> String {
        match (&self.enabled, &self.disabled_reason) {
            (true, _) => "enabled".to_owned(),
            (false, Some(reason)) if !reason.is_empty() => format!("disabled ({reason})"),
            (false, _) => "disabled".to_owned(),
        }
    }

    fn show(&self) -> String {
        let mut pairs = vec![
            ("id", self.id.clone()),
            ("url", self.target()),
            ("event types", self.event_types.join(", ")),
            ("description", or_dash(Some(&self.description))),
            (
                "headers",
                or_dash(Some(
                    self.headers
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                )),
            ),
            ("state", self.state()),
            (
                "ordered",
                if self.ordered {
                    "yes, per ordering key"
                } else {
                    "no"
                }
                .to_owned(),
            ),
            (
                "rate limit",
                self.rate_limit
                    .map(|limit| format!("{limit}/s"))
                    .unwrap_or_else(|| "none".to_owned()),
            ),
        ];
        if let Some(at) = &self.disabled_at {
            pairs.push(("disabled at", show(at)));
        }
        if let Some(key) = &self.ed25519_public_key {
            pairs.push(("ed25519 key", key.clone()));
        }
        pairs.push(("created", show(&self.created_at)));
        pairs.push(("updated", show(&self.updated_at)));
        if let Some(secret) = &self.secret {
            pairs.push(("secret", format!("{secret}  (shown only now)")));
        }
        fields(&pairs)
    }
}

pub async fn run(command: EndpointsCommand, api: &Api, printer: Printer) -> Result<(), CliError> {
    let answer = match command {
        EndpointsCommand::List => return list(api, printer).await,
        EndpointsCommand::Create(create) => {
            api.post(
                Service::Producer,
                "/v1/endpoints",
                Body::Json(create_body(create)?),
            )
            .await?
        }
        EndpointsCommand::Show { id } => api.get(Service::Producer, &path(&id, ""), &[]).await?,
        EndpointsCommand::Update(update) => {
            let id = update.id.clone();
            api.patch(Service::Producer, &path(&id, ""), update_body(update)?)
                .await?
        }
        EndpointsCommand::Disable { id, reason } => {
            api.post(
                Service::Producer,
                &path(&id, "/disable"),
                Body::Json(json!({ "reason": reason })),
            )
            .await?
        }
        EndpointsCommand::Enable { id } => {
            api.post(Service::Producer, &path(&id, "/enable"), Body::None)
                .await?
        }
        EndpointsCommand::RotateSecret { id } => {
            api.post(Service::Producer, &path(&id, "/secret/rotate"), Body::None)
                .await?
        }
        EndpointsCommand::Delete { id } => {
            api.delete(Service::Producer, &path(&id, "")).await?;
            if printer.json() {
                printer.print_json(&json!({ "id": id, "deleted": true }));
            } else {
                line(&format!("deleted {id}"));
            }
            return Ok(());
        }
    };
    if printer.json() {
        printer.print_json(&answer);
    } else {
        line(&decode::<Endpoint>(answer)?.show());
    }
    Ok(())
}

/// Every page, so the list is whole; `--output json` prints them as one
/// page.
async fn list(api: &Api, printer: Printer) -> Result<(), CliError> {
    let all: Vec<Value> = api
        .all_pages(
            Service::Producer,
            "/v1/endpoints",
            vec![("limit", "500".to_owned())],
        )
        .await?;
    if printer.json() {
        printer.print_json(&json!({ "data": all, "next": null }));
        return Ok(());
    }
    let endpoints = all
        .into_iter()
        .map(decode::<Endpoint>)
        .collect::<Result<Vec<_>, _>>()?;
    line(&table(
        &["id", "url", "event types", "state", "created"],
        endpoints.iter().map(|e| {
            vec![
                e.id.clone(),
                e.target(),
                e.event_types.join(","),
                e.state(),
                show(&e.created_at),
            ]
        }),
    ));
    Ok(())
}

fn path(id: &str, rest: &str) -> String {
    format!("/v1/endpoints/{}{rest}", segment(id))
}

fn create_body(create: CreateEndpoint) -> Result<Value, CliError> {
    let mut body = Map::new();
    match (create.endpoint_url, create.amqp_exchange) {
        (_, Some(exchange)) => {
            let mut destination =
                json!({"type": "amqp", "exchange": exchange, "routing_key": create.routing_key});
            if let Some(url) = create.amqp_broker_url {
                destination["url"] = json!(url);
            }
            body.insert("destination".into(), destination)
        }
        (url, None) => body.insert("url".into(), json!(url)),
    };
    body.insert("event_types".into(), json!(create.event_types));
    if let Some(description) = create.description {
        body.insert("description".into(), json!(description));
    }
    body.insert("headers".into(), json!(parse_headers(&create.headers)?));
    if let Some(secret) = create.secret {
        body.insert("secret".into(), json!(secret));
    }
    if create.ed25519 {
        body.insert("ed25519".into(), json!(true));
    }
    if create.ordered {
        body.insert("ordered".into(), json!(true));
    }
    if let Some(limit) = create.rate_limit {
        body.insert("rate_limit".into(), json!(limit));
    }
    Ok(Value::Object(body))
}

fn update_body(update: UpdateEndpoint) -> Result<Value, CliError> {
    let mut body = Map::new();
    if let Some(url) = update.endpoint_url {
        body.insert("url".into(), json!(url));
    }
    if let Some(types) = update.event_types {
        body.insert("event_types".into(), json!(types));
    }
    if let Some(description) = update.description {
        body.insert("description".into(), json!(description));
    }
    if let Some(headers) = update.headers {
        body.insert("headers".into(), json!(parse_headers(&headers)?));
    }
    if let Some(ordered) = update.ordered {
        body.insert("ordered".into(), json!(ordered));
    }
    if let Some(limit) = update.rate_limit {
        body.insert("rate_limit".into(), json!(limit));
    }
    if update.no_rate_limit {
        body.insert("rate_limit".into(), Value::Null);
    }
    if body.is_empty() {
        return Err(CliError::usage(
            "nothing to change: give --endpoint-url, --event-type, --description, --header, \
             --ordered, --rate-limit or --no-rate-limit",
        ));
    }
    Ok(Value::Object(body))
}

/// `NAME=VALUE` pairs.
fn parse_headers(raw: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    raw.iter()
        .map(|pair| {
            pair.split_once('=')
                .filter(|(name, _)| !name.trim().is_empty())
                .map(|(name, value)| (name.trim().to_owned(), value.to_owned()))
                .ok_or_else(|| CliError::usage(format!("--header: {pair:?} is not NAME=VALUE")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_name_value_pairs() {
        let parsed = parse_headers(&["x-team=payments".into(), "x-a=b=c".into()]).unwrap();
        assert_eq!(parsed["x-team"], "payments");
        assert_eq!(parsed["x-a"], "b=c");
        assert!(matches!(
            parse_headers(&["no-equals".into()]),
            Err(CliError::Usage(_))
        ));
    }

    #[test]
    fn an_update_without_changes_is_a_usage_error() {
        let update = UpdateEndpoint {
            id: "ep_1".into(),
            endpoint_url: None,
            event_types: None,
            description: None,
            headers: None,
            ordered: None,
            rate_limit: None,
            no_rate_limit: false,
        };
        assert!(matches!(update_body(update), Err(CliError::Usage(_))));
    }
}
