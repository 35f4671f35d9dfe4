//! `GET /v1/dlq` and `POST /v1/dlq/requeue`: the tenant's part of the
//! dead-letter queue.

use hookfleet_contract::api_error::responses::{BadRequest, Unauthorized};
use std::collections::HashSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use hookfleet_contract::ApiError;
use hookfleet_contract::auth::Tenant;
use serde::{Deserialize, Serialize};

use super::ReadState;
use crate::dlq::{DlqError, Parked};

/// How many messages one call looks at, at most.
const MAX_SCAN: u16 = 1000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ScanQuery {
    /// How many messages of the queue to look through (1 to 1000, default
    /// 100); the answer holds the caller's among them.
    #[param(minimum = 1, maximum = 1000)]
    scan: Option<u16>,
}

/// What to put back: `{"all": true}` or `{"message_ids": [...]}`, never
/// both. There is no default: requeueing everything must be asked for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequeueRequest {
    /// Every one of the caller's parked messages among the `scan` looked at.
    all: Option<bool>,
    /// Only these messages (by `message_id`).
    message_ids: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "hookfleet_contract::limits::optional_whole"
    )]
    scan: Option<u16>,
}

/// Written by hand: derive cannot say "exactly one of `all: true` and
/// `message_ids`".
impl utoipa::PartialSchema for RequeueRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Type,
        };
        let scan = || {
            ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                    Type::Integer,
                    Type::Null,
                ]))
                .minimum(Some(1))
                .maximum(Some(MAX_SCAN))
                .description(Some(
                    "How many messages of the queue to look through (1 to 1000, default 100)",
                ))
        };
        let closed = || Some(AdditionalProperties::FreeForm(false));
        let all = ObjectBuilder::new()
            .property(
                "all",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .enum_values(Some([true]))
                    .description(Some(
                        "Every one of the caller's parked messages among those scanned",
                    )),
            )
            .required("all")
            .property("scan", scan())
            .additional_properties(closed());
        let only = ObjectBuilder::new()
            .property(
                "message_ids",
                ArrayBuilder::new()
                    .items(ObjectBuilder::new().schema_type(Type::String))
                    .min_items(Some(1))
                    .description(Some("Only these messages (by `message_id`)")),
            )
            .required("message_ids")
            .property("scan", scan())
            .additional_properties(closed());
        OneOfBuilder::new().item(all).item(only).into()
    }
}

impl utoipa::ToSchema for RequeueRequest {}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParkedList {
    data: Vec<Parked>,
}

fn scan(requested: Option<u16>) -> Result<u16, ApiError> {
    let scan = requested.unwrap_or(100);
    if (1..=MAX_SCAN).contains(&scan) {
        Ok(scan)
    } else {
        Err(ApiError::bad_request(
            "invalid_field",
            format!("scan: must be between 1 and {MAX_SCAN}"),
        ))
    }
}

fn choose() -> ApiError {
    ApiError::bad_request(
        "invalid_body",
        "say what to requeue: {\"all\": true} or {\"message_ids\": [...]}",
    )
}

fn broker(error: DlqError) -> ApiError {
    tracing::error!(%error, "dead-letter queue access failed");
    ApiError::unavailable("the broker is unreachable; retry")
}

#[utoipa::path(get, path = "/v1/dlq", tag = "ledger", params(ScanQuery),
    responses((status = 200, description = "The caller's parked messages, with the reason each was parked", body = ParkedList),
              BadRequest,
              Unauthorized,
              (status = 503, description = "Broker unreachable; retry", body = hookfleet_contract::ErrorBody)))]
pub async fn list(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Query(query): Query<ScanQuery>,
) -> Result<Json<ParkedList>, ApiError> {
    let data = state
        .dead_letters
        .list(tenant.as_str(), scan(query.scan)?)
        .await
        .map_err(broker)?;
    Ok(Json(ParkedList { data }))
}

#[utoipa::path(post, path = "/v1/dlq/requeue", tag = "ledger", request_body(content = RequeueRequest, description = "`{\"all\": true}` or `{\"message_ids\": [...]}`"),
    responses((status = 200, description = "What was put back where it came from (dead deliveries as new, manual retry chains)", body = ParkedList),
              (status = 400, description = "Invalid input, or no body: say what to requeue", body = hookfleet_contract::ErrorBody),
              Unauthorized,
              (status = 503, description = "Broker unreachable; retry", body = hookfleet_contract::ErrorBody)))]
pub async fn requeue(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    body: Bytes,
) -> Result<Json<ParkedList>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(choose());
    }
    let request: RequeueRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let only: Option<HashSet<String>> = match (request.all, request.message_ids) {
        (Some(true), None) => None,
        (None | Some(false), Some(ids)) if !ids.is_empty() => Some(ids.into_iter().collect()),
        _ => return Err(choose()),
    };
    let data = state
        .dead_letters
        .requeue(tenant.as_str(), only.as_ref(), scan(request.scan)?)
        .await
        .map_err(broker)?;
    Ok(Json(ParkedList { data }))
}
