//! `/v1/event-types`: the tenant's event-type catalogue. A PUT creates a
//! type or makes a new version of it; its schema is compiled before it is
//! stored, and every producer checks payloads of the type against it from
//! then on.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use hookfleet_contract::api_error::responses::{BadRequest, NotFound, Unauthorized, Unavailable};
use hookfleet_contract::auth::Tenant;
use hookfleet_contract::{ApiError, ErrorDetail, EventType, check_payload};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ApiState, parse_json};
use crate::catalogue::store::{EventTypeView, NewVersion, Put};
use crate::catalogue::{MAX_DETAILS, StoreError, TypeSchema, document};

/// The most examples one type may carry.
pub const MAX_EXAMPLES: usize = 10;
/// The path of the catalogue's own OpenAPI document; not a type name.
const DOCUMENT: &str = "openapi.json";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PutRequest<'a> {
    #[serde(default)]
    #[schema(pattern = "^[^\\u0000]*$")]
    description: String,
    /// A JSON Schema (2020-12 unless `$schema` says otherwise); `null` or
    /// absent: payloads of the type are not checked.
    #[serde(borrow)]
    #[schema(value_type = Option<Object>)]
    schema: Option<&'a RawValue>,
    #[serde(default)]
    deprecated: bool,
    /// Example payloads; each must match the schema.
    #[serde(default, borrow)]
    #[schema(value_type = Vec<Object>, max_items = 10)]
    examples: Vec<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventTypePage {
    data: Vec<EventTypeView>,
    /// Pass as `after` for the next page; `null` on the last page.
    next: Option<String>,
}

fn unavailable(error: StoreError) -> ApiError {
    if let StoreError::Full = error {
        return ApiError::bad_request("invalid_field", format!("type: {error}"));
    }
    // A data exception (class 22) is Postgres refusing a value it cannot
    // hold (a `\u0000` in JSON, say): the input's fault, not an outage.
    if let StoreError::Postgres(pg) = &error
        && let Some(db) = pg.as_db_error()
        && db.code().code().starts_with("22")
    {
        return ApiError::bad_request(
            "invalid_body",
            format!("the catalogue cannot store this type: {}", db.message()),
        );
    }
    tracing::error!(%error, "event-type catalogue failed");
    ApiError::unavailable("the event-type catalogue is unreachable; retry")
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("event type {name:?} is not in the catalogue"))
}

fn reserved_name() -> ApiError {
    ApiError::bad_request(
        "invalid_field",
        format!("type: {DOCUMENT:?} is reserved for the catalogue's OpenAPI document"),
    )
}

fn parse_name(raw: &str) -> Result<EventType, ApiError> {
    if raw == DOCUMENT {
        return Err(reserved_name());
    }
    EventType::parse(raw).map_err(|e| ApiError::bad_request("invalid_field", format!("type: {e}")))
}

/// Checks each example: a JSON object within the payload cap that
/// matches the schema.
fn check_examples(
    examples: &[&RawValue],
    schema: Option<&TypeSchema>,
    max_payload: usize,
) -> Result<String, ApiError> {
    if examples.len() > MAX_EXAMPLES {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("examples: at most {MAX_EXAMPLES} are allowed"),
        ));
    }
    for (n, example) in examples.iter().enumerate() {
        let text = example.get();
        check_payload(text.as_bytes(), max_payload)
            .map_err(|e| ApiError::bad_request("invalid_field", format!("examples[{n}]: {e}")))?;
        let Some(schema) = schema else { continue };
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ApiError::bad_request("invalid_field", format!("examples[{n}]: {e}")))?;
        let (problems, total) = schema.problems(&value, MAX_DETAILS);
        if total > 0 {
            return Err(ApiError::bad_request(
                "invalid_field",
                format!("examples[{n}]: does not match the schema ({total} problems)"),
            )
            .with_details(
                problems
                    .into_iter()
                    .map(|(path, message)| ErrorDetail { path, message })
                    .collect(),
            ));
        }
    }
    Ok(format!(
        "[{}]",
        examples
            .iter()
            .map(|e| e.get())
            .collect::<Vec<_>>()
            .join(",")
    ))
}

#[utoipa::path(put, path = "/v1/event-types/{type}", tag = "event-types",
    params(("type" = String, Path, max_length = 128, pattern = "^[a-z0-9_-]+(\\.[a-z0-9_-]+)*$", description = "The event type, as events carry it")),
    request_body = PutRequest,
    responses((status = 201, description = "Created, as version 1", body = EventTypeView),
              (status = 200, description = "A new version (or, if nothing changed, the current one)", body = EventTypeView),
              (status = 400, description = "Invalid input: `invalid_schema` for a schema that does not compile, is too large or too deep, or has an external `$ref`", body = hookfleet_contract::ErrorBody),
              Unauthorized,
              Unavailable))]
pub async fn put(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<EventTypeView>), ApiError> {
    let name = parse_name(&name)?;
    let request: PutRequest<'_> = parse_json(&body)?;
    let raw_schema = request.schema.map(|s| s.get().to_owned());
    let schema = match raw_schema.clone() {
        // Compiling is CPU work, bounded by the size and depth caps.
        Some(raw) => Some(
            tokio::task::spawn_blocking(move || TypeSchema::compile(&raw))
                .await
                .map_err(|_| ApiError::internal())?
                .map_err(|e| ApiError::bad_request("invalid_schema", format!("schema: {e}")))?,
        ),
        None => None,
    };
    let examples = check_examples(
        &request.examples,
        schema.as_ref(),
        state.ingest.max_payload_bytes,
    )?;
    let (outcome, view) = state
        .catalogue_store
        .put(
            &tenant,
            &name,
            &NewVersion {
                description: request.description,
                deprecated: request.deprecated,
                schema: raw_schema,
                examples,
            },
        )
        .await
        .map_err(unavailable)?;
    if outcome != Put::Unchanged {
        state.catalogue.changed().await;
    }
    let status = match outcome {
        Put::Created => StatusCode::CREATED,
        Put::NewVersion | Put::Unchanged => StatusCode::OK,
    };
    Ok((status, Json(view)))
}

#[utoipa::path(get, path = "/v1/event-types", tag = "event-types",
    params(("after" = Option<String>, Query, description = "The `next` of the previous page"),
           ("limit" = Option<i64>, Query, minimum = 1, maximum = 500, description = "1 to 500, default 50")),
    responses((status = 200, description = "A page of event types by name, each at its current version", body = EventTypePage),
              BadRequest,
              Unauthorized,
              Unavailable))]
pub async fn list(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Query(query): Query<ListQuery>,
) -> Result<Json<EventTypePage>, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid_field",
            "limit: must be between 1 and 500",
        ));
    }
    let data = state
        .catalogue_store
        .list(&tenant, query.after.as_deref(), limit)
        .await
        .map_err(unavailable)?;
    let next = (data.len() as i64 == limit)
        .then(|| data.last().map(|t| t.name.clone()))
        .flatten();
    Ok(Json(EventTypePage { data, next }))
}

#[utoipa::path(get, path = "/v1/event-types/{type}", tag = "event-types",
    params(("type" = String, Path, max_length = 128, pattern = "^[a-z0-9_-]+(\\.[a-z0-9_-]+)*$", description = "The event type")),
    responses((status = 200, description = "The type at its current version, with every version", body = EventTypeView),
              NotFound,
              Unauthorized,
              Unavailable))]
pub async fn get(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<Json<EventTypeView>, ApiError> {
    state
        .catalogue_store
        .get(&tenant, &name)
        .await
        .map_err(unavailable)?
        .map(Json)
        .ok_or_else(|| not_found(&name))
}

#[utoipa::path(delete, path = "/v1/event-types/{type}", tag = "event-types",
    params(("type" = String, Path, max_length = 128, pattern = "^[a-z0-9_-]+(\\.[a-z0-9_-]+)*$", description = "The event type")),
    responses((status = 204, description = "Deleted with every version; its events are no longer checked"),
              NotFound,
              Unauthorized,
              Unavailable))]
pub async fn delete(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state
        .catalogue_store
        .delete(&tenant, &name)
        .await
        .map_err(unavailable)?
    {
        return Err(not_found(&name));
    }
    state.catalogue.changed().await;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/event-types/openapi.json", tag = "event-types",
    responses((status = 200, description = "The tenant's catalogue as an OpenAPI 3.1 document: one entry under `webhooks` per type, with its schema, the Standard Webhooks headers and its examples", body = Object),
              Unauthorized,
              Unavailable))]
pub async fn openapi(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (revision, types) = state
        .catalogue_store
        .documented(&tenant)
        .await
        .map_err(unavailable)?;
    Ok(Json(document::document(tenant.as_str(), &revision, &types)))
}
