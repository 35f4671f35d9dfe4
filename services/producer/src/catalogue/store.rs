//! The catalogue in Postgres: each tenant's event types and every version
//! of each. Every query names the tenant.

use hookfleet_contract::{EventType, TenantId};
use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_db::tokio_postgres::Row;
use serde::Serialize;
use serde_json::value::RawValue;

use super::document::DocumentedType;

/// The most event types one tenant's catalogue may hold.
pub const MAX_TYPES: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the catalogue holds {MAX_TYPES} types, the most a tenant may have")]
    Full,
    #[error("database: {0}")]
    Pool(#[from] hookfleet_db::deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Postgres(#[from] hookfleet_db::tokio_postgres::Error),
}

/// A new version of a type, already checked: the schema compiles and every
/// example matches it.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub description: String,
    pub deprecated: bool,
    /// The schema as JSON text, as the caller wrote it.
    pub schema: Option<String>,
    /// A JSON array of example payloads.
    pub examples: String,
}

/// An event type as the API shows it: its current version, and (from
/// `get`) every version, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventTypeView {
    pub name: String,
    pub version: i32,
    pub description: String,
    pub deprecated: bool,
    /// The JSON Schema payloads are checked against; `null` checks nothing.
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Box<RawValue>>,
    /// Example payloads, each matching the schema.
    #[schema(value_type = Vec<Object>)]
    pub examples: serde_json::Value,
    pub created_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<VersionView>>,
}

/// One version of an event type.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionView {
    pub version: i32,
    pub description: String,
    pub deprecated: bool,
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Box<RawValue>>,
    /// Example payloads, each matching the schema.
    #[schema(value_type = Vec<Object>)]
    pub examples: serde_json::Value,
    pub created_at: String,
}

/// The outcome of a PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Put {
    Created,
    NewVersion,
    /// Same as the current version: nothing changed.
    Unchanged,
}

const CURRENT: &str = "SELECT t.name, t.version, v.description, v.deprecated, v.schema::text,
        v.examples, to_json(t.created_at) #>> '{}', to_json(t.updated_at) #>> '{}'
    FROM event_types t JOIN event_type_versions v USING (tenant, name, version)";

fn raw(text: Option<String>) -> Option<Box<RawValue>> {
    text.and_then(|t| RawValue::from_string(t).ok())
}

fn current(row: &Row) -> EventTypeView {
    EventTypeView {
        name: row.get(0),
        version: row.get(1),
        description: row.get(2),
        deprecated: row.get(3),
        schema: raw(row.get(4)),
        examples: row.get(5),
        created_at: row.get(6),
        updated_at: row.get(7),
        versions: None,
    }
}

#[derive(Debug, Clone)]
pub struct CatalogueStore {
    pool: Pool,
}

impl CatalogueStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    /// Creates the type, or makes `new` its next version unless it is the
    /// same as the current one (a repeated PUT makes no new version).
    pub async fn put(
        &self,
        tenant: &TenantId,
        name: &EventType,
        new: &NewVersion,
    ) -> Result<(Put, EventTypeView), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let same = tx
            .query_opt(
                "SELECT v.description = $3 AND v.deprecated = $4
                        AND v.schema::jsonb IS NOT DISTINCT FROM $5::text::jsonb
                        AND v.examples::jsonb = $6::text::jsonb
                 FROM event_types t JOIN event_type_versions v USING (tenant, name, version)
                 WHERE t.tenant = $1 AND t.name = $2
                 FOR UPDATE OF t",
                &[
                    &tenant.as_str(),
                    &name.as_str(),
                    &new.description,
                    &new.deprecated,
                    &new.schema,
                    &new.examples,
                ],
            )
            .await?
            .map(|row| row.get::<_, bool>(0));
        let outcome = match same {
            Some(true) => Put::Unchanged,
            Some(false) => Put::NewVersion,
            None => Put::Created,
        };
        if outcome == Put::Created {
            let count: i64 = tx
                .query_one(
                    "SELECT count(*) FROM event_types WHERE tenant = $1",
                    &[&tenant.as_str()],
                )
                .await?
                .get(0);
            if count >= MAX_TYPES {
                return Err(StoreError::Full);
            }
        }
        if outcome != Put::Unchanged {
            tx.execute(
                "WITH bumped AS (
                     INSERT INTO event_types (tenant, name, version) VALUES ($1, $2, 1)
                     ON CONFLICT (tenant, name) DO UPDATE
                         SET version = event_types.version + 1, updated_at = now()
                     RETURNING version
                 )
                 INSERT INTO event_type_versions
                     (tenant, name, version, description, deprecated, schema, examples)
                 SELECT $1, $2, version, $3, $4, $5::text::json, $6::text::json FROM bumped",
                &[
                    &tenant.as_str(),
                    &name.as_str(),
                    &new.description,
                    &new.deprecated,
                    &new.schema,
                    &new.examples,
                ],
            )
            .await?;
        }
        let row = tx
            .query_one(
                &format!("{CURRENT} WHERE t.tenant = $1 AND t.name = $2"),
                &[&tenant.as_str(), &name.as_str()],
            )
            .await?;
        tx.commit().await?;
        Ok((outcome, current(&row)))
    }

    /// The type's current version and every version, oldest first.
    pub async fn get(
        &self,
        tenant: &TenantId,
        name: &str,
    ) -> Result<Option<EventTypeView>, StoreError> {
        let client = self.pool.get().await?;
        let Some(row) = client
            .query_opt(
                &format!("{CURRENT} WHERE t.tenant = $1 AND t.name = $2"),
                &[&tenant.as_str(), &name],
            )
            .await?
        else {
            return Ok(None);
        };
        let mut view = current(&row);
        let versions = client
            .query(
                "SELECT version, description, deprecated, schema::text, examples,
                        to_json(created_at) #>> '{}'
                 FROM event_type_versions WHERE tenant = $1 AND name = $2 ORDER BY version",
                &[&tenant.as_str(), &name],
            )
            .await?;
        view.versions = Some(
            versions
                .iter()
                .map(|row| VersionView {
                    version: row.get(0),
                    description: row.get(1),
                    deprecated: row.get(2),
                    schema: raw(row.get(3)),
                    examples: row.get(4),
                    created_at: row.get(5),
                })
                .collect(),
        );
        Ok(Some(view))
    }

    /// Types by name, after the cursor `after`, each at its current version.
    pub async fn list(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<EventTypeView>, StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!("{CURRENT} WHERE t.tenant = $1 AND t.name > $2 ORDER BY t.name LIMIT $3"),
                &[&tenant.as_str(), &after.unwrap_or(""), &limit],
            )
            .await?;
        Ok(rows.iter().map(current).collect())
    }

    /// Deletes the type and its versions; `false` if there was none.
    pub async fn delete(&self, tenant: &TenantId, name: &str) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let deleted = client
            .execute(
                "DELETE FROM event_types WHERE tenant = $1 AND name = $2",
                &[&tenant.as_str(), &name],
            )
            .await?;
        Ok(deleted == 1)
    }

    /// Every type at its current version, by name, for the OpenAPI
    /// document, and the catalogue's revision (its last change).
    pub async fn documented(
        &self,
        tenant: &TenantId,
    ) -> Result<(String, Vec<DocumentedType>), StoreError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT t.name, t.version, v.description, v.deprecated, v.schema, v.examples,
                        to_json(t.updated_at) #>> '{}'
                 FROM event_types t JOIN event_type_versions v USING (tenant, name, version)
                 WHERE t.tenant = $1 ORDER BY t.name",
                &[&tenant.as_str()],
            )
            .await?;
        let revision = rows
            .iter()
            .map(|row| row.get::<_, String>(6))
            .max()
            .unwrap_or_else(|| "0".into());
        let types = rows
            .iter()
            .map(|row| DocumentedType {
                name: row.get(0),
                version: row.get(1),
                description: row.get(2),
                deprecated: row.get(3),
                schema: row.get(4),
                examples: match row.get::<_, serde_json::Value>(5) {
                    serde_json::Value::Array(examples) => examples,
                    _ => Vec::new(),
                },
            })
            .collect();
        Ok((revision, types))
    }

    /// Sets the tenant's `strict_types`; `false` if there is no such tenant.
    pub async fn set_strict_types(
        &self,
        tenant: &TenantId,
        strict: bool,
    ) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let updated = client
            .execute(
                "UPDATE tenants SET strict_types = $2 WHERE id = $1",
                &[&tenant.as_str(), &strict],
            )
            .await?;
        Ok(updated == 1)
    }

    /// The tenant's name and `strict_types`, if it exists.
    pub async fn tenant(&self, tenant: &TenantId) -> Result<Option<(String, bool)>, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT name, strict_types FROM tenants WHERE id = $1",
                &[&tenant.as_str()],
            )
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }
}
