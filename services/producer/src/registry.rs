//! The endpoint registry: endpoints and their subscriptions, per tenant, in
//! Postgres. Every query names the tenant, so one tenant can never see or
//! change another's endpoints.

use std::collections::BTreeMap;
use std::time::Duration;

use hookfleet_contract::{
    BrokerUrl, Destination, EndpointId, EndpointUrl, EventPattern, SEALED_HEADERS, TenantId,
    broker_url_context, headers_context,
};
use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_db::tokio_postgres::Row;
use hookfleet_signing::{Ed25519Key, Sealer, SigningSecret};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("database: {0}")]
    Pool(#[from] hookfleet_db::deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Postgres(#[from] hookfleet_db::tokio_postgres::Error),
}

/// Headers an endpoint sends with every webhook, by name.
pub type CustomHeaders = BTreeMap<String, String>;

/// Where an endpoint's webhooks go: POSTed to a URL, or published to an
/// AMQP destination, on hookfleet's broker or on the broker at the
/// [`BrokerUrl`] (sealed when stored).
#[derive(Debug, Clone)]
pub enum Target {
    Url(EndpointUrl),
    Destination(Destination, Option<BrokerUrl>),
}

impl Target {
    /// The `url` and `destination` columns of endpoint `id`; exactly one is
    /// set. A broker URL is stored sealed, inside the destination.
    fn columns(&self, sealer: &Sealer, id: &str) -> (Option<&str>, Option<serde_json::Value>) {
        match self {
            Self::Url(url) => (Some(url.as_str()), None),
            Self::Destination(destination, broker) => {
                let Destination::Amqp {
                    exchange,
                    routing_key,
                    ..
                } = destination.clone();
                let sealed = Destination::Amqp {
                    exchange,
                    routing_key,
                    sealed_url: broker
                        .as_ref()
                        .map(|url| sealer.seal(url.expose(), &broker_url_context(id))),
                };
                (None, serde_json::to_value(sealed).ok())
            }
        }
    }
}

/// The one kind of destination there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DestinationKind {
    Amqp,
}

/// An AMQP destination as the API takes and shows it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DestinationBody {
    #[serde(rename = "type")]
    pub kind: DestinationKind,
    /// The exchange to publish to (yours to declare): 1 to 255 letters,
    /// digits, `-`, `_`, `.`, `:`; not `amq.*` nor hookfleet's own.
    #[schema(min_length = 1, max_length = 255)]
    pub exchange: String,
    /// The routing key; `{type}` stands for the event type.
    #[serde(default = "type_template")]
    #[schema(default = "{type}", max_length = 255)]
    pub routing_key: String,
    /// Another broker (`amqp://user:password@host:5672/vhost`, or
    /// `amqps://`) instead of hookfleet's own. Its host must not be an
    /// internal address unless allow-listed (`endpoints.ssrf_allow`). The
    /// URL is stored sealed; GET and list show it with the password as
    /// `***`, so a PATCH of `destination` must send it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = "uri", max_length = 2048)]
    pub url: Option<String>,
}

fn type_template() -> String {
    hookfleet_contract::destination::TYPE_PLACEHOLDER.to_owned()
}

impl DestinationBody {
    /// The stored destination as the API shows it: its broker URL opened
    /// and masked.
    fn shown(destination: Destination, sealer: &Sealer, endpoint_id: &str) -> Self {
        let Destination::Amqp {
            exchange,
            routing_key,
            sealed_url,
        } = destination;
        let url = sealed_url.map(|sealed| {
            sealer
                .open(&sealed, &broker_url_context(endpoint_id))
                .ok()
                .and_then(|url| BrokerUrl::parse(&url).ok())
                .map(|url| url.masked())
                .unwrap_or_else(|| {
                    tracing::error!(endpoint_id, "a broker URL does not open with secrets.key");
                    MASKED.to_owned()
                })
        });
        Self {
            kind: DestinationKind::Amqp,
            exchange,
            routing_key,
            url,
        }
    }
}

/// A new endpoint, already parsed.
#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub target: Target,
    pub event_types: Vec<EventPattern>,
    pub description: String,
    pub headers: CustomHeaders,
    /// Also sign with a fresh ed25519 key (Standard Webhooks `v1a`).
    pub ed25519: bool,
    /// Deliver events with the same ordering key in order.
    pub ordered: bool,
    /// At most this many attempts per second, fleet-wide.
    pub rate_limit: Option<u32>,
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    /// A new URL or destination; either replaces the other.
    pub target: Option<Target>,
    pub event_types: Option<Vec<EventPattern>>,
    pub description: Option<String>,
    pub headers: Option<CustomHeaders>,
    pub ordered: Option<bool>,
    /// `Some(None)` removes the limit.
    pub rate_limit: Option<Option<u32>>,
}

/// An endpoint as the API shows it (never with its secret).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    pub id: String,
    /// Where webhooks are POSTed; `null` for an AMQP destination.
    pub url: Option<String>,
    /// The AMQP destination the endpoint publishes to instead of a URL;
    /// another broker's `url` is shown with its password as `***`.
    pub destination: Option<DestinationBody>,
    pub description: String,
    pub event_types: Vec<String>,
    /// The custom headers' names; their values are sealed at rest and
    /// shown as `****`.
    pub headers: CustomHeaders,
    /// The public key (`whpk_...`) receivers verify `v1a` signatures with.
    pub ed25519_public_key: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub disabled_at: Option<String>,
    /// Events with the same `ordering_key` arrive in the order they were
    /// accepted; a failing delivery holds back only its own key.
    pub ordered: bool,
    /// Attempts per second at most, across the whole fleet; `null` for no
    /// limit.
    #[schema(minimum = 1, maximum = 10000)]
    pub rate_limit: Option<u32>,
    pub created_at: String,
    pub updated_at: String,
}

const COLUMNS: &str = "id, url, description, event_types, headers, enabled, disabled_reason,
    to_json(disabled_at) #>> '{}', to_json(created_at) #>> '{}', to_json(updated_at) #>> '{}',
    ed25519_public_key, destination, ordered, rate_limit";

/// What GET and list show for a custom header's value: the names are
/// there, the values (often credentials) are not.
pub const MASKED: &str = "****";

fn endpoint(row: &Row, sealer: &Sealer) -> Endpoint {
    let id: String = row.get(0);
    let headers: serde_json::Value = row.get(4);
    let headers = open_headers(sealer, &id, headers)
        .into_keys()
        .map(|name| (name, MASKED.to_owned()))
        .collect();
    let destination = row
        .get::<_, Option<serde_json::Value>>(11)
        .and_then(|d| serde_json::from_value(d).ok())
        .map(|d| DestinationBody::shown(d, sealer, &id));
    Endpoint {
        id,
        url: row.get(1),
        description: row.get(2),
        event_types: row.get(3),
        headers,
        enabled: row.get(5),
        disabled_reason: row.get(6),
        disabled_at: row.get(7),
        created_at: row.get(8),
        updated_at: row.get(9),
        ed25519_public_key: row.get(10),
        destination,
        ordered: row.get(12),
        rate_limit: row
            .get::<_, Option<i32>>(13)
            .and_then(|limit| u32::try_from(limit).ok()),
    }
}

/// The headers column: `{":sealed": <the map, sealed>}`, or `{}`.
fn seal_headers(sealer: &Sealer, endpoint_id: &str, headers: &CustomHeaders) -> serde_json::Value {
    if headers.is_empty() {
        return serde_json::json!({});
    }
    let json = serde_json::to_string(headers).unwrap_or_default();
    serde_json::json!({ SEALED_HEADERS: sealer.seal(&json, &headers_context(endpoint_id)) })
}

/// The headers column opened: sealed, or plaintext as rows written before
/// headers were sealed are (until [`EndpointRegistry::seal_plaintext_headers`]).
fn open_headers(sealer: &Sealer, endpoint_id: &str, column: serde_json::Value) -> CustomHeaders {
    let stored: CustomHeaders = serde_json::from_value(column).unwrap_or_default();
    match stored.get(SEALED_HEADERS) {
        None => stored,
        Some(sealed) => sealer
            .open(sealed, &headers_context(endpoint_id))
            .ok()
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_else(|| {
                tracing::error!(endpoint_id, "custom headers do not open with secrets.key");
                CustomHeaders::new()
            }),
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
        let headers = seal_headers(&self.sealer, id.as_str(), &new.headers);
        let ed25519 = new.ed25519.then(Ed25519Key::generate);
        let sealed_ed25519 = ed25519.as_ref().map(|key| {
            self.sealer.seal(
                &key.expose(),
                &hookfleet_contract::ed25519_context(id.as_str()),
            )
        });
        let public_key = ed25519.as_ref().map(Ed25519Key::public);
        let (url, destination) = new.target.columns(&self.sealer, id.as_str());
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO endpoints (id, tenant, url, description, event_types, headers,
                                            secret, ed25519_key, ed25519_public_key,
                                            destination, ordered, rate_limit)
                     SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $12, $13
                     WHERE $11::int8 <= 0
                        OR (SELECT count(*) FROM endpoints WHERE tenant = $2) < $11::int8
                     RETURNING {COLUMNS}"
                ),
                &[
                    &id.as_str(),
                    &tenant.as_str(),
                    &url,
                    &new.description,
                    &patterns(new.event_types),
                    &headers,
                    &self.sealer.seal(&secret.expose(), id.as_str()),
                    &sealed_ed25519,
                    &public_key,
                    &destination,
                    &max,
                    &new.ordered,
                    &new.rate_limit.map(|limit| limit as i32),
                ],
            )
            .await?;
        Ok(row.as_ref().map(|r| endpoint(r, &self.sealer)))
    }

    /// Seals the custom headers of endpoints written before headers were
    /// sealed; run at start, a no-op once done.
    pub async fn seal_plaintext_headers(&self) -> Result<u64, RegistryError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id, headers FROM endpoints WHERE headers <> '{}' AND NOT headers ? $1",
                &[&SEALED_HEADERS],
            )
            .await?;
        let mut sealed = 0;
        for row in &rows {
            let id: String = row.get(0);
            let plain: CustomHeaders = serde_json::from_value(row.get(1)).unwrap_or_default();
            sealed += client
                .execute(
                    "UPDATE endpoints SET headers = $2 WHERE id = $1 AND NOT headers ? $3",
                    &[
                        &id,
                        &seal_headers(&self.sealer, &id, &plain),
                        &SEALED_HEADERS,
                    ],
                )
                .await?;
        }
        Ok(sealed)
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
        Ok(rows.iter().map(|r| endpoint(r, &self.sealer)).collect())
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
        Ok(row.as_ref().map(|r| endpoint(r, &self.sealer)))
    }

    pub async fn update(
        &self,
        tenant: &TenantId,
        id: &str,
        patch: EndpointPatch,
    ) -> Result<Option<Endpoint>, RegistryError> {
        let (url, destination) = match &patch.target {
            Some(target) => target.columns(&self.sealer, id),
            None => (None, None),
        };
        let event_types = patch.event_types.map(patterns);
        let headers = patch.headers.map(|h| seal_headers(&self.sealer, id, &h));
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!(
                    "UPDATE endpoints SET
                         url = CASE WHEN $7::jsonb IS NOT NULL THEN NULL
                                    ELSE COALESCE($3, url) END,
                         destination = CASE WHEN $3::text IS NOT NULL THEN NULL
                                            ELSE COALESCE($7, destination) END,
                         event_types = COALESCE($4, event_types),
                         description = COALESCE($5, description),
                         headers = COALESCE($6, headers),
                         ordered = COALESCE($8, ordered),
                         rate_limit = CASE WHEN $9 THEN $10 ELSE rate_limit END,
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
                    &destination,
                    &patch.ordered,
                    &patch.rate_limit.is_some(),
                    &patch.rate_limit.flatten().map(|limit| limit as i32),
                ],
            )
            .await?;
        Ok(row.as_ref().map(|r| endpoint(r, &self.sealer)))
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
        Ok(row.as_ref().map(|r| endpoint(r, &self.sealer)))
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
        Ok(row.as_ref().map(|r| endpoint(r, &self.sealer)))
    }
}
