//! `POST /v1/events/{id}/replay`: send an event again, to one endpoint or
//! to every endpoint it was delivered to. Each resend starts a new retry
//! chain whose attempts are recorded with the trigger `manual`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use futures_util::future::try_join_all;
use hookfleet_contract::auth::Tenant;
use hookfleet_contract::{
    ApiError, DeliveryId, DeliveryTask, EndpointId, EventId, Trigger, headers,
};
use hookfleet_topology::{persistent_json, traced_headers};
use serde::{Deserialize, Serialize};

use super::{ReadState, unavailable};

/// The routing key of delivery tasks on the deliver exchange.
const TASK_ROUTING_KEY: &str = "task";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    /// Only this endpoint; all of the event's endpoints when absent.
    endpoint_id: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Replayed {
    data: Vec<ReplayedDelivery>,
}

#[derive(Debug, Serialize)]
pub struct ReplayedDelivery {
    delivery_id: String,
    endpoint_id: String,
    /// The attempt number the resend will be recorded under.
    attempt: i32,
}

pub async fn replay(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Replayed>), ApiError> {
    let request: ReplayRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ReplayRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?
    };
    let publisher = state
        .link
        .publisher()
        .ok_or_else(|| ApiError::unavailable("the broker is unreachable; retry"))?;
    let mut client = state
        .store
        .pool()
        .get()
        .await
        .map_err(|e| unavailable(&e))?;
    let event = client
        .query_opt(
            "SELECT event_type, payload, (extract(epoch FROM created_at) * 1000)::int8
             FROM events WHERE tenant = $1 AND id = $2",
            &[&tenant.as_str(), &id],
        )
        .await
        .map_err(|e| unavailable(&e))?
        .ok_or_else(|| ApiError::not_found(format!("event {id:?} is not in the ledger")))?;
    let (event_type, payload, created_at): (String, String, i64) =
        (event.get(0), event.get(1), event.get(2));

    // The endpoints: the one asked for, or every one the event went to.
    let endpoints = client
        .query(
            "SELECT id, url, secret,
                    CASE WHEN previous_secret_expires_at > now() THEN previous_secret END,
                    headers
             FROM endpoints
             WHERE tenant = $1 AND enabled
               AND CASE WHEN $3::text IS NULL
                        THEN id IN (SELECT endpoint_id FROM deliveries
                                    WHERE tenant = $1 AND event_id = $2)
                        ELSE id = $3 END
             ORDER BY id",
            &[&tenant.as_str(), &id, &request.endpoint_id],
        )
        .await
        .map_err(|e| unavailable(&e))?;
    if let Some(endpoint) = &request.endpoint_id
        && endpoints.is_empty()
    {
        return Err(ApiError::not_found(format!(
            "endpoint {endpoint:?} does not exist or is disabled"
        )));
    }
    let event_id = EventId::parse(&id).map_err(|_| ApiError::internal())?;

    // Reserve an attempt number per delivery, atomically, so concurrent
    // replays never share one.
    let tx = client.transaction().await.map_err(|e| unavailable(&e))?;
    let mut tasks = Vec::new();
    for row in &endpoints {
        let endpoint_id = EndpointId::from_stored(row.get(0));
        let delivery_id = DeliveryId::derive(tenant.as_str(), &event_id, &endpoint_id);
        let attempt: i32 = tx
            .query_one(
                "INSERT INTO deliveries (id, tenant, event_id, endpoint_id, state, attempts)
                 VALUES ($1, $2, $3, $4, 'pending', 1)
                 ON CONFLICT (id) DO UPDATE
                     SET attempts = deliveries.attempts + 1, state = 'pending',
                         next_attempt_at = now(), updated_at = now()
                 RETURNING attempts",
                &[
                    &delivery_id.as_str(),
                    &tenant.as_str(),
                    &event_id.as_str(),
                    &endpoint_id.as_str(),
                ],
            )
            .await
            .map_err(|e| unavailable(&e))?
            .get(0);
        let mut sealed_secrets = vec![row.get::<_, String>(2)];
        sealed_secrets.extend(row.get::<_, Option<String>>(3));
        let headers: serde_json::Value = row.get(4);
        tasks.push(DeliveryTask {
            delivery_id,
            event_id: event_id.clone(),
            tenant: tenant.to_string(),
            event_type: event_type.clone(),
            endpoint_id,
            url: row.get(1),
            sealed_secrets,
            headers: serde_json::from_value(headers).unwrap_or_default(),
            attempt: attempt as u32,
            chain_start: attempt as u32,
            trigger: Trigger::Manual,
            event_created_at: created_at,
        });
    }
    tx.commit().await.map_err(|e| unavailable(&e))?;

    let deliver = state.topology.deliver_exchange();
    try_join_all(tasks.iter().map(|task| {
        let properties = persistent_json()
            .with_message_id(task.delivery_id.as_str().into())
            .with_headers(traced_headers([(
                headers::META,
                task.to_meta_json().as_str(),
            )]));
        publisher.publish(&deliver, TASK_ROUTING_KEY, payload.as_bytes(), properties)
    }))
    .await
    .map_err(|error| {
        tracing::error!(%error, "replay publish failed");
        ApiError::unavailable("the broker did not confirm the replay; retry")
    })?;
    metrics::counter!("hookfleet_replays_total").increment(tasks.len() as u64);
    Ok((
        StatusCode::ACCEPTED,
        Json(Replayed {
            data: tasks
                .into_iter()
                .map(|t| ReplayedDelivery {
                    delivery_id: t.delivery_id.to_string(),
                    endpoint_id: t.endpoint_id.to_string(),
                    attempt: t.attempt as i32,
                })
                .collect(),
        }),
    ))
}
