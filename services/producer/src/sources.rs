//! The source registry: each tenant's inbound sources in Postgres, with
//! their secrets sealed (DESIGN.md invariant 8). Every management query
//! names the tenant; the inbound path looks a source up by its id alone,
//! since the provider's signature, not a token, says who is calling.
//!
//! The inbound path asks Postgres every time (a deleted source or a rotated
//! secret takes effect at once), but remembers what it found: while
//! Postgres is unreachable, a source found within the outage grace still
//! verifies and publishes, as a token found valid still ingests
//! (`auth.token_outage_grace_ms`). GitHub does not retry a failed delivery
//! on its own, so a 503 during an outage would cost its webhooks.

use std::time::Duration;

use hookfleet_db::Remembered;
use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_db::tokio_postgres::Row;
use hookfleet_signing::Sealer;
use serde::Serialize;

use crate::inbound::SourceKind;
use crate::registry::RegistryError;

/// A new source id: `src_` and a time-ordered UUID, like endpoint ids.
fn generate() -> String {
    format!("src_{}", uuid::Uuid::now_v7().simple())
}

/// A source as the API shows it (never with its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Source {
    pub id: String,
    pub name: String,
    pub kind: SourceKind,
    /// The first segments of every event type from this source.
    pub type_prefix: String,
    /// Where the provider sends its webhooks (no token needed).
    pub ingest_path: String,
    pub created_at: String,
    pub updated_at: String,
}

/// What the inbound path needs of a source.
#[derive(Debug, Clone)]
pub struct InboundSource {
    pub tenant: String,
    pub kind: SourceKind,
    pub type_prefix: String,
    /// The secrets that verify now, current first.
    pub secrets: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct NewSource {
    pub name: String,
    pub kind: SourceKind,
    pub type_prefix: String,
}

#[derive(Debug, Clone, Default)]
pub struct SourcePatch {
    pub name: Option<String>,
    pub type_prefix: Option<String>,
}

const COLUMNS: &str = "id, name, kind, type_prefix,
    to_json(created_at) #>> '{}', to_json(updated_at) #>> '{}'";

fn source(row: &Row) -> Source {
    let id: String = row.get(0);
    let kind: String = row.get(2);
    Source {
        ingest_path: format!("/v1/inbound/{id}"),
        id,
        name: row.get(1),
        // Only this registry writes the column, from a parsed kind.
        kind: SourceKind::parse(&kind).unwrap_or(SourceKind::StandardWebhooks),
        type_prefix: row.get(3),
        created_at: row.get(4),
        updated_at: row.get(5),
    }
}

#[derive(Debug, Clone)]
pub struct SourceRegistry {
    pool: Pool,
    sealer: Sealer,
    outage_grace: Duration,
    /// By source id: what the inbound path last found, and when.
    found: Remembered<InboundSource>,
}

impl SourceRegistry {
    /// `outage_grace`: how long a source found stays usable while Postgres
    /// is unreachable.
    pub fn new(pool: Pool, sealer: Sealer, outage_grace: Duration) -> Self {
        Self {
            pool,
            sealer,
            outage_grace,
            found: Remembered::default(),
        }
    }

    pub async fn create(
        &self,
        tenant: &str,
        new: NewSource,
        secret: &str,
    ) -> Result<Source, RegistryError> {
        let id = generate();
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                &format!(
                    "INSERT INTO sources (id, tenant, name, kind, type_prefix, secret)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     RETURNING {COLUMNS}"
                ),
                &[
                    &id,
                    &tenant,
                    &new.name,
                    &new.kind.as_str(),
                    &new.type_prefix,
                    &self.sealer.seal(secret, &id),
                ],
            )
            .await?;
        Ok(source(&row))
    }

    /// Sources in creation order, after the cursor `after`.
    pub async fn list(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Source>, RegistryError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM sources
                     WHERE tenant = $1 AND id > $2 ORDER BY id LIMIT $3"
                ),
                &[&tenant, &after.unwrap_or(""), &limit],
            )
            .await?;
        Ok(rows.iter().map(source).collect())
    }

    pub async fn get(&self, tenant: &str, id: &str) -> Result<Option<Source>, RegistryError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM sources WHERE tenant = $1 AND id = $2"),
                &[&tenant, &id],
            )
            .await?;
        Ok(row.as_ref().map(source))
    }

    pub async fn update(
        &self,
        tenant: &str,
        id: &str,
        patch: SourcePatch,
    ) -> Result<Option<Source>, RegistryError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE sources SET
                         name = COALESCE($3, name),
                         type_prefix = COALESCE($4, type_prefix),
                         updated_at = now()
                     WHERE tenant = $1 AND id = $2
                     RETURNING {COLUMNS}"
                ),
                &[&tenant, &id, &patch.name, &patch.type_prefix],
            )
            .await?;
        Ok(row.as_ref().map(source))
    }

    pub async fn delete(&self, tenant: &str, id: &str) -> Result<bool, RegistryError> {
        let client = self.pool.get().await?;
        let deleted = client
            .execute(
                "DELETE FROM sources WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await?;
        Ok(deleted == 1)
    }

    /// Replaces the secret; the previous one still verifies for `grace`,
    /// while the provider's side is switched over.
    pub async fn rotate_secret(
        &self,
        tenant: &str,
        id: &str,
        secret: &str,
        grace: Duration,
    ) -> Result<Option<Source>, RegistryError> {
        let sealed = self.sealer.seal(secret, id);
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE sources SET
                         previous_secret = secret,
                         previous_secret_expires_at = now() + make_interval(secs => $4),
                         secret = $3,
                         updated_at = now()
                     WHERE tenant = $1 AND id = $2
                     RETURNING {COLUMNS}"
                ),
                &[&tenant, &id, &sealed, &grace.as_secs_f64()],
            )
            .await?;
        Ok(row.as_ref().map(source))
    }

    /// The source behind an inbound path, with its secrets opened. A secret
    /// that does not open (another `secrets.key`) is left out, so the
    /// request fails verification rather than the service. While Postgres
    /// is unreachable: the source as last found, within the outage grace.
    pub async fn for_inbound(&self, id: &str) -> Result<Option<InboundSource>, RegistryError> {
        match self.look_up_inbound(id).await {
            Ok(found) => {
                self.found.record(id, found.as_ref());
                Ok(found)
            }
            Err(error) => match self.found.within(id, self.outage_grace) {
                Some(source) => {
                    tracing::warn!(%error, source_id = id, "source lookup failed; using the source as last found");
                    Ok(Some(source))
                }
                None => Err(error),
            },
        }
    }

    /// The inbound path's query.
    async fn look_up_inbound(&self, id: &str) -> Result<Option<InboundSource>, RegistryError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT tenant, kind, type_prefix, secret,
                        CASE WHEN previous_secret_expires_at > now() THEN previous_secret END
                 FROM sources WHERE id = $1",
            )
            .await?;
        let Some(row) = client.query_opt(&statement, &[&id]).await? else {
            return Ok(None);
        };
        let kind: String = row.get(1);
        let Some(kind) = SourceKind::parse(&kind) else {
            return Ok(None);
        };
        let sealed = [row.get::<_, Option<String>>(3), row.get(4)];
        let secrets = sealed
            .into_iter()
            .flatten()
            .filter_map(|s| match self.sealer.open(&s, id) {
                Ok(secret) => Some(secret),
                Err(error) => {
                    tracing::warn!(%error, source_id = id, "a source secret does not open");
                    None
                }
            })
            .collect();
        Ok(Some(InboundSource {
            tenant: row.get(0),
            kind,
            type_prefix: row.get(2),
            secrets,
        }))
    }
}
