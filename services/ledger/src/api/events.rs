//! An event as the ledger knows it: its payload, the state of each of its
//! deliveries, and every attempt.

use axum::Json;
use axum::extract::{Path, State};
use hookfleet_contract::ApiError;
use hookfleet_contract::auth::Tenant;
use serde::Serialize;
use serde_json::value::RawValue;

use super::{ATTEMPT_COLUMNS, AttemptView, ReadState, unavailable};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventView {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created_at: String,
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
    responses((status = 200, description = "The event, its deliveries and attempts", body = EventView), (status = 404, description = "No such resource (or another tenant's)", body = super::ErrorBody), (status = 400, description = "Invalid input; the message names the field", body = super::ErrorBody), (status = 401, description = "Missing or invalid token", body = super::ErrorBody), (status = 503, description = "Broker or database unreachable; retry", body = super::ErrorBody)))]
pub async fn event(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<EventView>, ApiError> {
    let store = &state.store;
    let client = store.pool().get().await.map_err(|e| unavailable(&e))?;
    let row = client
        .query_opt(
            "SELECT event_type, to_json(created_at) #>> '{}', payload
             FROM events WHERE tenant = $1 AND id = $2",
            &[&tenant.as_str(), &id],
        )
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or_else(|| ApiError::not_found(format!("event {id:?} is not in the ledger")))?;
    let payload = RawValue::from_string(row.get(2)).map_err(|_| ApiError::internal())?;
    let deliveries = client
        .query(
            "SELECT id, endpoint_id, state, attempts, last_status_code, last_error,
                    to_json(next_attempt_at) #>> '{}'
             FROM deliveries WHERE tenant = $1 AND event_id = $2 ORDER BY endpoint_id",
            &[&tenant.as_str(), &id],
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
                 ORDER BY started_at, attempt"
            ),
            &[&tenant.as_str(), &id],
        )
        .await
        .map_err(|e| unavailable(&e))?
        .iter()
        .map(AttemptView::from_row)
        .collect();
    Ok(Json(EventView {
        id,
        event_type: row.get(0),
        created_at: row.get(1),
        payload,
        deliveries,
        attempts,
    }))
}
