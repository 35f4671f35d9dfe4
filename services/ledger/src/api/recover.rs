//! `POST /v1/endpoints/{id}/recover` and `GET /v1/recoveries/{id}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hookfleet_contract::ApiError;
use hookfleet_contract::auth::Tenant;
use serde::Deserialize;

use super::endpoints::millis;
use super::{ReadState, unavailable};
use crate::recovery::RecoveryView;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverRequest {
    /// RFC 3339: resend what the endpoint has not received since then.
    since: Option<String>,
}

pub async fn recover(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<RecoveryView>), ApiError> {
    let request: RecoverRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let since = millis("since", request.since.as_deref())?
        .ok_or_else(|| ApiError::bad_request("missing_field", "since: is required"))?;
    let started = state
        .recoveries
        .start(&tenant, &id, since)
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or_else(|| ApiError::not_found(format!("endpoint {id:?} does not exist")))?;
    Ok((StatusCode::ACCEPTED, Json(started)))
}

pub async fn progress(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
) -> Result<Json<RecoveryView>, ApiError> {
    state
        .recoveries
        .get(&tenant, &id)
        .await
        .map_err(|e| unavailable(&e))?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("recovery {id:?} does not exist")))
}
