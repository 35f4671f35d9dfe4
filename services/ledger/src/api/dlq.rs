//! `GET /v1/dlq` and `POST /v1/dlq/requeue`: the tenant's parked
//! messages, from the ledger's `parked` table.

use hookfleet_contract::api_error::responses::{BadRequest, Unauthorized, Unavailable};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use hookfleet_contract::ApiError;
use hookfleet_contract::auth::Tenant;
use serde::{Deserialize, Serialize};

use super::{ReadState, invalid};
use crate::dlq::{DlqError, Filter, Parked};

/// The most messages one call lists or requeues; the default is 100.
const MAX_LIMIT: i64 = 1000;
const DEFAULT_LIMIT: i64 = 100;
/// The most message ids one requeue names.
const MAX_MESSAGE_IDS: usize = 1000;
/// The longest id a filter names: an AMQP message id is a short string.
const MAX_ID_CHARS: usize = 255;

/// An id to filter by: Postgres text cannot hold NUL, so that is a 400.
fn check_id(field: &str, id: &str) -> Result<(), ApiError> {
    hookfleet_contract::limits::check_text(id, MAX_ID_CHARS).map_err(|e| invalid(field, e))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// 1-1000; 100 when absent.
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
    /// The `next` of the previous page.
    #[param(pattern = "^[0-9]{1,18}$")]
    after: Option<String>,
    /// Only messages for this endpoint.
    #[param(max_length = 255)]
    endpoint_id: Option<String>,
    /// Deprecated: the former name of `limit` (when messages were read off
    /// the queue, how many of it to look through).
    #[param(minimum = 1, maximum = 1000)]
    scan: Option<i64>,
}

/// What to put back: `{"all": true}` or `{"message_ids": [...]}`, never
/// both. There is no default: requeueing everything must be asked for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequeueRequest {
    /// Every one of the caller's parked messages, up to `limit` per call.
    all: Option<bool>,
    /// Only these messages (by `message_id`).
    message_ids: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "hookfleet_contract::limits::optional_whole"
    )]
    limit: Option<i64>,
    /// Deprecated: the former name of `limit`.
    #[serde(
        default,
        deserialize_with = "hookfleet_contract::limits::optional_whole"
    )]
    scan: Option<i64>,
}

/// Written by hand: derive cannot say "exactly one of `all: true` and
/// `message_ids`".
impl utoipa::PartialSchema for RequeueRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{
            AdditionalProperties, ArrayBuilder, ObjectBuilder, OneOfBuilder, Type,
        };
        let limit = |description: &str| {
            ObjectBuilder::new()
                .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                    Type::Integer,
                    Type::Null,
                ]))
                .minimum(Some(1))
                .maximum(Some(MAX_LIMIT))
                .description(Some(description))
        };
        let limits = |object: ObjectBuilder| {
            object
                .property(
                    "limit",
                    limit(
                        "The most messages this call requeues (1 to 1000, default 100), \
                         oldest first; `more` says whether others are left",
                    ),
                )
                .property(
                    "scan",
                    limit("Deprecated: the former name of `limit`")
                        .deprecated(Some(utoipa::openapi::Deprecated::True)),
                )
                .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        };
        let all = ObjectBuilder::new()
            .property(
                "all",
                ObjectBuilder::new()
                    .schema_type(Type::Boolean)
                    .enum_values(Some([true]))
                    .description(Some(
                        "Every one of the caller's parked messages, up to `limit` per call",
                    )),
            )
            .required("all");
        let only = ObjectBuilder::new()
            .property(
                "message_ids",
                ArrayBuilder::new()
                    .items(
                        ObjectBuilder::new()
                            .schema_type(Type::String)
                            .max_length(Some(MAX_ID_CHARS))
                            // Postgres text cannot hold NUL: a 400.
                            .pattern(Some("^[^\\u0000]*$")),
                    )
                    .min_items(Some(1))
                    .max_items(Some(MAX_MESSAGE_IDS))
                    .description(Some("Only these messages (by `message_id`)")),
            )
            .required("message_ids");
        OneOfBuilder::new()
            .item(limits(all))
            .item(limits(only))
            .into()
    }
}

impl utoipa::ToSchema for RequeueRequest {}

/// A page of parked messages, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParkedList {
    data: Vec<Parked>,
    /// Pass as `after` for the next page; `null` on the last.
    next: Option<String>,
}

/// What a requeue put back.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RequeuedList {
    data: Vec<Parked>,
    /// Whether messages this call asked for are still parked because it
    /// reached its `limit`: call again.
    more: bool,
}

/// `limit`, or its former name `scan`: 1 to [`MAX_LIMIT`]. Each one
/// given is checked, though `limit` wins when both are.
fn limit(limit: Option<i64>, scan: Option<i64>) -> Result<i64, ApiError> {
    for (field, value) in [("limit", limit), ("scan", scan)] {
        if value.is_some_and(|value| !(1..=MAX_LIMIT).contains(&value)) {
            return Err(invalid(field, format!("must be between 1 and {MAX_LIMIT}")));
        }
    }
    Ok(limit.or(scan).unwrap_or(DEFAULT_LIMIT))
}

/// A cursor of a previous page: the last row's id.
fn cursor(after: Option<&str>) -> Result<i64, ApiError> {
    after.map_or(Ok(0), |after| {
        after
            .parse::<i64>()
            .ok()
            .filter(|id| *id >= 0 && after.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| invalid("after", "not a cursor this API returned"))
    })
}

fn choose() -> ApiError {
    ApiError::bad_request(
        "invalid_body",
        "say what to requeue: {\"all\": true} or {\"message_ids\": [...]}",
    )
}

fn failed(error: DlqError) -> ApiError {
    match error {
        DlqError::Disconnected | DlqError::Publish(_) => {
            tracing::error!(%error, "requeue failed");
            ApiError::unavailable("the broker is unreachable; retry")
        }
        DlqError::Postgres(_) | DlqError::Pool(_) => super::unavailable(&error),
    }
}

#[utoipa::path(get, path = "/v1/dlq", tag = "ledger", params(ListQuery),
    responses((status = 200, description = "The caller's parked messages, oldest first, with the reason each was parked", body = ParkedList),
              BadRequest,
              Unauthorized,
              Unavailable))]
pub async fn list(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Query(query): Query<ListQuery>,
) -> Result<Json<ParkedList>, ApiError> {
    let limit = limit(query.limit, query.scan)?;
    let after = cursor(query.after.as_deref())?;
    if let Some(endpoint_id) = &query.endpoint_id {
        check_id("endpoint_id", endpoint_id)?;
    }
    let filter = Filter {
        message_ids: None,
        endpoint_id: query.endpoint_id,
    };
    let (data, next) = state
        .dead_letters
        .list(tenant.as_str(), &filter, after, limit)
        .await
        .map_err(failed)?;
    Ok(Json(ParkedList {
        data,
        next: next.map(|id| id.to_string()),
    }))
}

#[utoipa::path(post, path = "/v1/dlq/requeue", tag = "ledger", request_body(content = RequeueRequest, description = "`{\"all\": true}` or `{\"message_ids\": [...]}`"),
    responses((status = 200, description = "What was put back where it came from (dead deliveries as new, manual retry chains)", body = RequeuedList),
              (status = 400, description = "Invalid input, or no body: say what to requeue", body = hookfleet_contract::ErrorBody),
              Unauthorized,
              (status = 503, description = "Broker or database unreachable; retry", body = hookfleet_contract::ErrorBody)))]
pub async fn requeue(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    body: Bytes,
) -> Result<Json<RequeuedList>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(choose());
    }
    let request: RequeueRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let message_ids = match (request.all, request.message_ids) {
        (Some(true), None) => None,
        (None | Some(false), Some(ids)) if !ids.is_empty() => {
            if ids.len() > MAX_MESSAGE_IDS {
                return Err(invalid(
                    "message_ids",
                    format!("at most {MAX_MESSAGE_IDS} per call"),
                ));
            }
            for id in &ids {
                check_id("message_ids", id)?;
            }
            Some(ids)
        }
        _ => return Err(choose()),
    };
    let limit = limit(request.limit, request.scan)?;
    let filter = Filter {
        message_ids,
        endpoint_id: None,
    };
    let requeued = state
        .dead_letters
        .requeue(tenant.as_str(), &filter, limit)
        .await
        .map_err(failed)?;
    Ok(Json(RequeuedList {
        data: requeued.data,
        more: requeued.more,
    }))
}
