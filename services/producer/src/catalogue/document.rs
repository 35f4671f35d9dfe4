//! The tenant's catalogue as an OpenAPI 3.1 document, for receivers to
//! generate typed handlers from: one entry under `webhooks` per event type
//! (the POST a receiver gets), its payload schema under
//! `components/schemas`, the Standard Webhooks headers as parameters, and
//! the type's examples.
//!
//! A schema's own references (`#/$defs/line`) point into the schema; in the
//! document the schema sits at `#/components/schemas/OrderCreated`, so they
//! are rewritten to point there. A schema with its own `$id` keeps its
//! references, which resolve against that `$id`.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

/// One catalogued type as the document needs it.
#[derive(Debug, Clone)]
pub struct DocumentedType {
    pub name: String,
    pub version: i32,
    pub description: String,
    pub deprecated: bool,
    pub schema: Option<Value>,
    pub examples: Vec<Value>,
}

/// The OpenAPI 3.1 document of `types` (in name order), for `tenant`.
/// `revision` becomes `info.version`: it changes when the catalogue does.
pub fn document(tenant: &str, revision: &str, types: &[DocumentedType]) -> Value {
    let mut webhooks = Map::new();
    let mut schemas = Map::new();
    let mut taken = HashSet::new();
    for event_type in types {
        let schema_name = unique(schema_name(&event_type.name), &mut taken);
        let mut schema = event_type
            .schema
            .clone()
            .unwrap_or_else(|| json!({"type": "object"}));
        if schema.get("$id").is_none() {
            rebase_refs(&mut schema, &format!("#/components/schemas/{schema_name}"));
        }
        if let Value::Object(fields) = &mut schema
            && !fields.contains_key("description")
            && !event_type.description.is_empty()
        {
            fields.insert("description".into(), event_type.description.clone().into());
        }
        schemas.insert(schema_name.clone(), schema);

        let mut media = json!({"schema": {"$ref": format!("#/components/schemas/{schema_name}")}});
        if !event_type.examples.is_empty() {
            let examples: Map<String, Value> = event_type
                .examples
                .iter()
                .enumerate()
                .map(|(n, example)| (format!("example{}", n + 1), json!({"value": example})))
                .collect();
            media["examples"] = Value::Object(examples);
        }
        let mut operation = json!({
            "operationId": operation_id(&event_type.name),
            "summary": event_type.name,
            "parameters": [
                {"$ref": "#/components/parameters/WebhookId"},
                {"$ref": "#/components/parameters/WebhookTimestamp"},
                {"$ref": "#/components/parameters/WebhookSignature"},
            ],
            "requestBody": {
                "required": true,
                "content": {"application/json": media},
            },
            "responses": {
                "200": {"description": "Any 2xx acknowledges the webhook."},
                "410": {"description": "Gone: hookfleet stops retrying and disables the endpoint."},
            },
            "x-hookfleet-version": event_type.version,
        });
        if !event_type.description.is_empty() {
            operation["description"] = event_type.description.clone().into();
        }
        if event_type.deprecated {
            operation["deprecated"] = true.into();
        }
        webhooks.insert(event_type.name.clone(), json!({"post": operation}));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": format!("{tenant} webhooks"),
            "version": revision,
            "description": "The webhooks hookfleet sends for this tenant, one per event type. \
                Each is a POST of the event's payload, signed per Standard Webhooks \
                (https://www.standardwebhooks.com).",
        },
        "paths": {},
        "webhooks": webhooks,
        "components": {
            "schemas": schemas,
            "parameters": {
                "WebhookId": {
                    "name": "webhook-id",
                    "in": "header",
                    "required": true,
                    "description": "The event id, the same on every retry: deduplicate on it.",
                    "schema": {"type": "string"},
                },
                "WebhookTimestamp": {
                    "name": "webhook-timestamp",
                    "in": "header",
                    "required": true,
                    "description": "When this attempt was signed, in Unix seconds.",
                    "schema": {"type": "integer"},
                },
                "WebhookSignature": {
                    "name": "webhook-signature",
                    "in": "header",
                    "required": true,
                    "description": "`v1,` + base64 HMAC-SHA256 of `id.timestamp.body` (and \
                        `v1a,` + an ed25519 signature when the endpoint has a key); several, \
                        space-separated, during a secret rotation.",
                    "schema": {"type": "string"},
                },
            },
        },
    })
}

/// `order.created` is `OrderCreated`; a name starting with a digit gets
/// an `Event` prefix, as identifiers in most languages must not.
fn schema_name(event_type: &str) -> String {
    let mut name: String = event_type
        .split(['.', '_', '-'])
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        name.insert_str(0, "Event");
    }
    name
}

/// `order.created` and `order_created` would both be `OrderCreated`: the
/// second becomes `OrderCreated2`.
fn unique(name: String, taken: &mut HashSet<String>) -> String {
    let mut candidate = name.clone();
    let mut n = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{name}{n}");
        n += 1;
    }
    candidate
}

fn operation_id(event_type: &str) -> String {
    event_type
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Rewrites every local `$ref` (`#...`) to resolve under `base`.
fn rebase_refs(schema: &mut Value, base: &str) {
    match schema {
        Value::Object(fields) => {
            for (key, value) in fields.iter_mut() {
                match value {
                    Value::String(reference) if key == "$ref" && reference.starts_with('#') => {
                        *reference = format!("{base}{}", &reference[1..]);
                    }
                    other => rebase_refs(other, base),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rebase_refs(item, base)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order_created() -> DocumentedType {
        DocumentedType {
            name: "order.created".into(),
            version: 2,
            description: "An order was placed.".into(),
            deprecated: false,
            schema: Some(json!({
                "type": "object",
                "properties": {"lines": {"type": "array", "items": {"$ref": "#/$defs/line"}}},
                "$defs": {"line": {"type": "object"}}
            })),
            examples: vec![json!({"lines": []})],
        }
    }

    #[test]
    fn each_type_is_a_webhook_with_its_schema_headers_and_examples() {
        let doc = document("acme", "7", &[order_created()]);
        assert_eq!(doc["openapi"], "3.1.0");
        let post = &doc["webhooks"]["order.created"]["post"];
        assert_eq!(post["operationId"], "order_created");
        assert_eq!(post["x-hookfleet-version"], 2);
        let media = &post["requestBody"]["content"]["application/json"];
        assert_eq!(media["schema"]["$ref"], "#/components/schemas/OrderCreated");
        assert_eq!(media["examples"]["example1"]["value"], json!({"lines": []}));
        let headers: Vec<&str> = post["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["$ref"].as_str().unwrap())
            .collect();
        assert_eq!(headers.len(), 3);
        for header in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
            let found = headers.iter().any(|r| {
                let name = r.rsplit('/').next().unwrap();
                doc["components"]["parameters"][name]["name"] == header
            });
            assert!(found, "{header}");
        }
        // The schema's own reference now resolves inside the document.
        let schema = &doc["components"]["schemas"]["OrderCreated"];
        assert_eq!(
            schema["properties"]["lines"]["items"]["$ref"],
            "#/components/schemas/OrderCreated/$defs/line"
        );
        assert_eq!(schema["description"], "An order was placed.");
    }

    #[test]
    fn names_become_unique_identifiers() {
        assert_eq!(schema_name("order.created"), "OrderCreated");
        assert_eq!(
            schema_name("invoice.payment_failed"),
            "InvoicePaymentFailed"
        );
        assert_eq!(schema_name("3ds.done"), "Event3dsDone");
        let mut taken = HashSet::new();
        assert_eq!(unique("OrderCreated".into(), &mut taken), "OrderCreated");
        assert_eq!(unique("OrderCreated".into(), &mut taken), "OrderCreated2");
        assert_eq!(operation_id("order.created-v2"), "order_created_v2");
    }

    #[test]
    fn a_type_without_schema_is_any_object() {
        let mut untyped = order_created();
        untyped.schema = None;
        untyped.deprecated = true;
        let doc = document("acme", "1", &[untyped]);
        assert_eq!(
            doc["components"]["schemas"]["OrderCreated"]["type"],
            "object"
        );
        assert_eq!(doc["webhooks"]["order.created"]["post"]["deprecated"], true);
    }
}
