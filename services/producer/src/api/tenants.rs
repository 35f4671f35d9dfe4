//! The admin API: tenants and their API tokens. Needs the admin token.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hookfleet_contract::api_error::responses::{BadRequest, NotFound, Unauthorized, Unavailable};
use hookfleet_contract::auth::Admin;
use hookfleet_contract::{ApiError, TenantId};
use hookfleet_db::tokens::TokenInfo;
use serde::{Deserialize, Serialize};

use super::{ApiState, parse_json, parse_optional_json};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTenant {
    #[schema(required = true, nullable = false, pattern = "^[a-z0-9_-]{1,64}$")]
    id: Option<String>,
    #[serde(default)]
    #[schema(max_length = 1024, pattern = "^[^\\u0000]*$")]
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

/// A newly issued token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenView {
    tenant: String,
    /// The token, shown only here; hookfleet keeps only its hash.
    token: String,
    #[serde(flatten)]
    info: TokenInfoView,
}

/// A token as listed: never the token itself.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenInfoView {
    /// Names the token in `DELETE /v1/tenants/{id}/tokens/{token_id}`.
    id: String,
    /// The token's first characters, to tell tokens apart.
    prefix: String,
    created_at: String,
    /// `null`: it does not expire.
    expires_at: Option<String>,
    /// `null`: not revoked.
    revoked_at: Option<String>,
}

impl From<TokenInfo> for TokenInfoView {
    fn from(info: TokenInfo) -> Self {
        Self {
            id: info.id,
            prefix: info.prefix,
            created_at: info.created_at,
            expires_at: info.expires_at,
            revoked_at: info.revoked_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenList {
    data: Vec<TokenInfoView>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct IssueToken {
    /// Seconds from now until the token stops working (at most ten
    /// years). Absent: it does not expire.
    #[serde(
        default,
        deserialize_with = "hookfleet_contract::limits::optional_whole"
    )]
    #[schema(minimum = 1, maximum = 315_360_000)]
    expires_in: Option<u64>,
}

/// The longest `expires_in`: ten years.
const MAX_EXPIRES_IN: u64 = 315_360_000;

fn unavailable(error: hookfleet_db::DbError) -> ApiError {
    tracing::error!(%error, "tenant store failed");
    ApiError::unavailable("the database is unreachable; retry")
}

#[utoipa::path(post, path = "/v1/tenants", tag = "admin", request_body = CreateTenant,
    responses((status = 201, description = "Created", body = TenantView), (status = 409, description = "Exists already", body = hookfleet_contract::ErrorBody), BadRequest, Unauthorized, Unavailable))]
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
    responses((status = 200, description = "The tenant, changed", body = TenantView), NotFound, BadRequest, Unauthorized, Unavailable))]
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
    request_body(content = Option<IssueToken>, description = "Optional"),
    responses((status = 201, description = "The token, shown only here", body = TokenView), NotFound, BadRequest, Unauthorized, Unavailable))]
pub async fn issue_token(
    State(state): State<ApiState>,
    _admin: Admin,
    Path(tenant): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<TokenView>), ApiError> {
    let request: IssueToken = parse_optional_json(&body)?;
    let expires_at = match request.expires_in {
        None => None,
        Some(seconds @ 1..=MAX_EXPIRES_IN) => {
            Some(hookfleet_contract::now_millis() + seconds as i64 * 1000)
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("expires_in: must be between 1 and {MAX_EXPIRES_IN} seconds"),
            ));
        }
    };
    let id = tenant_id(&tenant)?;
    let (issued, info) = state
        .tokens
        .issue_token(&id, expires_at)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| unknown(&tenant))?;
    Ok((
        StatusCode::CREATED,
        Json(TokenView {
            tenant: id.to_string(),
            token: issued.token,
            info: info.into(),
        }),
    ))
}

fn unknown(tenant: &str) -> ApiError {
    ApiError::not_found(format!("tenant {tenant:?} does not exist"))
}

fn tenant_id(tenant: &str) -> Result<TenantId, ApiError> {
    TenantId::parse(tenant).map_err(|_| unknown(tenant))
}

#[utoipa::path(get, path = "/v1/tenants/{id}/tokens", tag = "admin", params(("id" = String, Path, description = "The tenant id")),
    responses((status = 200, description = "The tenant's tokens, oldest first, revoked and expired ones too", body = TokenList), (status = 404, description = "No such tenant", body = hookfleet_contract::ErrorBody), BadRequest, Unauthorized, Unavailable))]
pub async fn list_tokens(
    State(state): State<ApiState>,
    _admin: Admin,
    Path(tenant): Path<String>,
) -> Result<Json<TokenList>, ApiError> {
    let id = tenant_id(&tenant)?;
    if !state.tokens.tenant_exists(&id).await.map_err(unavailable)? {
        return Err(unknown(&tenant));
    }
    let data = state.tokens.list_tokens(&id).await.map_err(unavailable)?;
    Ok(Json(TokenList {
        data: data.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(delete, path = "/v1/tenants/{id}/tokens/{token_id}", tag = "admin",
    params(("id" = String, Path, description = "The tenant id"), ("token_id" = String, Path, description = "The token's `id` (`tok_...`)")),
    responses((status = 204, description = "Revoked: refused at once by this instance, and by every instance within `auth.token_cache_ttl_ms`"), (status = 404, description = "No such tenant or token", body = hookfleet_contract::ErrorBody), BadRequest, Unauthorized, Unavailable))]
pub async fn revoke_token(
    State(state): State<ApiState>,
    _admin: Admin,
    Path((tenant, token)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let id = tenant_id(&tenant)?;
    if state
        .tokens
        .revoke_token(&id, &token)
        .await
        .map_err(unavailable)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!(
            "tenant {tenant:?} has no token {token:?}"
        )))
    }
}
