//! `POST /v1/events`: accept an event and answer only once the broker has
//! it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use hookfleet_contract::{ApiError, EventId, EventType, TenantId, check_payload};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{ApiState, parse_json};
use crate::ingest::{self, IngestError};

/// The request body. The payload is kept as raw JSON so its bytes reach the
/// endpoints exactly as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestRequest<'a> {
    #[serde(rename = "type")]
    event_type: Option<String>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Accepted {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
}

pub async fn ingest(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let request: IngestRequest<'_> = parse_json(&body)?;
    let event_type = request
        .event_type
        .ok_or_else(|| ApiError::bad_request("missing_field", "type: is required"))?;
    let event_type = EventType::parse(&event_type)
        .map_err(|e| ApiError::bad_request("invalid_field", format!("type: {e}")))?;
    let payload = request
        .payload
        .ok_or_else(|| ApiError::bad_request("missing_field", "payload: is required"))?;
    let payload = payload.get().as_bytes();
    check_payload(payload, state.ingest.max_payload_bytes).map_err(|e| match e {
        hookfleet_contract::ContractViolation::TooLarge { .. } => {
            ApiError::new(413, "payload_too_large", format!("payload: {e}"))
        }
        other => ApiError::bad_request("invalid_field", format!("payload: {other}")),
    })?;
    let id = match request.id {
        Some(raw) => EventId::parse(&raw)
            .map_err(|e| ApiError::bad_request("invalid_field", format!("id: {e}")))?,
        None => EventId::generate(),
    };
    let tenant = TenantId::default_tenant();
    ingest::publish_event(&state, &id, &tenant, &event_type, payload)
        .await
        .map_err(|error| match error {
            IngestError::Disconnected => ApiError::unavailable("the broker is unreachable; retry"),
            IngestError::Publish(error) => {
                tracing::error!(%error, "event publish failed");
                ApiError::unavailable("the broker did not confirm the event; retry")
            }
        })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: id.to_string(),
            event_type: event_type.to_string(),
        }),
    ))
}
