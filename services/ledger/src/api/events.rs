//! An event as the ledger knows it: its payload, the state of each of its
//! deliveries, and every attempt.

use axum::Json;
use axum::extract::{Path, Query, State};
use hookfleet_contract::ApiError;
use hookfleet_contract::api_error::responses::{BadRequest, NotFound, Unauthorized, Unavailable};
use hookfleet_contract::auth::Tenant;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{AttemptPage, ReadState, page_limit, parse_cursor, unavailable};
use crate::read_model::attempts::{self, AttemptView};
use crate::read_model::events::{self, DeliveryView};

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

#[utoipa::path(get, path = "/v1/events/{id}", tag = "ledger", params(("id" = String, Path, description = "The event id")),
    responses((status = 200, description = "The event, its deliveries and attempts", body = EventView), NotFound, BadRequest, Unauthorized, Unavailable))]
pub async fn event(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<EventView>, ApiError> {
    let client = state.client().await?;
    let event = events::event(&**client, tenant.as_str(), &id)
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or_else(|| ApiError::not_found(format!("event {id:?} is not in the ledger")))?;
    let payload = RawValue::from_string(event.payload).map_err(|_| ApiError::internal())?;
    let deliveries = events::deliveries(&**client, tenant.as_str(), &id, &event.created_at)
        .await
        .map_err(|e| unavailable(&e))?;
    let attempts = attempts::of_event(&**client, tenant.as_str(), &id, &event.created_at)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(Json(EventView {
        id,
        event_type: event.event_type,
        created_at: event.created_at,
        source: event.source,
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
    let after = parse_cursor(query.after.as_deref())?;
    let client = state.client().await?;
    let created_at = events::created_at(&**client, tenant.as_str(), &id)
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or_else(|| ApiError::not_found(format!("event {id:?} is not in the ledger")))?;
    let data = attempts::of_event_page(&**client, tenant.as_str(), &id, &created_at, &after, limit)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(Json(AttemptPage::of(data, limit)))
}
