//! `POST /v1/events/{id}/replay`: send an event again, to one endpoint or
//! to every endpoint it was delivered to.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use hookfleet_contract::ApiError;
use hookfleet_contract::api_error::responses::{BadRequest, NotFound, Unauthorized, Unavailable};
use hookfleet_contract::auth::Tenant;
use serde::{Deserialize, Serialize};

use super::{ReadState, unavailable};
use crate::replay::ResendError;

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// Only this endpoint; all of the event's endpoints when absent.
    #[schema(max_length = 64, pattern = "^[^\\u0000]*$")]
    endpoint_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Replayed {
    data: Vec<ReplayedDelivery>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplayedDelivery {
    delivery_id: String,
    endpoint_id: String,
    /// The attempt number the resend will be recorded under.
    attempt: u32,
}

#[utoipa::path(post, path = "/v1/events/{id}/replay", tag = "ledger", params(("id" = String, Path, description = "The event id")), request_body(content = Option<ReplayRequest>, description = "Optional"),
    responses((status = 202, description = "Resent; each starts a new retry chain", body = Replayed), NotFound, BadRequest, (status = 429, description = "The tenant has its quota of replays in flight; retry after Retry-After seconds", body = hookfleet_contract::ErrorBody), Unauthorized, Unavailable))]
pub async fn replay(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Replayed>), ApiError> {
    // No body, or `null`: no options.
    let request: ReplayRequest = if body.is_empty() || body.trim_ascii() == b"null" {
        ReplayRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?
    };
    if let Some(endpoint) = &request.endpoint_id {
        hookfleet_contract::limits::check_text(endpoint, 64)
            .map_err(|e| ApiError::bad_request("invalid_field", format!("endpoint_id: {e}")))?;
    }
    let _slot = state.replays.try_enter(tenant.as_str()).ok_or_else(|| {
        metrics::counter!("hookfleet_quota_refusals_total", "quota" => "replay").increment(1);
        ApiError::too_many(
            "this tenant has its quota of replays in flight (replay.max_in_flight_per_tenant); retry shortly",
            1,
        )
    })?;
    let client = state.client().await?;
    // The endpoints: the one asked for, or every one the event went to.
    let endpoints = hookfleet_db::endpoint::enabled_for_event(
        &**client,
        tenant.as_str(),
        &id,
        request.endpoint_id.as_deref(),
    )
    .await
    .map_err(|e| unavailable(&e))?;
    drop(client);
    if let Some(endpoint) = &request.endpoint_id
        && endpoints.is_empty()
    {
        return Err(ApiError::not_found(format!(
            "endpoint {endpoint:?} does not exist or is disabled"
        )));
    }
    let resent = state
        .resender
        .resend(tenant.as_str(), &id, &endpoints)
        .await
        .map_err(|error| match error {
            ResendError::NoEvent(_) => ApiError::not_found(error.to_string()),
            other => {
                tracing::error!(error = %other, "replay failed");
                ApiError::unavailable("the replay could not be sent; retry")
            }
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Replayed {
            data: resent
                .into_iter()
                .map(|r| ReplayedDelivery {
                    delivery_id: r.delivery_id.to_string(),
                    endpoint_id: r.endpoint_id.to_string(),
                    attempt: r.attempt,
                })
                .collect(),
        }),
    ))
}
