//! `/v1/sources`: the tenant's inbound sources over HTTP. Like endpoints,
//! another tenant's source answers 404 and the secret is shown only when it
//! is set (creation and rotation).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hookfleet_contract::api_error::responses::{BadRequest, NotFound, Unauthorized, Unavailable};
use hookfleet_contract::auth::Tenant;
use hookfleet_contract::{ApiError, EventType};
use serde::{Deserialize, Serialize};

use super::{ApiState, parse_json, parse_optional_json};
use crate::inbound::SourceKind;
use crate::registry::RegistryError;
use crate::sources::{NewSource, Source, SourcePatch};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateSourceRequest {
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000]*$"
    )]
    name: Option<String>,
    #[schema(
        required = true,
        nullable = false,
        pattern = "^(github|stripe|shopify|standard_webhooks)$"
    )]
    kind: Option<String>,
    /// The provider's signing secret. Required for Stripe and Shopify
    /// (they issue it); generated for GitHub and Standard Webhooks when
    /// absent. A Standard Webhooks secret is `whsec_` + base64 of 24 to
    /// 64 bytes.
    #[schema(min_length = 1, max_length = 1024)]
    secret: Option<String>,
    /// The first segments of the event types; the kind when absent or
    /// `null`.
    #[schema(max_length = 128, pattern = "^[a-z0-9_-]+(\\.[a-z0-9_-]+)*$")]
    type_prefix: Option<String>,
}

/// Absent fields stay as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateSourceRequest {
    #[schema(min_length = 1, max_length = 200, pattern = "^[^\\u0000]*$")]
    name: Option<String>,
    #[schema(max_length = 128, pattern = "^[a-z0-9_-]+(\\.[a-z0-9_-]+)*$")]
    type_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateSourceSecretRequest {
    /// The new secret; required for Stripe and Shopify, generated for the
    /// others when absent.
    #[schema(min_length = 1, max_length = 1024)]
    secret: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<i64>,
}

/// A source with its secret, shown only on creation and rotation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SourceWithSecret {
    #[serde(flatten)]
    source: Source,
    secret: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SourcePage {
    data: Vec<Source>,
    /// Pass as `after` for the next page; `null` on the last page.
    next: Option<String>,
}

fn invalid(field: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_field", format!("{field}: {error}"))
}

fn unavailable(error: RegistryError) -> ApiError {
    tracing::error!(%error, "source registry failed");
    ApiError::unavailable("the source registry is unreachable; retry")
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("source {id:?} does not exist"))
}

fn parse_name(name: String) -> Result<String, ApiError> {
    if name.is_empty() {
        return Err(invalid("name", "must not be empty"));
    }
    hookfleet_contract::limits::check_text(&name, 200).map_err(|e| invalid("name", e))?;
    Ok(name)
}

fn parse_prefix(prefix: &str) -> Result<String, ApiError> {
    EventType::parse(prefix)
        .map(|p| p.as_str().to_owned())
        .map_err(|e| invalid("type_prefix", e))
}

/// The secret given, checked for the kind, or a generated one.
fn secret_for(kind: SourceKind, given: Option<String>) -> Result<String, ApiError> {
    match given {
        Some(secret) => {
            kind.check_secret(&secret)
                .map_err(|e| invalid("secret", e))?;
            Ok(secret)
        }
        None if kind.can_generate_secret() => Ok(kind.generate_secret()),
        None => Err(ApiError::bad_request(
            "missing_field",
            format!(
                "secret: is required for {} (use the signing secret it gives you)",
                kind.as_str()
            ),
        )),
    }
}

#[utoipa::path(post, path = "/v1/sources", tag = "sources", request_body = CreateSourceRequest,
    responses((status = 201, description = "Created; the secret is shown only here. Point the provider at `ingest_path`", body = SourceWithSecret), BadRequest, Unauthorized, Unavailable))]
pub async fn create(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    body: Bytes,
) -> Result<(StatusCode, Json<SourceWithSecret>), ApiError> {
    let request: CreateSourceRequest = parse_json(&body)?;
    let name = request
        .name
        .ok_or_else(|| ApiError::bad_request("missing_field", "name: is required"))
        .and_then(parse_name)?;
    let kind = request
        .kind
        .ok_or_else(|| ApiError::bad_request("missing_field", "kind: is required"))?;
    let kind = SourceKind::parse(&kind).ok_or_else(|| {
        invalid(
            "kind",
            format!("{kind:?} is not github, stripe, shopify or standard_webhooks"),
        )
    })?;
    let type_prefix = parse_prefix(request.type_prefix.as_deref().unwrap_or(kind.as_str()))?;
    let secret = secret_for(kind, request.secret)?;
    let source = state
        .sources
        .create(
            tenant.as_str(),
            NewSource {
                name,
                kind,
                type_prefix,
            },
            &secret,
        )
        .await
        .map_err(unavailable)?;
    Ok((
        StatusCode::CREATED,
        Json(SourceWithSecret { source, secret }),
    ))
}

#[utoipa::path(get, path = "/v1/sources", tag = "sources",
    params(("after" = Option<String>, Query, description = "The `next` of the previous page"),
           ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50")),
    responses((status = 200, description = "A page of sources in creation order", body = SourcePage), BadRequest, Unauthorized, Unavailable))]
pub async fn list(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Query(query): Query<ListQuery>,
) -> Result<Json<SourcePage>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(invalid("limit", "must be between 1 and 500"));
    }
    let data = state
        .sources
        .list(tenant.as_str(), query.after.as_deref(), limit)
        .await
        .map_err(unavailable)?;
    let next = (data.len() as i64 == limit)
        .then(|| data.last().map(|s| s.id.clone()))
        .flatten();
    Ok(Json(SourcePage { data, next }))
}

#[utoipa::path(get, path = "/v1/sources/{id}", tag = "sources", params(("id" = String, Path, description = "The source id")),
    responses((status = 200, description = "The source", body = Source), NotFound, Unauthorized, Unavailable))]
pub async fn get(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<Source>, ApiError> {
    state
        .sources
        .get(tenant.as_str(), &id)
        .await
        .map_err(unavailable)?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

#[utoipa::path(patch, path = "/v1/sources/{id}", tag = "sources", params(("id" = String, Path, description = "The source id")), request_body = UpdateSourceRequest,
    responses((status = 200, description = "The source, changed", body = Source), NotFound, BadRequest, Unauthorized, Unavailable))]
pub async fn update(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Source>, ApiError> {
    let request: UpdateSourceRequest = parse_json(&body)?;
    let patch = SourcePatch {
        name: request.name.map(parse_name).transpose()?,
        type_prefix: request
            .type_prefix
            .as_deref()
            .map(parse_prefix)
            .transpose()?,
    };
    state
        .sources
        .update(tenant.as_str(), &id, patch)
        .await
        .map_err(unavailable)?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

#[utoipa::path(delete, path = "/v1/sources/{id}", tag = "sources", params(("id" = String, Path, description = "The source id")),
    responses((status = 204, description = "Deleted: its inbound path answers 404 from now on"), NotFound, Unauthorized, Unavailable))]
pub async fn delete(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state
        .sources
        .delete(tenant.as_str(), &id)
        .await
        .map_err(unavailable)?
    {
        return Err(not_found(&id));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sources/{id}/secret/rotate", tag = "sources", params(("id" = String, Path, description = "The source id")), request_body(content = Option<RotateSourceSecretRequest>, description = "Optional for GitHub and Standard Webhooks sources"),
    responses((status = 200, description = "The new secret, shown only here; the previous one still verifies during the rotation grace period", body = SourceWithSecret), NotFound, BadRequest, Unauthorized, Unavailable))]
pub async fn rotate_secret(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<SourceWithSecret>, ApiError> {
    let request: RotateSourceSecretRequest = parse_optional_json(&body)?;
    let current = state
        .sources
        .get(tenant.as_str(), &id)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| not_found(&id))?;
    let secret = secret_for(current.kind, request.secret)?;
    let source = state
        .sources
        .rotate_secret(tenant.as_str(), &id, &secret, state.rotation_grace)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(SourceWithSecret { source, secret }))
}
