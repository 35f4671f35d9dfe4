//! `/v1/endpoints`: the endpoint registry over HTTP, scoped to the caller's
//! tenant. Another tenant's endpoint answers 404, as if it did not exist.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hookfleet_contract::auth::Tenant;
use hookfleet_contract::{ApiError, EndpointUrl, EventPattern};
use hookfleet_signing::SigningSecret;
use serde::{Deserialize, Serialize};

use super::{ApiState, parse_json};
use crate::registry::{CustomHeaders, Endpoint, EndpointPatch, NewEndpoint, RegistryError};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// A secret of the caller's choosing (`whsec_` + base64 of 24 to 64
    /// bytes); generated when absent.
    secret: Option<String>,
    /// Also sign with ed25519 (`v1a`); the public key is in the answer.
    #[serde(default)]
    ed25519: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateRequest {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    description: Option<String>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DisableRequest {
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<i64>,
}

/// An endpoint with the secret it signs with, shown only on creation and
/// rotation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WithSecret {
    #[serde(flatten)]
    endpoint: Endpoint,
    secret: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page {
    data: Vec<Endpoint>,
    /// Pass as `after` for the next page; `null` on the last page.
    next: Option<String>,
}

fn invalid(field: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_field", format!("{field}: {error}"))
}

fn unavailable(error: RegistryError) -> ApiError {
    tracing::error!(%error, "endpoint registry failed");
    ApiError::unavailable("the endpoint registry is unreachable; retry")
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("endpoint {id:?} does not exist"))
}

fn parse_url(state: &ApiState, raw: &str) -> Result<EndpointUrl, ApiError> {
    EndpointUrl::parse(raw, state.ingest.allow_http_endpoints).map_err(|e| invalid("url", e))
}

fn parse_patterns(patterns: &[String]) -> Result<Vec<EventPattern>, ApiError> {
    if patterns.is_empty() {
        return Err(invalid(
            "event_types",
            "subscribe to at least one type (\"*\" for all)",
        ));
    }
    patterns
        .iter()
        .map(|p| EventPattern::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("event_types", e))
}

/// Header names and values must be valid HTTP, and may not override what
/// hookfleet itself sends.
fn parse_headers(headers: BTreeMap<String, String>) -> Result<CustomHeaders, ApiError> {
    const RESERVED: &[&str] = &[
        "content-type",
        "content-length",
        "host",
        "user-agent",
        "connection",
        "transfer-encoding",
        "traceparent",
        "tracestate",
    ];
    let mut parsed = CustomHeaders::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if lower.starts_with("webhook-") || RESERVED.contains(&lower.as_str()) {
            return Err(invalid(
                "headers",
                format!("{name:?} is set by hookfleet and cannot be overridden"),
            ));
        }
        if axum::http::HeaderName::from_bytes(lower.as_bytes()).is_err()
            || axum::http::HeaderValue::from_str(&value).is_err()
        {
            return Err(invalid(
                "headers",
                format!("{name:?} is not a valid HTTP header"),
            ));
        }
        parsed.insert(lower, value);
    }
    Ok(parsed)
}

#[utoipa::path(post, path = "/v1/endpoints", tag = "endpoints", request_body = CreateRequest,
    responses((status = 201, description = "Created; the secret is shown only here", body = WithSecret), (status = 400, description = "Invalid input; the message names the field", body = crate::api::ErrorBody), (status = 429, description = "The tenant has its quota of endpoints", body = crate::api::ErrorBody), (status = 401, description = "Missing or invalid token", body = crate::api::ErrorBody), (status = 503, description = "Broker or database unreachable; retry", body = crate::api::ErrorBody)))]
pub async fn create(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    body: Bytes,
) -> Result<(StatusCode, Json<WithSecret>), ApiError> {
    let request: CreateRequest = parse_json(&body)?;
    let url = request
        .url
        .ok_or_else(|| ApiError::bad_request("missing_field", "url: is required"))?;
    let url = parse_url(&state, &url)?;
    let patterns = request
        .event_types
        .ok_or_else(|| ApiError::bad_request("missing_field", "event_types: is required"))?;
    let event_types = parse_patterns(&patterns)?;
    let headers = parse_headers(request.headers)?;
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
                url,
                event_types,
                description: request.description,
                headers,
                ed25519: request.ed25519,
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
        }),
    ))
}

#[utoipa::path(get, path = "/v1/endpoints", tag = "endpoints",
    params(("after" = Option<String>, Query, description = "The `next` of the previous page"),
           ("limit" = Option<i64>, Query, description = "1 to 500, default 50")),
    responses((status = 200, description = "A page of endpoints in creation order", body = Page), (status = 400, description = "Invalid input; the message names the field", body = crate::api::ErrorBody), (status = 401, description = "Missing or invalid token", body = crate::api::ErrorBody), (status = 503, description = "Broker or database unreachable; retry", body = crate::api::ErrorBody)))]
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
    responses((status = 200, description = "The endpoint", body = Endpoint), (status = 404, description = "No such resource (or another tenant's)", body = crate::api::ErrorBody), (status = 400, description = "Invalid input; the message names the field", body = crate::api::ErrorBody), (status = 401, description = "Missing or invalid token", body = crate::api::ErrorBody), (status = 503, description = "Broker or database unreachable; retry", body = crate::api::ErrorBody)))]
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
    responses((status = 200, description = "The endpoint, changed", body = Endpoint), (status = 404, description = "No such resource (or another tenant's)", body = crate::api::ErrorBody), (status = 400, description = "Invalid input; the message names the field", body = crate::api::ErrorBody), (status = 401, description = "Missing or invalid token", body = crate::api::ErrorBody), (status = 503, description = "Broker or database unreachable; retry", body = crate::api::ErrorBody)))]
pub async fn update(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Endpoint>, ApiError> {
    let request: UpdateRequest = parse_json(&body)?;
    let patch = EndpointPatch {
        url: request.url.map(|u| parse_url(&state, &u)).transpose()?,
        event_types: request
            .event_types
            .map(|p| parse_patterns(&p))
            .transpose()?,
        description: request.description,
        headers: request.headers.map(parse_headers).transpose()?,
    };
    let updated = state
        .registry
        .update(&tenant, &id, patch)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| not_found(&id))?;
    state.index_changed(&tenant, &id).await;
    Ok(Json(updated))
}

#[utoipa::path(delete, path = "/v1/endpoints/{id}", tag = "endpoints", params(("id" = String, Path, description = "The endpoint id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such resource (or another tenant's)", body = crate::api::ErrorBody), (status = 400, description = "Invalid input; the message names the field", body = crate::api::ErrorBody), (status = 401, description = "Missing or invalid token", body = crate::api::ErrorBody), (status = 503, description = "Broker or database unreachable; retry", body = crate::api::ErrorBody)))]
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

#[utoipa::path(post, path = "/v1/endpoints/{id}/disable", tag = "endpoints", params(("id" = String, Path, description = "The endpoint id")), request_body(content = DisableRequest, description = "Optional"),
    responses((status = 200, description = "Disabled: it receives nothing", body = Endpoint), (status = 404, description = "No such resource (or another tenant's)", body = crate::api::ErrorBody), (status = 400, description = "Invalid input; the message names the field", body = crate::api::ErrorBody), (status = 401, description = "Missing or invalid token", body = crate::api::ErrorBody), (status = 503, description = "Broker or database unreachable; retry", body = crate::api::ErrorBody)))]
pub async fn disable(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Endpoint>, ApiError> {
    let request: DisableRequest = if body.is_empty() {
        DisableRequest::default()
    } else {
        parse_json(&body)?
    };
    let reason = request
        .reason
        .unwrap_or_else(|| "disabled by the API".into());
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
    responses((status = 200, description = "Enabled", body = Endpoint), (status = 404, description = "No such resource (or another tenant's)", body = crate::api::ErrorBody), (status = 400, description = "Invalid input; the message names the field", body = crate::api::ErrorBody), (status = 401, description = "Missing or invalid token", body = crate::api::ErrorBody), (status = 503, description = "Broker or database unreachable; retry", body = crate::api::ErrorBody)))]
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
    responses((status = 200, description = "The new secret, shown only here; the previous one signs too during the grace period", body = WithSecret), (status = 404, description = "No such resource (or another tenant's)", body = crate::api::ErrorBody), (status = 400, description = "Invalid input; the message names the field", body = crate::api::ErrorBody), (status = 401, description = "Missing or invalid token", body = crate::api::ErrorBody), (status = 503, description = "Broker or database unreachable; retry", body = crate::api::ErrorBody)))]
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
    }))
}
