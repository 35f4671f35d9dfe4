//! `hookfleet sources ...`: the inbound sources on the producer, whose
//! providers (GitHub, Stripe, Shopify, Standard Webhooks senders) post to
//! their ingest URL.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::{Api, Body, Service, decode, segment};
use crate::cli::{CreateSource, SourcesCommand, UpdateSource};
use crate::error::CliError;
use crate::output::{Printer, fields, line, table};
use crate::when::show;

/// A source as the API shows it (with its secret after a creation or a
/// rotation).
#[derive(Debug, Deserialize)]
pub struct Source {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub type_prefix: String,
    pub ingest_path: String,
    pub created_at: String,
    pub updated_at: String,
    pub secret: Option<String>,
}

impl Source {
    fn show(&self, api: &Api) -> String {
        let mut pairs = vec![
            ("id", self.id.clone()),
            ("name", self.name.clone()),
            ("kind", self.kind.clone()),
            ("event types", format!("{}.*", self.type_prefix)),
            ("ingest url", api.url(Service::Producer, &self.ingest_path)),
            ("created", show(&self.created_at)),
            ("updated", show(&self.updated_at)),
        ];
        if let Some(secret) = &self.secret {
            pairs.push(("secret", format!("{secret}  (shown only now)")));
        }
        fields(&pairs)
    }
}

pub async fn run(command: SourcesCommand, api: &Api, printer: Printer) -> Result<(), CliError> {
    let answer = match command {
        SourcesCommand::List => return list(api, printer).await,
        SourcesCommand::Create(create) => {
            api.post(
                Service::Producer,
                "/v1/sources",
                Body::Json(create_body(create)),
            )
            .await?
        }
        SourcesCommand::Show { id } => api.get(Service::Producer, &path(&id, ""), &[]).await?,
        SourcesCommand::Update(update) => {
            let id = update.id.clone();
            api.patch(Service::Producer, &path(&id, ""), update_body(update)?)
                .await?
        }
        SourcesCommand::RotateSecret { id, secret } => {
            let body = match secret {
                Some(secret) => Body::Json(json!({ "secret": secret })),
                None => Body::None,
            };
            api.post(Service::Producer, &path(&id, "/secret/rotate"), body)
                .await?
        }
        SourcesCommand::Delete { id } => {
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
        line(&decode::<Source>(answer)?.show(api));
    }
    Ok(())
}

/// Every page; `--output json` prints them as one page.
async fn list(api: &Api, printer: Printer) -> Result<(), CliError> {
    let all: Vec<Value> = api
        .all_pages(
            Service::Producer,
            "/v1/sources",
            vec![("limit", "500".to_owned())],
        )
        .await?;
    if printer.json() {
        printer.print_json(&json!({ "data": all, "next": null }));
        return Ok(());
    }
    let sources = all
        .into_iter()
        .map(decode::<Source>)
        .collect::<Result<Vec<_>, _>>()?;
    line(&table(
        &["id", "name", "kind", "event types", "created"],
        sources.iter().map(|s| {
            vec![
                s.id.clone(),
                s.name.clone(),
                s.kind.clone(),
                format!("{}.*", s.type_prefix),
                show(&s.created_at),
            ]
        }),
    ));
    Ok(())
}

fn path(id: &str, rest: &str) -> String {
    format!("/v1/sources/{}{rest}", segment(id))
}

fn create_body(create: CreateSource) -> Value {
    let mut body = Map::new();
    body.insert("name".into(), json!(create.name));
    body.insert("kind".into(), json!(create.kind.as_str()));
    if let Some(secret) = create.secret {
        body.insert("secret".into(), json!(secret));
    }
    if let Some(prefix) = create.type_prefix {
        body.insert("type_prefix".into(), json!(prefix));
    }
    Value::Object(body)
}

fn update_body(update: UpdateSource) -> Result<Value, CliError> {
    let mut body = Map::new();
    if let Some(name) = update.name {
        body.insert("name".into(), json!(name));
    }
    if let Some(prefix) = update.type_prefix {
        body.insert("type_prefix".into(), json!(prefix));
    }
    if body.is_empty() {
        return Err(CliError::usage(
            "nothing to change: give --name or --type-prefix",
        ));
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::SourceKind;

    #[test]
    fn bodies_carry_only_what_was_given() {
        let body = create_body(CreateSource {
            name: "repo".into(),
            kind: SourceKind::StandardWebhooks,
            secret: None,
            type_prefix: Some("partner".into()),
        });
        assert_eq!(
            body,
            json!({"name": "repo", "kind": "standard_webhooks", "type_prefix": "partner"})
        );
        let update = UpdateSource {
            id: "src_1".into(),
            name: None,
            type_prefix: None,
        };
        assert!(matches!(update_body(update), Err(CliError::Usage(_))));
    }
}
