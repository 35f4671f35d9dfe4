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
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantView {
    id: String,
    name: String,
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
    hookfleet_contract::limits::check_text(
        &request.name,
        hookfleet_contract::limits::MAX_DESCRIPTION_CHARS,
    )
    .map_err(|e| ApiError::bad_request("invalid_field", format!("name: {e}")))?;
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
    Ok((
        StatusCode::CREATED,
        Json(TenantView {
            id: id.to_string(),
            name: request.name,
        }),
    ))
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
