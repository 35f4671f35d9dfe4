//! The endpoint registry: endpoints and their subscriptions, per tenant, in
//! Postgres. Every query names the tenant, so one tenant can never see or
//! change another's endpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use hookfleet_contract::{EndpointId, EndpointUrl, EventPattern, TenantId};
use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_db::tokio_postgres::Row;
use hookfleet_signing::{Ed25519Key, Sealer, SigningSecret};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("database: {0}")]
    Pool(#[from] hookfleet_db::deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Postgres(#[from] hookfleet_db::tokio_postgres::Error),
}

/// Headers an endpoint sends with every webhook, by name.
pub type CustomHeaders = BTreeMap<String, String>;

/// A new endpoint, already parsed.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: EndpointUrl,
    pub event_types: Vec<EventPattern>,
    pub description: String,
    pub headers: CustomHeaders,
    /// Also sign with a fresh ed25519 key (Standard Webhooks `v1a`).
    pub ed25519: bool,
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    pub url: Option<EndpointUrl>,
    pub event_types: Option<Vec<EventPattern>>,
    pub description: Option<String>,
    pub headers: Option<CustomHeaders>,
}

/// An endpoint as the API shows it (never with its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub headers: CustomHeaders,
    /// The public key (`whpk_...`) receivers verify `v1a` signatures with.
    pub ed25519_public_key: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

const COLUMNS: &str = "id, url, description, event_types, headers, enabled, disabled_reason,
    to_json(disabled_at) #>> '{}', to_json(created_at) #>> '{}', to_json(updated_at) #>> '{}',
    ed25519_public_key";

fn endpoint(row: &Row) -> Endpoint {
    let headers: serde_json::Value = row.get(4);
    Endpoint {
        id: row.get(0),
        url: row.get(1),
        description: row.get(2),
        event_types: row.get(3),
        headers: serde_json::from_value(headers).unwrap_or_default(),
        enabled: row.get(5),
        disabled_reason: row.get(6),
        disabled_at: row.get(7),
        created_at: row.get(8),
        updated_at: row.get(9),
        ed25519_public_key: row.get(10),
    }
}

fn patterns(types: Vec<EventPattern>) -> Vec<String> {
    types.into_iter().map(EventPattern::into_string).collect()
}

#[derive(Debug, Clone)]
pub struct EndpointRegistry {
    pool: Pool,
    sealer: Sealer,
}

impl EndpointRegistry {
    pub fn new(pool: Pool, sealer: Sealer) -> Self {
        Self { pool, sealer }
    }

    /// Creates an endpoint signing with `secret`; `None` if the tenant
    /// already has `max` endpoints (0: no limit).
    pub async fn create(
        &self,
        tenant: &TenantId,
        new: NewEndpoint,
        secret: &SigningSecret,
        max: i64,
    ) -> Result<Option<Endpoint>, RegistryError> {
        let id = EndpointId::generate();
        let headers = serde_json::to_value(&new.headers).unwrap_or_default();
        let ed25519 = new.ed25519.then(Ed25519Key::generate);
        let sealed_ed25519 = ed25519.as_ref().map(|key| {
            self.sealer.seal(
                &key.expose(),
                &hookfleet_contract::ed25519_context(id.as_str()),
            )
        });
        let public_key = ed25519.as_ref().map(Ed25519Key::public);
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO endpoints (id, tenant, url, description, event_types, headers,
                                            secret, ed25519_key, ed25519_public_key)
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9
                     WHERE $10::int8 <= 0
                        OR (SELECT count(*) FROM endpoints WHERE tenant = $2) < $10::int8
                     RETURNING {COLUMNS}"
                ),
                &[
                    &id.as_str(),
                    &tenant.as_str(),
                    &new.url.as_str(),
                    &new.description,
                    &patterns(new.event_types),
                    &headers,
                    &self.sealer.seal(&secret.expose(), id.as_str()),
                    &sealed_ed25519,
                    &public_key,
                    &max,
                ],
            )
            .await?;
        Ok(row.as_ref().map(endpoint))
    }

    /// Endpoints in creation order, after the cursor `after`.
    pub async fn list(
        &self,
        tenant: &TenantId,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Endpoint>, RegistryError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM endpoints
                     WHERE tenant = $1 AND id > $2 ORDER BY id LIMIT $3"
                ),
                &[&tenant.as_str(), &after.unwrap_or(""), &limit],
            )
            .await?;
        Ok(rows.iter().map(endpoint).collect())
    }

    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<Endpoint>, RegistryError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM endpoints WHERE tenant = $1 AND id = $2"),
                &[&tenant.as_str(), &id],
            )
            .await?;
        Ok(row.as_ref().map(endpoint))
    }

    pub async fn update(
        &self,
        tenant: &TenantId,
        id: &str,
        patch: EndpointPatch,
    ) -> Result<Option<Endpoint>, RegistryError> {
        let url = patch.url.map(|u| u.as_str().to_owned());
        let event_types = patch.event_types.map(patterns);
        let headers = patch
            .headers
            .map(|h| serde_json::to_value(h).unwrap_or_default());
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE endpoints SET
                         url = COALESCE($3, url),
                         event_types = COALESCE($4, event_types),
                         description = COALESCE($5, description),
                         headers = COALESCE($6, headers),
                         updated_at = now()
                     WHERE tenant = $1 AND id = $2
                     RETURNING {COLUMNS}"
                ),
                &[
                    &tenant.as_str(),
                    &id,
                    &url,
                    &event_types,
                    &patch.description,
                    &headers,
                ],
            )
            .await?;
        Ok(row.as_ref().map(endpoint))
    }

    /// Deletes an endpoint and leaves a tombstone, which the registry
    /// broadcast tells the workers about (their pending tasks for it are
    /// cancelled).
    pub async fn delete(&self, tenant: &TenantId, id: &str) -> Result<bool, RegistryError> {
        let client = self.pool.get().await?;
        let deleted = client
            .execute(
                "WITH gone AS (
                     DELETE FROM endpoints WHERE tenant = $1 AND id = $2 RETURNING id, tenant
                 )
                 INSERT INTO endpoint_tombstones (id, tenant) SELECT id, tenant FROM gone
                 ON CONFLICT DO NOTHING",
                &[&tenant.as_str(), &id],
            )
            .await?;
        Ok(deleted == 1)
    }

    /// Disables (with the reason) or enables an endpoint. A disabled
    /// endpoint receives nothing.
    pub async fn set_enabled(
        &self,
        tenant: &TenantId,
        id: &str,
        enabled: bool,
        reason: Option<&str>,
    ) -> Result<Option<Endpoint>, RegistryError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE endpoints SET
                         enabled = $3,
                         disabled_reason = CASE WHEN $3 THEN NULL ELSE $4 END,
                         disabled_at = CASE WHEN $3 THEN NULL ELSE now() END,
                         updated_at = now()
                     WHERE tenant = $1 AND id = $2
                     RETURNING {COLUMNS}"
                ),
                &[&tenant.as_str(), &id, &enabled, &reason],
            )
            .await?;
        Ok(row.as_ref().map(endpoint))
    }

    /// Replaces the secret; the previous one stays valid for `grace`, so
    /// deliveries meanwhile carry both signatures.
    pub async fn rotate_secret(
        &self,
        tenant: &TenantId,
        id: &str,
        secret: &SigningSecret,
        grace: Duration,
    ) -> Result<Option<Endpoint>, RegistryError> {
        let sealed = self.sealer.seal(&secret.expose(), id);
        let grace_secs = grace.as_secs_f64();
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE endpoints SET
                         previous_secret = secret,
                         previous_secret_expires_at = now() + make_interval(secs => $4),
                         secret = $3,
                         updated_at = now()
                     WHERE tenant = $1 AND id = $2
                     RETURNING {COLUMNS}"
                ),
                &[&tenant.as_str(), &id, &sealed, &grace_secs],
            )
            .await?;
        Ok(row.as_ref().map(endpoint))
    }
}
