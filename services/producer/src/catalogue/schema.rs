//! An event type's JSON Schema, parsed and compiled once, with the caps
//! that keep one tenant's schema from hurting the producer: a size cap and
//! a nesting cap checked on the raw text before anything is parsed, and no
//! `$ref` ever fetched (from the network or the file system).

use std::sync::Arc;

use jsonschema::{Retrieve, Uri, Validator};
use serde_json::Value;

/// The largest schema accepted, in bytes of JSON text.
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
/// The deepest nesting of objects and arrays a schema may have.
pub const MAX_SCHEMA_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("is {size} bytes; at most {max} are allowed")]
    TooLarge { size: usize, max: usize },
    #[error("nests objects and arrays more than {max} levels deep")]
    TooDeep { max: usize },
    #[error("is not valid JSON: {0}")]
    NotJson(String),
    #[error("must be a JSON object (a JSON Schema)")]
    NotObject,
    #[error("{0}")]
    Invalid(String),
}

/// A compiled schema, shared by every check of its type version.
#[derive(Debug, Clone)]
pub struct TypeSchema {
    pub value: Arc<Value>,
    pub validator: Arc<Validator>,
}

impl TypeSchema {
    /// Parses and compiles `raw`, a JSON Schema as JSON text.
    pub fn compile(raw: &str) -> Result<Self, SchemaError> {
        if raw.len() > MAX_SCHEMA_BYTES {
            return Err(SchemaError::TooLarge {
                size: raw.len(),
                max: MAX_SCHEMA_BYTES,
            });
        }
        if hookfleet_contract::limits::json_depth(raw.as_bytes()) > MAX_SCHEMA_DEPTH {
            return Err(SchemaError::TooDeep {
                max: MAX_SCHEMA_DEPTH,
            });
        }
        let value: Value =
            serde_json::from_str(raw).map_err(|e| SchemaError::NotJson(e.to_string()))?;
        if !value.is_object() {
            return Err(SchemaError::NotObject);
        }
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            // Producers send data, not documentation: `format` is checked.
            .should_validate_formats(true)
            .with_retriever(NoFetching)
            .build(&value)
            .map_err(|e| SchemaError::Invalid(e.to_string()))?;
        Ok(Self {
            value: Arc::new(value),
            validator: Arc::new(validator),
        })
    }

    /// Every problem of `instance` against the schema, at most `max`, as
    /// (JSON pointer, message), and how many there were in all.
    pub fn problems(&self, instance: &Value, max: usize) -> (Vec<(String, String)>, usize) {
        let mut found = Vec::new();
        let mut total = 0;
        for error in self.validator.iter_errors(instance) {
            total += 1;
            if found.len() < max {
                found.push((
                    error.instance_path().as_str().to_owned(),
                    shorten(&error.to_string(), MAX_MESSAGE_CHARS),
                ));
            }
        }
        (found, total)
    }
}

/// Messages quote the offending value; a long value is cut.
const MAX_MESSAGE_CHARS: usize = 200;

fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

/// Refuses every reference that is not inside the schema itself (or one of
/// the JSON Schema meta-schemas, which the crate ships).
struct NoFetching;

impl Retrieve for NoFetching {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        Err(format!(
            "external $ref {:?} refused: hookfleet fetches nothing; put the definition under $defs",
            uri.as_str()
        )
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order_schema() -> String {
        json!({
            "type": "object",
            "required": ["order_id", "total"],
            "properties": {
                "order_id": {"type": "integer"},
                "total": {"type": "number"},
                "email": {"type": "string", "format": "email"},
                "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}}
            },
            "$defs": {"line": {"type": "object", "required": ["sku"]}}
        })
        .to_string()
    }

    #[test]
    fn a_valid_payload_has_no_problems() {
        let schema = TypeSchema::compile(&order_schema()).unwrap();
        let payload = json!({"order_id": 1, "total": 9.5, "lines": [{"sku": "a"}]});
        assert_eq!(schema.problems(&payload, 10), (vec![], 0));
    }

    #[test]
    fn every_problem_is_named_at_its_path() {
        let schema = TypeSchema::compile(&order_schema()).unwrap();
        let payload = json!({"total": "19.99", "email": "nope", "lines": [{}]});
        let (problems, total) = schema.problems(&payload, 10);
        assert_eq!(total, 4, "{problems:?}");
        let paths: Vec<&str> = problems.iter().map(|(p, _)| p.as_str()).collect();
        for path in ["", "/total", "/email", "/lines/0"] {
            assert!(paths.contains(&path), "{path} not in {paths:?}");
        }
        let total_problem = problems.iter().find(|(p, _)| p == "/total").unwrap();
        assert!(total_problem.1.contains("number"), "{total_problem:?}");
        // Capped, but counted.
        let (capped, total) = schema.problems(&payload, 2);
        assert_eq!((capped.len(), total), (2, 4));
    }

    #[test]
    fn a_schema_that_does_not_compile_is_refused_with_the_reason() {
        let error = TypeSchema::compile(r#"{"type": "strnig"}"#).unwrap_err();
        assert!(matches!(error, SchemaError::Invalid(_)), "{error}");
        assert!(error.to_string().contains("strnig"), "{error}");
        assert_eq!(
            TypeSchema::compile("[1]").unwrap_err(),
            SchemaError::NotObject
        );
        assert!(matches!(
            TypeSchema::compile("{").unwrap_err(),
            SchemaError::NotJson(_)
        ));
    }

    #[test]
    fn external_references_are_refused_not_fetched() {
        for reference in ["https://example.com/order.json", "file:///etc/passwd"] {
            let schema = json!({"$ref": reference}).to_string();
            let error = TypeSchema::compile(&schema).unwrap_err();
            assert!(
                error.to_string().contains("refused"),
                "{reference}: {error}"
            );
        }
        // A relative one has nothing to resolve against.
        let error = TypeSchema::compile(r##"{"$ref": "other.json#/x"}"##).unwrap_err();
        assert!(error.to_string().contains("other.json"), "{error}");
    }

    #[test]
    fn huge_and_deep_schemas_are_refused_before_parsing() {
        let huge = format!(r#"{{"description": "{}"}}"#, "x".repeat(MAX_SCHEMA_BYTES));
        assert!(matches!(
            TypeSchema::compile(&huge).unwrap_err(),
            SchemaError::TooLarge { .. }
        ));
        let deep = format!(
            "{}{}",
            r#"{"items":"#.repeat(MAX_SCHEMA_DEPTH + 1),
            "}".repeat(MAX_SCHEMA_DEPTH + 1)
        );
        assert_eq!(
            TypeSchema::compile(&deep).unwrap_err(),
            SchemaError::TooDeep {
                max: MAX_SCHEMA_DEPTH
            }
        );
        // Brackets inside strings do not count.
        assert_eq!(
            hookfleet_contract::limits::json_depth(br#"{"a": "[[[[{{{{\"[", "b": [1]}"#),
            2
        );
    }

    #[test]
    fn long_messages_are_cut() {
        assert_eq!(shorten("abcdef", 3), "abc...");
        assert_eq!(shorten("ab", 3), "ab");
    }
}
