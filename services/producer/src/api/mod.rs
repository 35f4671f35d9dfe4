//! The producer's HTTP API: event ingest, the endpoint registry, the
//! event-type catalogue and the admin API for tenants.

mod endpoint_input;
mod endpoints;
mod event_types;
mod events;
mod inbound;
mod portal;
mod sources;
mod tenants;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post, put};
use hookfleet_contract::auth::Authenticate;
use hookfleet_contract::{ApiError, TenantId};
use hookfleet_db::TokenStore;
use hookfleet_topology::{Link, Topology};

use crate::broadcast::RegistryBroadcaster;
use crate::catalogue::{Catalogue, CatalogueStore};
use crate::index::SubscriptionIndex;
use crate::registry::EndpointRegistry;
use crate::settings::IngestSettings;
use crate::sources::SourceRegistry;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub link: Link,
    pub topology: Topology,
    pub registry: EndpointRegistry,
    pub sources: SourceRegistry,
    pub index: Arc<SubscriptionIndex>,
    pub broadcaster: Arc<RegistryBroadcaster>,
    /// Per-tenant ingest rate (issue 16 item 5).
    pub ingest_rate: Arc<crate::quota::IngestRate>,
    /// The most endpoints a tenant may have (0: no limit).
    pub max_endpoints: i64,
    pub fanout: crate::fanout::Fanout,
    /// The event-type catalogue in memory (checks) and in Postgres.
    pub catalogue: Arc<Catalogue>,
    pub catalogue_store: CatalogueStore,
    pub tokens: TokenStore,
    /// Stamps the events this API checked (`headers::CHECKED`).
    pub stamper: hookfleet_signing::Stamper,
    pub ingest: IngestSettings,
    pub rotation_grace: Duration,
    /// Which addresses endpoint URLs may point at.
    pub address_policy: Arc<hookfleet_contract::address::AddressPolicy>,
    /// Signs and checks portal sessions.
    pub portal_key: Arc<hookfleet_contract::portal::PortalKey>,
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
        event_types::put,
        event_types::list,
        event_types::get,
        event_types::delete,
        event_types::openapi,
        sources::create,
        sources::list,
        sources::get,
        sources::update,
        sources::delete,
        sources::rotate_secret,
        inbound::receive,
        tenants::create,
        tenants::update,
        tenants::issue_token,
        tenants::list_tokens,
        tenants::revoke_token,
        portal::create,
    ),
    components(schemas(hookfleet_contract::ErrorBody<'static>)),
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
/// and the ledger's, generated from the handlers. Every path answers on
/// the producer's base URL (it forwards the ledger's), which `servers`
/// names relative to where the document was fetched.
pub fn openapi() -> serde_json::Value {
    use utoipa::OpenApi;
    let mut document = ProducerApi::openapi();
    document.merge(crate::ledger_proxy::ledger_document());
    document.servers = Some(vec![
        utoipa::openapi::ServerBuilder::new()
            .url("/")
            .description(Some(
                "The base URL this document was fetched from: every operation answers there",
            ))
            .build(),
    ]);
    let mut document = serde_json::to_value(document).expect("the API document is JSON");
    document_the_edge(&mut document);
    document
}

/// A text parameter without a NUL: what a pattern says when the handler
/// takes any text.
const NO_NUL: &str = "^[^\\u0000]*$";

/// Says in the document what the edge ([`hookfleet_telemetry::api_edge`])
/// does before any handler: a NUL (`%00`) in the path or query is refused
/// with 400 (Postgres cannot hold one). Every text parameter in the path
/// or query that the handler otherwise takes as it comes gets the
/// [`NO_NUL`] pattern, and every operation with such parameters a 400.
/// Done here, once, so that no handler's parameters can forget it.
fn document_the_edge(document: &mut serde_json::Value) {
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|item| item.values_mut())
    {
        let Some(parameters) = operation
            .get_mut("parameters")
            .and_then(serde_json::Value::as_array_mut)
        else {
            continue;
        };
        let mut in_uri = false;
        for parameter in parameters {
            if !matches!(parameter["in"].as_str(), Some("path" | "query")) {
                continue;
            }
            in_uri = true;
            let schema = &mut parameter["schema"];
            let free_text = schema["type"] == "string"
                && ["pattern", "enum", "format"]
                    .iter()
                    .all(|rule| schema.get(rule).is_none());
            if free_text {
                schema["pattern"] = NO_NUL.into();
            }
        }
        let responses = &mut operation["responses"];
        if in_uri && responses.get("400").is_none() {
            responses["400"] = serde_json::json!({
                "description": "A NUL (%00) in the path or query",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
            });
        }
    }
}

/// The API behind the edge ([`hookfleet_telemetry::api_edge`]), and the
/// probes beside it; without the admin API when it is served apart
/// (`auth.admin_listen`).
pub fn router(
    state: ApiState,
    ledger: crate::ledger_proxy::LedgerProxy,
    listen: &hookfleet_config::ListenSettings,
    admin_apart: bool,
) -> Router {
    let link = state.link.clone();
    let portal_key = state.portal_key.clone();
    let document = Arc::new(openapi());
    let api = Router::new()
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
        .route("/v1/event-types", get(event_types::list))
        // A static path wins over `{type}`: PUT and DELETE on the
        // document's path answer 405 (the name is not a type's).
        .route("/v1/event-types/openapi.json", get(event_types::openapi))
        .route(
            "/v1/event-types/{type}",
            put(event_types::put)
                .get(event_types::get)
                .delete(event_types::delete),
        )
        .route("/v1/sources", post(sources::create).get(sources::list))
        .route(
            "/v1/sources/{id}",
            get(sources::get)
                .patch(sources::update)
                .delete(sources::delete),
        )
        .route(
            "/v1/sources/{id}/secret/rotate",
            post(sources::rotate_secret),
        )
        .route("/v1/inbound/{source_id}", post(inbound::receive))
        .route("/v1/portal/sessions", post(portal::create))
        .merge(if admin_apart {
            Router::new()
        } else {
            admin_routes()
        })
        .with_state(state)
        .merge(ledger.routes())
        .layer(axum::middleware::from_fn_with_state(
            portal_key,
            hookfleet_contract::portal::guard,
        ));
    hookfleet_telemetry::api_edge(api, listen)
        .merge(crate::portal::routes())
        .merge(hookfleet_telemetry::probes(move || link.is_ready()))
}

/// The admin API alone, for `auth.admin_listen`.
pub fn admin_router(state: ApiState, listen: &hookfleet_config::ListenSettings) -> Router {
    hookfleet_telemetry::api_edge(admin_routes().with_state(state), listen)
}

fn admin_routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/tenants", post(tenants::create))
        .route("/v1/tenants/{id}", axum::routing::patch(tenants::update))
        .route(
            "/v1/tenants/{id}/tokens",
            post(tenants::issue_token).get(tenants::list_tokens),
        )
        .route(
            "/v1/tenants/{id}/tokens/{token_id}",
            axum::routing::delete(tenants::revoke_token),
        )
}

/// Parses an optional JSON request body: none, or `null`, is `T`'s
/// default ("no options"); anything else as [`parse_json`] does.
fn parse_optional_json<'de, T: serde::Deserialize<'de> + Default>(
    body: &'de [u8],
) -> Result<T, hookfleet_contract::ApiError> {
    if body.is_empty() || body.trim_ascii() == b"null" {
        return Ok(T::default());
    }
    parse_json(body)
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
