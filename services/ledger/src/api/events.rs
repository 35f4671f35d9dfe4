//! An event as the ledger knows it: its payload, the state of each of its
//! deliveries, and every attempt.

use axum::Json;
use axum::extract::{Path, Query, State};
use hookfleet_contract::ApiError;
use hookfleet_contract::api_error::responses::{BadRequest, NotFound, Unauthorized, Unavailable};
use hookfleet_contract::auth::Tenant;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{
    ATTEMPT_COLUMNS, AttemptPage, AttemptView, ReadState, page_limit, parse_cursor, unavailable,
};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created_at: String,
    /// The inbound source (`src_...`) it came in through, if any.
    source: Option<String>,
    #[schema(value_type = Object)]
    payload: Box<RawValue>,
    deliveries: Vec<DeliveryView>,
    attempts: Vec<AttemptView>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    id: String,
    endpoint_id: String,
    state: String,
    attempts: i32,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    next_attempt_at: Option<String>,
}

#[utoipa::path(get, path = "/v1/events/{id}", tag = "ledger", params(("id" = String, Path, description = "The event id")),
    responses((status = 200, description = "The event, its deliveries and attempts", body = EventView), NotFound, BadRequest, Unauthorized, Unavailable))]
pub async fn event(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<EventView>, ApiError> {
    let client = state.client().await?;
    let row = client
        .query_opt(
            "SELECT event_type, to_json(created_at) #>> '{}', payload, source
             FROM events WHERE tenant = $1 AND id = $2
             ORDER BY created_at DESC LIMIT 1",
            &[&tenant.as_str(), &id],
        )
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or_else(|| ApiError::not_found(format!("event {id:?} is not in the ledger")))?;
    // An id reused after the idempotency window names a new event: the
    // newest is the one shown (the ledger keeps the older until retention).
    let payload = RawValue::from_string(row.get(2)).map_err(|_| ApiError::internal())?;
    // The event's deliveries and attempts are in its day's partitions:
    // naming its time spares a look into every other day.
    let created_at: String = row.get(1);
    let deliveries = client
        .query(
            "SELECT id, endpoint_id, state, attempts, last_status_code, last_error,
                    to_json(next_attempt_at) #>> '{}'
             FROM deliveries WHERE tenant = $1 AND event_id = $2
                 AND event_created_at = $3::text::timestamptz
             ORDER BY endpoint_id",
            &[&tenant.as_str(), &id, &created_at],
        )
        .await
        .map_err(|e| unavailable(&e))?
        .iter()
        .map(|r| DeliveryView {
            id: r.get(0),
            endpoint_id: r.get(1),
            state: r.get(2),
            attempts: r.get(3),
            last_status_code: r.get(4),
            last_error: r.get(5),
            next_attempt_at: r.get(6),
        })
        .collect();
    let attempts = client
        .query(
            &format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE tenant = $1 AND event_id = $2
                   AND event_created_at = $3::text::timestamptz
                 ORDER BY started_at, attempt"
            ),
            &[&tenant.as_str(), &id, &created_at],
        )
        .await
        .map_err(|e| unavailable(&e))?
        .iter()
        .map(AttemptView::from_row)
        .collect();
    Ok(Json(EventView {
        id,
        event_type: row.get(0),
        created_at,
        source: row.get(3),
        payload,
        deliveries,
        attempts,
    }))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// 1-500; 50 when absent.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// The `next` of the previous page.
    #[param(pattern = "^[0-9]{1,15}~[^\\u0000]*$")]
    after: Option<String>,
}

#[utoipa::path(get, path = "/v1/events/{id}/attempts", tag = "ledger", params(("id" = String, Path, description = "The event id"), PageQuery),
    responses((status = 200, description = "The event's attempts at every endpoint, oldest first", body = AttemptPage), NotFound, BadRequest, Unauthorized, Unavailable))]
pub async fn attempts(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<AttemptPage>, ApiError> {
    let limit = page_limit(query.limit)?;
    let (cursor_at, cursor_id) = parse_cursor(query.after.as_deref())?;
    let client = state.client().await?;
    let created_at: String = client
        .query_opt(
            "SELECT to_json(created_at) #>> '{}' FROM events WHERE tenant = $1 AND id = $2
             ORDER BY created_at DESC LIMIT 1",
            &[&tenant.as_str(), &id],
        )
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or_else(|| ApiError::not_found(format!("event {id:?} is not in the ledger")))?
        .get(0);
    let rows = client
        .query(
            &format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts
                 WHERE tenant = $1 AND event_id = $2
                   AND event_created_at = $6::text::timestamptz
                   AND ($3::int8 IS NULL
                        OR (started_at, id) > (to_timestamp($3 / 1000.0), $4::text))
                 ORDER BY started_at, id
                 LIMIT $5"
            ),
            &[
                &tenant.as_str(),
                &id,
                &cursor_at,
                &cursor_id,
                &limit,
                &created_at,
            ],
        )
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(Json(AttemptPage::of(&rows, limit)))
}
