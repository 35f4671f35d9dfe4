//! `POST /v1/inbound/{source_id}`: a provider's webhook. No bearer token:
//! the provider's signature authenticates the request. A verified request
//! is published as the source's tenant's event, its body unchanged (GitHub
//! and Stripe sign the exact bytes, and receivers downstream may verify
//! again), and answered 200 only once the broker has it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use hookfleet_contract::api_error::responses::Unavailable;
use hookfleet_contract::{ApiError, ContractViolation, TenantId, check_payload};
use serde::Serialize;
use tracing::Instrument;

use super::ApiState;
use crate::inbound::{self, Unnamed};
use crate::ingest::{self, IngestError};

/// The event a provider's webhook became.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InboundAccepted {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
}

fn now_secs() -> i64 {
    hookfleet_contract::now_millis() / 1000
}

#[utoipa::path(post, path = "/v1/inbound/{source_id}", tag = "sources",
    params(("source_id" = String, Path, description = "The source id (`src_...`)")),
    request_body(content = Object, description = "The provider's webhook, as it sends it"),
    security(()),
    responses((status = 200, description = "Verified and stored by the broker; a repeated delivery is answered the same and not delivered again", body = InboundAccepted),
              (status = 401, description = "Missing or bad signature, or a timestamp out of tolerance; nothing was published", body = hookfleet_contract::ErrorBody),
              (status = 404, description = "No such source", body = hookfleet_contract::ErrorBody),
              (status = 413, description = "Payload too large", body = hookfleet_contract::ErrorBody),
              (status = 400, description = "Verified, but not an event this kind can name (a header or field is missing, or the body is not a JSON object)", body = hookfleet_contract::ErrorBody),
              (status = 429, description = "Over the source's tenant's ingest rate; retry after Retry-After seconds", body = hookfleet_contract::ErrorBody),
              Unavailable))]
pub async fn receive(
    State(state): State<ApiState>,
    Path(source_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<InboundAccepted>, ApiError> {
    let source = state
        .sources
        .for_inbound(&source_id)
        .await
        .map_err(|error| {
            tracing::error!(%error, "source registry failed");
            ApiError::unavailable("the source registry is unreachable; retry")
        })?
        .ok_or_else(|| ApiError::not_found(format!("source {source_id:?} does not exist")))?;
    let max = state.ingest.max_payload_bytes;
    if body.len() > max {
        return Err(ApiError::new(
            413,
            "payload_too_large",
            format!(
                "the body is {} bytes; at most {max} are allowed",
                body.len()
            ),
        ));
    }
    if let Err(rejection) =
        inbound::verify(source.kind, &source.secrets, &headers, &body, now_secs())
    {
        tracing::info!(%source_id, reason = rejection.reason(), "inbound webhook refused");
        metrics::counter!(
            "hookfleet_inbound_rejected_total",
            "source" => source_id.clone(),
            "reason" => rejection.reason(),
        )
        .increment(1);
        return Err(ApiError::new(401, "unauthorized", rejection.to_string()));
    }
    check_payload(&body, max).map_err(|violation| match violation {
        ContractViolation::TooLarge { .. } => {
            ApiError::new(413, "payload_too_large", violation.to_string())
        }
        other => ApiError::bad_request("invalid_body", other.to_string()),
    })?;
    let named = inbound::identify(source.kind, &source.type_prefix, &headers, &body).map_err(
        |unnamed| match unnamed {
            Unnamed::MissingHeader(_) => {
                ApiError::bad_request("invalid_header", unnamed.to_string())
            }
            _ => ApiError::bad_request("invalid_body", unnamed.to_string()),
        },
    )?;
    let tenant = TenantId::parse(&source.tenant).map_err(|error| {
        tracing::error!(%error, %source_id, "a source's stored tenant is invalid");
        ApiError::internal()
    })?;
    // The tenant's ingest rate counts what its sources receive too.
    state.admit(&tenant, 1)?;
    let id = inbound::event_id(&source_id, &named.provider_id);
    let span = tracing::info_span!(
        "ingest_event",
        event_id = %id,
        event_type = %named.event_type,
        tenant = %tenant,
        source_id = %source_id,
        trace_id = tracing::field::Empty,
    );
    hookfleet_telemetry::continue_trace(&span, None, None);
    ingest::publish_event(
        &state,
        &ingest::Publishable {
            id: &id,
            tenant: &tenant,
            event_type: &named.event_type,
            payload: &body,
            ordering_key: None,
            source: Some(&source_id),
        },
    )
    .instrument(span)
    .await
    .map_err(|error| match error {
        IngestError::Disconnected => ApiError::unavailable("the broker is unreachable; retry"),
        error => {
            tracing::error!(%error, "inbound event publish failed");
            ApiError::unavailable("the broker did not confirm the event; retry")
        }
    })?;
    metrics::counter!("hookfleet_events_ingested_total", "via" => "inbound").increment(1);
    Ok(Json(InboundAccepted {
        id: id.to_string(),
        event_type: named.event_type.to_string(),
    }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_openapi_document_says_the_inbound_path_needs_no_token() {
        let document = crate::api::openapi();
        let operation = &document["paths"]["/v1/inbound/{source_id}"]["post"];
        assert_eq!(operation["security"], serde_json::json!([{}]));
        // The management paths keep the document's bearer requirement.
        assert!(document["paths"]["/v1/sources"]["post"]["security"].is_null());
    }
}
