//! `POST /v1/events` and `POST /v1/events/batch`: accept events and answer
//! only once the broker has every one of them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hookfleet_contract::api_error::responses::{BadRequest, Unauthorized, Unavailable};
use hookfleet_contract::auth::Tenant;
use hookfleet_contract::{
    ApiError, ContractViolation, EventId, EventType, OrderingKey, TenantId, check_payload,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tracing::Instrument;

use super::{ApiState, parse_json};
use crate::catalogue::Catalogue;
use crate::ingest::{self, Accepted as Checked, IngestError};

/// The most events one batch call may carry.
pub const MAX_BATCH: usize = 100;

/// One event as sent. The payload is kept as raw JSON so its bytes reach
/// the endpoints exactly as sent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct EventRequest<'a> {
    #[serde(rename = "type")]
    #[schema(
        required = true,
        nullable = false,
        max_length = 128,
        pattern = "^[a-z0-9_-]+(\\.[a-z0-9_-]+)*$"
    )]
    event_type: Option<String>,
    #[serde(borrow)]
    #[schema(value_type = Object, required = true)]
    payload: Option<&'a RawValue>,
    /// Your id for the event: a repeat within the idempotency window is
    /// not delivered again.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.:-]+$")]
    id: Option<String>,
    /// Orders the event against others with the same key: an endpoint
    /// with `"ordered": true` receives them in the order they were
    /// accepted.
    #[schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9_.:-]+$")]
    ordering_key: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BatchRequest<'a> {
    #[serde(borrow)]
    #[schema(required = true, nullable = false, min_items = 1, max_items = 100)]
    events: Option<Vec<EventRequest<'a>>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchAccepted {
    data: Vec<Accepted>,
}

/// Checks one event; `at` prefixes field names in errors (`events[3].`).
fn validate<'a>(
    request: EventRequest<'a>,
    at: &str,
    max_payload: usize,
    idempotency_key: Option<&str>,
    (catalogue, tenant): (&Catalogue, &TenantId),
) -> Result<Checked<'a>, ApiError> {
    let missing =
        |field: &str| ApiError::bad_request("missing_field", format!("{at}{field}: is required"));
    let invalid = |field: &str, e: &dyn std::fmt::Display| {
        ApiError::bad_request("invalid_field", format!("{at}{field}: {e}"))
    };
    let event_type = request.event_type.ok_or_else(|| missing("type"))?;
    let event_type = EventType::parse(&event_type).map_err(|e| invalid("type", &e))?;
    let payload = request.payload.ok_or_else(|| missing("payload"))?;
    let payload = payload.get().as_bytes();
    check_payload(payload, max_payload).map_err(|e| match e {
        ContractViolation::TooLarge { .. } => {
            ApiError::new(413, "payload_too_large", format!("{at}payload: {e}"))
        }
        other => invalid("payload", &other),
    })?;
    catalogue
        .check(tenant, &event_type, payload)
        .map_err(|violation| violation.to_api_error(at))?;
    let ordering_key = request
        .ordering_key
        .map(|raw| OrderingKey::parse(&raw))
        .transpose()
        .map_err(|e| invalid("ordering_key", &e))?;
    let caller_id = request.id.is_some() || idempotency_key.is_some();
    let id = match (request.id, idempotency_key) {
        (Some(id), Some(key)) if id != key => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "id: differs from the Idempotency-Key header; send one or make them equal",
            ));
        }
        (Some(raw), _) => EventId::parse(&raw).map_err(|e| invalid("id", &e))?,
        (None, Some(key)) => EventId::parse(key).map_err(|e| {
            ApiError::bad_request("invalid_header", format!("Idempotency-Key: {e}"))
        })?,
        (None, None) => EventId::generate(),
    };
    Ok(Checked {
        id,
        caller_id,
        event_type,
        payload,
        ordering_key,
    })
}

/// The root span of an event's trace (or a child of the caller's, when
/// the request carries `traceparent`).
fn event_span(event: &Checked<'_>, tenant: &TenantId) -> tracing::Span {
    tracing::info_span!(
        "ingest_event",
        event_id = %event.id,
        event_type = %event.event_type,
        tenant = %tenant,
        trace_id = tracing::field::Empty,
    )
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn publish_error(error: IngestError) -> ApiError {
    match error {
        IngestError::Disconnected => ApiError::unavailable("the broker is unreachable; retry"),
        error => {
            tracing::error!(%error, "event publish failed");
            ApiError::unavailable("the broker did not confirm the event; retry")
        }
    }
}

#[utoipa::path(post, path = "/v1/events", tag = "events", request_body = EventRequest,
    params(("Idempotency-Key" = Option<String>, Header, pattern = "^[A-Za-z0-9_.:-]{1,128}$", description = "Used as the event id when the body has none (equal to `id` when both are sent)")),
    responses((status = 202, description = "Accepted: the broker has the event", body = Accepted),
              (status = 413, description = "Payload too large", body = hookfleet_contract::ErrorBody), BadRequest, (status = 429, description = "Over the tenant's ingest rate; retry after Retry-After seconds", body = hookfleet_contract::ErrorBody), Unauthorized, Unavailable))]
pub async fn ingest(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    state.admit(&tenant, 1)?;
    let key = headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad_request("invalid_header", "Idempotency-Key: not ASCII"))
        })
        .transpose()?;
    let request: EventRequest<'_> = parse_json(&body)?;
    let event = validate(
        request,
        "",
        state.ingest.max_payload_bytes,
        key,
        (&state.catalogue, &tenant),
    )?;
    let span = event_span(&event, &tenant);
    hookfleet_telemetry::continue_trace(
        &span,
        header(&headers, hookfleet_telemetry::TRACEPARENT),
        header(&headers, hookfleet_telemetry::TRACESTATE),
    );
    ingest::single(&state, &tenant, &event)
        .instrument(span)
        .await
        .map_err(publish_error)?;
    metrics::counter!("hookfleet_events_ingested_total", "via" => "http").increment(1);
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            id: event.id.to_string(),
            event_type: event.event_type.to_string(),
        }),
    ))
}

#[utoipa::path(post, path = "/v1/events/batch", tag = "events", request_body = BatchRequest,
    responses((status = 202, description = "Accepted: the broker has every event", body = BatchAccepted),
              (status = 413, description = "A payload is too large", body = hookfleet_contract::ErrorBody), BadRequest, (status = 429, description = "Over the tenant's ingest rate; retry after Retry-After seconds", body = hookfleet_contract::ErrorBody), Unauthorized, Unavailable))]
pub async fn ingest_batch(
    State(state): State<ApiState>,
    Tenant(tenant): Tenant,
    body: Bytes,
) -> Result<(StatusCode, Json<BatchAccepted>), ApiError> {
    let request: BatchRequest<'_> = parse_json(&body)?;
    let requests = request
        .events
        .ok_or_else(|| ApiError::bad_request("missing_field", "events: is required"))?;
    if requests.is_empty() || requests.len() > MAX_BATCH {
        return Err(ApiError::bad_request(
            "invalid_field",
            format!("events: send 1 to {MAX_BATCH} events"),
        ));
    }
    // All or nothing: every event is checked before any is published.
    let events = requests
        .into_iter()
        .enumerate()
        .map(|(n, r)| {
            validate(
                r,
                &format!("events[{n}]."),
                state.ingest.max_payload_bytes,
                None,
                (&state.catalogue, &tenant),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    state.admit(&tenant, events.len())?;
    // One trace per event, also in a batch.
    let traceparents = events
        .iter()
        .map(|event| {
            let span = event_span(event, &tenant);
            hookfleet_telemetry::continue_trace(&span, None, None);
            span.in_scope(hookfleet_telemetry::traceparent)
        })
        .collect();
    ingest::batch(&state, &tenant, &events, traceparents)
        .await
        .map_err(publish_error)?;
    metrics::counter!("hookfleet_events_ingested_total", "via" => "http")
        .increment(events.len() as u64);
    Ok((
        StatusCode::ACCEPTED,
        Json(BatchAccepted {
            data: events
                .into_iter()
                .map(|e| Accepted {
                    id: e.id.to_string(),
                    event_type: e.event_type.to_string(),
                })
                .collect(),
        }),
    ))
}
