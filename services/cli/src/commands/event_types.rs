//! `hookfleet event-types ...`: the tenant's event-type catalogue on the
//! producer.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Api, Body, Service, decode, segment};
use crate::cli::{EventTypesCommand, PutEventType};
use crate::error::CliError;
use crate::output::{Printer, fields, line, or_dash, table};
use crate::when::show;

/// An event type as the API shows it.
#[derive(Debug, Deserialize)]
struct EventType {
    name: String,
    version: i32,
    #[serde(default)]
    description: String,
    deprecated: bool,
    schema: Option<Value>,
    #[serde(default)]
    examples: Vec<Value>,
    updated_at: String,
    #[serde(default)]
    versions: Vec<Version>,
}

#[derive(Debug, Deserialize)]
struct Version {
    version: i32,
    #[serde(default)]
    description: String,
    deprecated: bool,
    schema: Option<Value>,
    created_at: String,
}

impl EventType {
    fn show(&self) -> String {
        let mut text = fields(&[
            ("type", self.name.clone()),
            ("version", self.version.to_string()),
            ("description", or_dash(Some(&self.description))),
            ("deprecated", yes_no(self.deprecated)),
            ("examples", self.examples.len().to_string()),
            ("updated", show(&self.updated_at)),
        ]);
        text.push_str("\n\nschema:\n");
        text.push_str(&match &self.schema {
            Some(schema) => serde_json::to_string_pretty(schema).unwrap_or_default(),
            None => "none: payloads are not checked".into(),
        });
        if !self.versions.is_empty() {
            text.push_str("\n\n");
            text.push_str(&table(
                &["version", "created", "schema", "deprecated", "description"],
                self.versions.iter().map(|v| {
                    vec![
                        v.version.to_string(),
                        show(&v.created_at),
                        yes_no(v.schema.is_some()),
                        yes_no(v.deprecated),
                        or_dash(Some(&v.description)),
                    ]
                }),
            ));
        }
        text
    }
}

fn yes_no(yes: bool) -> String {
    if yes { "yes" } else { "no" }.to_owned()
}

pub async fn run(command: EventTypesCommand, api: &Api, printer: Printer) -> Result<(), CliError> {
    let answer = match command {
        EventTypesCommand::List => return list(api, printer).await,
        EventTypesCommand::Show { event_type } => {
            api.get(Service::Producer, &path(&event_type), &[]).await?
        }
        EventTypesCommand::Put(put) => {
            let event_type = put.event_type.clone();
            api.put(
                Service::Producer,
                &path(&event_type),
                Body::Raw(put_body(&put)?),
            )
            .await?
        }
        EventTypesCommand::Delete { event_type } => {
            api.delete(Service::Producer, &path(&event_type)).await?;
            if printer.json() {
                printer.print_json(&json!({ "type": event_type, "deleted": true }));
            } else {
                line(&format!("deleted {event_type}"));
            }
            return Ok(());
        }
        EventTypesCommand::Openapi => {
            let document = api
                .get(Service::Producer, "/v1/event-types/openapi.json", &[])
                .await?;
            // A document is for tools: JSON whatever the output format.
            line(&serde_json::to_string_pretty(&document).unwrap_or_default());
            return Ok(());
        }
    };
    if printer.json() {
        printer.print_json(&answer);
    } else {
        line(&decode::<EventType>(answer)?.show());
    }
    Ok(())
}

async fn list(api: &Api, printer: Printer) -> Result<(), CliError> {
    let all: Vec<Value> = api
        .all_pages(
            Service::Producer,
            "/v1/event-types",
            vec![("limit", "500".to_owned())],
        )
        .await?;
    if printer.json() {
        printer.print_json(&json!({ "data": all, "next": null }));
        return Ok(());
    }
    let types = all
        .into_iter()
        .map(decode::<EventType>)
        .collect::<Result<Vec<_>, _>>()?;
    line(&table(
        &[
            "type",
            "version",
            "schema",
            "deprecated",
            "updated",
            "description",
        ],
        types.iter().map(|t| {
            vec![
                t.name.clone(),
                t.version.to_string(),
                yes_no(t.schema.is_some()),
                yes_no(t.deprecated),
                show(&t.updated_at),
                or_dash(Some(&t.description)),
            ]
        }),
    ));
    Ok(())
}

fn path(event_type: &str) -> String {
    format!("/v1/event-types/{}", segment(event_type))
}

/// A JSON file, as text (its bytes are sent as they are, so the schema
/// keeps its key order).
fn read_json(what: &str, path: &Path) -> Result<String, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::usage(format!("{what} {}: {e}", path.display())))?;
    serde_json::from_str::<serde::de::IgnoredAny>(&text)
        .map_err(|e| CliError::usage(format!("{what} {}: not JSON: {e}", path.display())))?;
    Ok(text.trim_end().to_owned())
}

fn put_body(put: &PutEventType) -> Result<String, CliError> {
    let schema = match &put.schema {
        Some(file) => read_json("schema file", file)?,
        None => "null".into(),
    };
    let examples = put
        .examples
        .iter()
        .map(|file| read_json("example file", file))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!(
        r#"{{"description": {}, "deprecated": {}, "schema": {schema}, "examples": [{}]}}"#,
        json!(put.description.clone().unwrap_or_default()),
        put.deprecated,
        examples.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_file_is_sent_as_written() {
        let dir = std::env::temp_dir().join(format!("hookfleet-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let schema = dir.join("schema.json");
        std::fs::write(&schema, "{\"type\": \"object\", \"a\": 1}\n").unwrap();
        let body = put_body(&PutEventType {
            event_type: "order.created".into(),
            schema: Some(schema.clone()),
            description: Some("Placed".into()),
            deprecated: false,
            examples: vec![],
        })
        .unwrap();
        assert!(
            body.contains(r#""schema": {"type": "object", "a": 1}"#),
            "{body}"
        );
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["description"], "Placed");

        std::fs::write(&schema, "{not json").unwrap();
        let refused = put_body(&PutEventType {
            event_type: "order.created".into(),
            schema: Some(schema),
            description: None,
            deprecated: false,
            examples: vec![],
        });
        assert!(matches!(refused, Err(CliError::Usage(m)) if m.contains("not JSON")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
