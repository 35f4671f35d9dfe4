//! The endpoint registry: endpoints and their subscriptions, per tenant, in
//! Postgres.

use hookfleet_contract::{EndpointId, EndpointUrl, EventPattern, EventType, TenantId};
use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_signing::{Sealer, SigningSecret};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("database: {0}")]
    Pool(#[from] hookfleet_db::deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Postgres(#[from] hookfleet_db::tokio_postgres::Error),
}

/// A new endpoint, already parsed.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub url: EndpointUrl,
    pub event_types: Vec<EventPattern>,
    pub description: String,
}

/// An endpoint as the API shows it (without its secret).
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub description: String,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub created_at: String,
}

/// What the router needs to deliver to an endpoint.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub id: EndpointId,
    pub url: String,
    /// The signing secret, sealed; only workers open it.
    pub sealed_secret: String,
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

    /// Creates an endpoint signing with `secret`.
    pub async fn create(
        &self,
        tenant: &TenantId,
        new: NewEndpoint,
        secret: &SigningSecret,
    ) -> Result<Endpoint, RegistryError> {
        let id = EndpointId::generate();
        let event_types: Vec<String> = new
            .event_types
            .into_iter()
            .map(EventPattern::into_string)
            .collect();
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "INSERT INTO endpoints (id, tenant, url, description, event_types, secret)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 RETURNING to_json(created_at) #>> '{}'",
                &[
                    &id.as_str(),
                    &tenant.as_str(),
                    &new.url.as_str(),
                    &new.description,
                    &event_types,
                    &self.sealer.seal(&secret.expose(), id.as_str()),
                ],
            )
            .await?;
        let endpoint = Endpoint {
            id: id.to_string(),
            url: new.url.as_str().to_owned(),
            description: new.description,
            event_types,
            enabled: true,
            created_at: row.get(0),
        };
        Ok(endpoint)
    }

    /// The enabled endpoints of `tenant` subscribed to `event_type`,
    /// exactly or through a wildcard.
    pub async fn subscribers(
        &self,
        tenant: &TenantId,
        event_type: &EventType,
    ) -> Result<Vec<Subscriber>, RegistryError> {
        let patterns = event_type.matching_patterns();
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, url, secret FROM endpoints
                 WHERE tenant = $1 AND enabled AND event_types && $2
                 ORDER BY id",
                &[&tenant.as_str(), &patterns],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| Subscriber {
                id: EndpointId::from_stored(row.get(0)),
                url: row.get(1),
                sealed_secret: row.get(2),
            })
            .collect())
    }
}
