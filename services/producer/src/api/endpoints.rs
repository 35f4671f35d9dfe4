//! `POST /v1/endpoints`: register an endpoint and show its secret once.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use hookfleet_contract::{ApiError, EndpointUrl, EventPattern, TenantId};
use hookfleet_signing::SigningSecret;
use serde::{Deserialize, Serialize};

use super::{ApiState, parse_json};
use crate::registry::{Endpoint, NewEndpoint};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    url: Option<String>,
    event_types: Option<Vec<String>>,
    #[serde(default)]
    description: String,
    /// A secret of the caller's choosing (`whsec_` + base64 of 24 to 64
    /// bytes); generated when absent.
    secret: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Created {
    #[serde(flatten)]
    endpoint: Endpoint,
    /// The signing secret, shown only in this answer.
    secret: String,
}

pub async fn create(
    State(state): State<ApiState>,
    body: Bytes,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let request: CreateRequest = parse_json(&body)?;
    let url = request
        .url
        .ok_or_else(|| ApiError::bad_request("missing_field", "url: is required"))?;
    let url = EndpointUrl::parse(&url, state.ingest.allow_http_endpoints)
        .map_err(|e| ApiError::bad_request("invalid_field", format!("url: {e}")))?;
    let patterns = request
        .event_types
        .ok_or_else(|| ApiError::bad_request("missing_field", "event_types: is required"))?;
    if patterns.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_field",
            "event_types: subscribe to at least one type (\"*\" for all)",
        ));
    }
    let event_types = patterns
        .iter()
        .map(|p| EventPattern::parse(p))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::bad_request("invalid_field", format!("event_types: {e}")))?;
    let secret = request
        .secret
        .map(|raw| SigningSecret::parse(&raw))
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_field", format!("secret: {e}")))?
        .unwrap_or_else(SigningSecret::generate);
    let tenant = TenantId::default_tenant();
    let endpoint = state
        .registry
        .create(
            &tenant,
            NewEndpoint {
                url,
                event_types,
                description: request.description,
            },
            &secret,
        )
        .await
        .map_err(|error| {
            tracing::error!(%error, "endpoint create failed");
            ApiError::unavailable("the endpoint registry is unreachable; retry")
        })?;
    Ok((
        StatusCode::CREATED,
        Json(Created {
            endpoint,
            secret: secret.expose(),
        }),
    ))
}
