//! The producer's HTTP API: event ingest, the endpoint registry and the
//! admin API for tenants.

mod endpoints;
mod events;
mod tenants;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use hookfleet_contract::auth::Authenticate;
use hookfleet_contract::{ApiError, TenantId};
use hookfleet_db::TokenStore;
use hookfleet_topology::{Link, Topology};

use crate::broadcast::RegistryBroadcaster;
use crate::index::SubscriptionIndex;
use crate::registry::EndpointRegistry;
use crate::settings::IngestSettings;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub link: Link,
    pub topology: Topology,
    pub registry: EndpointRegistry,
    pub index: Arc<SubscriptionIndex>,
    pub broadcaster: Arc<RegistryBroadcaster>,
    /// Per-tenant ingest rate (issue 16 item 5).
    pub ingest_rate: Arc<crate::quota::IngestRate>,
    /// The most endpoints a tenant may have (0: no limit).
    pub max_endpoints: i64,
    pub tokens: TokenStore,
    pub ingest: IngestSettings,
    pub rotation_grace: Duration,
}

impl ApiState {
    /// Endpoint `id` changed: tell the workers, then refresh the routers'
    /// subscription index, all before answering, so that a retry due after
    /// the answer finds the change (issue 16 item 2). Workers first: a task
    /// routed from the new index is then never judged by an older view.
    async fn index_changed(&self, tenant: &TenantId, id: &str) {
        self.broadcaster.endpoint_changed(tenant.as_str(), id).await;
        self.index.changed().await;
    }
}

impl ApiState {
    /// Lets `events` events of `tenant` in, or answers 429.
    fn admit(&self, tenant: &TenantId, events: usize) -> Result<(), ApiError> {
        self.ingest_rate
            .admit(tenant.as_str(), events)
            .map_err(|wait| {
                metrics::counter!("hookfleet_quota_refusals_total", "quota" => "ingest")
                    .increment(1);
                ApiError::too_many(
                    "over this tenant's ingest rate (ingest.rate_per_second); retry later",
                    crate::quota::retry_after(wait),
                )
            })
    }
}

impl Authenticate for ApiState {
    async fn tenant_for(&self, token: &str) -> Result<Option<TenantId>, ApiError> {
        self.tokens.tenant_for(token).await
    }

    fn admin_token(&self) -> Option<&str> {
        self.tokens.admin_token()
    }
}

pub use hookfleet_ledger::api::ErrorBody;

#[derive(Debug, utoipa::OpenApi)]
#[openapi(
    info(
        title = "hookfleet",
        description = "Outbound webhooks on your own RabbitMQ and PostgreSQL. Every call \
            sends `Authorization: Bearer <token>`: a tenant's API token, or the admin \
            token for /v1/tenants.",
    ),
    paths(
        events::ingest,
        events::ingest_batch,
        endpoints::create,
        endpoints::list,
        endpoints::get,
        endpoints::update,
        endpoints::delete,
        endpoints::disable,
        endpoints::enable,
        endpoints::rotate_secret,
        tenants::create,
        tenants::issue_token,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ProducerApi;

/// Declares the bearer-token scheme every path uses.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The one OpenAPI document of hookfleet's HTTP API: the producer's paths
/// and the ledger's, generated from the handlers.
pub fn openapi() -> utoipa::openapi::OpenApi {
    use utoipa::OpenApi;
    let mut document = ProducerApi::openapi();
    document.merge(hookfleet_ledger::api::LedgerApi::openapi());
    document
}

pub fn router(state: ApiState) -> Router {
    let link = state.link.clone();
    let document = Arc::new(openapi());
    Router::new()
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { axum::Json((*document).clone()) }
            }),
        )
        .route("/v1/events", post(events::ingest))
        .route("/v1/events/batch", post(events::ingest_batch))
        .route(
            "/v1/endpoints",
            post(endpoints::create).get(endpoints::list),
        )
        .route(
            "/v1/endpoints/{id}",
            get(endpoints::get)
                .patch(endpoints::update)
                .delete(endpoints::delete),
        )
        .route("/v1/endpoints/{id}/disable", post(endpoints::disable))
        .route("/v1/endpoints/{id}/enable", post(endpoints::enable))
        .route(
            "/v1/endpoints/{id}/secret/rotate",
            post(endpoints::rotate_secret),
        )
        .route("/v1/tenants", post(tenants::create))
        .route("/v1/tenants/{id}/tokens", post(tenants::issue_token))
        .with_state(state)
        .merge(hookfleet_telemetry::probes(move || link.is_ready()))
}

/// Parses a JSON request body into `T`. The error names the field at fault
/// (`type: invalid type: integer, expected a string`).
fn parse_json<'de, T: serde::Deserialize<'de>>(
    body: &'de [u8],
) -> Result<T, hookfleet_contract::ApiError> {
    use hookfleet_contract::ApiError;
    let malformed = |inner: &serde_json::Error| {
        ApiError::bad_request(
            "malformed_json",
            format!("the body is not valid JSON: {inner}"),
        )
    };
    // serde accepts a struct written as an array; an API body must be an
    // object.
    if body.trim_ascii_start().first().is_some_and(|&b| b != b'{') {
        if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err() {
            return Err(ApiError::bad_request(
                "malformed_json",
                "the body is not valid JSON",
            ));
        }
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let inner = error.inner();
        if inner.is_syntax() || inner.is_eof() {
            malformed(inner)
        } else if error.path().iter().next().is_none() {
            ApiError::bad_request(
                "invalid_body",
                format!("the body must be a JSON object: {inner}"),
            )
        } else {
            ApiError::bad_request("invalid_field", format!("{}: {inner}", error.path()))
        }
    })?;
    deserializer.end().map_err(|e| malformed(&e))?;
    Ok(value)
}
