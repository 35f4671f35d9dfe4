//! The ledger's read API. For now one query: an event with the state of
//! each of its deliveries and every attempt.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use hookfleet_contract::auth::{Authenticate, Tenant};
use hookfleet_contract::{ApiError, TenantId};
use hookfleet_db::TokenStore;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::store::LedgerStore;

/// What the read handlers share.
#[derive(Debug, Clone)]
pub struct ReadState {
    pub store: LedgerStore,
    pub tokens: TokenStore,
}

impl Authenticate for ReadState {
    async fn tenant_for(&self, token: &str) -> Result<Option<TenantId>, ApiError> {
        self.tokens.tenant_for(token).await
    }

    fn admin_token(&self) -> Option<&str> {
        None
    }
}

pub fn router(state: ReadState) -> Router {
    Router::new()
        .route("/v1/events/{id}", get(event))
        .with_state(state)
}

#[derive(Debug, Serialize)]
pub struct EventView {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    created_at: String,
    payload: Box<RawValue>,
    deliveries: Vec<DeliveryView>,
    attempts: Vec<AttemptView>,
}

#[derive(Debug, Serialize)]
pub struct DeliveryView {
    id: String,
    endpoint_id: String,
    state: String,
    attempts: i32,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    next_attempt_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AttemptView {
    id: String,
    delivery_id: String,
    endpoint_id: String,
    attempt: i32,
    result: String,
    status_code: Option<i32>,
    error: Option<String>,
    started_at: String,
    duration_ms: i32,
}

async fn event(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<EventView>, ApiError> {
    let store = &state.store;
    let unavailable = |error: &dyn std::fmt::Display| {
        tracing::error!(%error, "ledger query failed");
        ApiError::unavailable("the ledger database is unreachable; retry")
    };
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
            "SELECT id, delivery_id, endpoint_id, attempt, result, status_code, error,
                    to_json(started_at) #>> '{}', duration_ms
             FROM attempts WHERE tenant = $1 AND event_id = $2
             ORDER BY started_at, attempt",
            &[&tenant.as_str(), &id],
        )
        .await
        .map_err(|e| unavailable(&e))?
        .iter()
        .map(|r| AttemptView {
            id: r.get(0),
            delivery_id: r.get(1),
            endpoint_id: r.get(2),
            attempt: r.get(3),
            result: r.get(4),
            status_code: r.get(5),
            error: r.get(6),
            started_at: r.get(7),
            duration_ms: r.get(8),
        })
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
