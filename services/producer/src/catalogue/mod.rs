//! The event-type catalogue: each tenant's event types, their JSON Schemas
//! and the tenant's `strict_types` setting, held in memory by every
//! producer so that ingest (HTTP) and the router (AMQP) check payloads
//! without a query.
//!
//! Validators are compiled once per type version: a reload keeps the
//! compiled validator of every version it already has and compiles only new
//! ones. Changes reach every producer as the subscription index's do: the
//! API reloads before answering and sends a `NOTIFY` on [`CHANNEL`].
//!
//! The hot path is [`Catalogue::check`]. A tenant without a catalogue costs
//! one hash lookup; a type without a schema, two.

pub mod document;
pub mod schema;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use hookfleet_contract::{ApiError, ContractViolation, ErrorDetail, EventType, TenantId};
use hookfleet_db::deadpool_postgres::Pool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::changes;
pub use schema::{SchemaError, TypeSchema};
pub use store::{CatalogueStore, StoreError};

/// The notification channel catalogue changes are announced on.
pub const CHANNEL: &str = "hookfleet_catalogue";
/// The most problems one refusal lists.
pub const MAX_DETAILS: usize = 20;

/// Why an event is refused by the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaViolation {
    /// The payload does not match the schema of its type's current version.
    Invalid {
        event_type: String,
        version: i32,
        /// (JSON pointer, message), at most [`MAX_DETAILS`].
        problems: Vec<(String, String)>,
        /// How many problems there were in all.
        total: usize,
    },
    /// The tenant has `strict_types` and the type is not in its catalogue.
    UnknownType(String),
}

impl SchemaViolation {
    /// The refusal as the ingest API answers it; `at` prefixes the field
    /// names (`events[3].`).
    pub fn to_api_error(&self, at: &str) -> ApiError {
        match self {
            Self::Invalid {
                event_type,
                version,
                total,
                ..
            } => ApiError::bad_request(
                "invalid_payload",
                format!(
                    "{at}payload: does not match the schema of {event_type} (version {version}): \
                     {total} problem{s}",
                    s = if *total == 1 { "" } else { "s" }
                ),
            )
            .with_details(self.details()),
            Self::UnknownType(_) => {
                ApiError::bad_request("unknown_event_type", format!("{at}type: {self}"))
            }
        }
    }

    /// The problems as the API's error details.
    fn details(&self) -> Vec<ErrorDetail> {
        match self {
            Self::Invalid { problems, .. } => problems
                .iter()
                .map(|(path, message)| ErrorDetail {
                    path: path.clone(),
                    message: message.clone(),
                })
                .collect(),
            Self::UnknownType(_) => Vec::new(),
        }
    }
}

impl std::fmt::Display for SchemaViolation {
    /// One line: `/total: "19.99" is not of type "number"; (root): ...`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid {
                problems, total, ..
            } => {
                for (n, (path, message)) in problems.iter().enumerate() {
                    let path = if path.is_empty() { "(root)" } else { path };
                    let separator = if n == 0 { "" } else { "; " };
                    write!(f, "{separator}{path}: {message}")?;
                }
                if *total > problems.len() {
                    write!(f, "; and {} more", total - problems.len())?;
                }
                Ok(())
            }
            Self::UnknownType(event_type) => write!(
                f,
                "event type {event_type:?} is not in the catalogue and the tenant has strict_types"
            ),
        }
    }
}

/// What the router parks the event with (`x-hookfleet-reason: schema: ...`).
impl From<SchemaViolation> for ContractViolation {
    fn from(violation: SchemaViolation) -> Self {
        match violation {
            SchemaViolation::UnknownType(event_type) => ContractViolation::UnknownType(event_type),
            invalid => ContractViolation::Schema(invalid.to_string()),
        }
    }
}

/// One type's current version as checks need it.
#[derive(Debug, Clone)]
struct Entry {
    version: i32,
    /// `None`: the type has no schema, or it did not compile (see `reload`).
    schema: Option<TypeSchema>,
}

#[derive(Debug, Default)]
struct TenantCatalogue {
    strict: bool,
    types: HashMap<String, Entry>,
}

#[derive(Debug, Default)]
struct Snapshot {
    /// Only tenants with a type or with `strict_types`.
    tenants: HashMap<String, TenantCatalogue>,
}

impl Snapshot {
    fn unknown_patterns<'p>(&self, tenant: &str, patterns: &'p [String]) -> Vec<&'p str> {
        let Some(catalogue) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        let matches = |pattern: &str| match pattern.strip_suffix('*') {
            Some(prefix) => catalogue.types.keys().any(|name| name.starts_with(prefix)),
            None => catalogue.types.contains_key(pattern),
        };
        patterns
            .iter()
            .map(String::as_str)
            .filter(|pattern| !matches(pattern))
            .collect()
    }

    fn check(&self, tenant: &str, event_type: &str, payload: &[u8]) -> Result<(), SchemaViolation> {
        let Some(catalogue) = self.tenants.get(tenant) else {
            return Ok(());
        };
        let entry = match catalogue.types.get(event_type) {
            Some(entry) => entry,
            None if catalogue.strict => {
                return Err(SchemaViolation::UnknownType(event_type.to_owned()));
            }
            None => return Ok(()),
        };
        let Some(schema) = &entry.schema else {
            return Ok(());
        };
        let invalid = |problems, total| SchemaViolation::Invalid {
            event_type: event_type.to_owned(),
            version: entry.version,
            problems,
            total,
        };
        let instance: serde_json::Value = serde_json::from_slice(payload)
            .map_err(|e| invalid(vec![(String::new(), format!("not valid JSON: {e}"))], 1))?;
        if schema.validator.is_valid(&instance) {
            return Ok(());
        }
        let (problems, total) = schema.problems(&instance, MAX_DETAILS);
        Err(invalid(problems, total))
    }
}

#[derive(Debug)]
pub struct Catalogue {
    pool: Pool,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Serialises reloads; a reload asked for during one runs after it.
    reloading: tokio::sync::Mutex<()>,
    changed: Notify,
}

impl Catalogue {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            reloading: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Checks one event against the tenant's catalogue: its type must be
    /// known if the tenant is strict, and its payload (one JSON object,
    /// already checked as such) must match the type's schema, if any.
    pub fn check(
        &self,
        tenant: &TenantId,
        event_type: &EventType,
        payload: &[u8],
    ) -> Result<(), SchemaViolation> {
        self.snapshot()
            .check(tenant.as_str(), event_type.as_str(), payload)
    }

    /// Which of `patterns` (an endpoint's subscriptions) name exact types
    /// the tenant's catalogue does not have. Empty when the tenant has no
    /// catalogue at all, so that tenants who do not use one are not nagged.
    /// Wildcards are unknown when no catalogued type matches them.
    pub fn unknown_patterns<'p>(&self, tenant: &TenantId, patterns: &'p [String]) -> Vec<&'p str> {
        self.snapshot().unknown_patterns(tenant.as_str(), patterns)
    }

    /// Reads the catalogue: the strict tenants and the current version of
    /// every type. Compiles only the versions not already compiled.
    pub async fn reload(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.reloading.lock().await;
        let client = self.pool.get().await?;
        let strict = client
            .query("SELECT id FROM tenants WHERE strict_types", &[])
            .await?;
        let current = client
            .query(
                "SELECT t.tenant, t.name, t.version, v.schema IS NOT NULL
                 FROM event_types t JOIN event_type_versions v USING (tenant, name, version)",
                &[],
            )
            .await?;
        let previous = self.snapshot();
        let mut snapshot = Snapshot::default();
        for row in &strict {
            snapshot.tenants.entry(row.get(0)).or_default().strict = true;
        }
        let mut to_compile: Vec<(String, String, i32)> = Vec::new();
        for row in &current {
            let (tenant, name, version, has_schema): (String, String, i32, bool) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let known = previous
                .tenants
                .get(&tenant)
                .and_then(|c| c.types.get(&name))
                .filter(|entry| entry.version == version);
            let entry = match known {
                Some(entry) => entry.clone(),
                None => {
                    if has_schema {
                        to_compile.push((tenant.clone(), name.clone(), version));
                    }
                    Entry {
                        version,
                        schema: None,
                    }
                }
            };
            snapshot
                .tenants
                .entry(tenant)
                .or_default()
                .types
                .insert(name, entry);
        }
        if !to_compile.is_empty() {
            let (tenants, names, versions): (Vec<_>, Vec<_>, Vec<_>) = to_compile.into_iter().fold(
                Default::default(),
                |(mut t, mut n, mut v), (a, b, c)| {
                    t.push(a);
                    n.push(b);
                    v.push(c);
                    (t, n, v)
                },
            );
            let rows = client
                .query(
                    "SELECT v.tenant, v.name, v.version, v.schema::text
                     FROM event_type_versions v
                     JOIN unnest($1::text[], $2::text[], $3::int4[]) AS m (tenant, name, version)
                       USING (tenant, name, version)",
                    &[&tenants, &names, &versions],
                )
                .await?;
            let sources: Vec<(String, String, i32, String)> = rows
                .iter()
                .filter_map(|r| {
                    Some((r.get(0), r.get(1), r.get(2), r.get::<_, Option<String>>(3)?))
                })
                .collect();
            // Compiling is CPU work; keep it off the async workers.
            let compiled = tokio::task::spawn_blocking(move || {
                sources
                    .into_iter()
                    .map(|(tenant, name, version, raw)| {
                        let schema = TypeSchema::compile(&raw);
                        (tenant, name, version, schema)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for (tenant, name, version, schema) in compiled {
                match schema {
                    Ok(schema) => {
                        if let Some(entry) = snapshot
                            .tenants
                            .get_mut(&tenant)
                            .and_then(|c| c.types.get_mut(&name))
                            .filter(|entry| entry.version == version)
                        {
                            entry.schema = Some(schema);
                        }
                    }
                    // It compiled when it was stored; a stored schema that no
                    // longer does (after an upgrade of the validator) checks
                    // nothing rather than refusing every event of its type.
                    Err(error) => tracing::error!(
                        %error, %tenant, event_type = %name, version,
                        "a stored schema does not compile; its events are not checked"
                    ),
                }
            }
        }
        if let Ok(mut current) = self.snapshot.write() {
            *current = Arc::new(snapshot);
        }
        Ok(())
    }

    /// After a change through this process's API: reload now, and tell the
    /// other producers.
    pub async fn changed(&self) {
        if let Err(error) = self.reload().await {
            tracing::warn!(%error, "catalogue reload failed");
            self.changed.notify_one();
        }
        changes::announce(&self.pool, CHANNEL).await;
    }

    /// Keeps the catalogue fresh until `cancel` fires.
    pub async fn maintain(
        self: Arc<Self>,
        database: hookfleet_config::DatabaseSettings,
        cancel: CancellationToken,
    ) {
        changes::keep_fresh(
            "event-type catalogue",
            &database,
            CHANNEL,
            &self.changed,
            &cancel,
            || self.reload(),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let schema = TypeSchema::compile(
            r#"{"type": "object", "required": ["total"], "properties": {"total": {"type": "number"}}}"#,
        )
        .unwrap();
        let mut acme = TenantCatalogue::default();
        acme.types.insert(
            "order.created".into(),
            Entry {
                version: 3,
                schema: Some(schema),
            },
        );
        acme.types.insert(
            "order.noted".into(),
            Entry {
                version: 1,
                schema: None,
            },
        );
        let strict = TenantCatalogue {
            strict: true,
            types: acme.types.clone(),
        };
        let mut snapshot = Snapshot::default();
        snapshot.tenants.insert("acme".into(), acme);
        snapshot.tenants.insert("strict".into(), strict);
        snapshot
    }

    #[test]
    fn payloads_are_checked_against_their_types_schema() {
        let snapshot = snapshot();
        assert_eq!(
            snapshot.check("acme", "order.created", br#"{"total": 1}"#),
            Ok(())
        );
        let refused = snapshot
            .check("acme", "order.created", br#"{"total": "1"}"#)
            .unwrap_err();
        let SchemaViolation::Invalid {
            version, problems, ..
        } = &refused
        else {
            panic!("{refused:?}")
        };
        assert_eq!(*version, 3);
        assert_eq!(problems[0].0, "/total");
        assert!(refused.to_string().starts_with("/total: "), "{refused}");
        let error = refused.to_api_error("events[2].");
        assert_eq!(error.code, "invalid_payload");
        assert!(error.message.starts_with("events[2].payload: "));
        assert_eq!(error.details[0].path, "/total");
        assert_eq!(
            ContractViolation::from(refused).to_string(),
            format!("schema: {}", error.details[0].path) + ": " + &error.details[0].message
        );
    }

    #[test]
    fn types_without_schema_and_tenants_without_catalogue_pass() {
        let snapshot = snapshot();
        assert_eq!(snapshot.check("acme", "order.noted", b"{}"), Ok(()));
        assert_eq!(snapshot.check("acme", "order.unknown", b"{}"), Ok(()));
        assert_eq!(snapshot.check("globex", "order.created", b"{}"), Ok(()));
    }

    #[test]
    fn a_strict_tenant_refuses_unknown_types() {
        let snapshot = snapshot();
        assert_eq!(snapshot.check("strict", "order.noted", b"{}"), Ok(()));
        let refused = snapshot
            .check("strict", "order.unknown", b"{}")
            .unwrap_err();
        assert_eq!(
            refused,
            SchemaViolation::UnknownType("order.unknown".into())
        );
        assert_eq!(refused.to_api_error("").code, "unknown_event_type");
        assert!(matches!(
            ContractViolation::from(refused),
            ContractViolation::UnknownType(_)
        ));
    }

    #[test]
    fn subscriptions_matching_no_catalogued_type_are_named() {
        let snapshot = snapshot();
        let patterns: Vec<String> = [
            "order.created",
            "order.craeted",
            "order.*",
            "invoice.*",
            "*",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            snapshot.unknown_patterns("acme", &patterns),
            ["order.craeted", "invoice.*"]
        );
        // A tenant without a catalogue is not nagged.
        assert!(snapshot.unknown_patterns("globex", &patterns).is_empty());
    }

    #[test]
    fn the_reason_lists_problems_up_to_the_cap_and_counts_the_rest() {
        let violation = SchemaViolation::Invalid {
            event_type: "a.b".into(),
            version: 1,
            problems: vec![
                (String::new(), "\"total\" is a required property".into()),
                ("/n".into(), "1 is less than 2".into()),
            ],
            total: 5,
        };
        assert_eq!(
            violation.to_string(),
            "(root): \"total\" is a required property; /n: 1 is less than 2; and 3 more"
        );
    }
}
