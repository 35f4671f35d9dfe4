//! `/v1/endpoints`: the endpoint registry over HTTP, scoped to the caller's
//! tenant. Another tenant's endpoint answers 404, as if it did not exist.

use hookfleet_contract::api_error::responses::{BadRequest, NotFound, Unauthorized, Unavailable};
use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hookfleet_contract::auth::Tenant;
use hookfleet_contract::limits::{MAX_DESCRIPTION_CHARS, MAX_REASON_CHARS};
use hookfleet_contract::{ApiError, Destination, EndpointUrl, TenantId};
use hookfleet_signing::SigningSecret;
use serde::{Deserialize, Serialize};

use super::endpoint_input::{self as input, invalid};
use super::{ApiState, parse_json, parse_optional_json};
use crate::registry::{
    DestinationBody, Endpoint, EndpointPatch, NewEndpoint, RegistryError, Target,
};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    /// Where webhooks are POSTed: https (or http where the config allows
    /// it), publicly reachable, without credentials. Required unless a
    /// `destination` is given.
    #[schema(nullable = false, format = "uri", max_length = 2048)]
    url: Option<String>,
    /// Instead of `url`: `{"type": "amqp", "exchange": "billing",
    /// "routing_key": "{type}"}` publishes each webhook to that exchange,
    /// on hookfleet's broker or on the one at `url`.
    destination: Option<DestinationBody>,
    /// Event types to subscribe to: exact, `prefix.*`, or `*` for all.
    #[schema(required = true, nullable = false, min_items = 1)]
    event_types: Option<Vec<Pattern>>,
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\u0000]*$")]
    description: String,
    /// Sent with every webhook; at most 20, 4096 bytes a value, 8192 bytes
    /// in all. Hop-by-hop and hookfleet's own headers are refused.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// A secret of the caller's choosing (`whsec_` + base64 of 24 to 64
    /// bytes); generated when absent.
    secret: Option<String>,
    /// Also sign with ed25519 (`v1a`); the public key is in the answer.
    #[serde(default)]
    ed25519: bool,
    /// Deliver events with the same `ordering_key` in the order they were
    /// accepted; a failing delivery holds back only its own key.
    #[serde(default)]
    ordered: bool,
    /// At most this many attempts per second, across the whole fleet;
    /// absent or `null`: no limit.
    #[schema(minimum = 1, maximum = 10000)]
    rate_limit: Option<i64>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    #[schema(format = "uri", max_length = 2048)]
    url: Option<String>,
    /// Replaces the URL (or the destination) with an AMQP destination
    /// (its broker `url` too: absent means hookfleet's own broker).
    destination: Option<DestinationBody>,
    #[schema(min_items = 1)]
    event_types: Option<Vec<Pattern>>,
    #[schema(max_length = 1024, pattern = "^[^\\u0000]*$")]
    description: Option<String>,
    /// Replaces every custom header (values are never shown, so send them
    /// all).
    headers: Option<BTreeMap<String, String>>,
    /// Deliver in order per `ordering_key` (or stop doing so).
    ordered: Option<bool>,
    /// A new rate limit, attempts per second; `null` removes it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 10000)]
    rate_limit: Option<Option<i64>>,
}

/// A field that may be `null` to clear it: absent is `None`, `null` is
/// `Some(None)`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

fn rate_limit(raw: i64) -> Result<u32, ApiError> {
    hookfleet_contract::check_rate_limit(raw).map_err(|e| invalid("rate_limit", e))
}

/// A subscription pattern, as the document describes it.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
struct Pattern(String);

impl utoipa::PartialSchema for Pattern {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .pattern(Some(r"^(\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?)$"))
            .max_length(Some(130))
            .description(Some("An event type, a prefix ending in `.*`, or `*`"))
            .into()
    }
}

impl utoipa::ToSchema for Pattern {}

impl Pattern {
    fn all(patterns: Vec<Pattern>) -> Vec<String> {
        patterns.into_iter().map(|p| p.0).collect()
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DisableRequest {
    #[schema(max_length = 512, pattern = "^[^\\u0000]*$")]
    reason: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The `next` of the previous page.
    after: Option<String>,
    /// 1 to 500; 50 when absent.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// An endpoint with the secret it signs with, shown only on creation and
/// rotation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WithSecret {
    #[serde(flatten)]
    endpoint: Endpoint,
    secret: String,
    /// Subscriptions to types the tenant's event-type catalogue does not
    /// know (accepted all the same); absent when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// An endpoint after a change, with warnings as on creation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Changed {
    #[serde(flatten)]
    endpoint: Endpoint,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

/// A warning for each subscription the catalogue has no type for (a typo
/// subscribes to nothing, silently).
fn catalogue_warnings(state: &ApiState, tenant: &TenantId, patterns: &[String]) -> Vec<String> {
    state
        .catalogue
        .unknown_patterns(tenant, patterns)
        .into_iter()
        .map(|p| format!("event_types: {p:?} matches no type in the event-type catalogue"))
        .collect()
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page {
    data: Vec<Endpoint>,
    /// Pass as `after` for the next page; `null` on the last page.
    next: Option<String>,
}

fn unavailable(error: RegistryError) -> ApiError {
    tracing::error!(%error, "endpoint registry failed");
    ApiError::unavailable("the endpoint registry is unreachable; retry")
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("endpoint {id:?} does not exist"))
}

async fn parse_url(state: &ApiState, raw: &str) -> Result<EndpointUrl, ApiError> {
    input::url(
        raw,
        state.ingest.allow_http_endpoints,
        &state.address_policy,
    )
    .await
}

/// A URL or a destination, one of them.
async fn parse_target(
    state: &ApiState,
    url: Option<String>,
    destination: Option<DestinationBody>,
) -> Result<Option<Target>, ApiError> {
    match (url, destination) {
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid_body",
            "url, destination: give one of them, not both",
        )),
        (Some(url), None) => Ok(Some(Target::Url(parse_url(state, &url).await?))),
        (None, Some(body)) => {
            let destination = Destination::Amqp {
                exchange: body.exchange,
                routing_key: body.routing_key,
                sealed_url: None,
            }
            .check(state.topology.prefix())
            .map_err(|e| invalid("destination", e))?;
            let broker = match body.url {
                Some(raw) => Some(input::broker_url(&raw, &state.address_policy).await?),
                None => None,
            };
            Ok(Some(Target::Destination(destination, broker)))
        }
        (None, None) => Ok(None),
    }
}

#[utoipa::path(post, path = "/v1/endpoints", tag = "endpoints", request_body = CreateRequest,
    responses((status = 201, description = "Created; the secret is shown only here", body = WithSecret), BadRequest, (status = 429, description = "The tenant has its quota of endpoints", body = hookfleet_contract::ErrorBody), Unauthorized, Unavailable))]
pub async fn create(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    body: Bytes,
) -> Result<(StatusCode, Json<WithSecret>), ApiError> {
    let request: CreateRequest = parse_json(&body)?;
    let patterns = request
        .event_types
        .map(Pattern::all)
        .ok_or_else(|| ApiError::bad_request("missing_field", "event_types: is required"))?;
    let event_types = input::patterns(&patterns)?;
    let warnings = catalogue_warnings(&state, &tenant, &patterns);
    input::text("description", &request.description, MAX_DESCRIPTION_CHARS)?;
    let headers = input::headers(request.headers)?;
    let target = parse_target(&state, request.url, request.destination)
        .await?
        .ok_or_else(|| {
            ApiError::bad_request("missing_field", "url: is required (or a destination)")
        })?;
    let limit = request.rate_limit.map(rate_limit).transpose()?;
    let secret = request
        .secret
        .map(|raw| SigningSecret::parse(&raw))
        .transpose()
        .map_err(|e| invalid("secret", e))?
        .unwrap_or_else(SigningSecret::generate);
    let endpoint = state
        .registry
        .create(
            &tenant,
            NewEndpoint {
                target,
                event_types,
                description: request.description,
                headers,
                ed25519: request.ed25519,
                ordered: request.ordered,
                rate_limit: limit,
            },
            &secret,
            state.max_endpoints,
        )
        .await
        .map_err(unavailable)?
        .ok_or_else(|| {
            ApiError::too_many(
                format!(
                    "this tenant has its quota of {} endpoints (endpoints.max_per_tenant); delete one first",
                    state.max_endpoints
                ),
                60,
            )
        })?;
    state.index_changed(&tenant, &endpoint.id).await;
    Ok((
        StatusCode::CREATED,
        Json(WithSecret {
            endpoint,
            secret: secret.expose(),
            warnings,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/endpoints", tag = "endpoints",
    params(ListQuery),
    responses((status = 200, description = "A page of endpoints in creation order", body = Page), BadRequest, Unauthorized, Unavailable))]
pub async fn list(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Query(query): Query<ListQuery>,
) -> Result<Json<Page>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(invalid("limit", "must be between 1 and 500"));
    }
    let data = state
        .registry
        .list(&tenant, query.after.as_deref(), limit)
        .await
        .map_err(unavailable)?;
    let next = (data.len() as i64 == limit)
        .then(|| data.last().map(|e| e.id.clone()))
        .flatten();
    Ok(Json(Page { data, next }))
}

#[utoipa::path(get, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path, description = "The endpoint id")),
    responses((status = 200, description = "The endpoint", body = Endpoint), NotFound, BadRequest, Unauthorized, Unavailable))]
pub async fn get(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, ApiError> {
    state
        .registry
        .get(&tenant, &id)
        .await
        .map_err(unavailable)?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

#[utoipa::path(patch, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path, description = "The endpoint id")), request_body = UpdateRequest,
    responses((status = 200, description = "The endpoint, changed", body = Changed), NotFound, BadRequest, Unauthorized, Unavailable))]
pub async fn update(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Changed>, ApiError> {
    let request: UpdateRequest = parse_json(&body)?;
    if let Some(description) = &request.description {
        input::text("description", description, MAX_DESCRIPTION_CHARS)?;
    }
    let patterns = request.event_types.map(Pattern::all);
    let warnings = patterns
        .as_deref()
        .map(|p| catalogue_warnings(&state, &tenant, p))
        .unwrap_or_default();
    let patch = EndpointPatch {
        target: parse_target(&state, request.url, request.destination).await?,
        event_types: patterns.map(|p| input::patterns(&p)).transpose()?,
        description: request.description,
        headers: request.headers.map(input::headers).transpose()?,
        ordered: request.ordered,
        rate_limit: request
            .rate_limit
            .map(|limit| limit.map(rate_limit).transpose())
            .transpose()?,
    };
    let updated = state
        .registry
        .update(&tenant, &id, patch)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| not_found(&id))?;
    state.index_changed(&tenant, &id).await;
    Ok(Json(Changed {
        endpoint: updated,
        warnings,
    }))
}

#[utoipa::path(delete, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path, description = "The endpoint id")),
    responses((status = 204, description = "Deleted"), NotFound, BadRequest, Unauthorized, Unavailable))]
pub async fn delete(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state
        .registry
        .delete(&tenant, &id)
        .await
        .map_err(unavailable)?
    {
        return Err(not_found(&id));
    }
    state.index_changed(&tenant, &id).await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/endpoints/{id}/disable", tag = "endpoints", params(("id" = String, Path, description = "The endpoint id")), request_body(content = Option<DisableRequest>, description = "Optional"),
    responses((status = 200, description = "Disabled: it receives nothing", body = Endpoint), NotFound, BadRequest, Unauthorized, Unavailable))]
pub async fn disable(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Endpoint>, ApiError> {
    let request: DisableRequest = parse_optional_json(&body)?;
    let reason = request
        .reason
        .unwrap_or_else(|| "disabled by the API".into());
    input::text("reason", &reason, MAX_REASON_CHARS)?;
    let endpoint = state
        .registry
        .set_enabled(&tenant, &id, false, Some(&reason))
        .await
        .map_err(unavailable)?
        .ok_or_else(|| not_found(&id))?;
    state.index_changed(&tenant, &id).await;
    Ok(Json(endpoint))
}

#[utoipa::path(post, path = "/v1/endpoints/{id}/enable", tag = "endpoints", params(("id" = String, Path, description = "The endpoint id")),
    responses((status = 200, description = "Enabled", body = Endpoint), NotFound, BadRequest, Unauthorized, Unavailable))]
pub async fn enable(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Endpoint>, ApiError> {
    let endpoint = state
        .registry
        .set_enabled(&tenant, &id, true, None)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| not_found(&id))?;
    state.index_changed(&tenant, &id).await;
    Ok(Json(endpoint))
}

#[utoipa::path(post, path = "/v1/endpoints/{id}/secret/rotate", tag = "endpoints", params(("id" = String, Path, description = "The endpoint id")),
    responses((status = 200, description = "The new secret, shown only here; the previous one signs too during the grace period", body = WithSecret), NotFound, BadRequest, Unauthorized, Unavailable))]
pub async fn rotate_secret(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<WithSecret>, ApiError> {
    let secret = SigningSecret::generate();
    let endpoint = state
        .registry
        .rotate_secret(&tenant, &id, &secret, state.rotation_grace)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| not_found(&id))?;
    state.index_changed(&tenant, &id).await;
    Ok(Json(WithSecret {
        endpoint,
        secret: secret.expose(),
        warnings: Vec::new(),
    }))
}
