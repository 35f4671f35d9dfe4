//! `POST /v1/endpoints/{id}/recover` and `GET /v1/recoveries/{id}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hookfleet_contract::ApiError;
use hookfleet_contract::api_error::responses::{BadRequest, NotFound, Unauthorized, Unavailable};
use hookfleet_contract::auth::Tenant;
use serde::Deserialize;

use super::endpoints::millis;
use super::{ReadState, unavailable};
use crate::recover::{RecoveryView, Start};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RecoverRequest {
    /// RFC 3339: resend what the endpoint has not received since then.
    #[schema(required = true, nullable = false, format = DateTime)]
    since: Option<String>,
}

#[utoipa::path(post, path = "/v1/endpoints/{id}/recover", tag = "ledger", params(("id" = String, Path, description = "The endpoint id")), request_body = RecoverRequest,
    responses((status = 202, description = "Started", body = crate::recover::RecoveryView), NotFound, BadRequest, (status = 429, description = "The tenant has its quota of recoveries running; retry after Retry-After seconds", body = hookfleet_contract::ErrorBody), Unauthorized, Unavailable))]
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
        .map_err(|e| unavailable(&e))?;
    match started {
        Start::Started(view) => Ok((StatusCode::ACCEPTED, Json(view))),
        Start::NoEndpoint => Err(ApiError::not_found(format!(
            "endpoint {id:?} does not exist"
        ))),
        Start::TooMany(running) => {
            metrics::counter!("hookfleet_quota_refusals_total", "quota" => "recover").increment(1);
            Err(ApiError::too_many(
                format!(
                    "this tenant has {running} recoveries running, its quota \
                     (recover.max_in_flight_per_tenant); retry when one is done"
                ),
                60,
            ))
        }
    }
}

#[utoipa::path(get, path = "/v1/recoveries/{id}", tag = "ledger", params(("id" = String, Path, description = "The recovery id")),
    responses((status = 200, description = "Progress", body = crate::recover::RecoveryView), NotFound, BadRequest, Unauthorized, Unavailable))]
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
