//! The admin API: tenants and their API tokens. Needs the admin token.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hookfleet_contract::auth::Admin;
use hookfleet_contract::{ApiError, TenantId};
use serde::{Deserialize, Serialize};

use super::{ApiState, parse_json};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    id: Option<String>,
    #[serde(default)]
    name: String,
    /// Refuse events whose type is not in the tenant's catalogue.
    #[serde(default)]
    strict_types: bool,
}

/// The tenant's settings; absent fields stay as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateTenant {
    /// Refuse events whose type is not in the tenant's catalogue (400
    /// `unknown_event_type` over HTTP, parked over AMQP).
    strict_types: Option<bool>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    id: String,
    name: String,
    strict_types: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    tenant: String,
    /// The token, shown only here; hookfleet keeps only its hash.
    token: String,
    prefix: String,
}

fn unavailable(error: hookfleet_db::DbError) -> ApiError {
    tracing::error!(%error, "tenant store failed");
    ApiError::unavailable("the database is unreachable; retry")
}

#[utoipa::path(post, path = "/v1/tenants", tag = "admin", request_body = CreateTenant,
    responses((status = 201, description = "Created", body = TenantView), (status = 409, description = "Exists already", body = crate::api::ErrorBody), (status = 400, description = "Invalid input; the message names the field", body = crate::api::ErrorBody), (status = 401, description = "Missing or invalid token", body = crate::api::ErrorBody), (status = 503, description = "Broker or database unreachable; retry", body = crate::api::ErrorBody)))]
pub async fn create(
    State(state): State<ApiState>,
    _admin: Admin,
    body: Bytes,
) -> Result<(StatusCode, Json<TenantView>), ApiError> {
    let request: CreateTenant = parse_json(&body)?;
    let id = request
        .id
        .ok_or_else(|| ApiError::bad_request("missing_field", "id: is required"))?;
    let id = TenantId::parse(&id)
        .map_err(|e| ApiError::bad_request("invalid_field", format!("id: {e}")))?;
    if !state
        .tokens
        .create_tenant(&id, &request.name)
        .await
        .map_err(unavailable)?
    {
        return Err(ApiError::new(
            409,
            "conflict",
            format!("tenant {:?} exists already", id.as_str()),
        ));
    }
    if request.strict_types {
        set_strict_types(&state, &id, true).await?;
    }
    Ok((
        StatusCode::CREATED,
        Json(TenantView {
            id: id.to_string(),
            name: request.name,
            strict_types: request.strict_types,
        }),
    ))
}

async fn set_strict_types(state: &ApiState, id: &TenantId, strict: bool) -> Result<bool, ApiError> {
    let found = state
        .catalogue_store
        .set_strict_types(id, strict)
        .await
        .map_err(|error| {
            tracing::error!(%error, "tenant store failed");
            ApiError::unavailable("the database is unreachable; retry")
        })?;
    // Every producer's catalogue holds the setting.
    state.catalogue.changed().await;
    Ok(found)
}

#[utoipa::path(patch, path = "/v1/tenants/{id}", tag = "admin", params(("id" = String, Path, description = "The tenant id")), request_body = UpdateTenant,
    responses((status = 200, description = "The tenant, changed", body = TenantView), (status = 404, description = "No such resource (or another tenant's)", body = crate::api::ErrorBody), (status = 400, description = "Invalid input; the message names the field", body = crate::api::ErrorBody), (status = 401, description = "Missing or invalid token", body = crate::api::ErrorBody), (status = 503, description = "Broker or database unreachable; retry", body = crate::api::ErrorBody)))]
pub async fn update(
    State(state): State<ApiState>,
    _admin: Admin,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Result<Json<TenantView>, ApiError> {
    let unknown = || ApiError::not_found(format!("tenant {tenant:?} does not exist"));
    let id = TenantId::parse(&tenant).map_err(|_| unknown())?;
    let request: UpdateTenant = parse_json(&body)?;
    if let Some(strict) = request.strict_types
        && !set_strict_types(&state, &id, strict).await?
    {
        return Err(unknown());
    }
    let (name, strict_types) = state
        .catalogue_store
        .tenant(&id)
        .await
        .map_err(|error| {
            tracing::error!(%error, "tenant store failed");
            ApiError::unavailable("the database is unreachable; retry")
        })?
        .ok_or_else(unknown)?;
    Ok(Json(TenantView {
        id: id.to_string(),
        name,
        strict_types,
    }))
}

#[utoipa::path(post, path = "/v1/tenants/{id}/tokens", tag = "admin", params(("id" = String, Path, description = "The tenant id")),
    responses((status = 201, description = "The token, shown only here", body = TokenView), (status = 404, description = "No such resource (or another tenant's)", body = crate::api::ErrorBody), (status = 400, description = "Invalid input; the message names the field", body = crate::api::ErrorBody), (status = 401, description = "Missing or invalid token", body = crate::api::ErrorBody), (status = 503, description = "Broker or database unreachable; retry", body = crate::api::ErrorBody)))]
pub async fn issue_token(
    State(state): State<ApiState>,
    _admin: Admin,
    Path(tenant): Path<String>,
) -> Result<(StatusCode, Json<TokenView>), ApiError> {
    let unknown = || ApiError::not_found(format!("tenant {tenant:?} does not exist"));
    let id = TenantId::parse(&tenant).map_err(|_| unknown())?;
    let issued = state
        .tokens
        .issue_token(&id)
        .await
        .map_err(unavailable)?
        .ok_or_else(unknown)?;
    Ok((
        StatusCode::CREATED,
        Json(TokenView {
            tenant: id.to_string(),
            token: issued.token,
            prefix: issued.prefix,
        }),
    ))
}
