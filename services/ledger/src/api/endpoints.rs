//! An endpoint's attempts, filtered by result and time window, and its
//! health over a window. The reads are in [`crate::read_model`].

use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, Query, State};
use hookfleet_contract::api_error::responses::{BadRequest, NotFound, Unauthorized, Unavailable};
use hookfleet_contract::auth::Tenant;
use hookfleet_contract::{ApiError, TenantId};
use serde::{Deserialize, Serialize};

use super::{AttemptPage, ReadState, invalid, page_limit, parse_cursor, unavailable};
use crate::read_model::attempts::{self, AttemptFilter};
use crate::read_model::endpoint_stats::{self, LastError};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AttemptQuery {
    /// Only attempts with this result.
    #[param(inline)]
    result: Option<ResultFilter>,
    /// RFC 3339 bounds of the window on `started_at`.
    #[param(format = DateTime)]
    since: Option<String>,
    #[param(format = DateTime)]
    until: Option<String>,
    /// Only attempts at events of this type (exact).
    #[param(max_length = 256)]
    event_type: Option<String>,
    /// 1-500; 50 when absent.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
    /// The `next` of the previous page.
    #[param(pattern = "^[0-9]{1,15}~[^\\u0000]*$")]
    after: Option<String>,
}

/// The longest `event_type` filter (the document says so too).
const MAX_EVENT_TYPE_CHARS: usize = 256;

/// An attempt's result, as a filter.
#[derive(Debug, Clone, Copy, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResultFilter {
    Succeeded,
    Retrying,
    Exhausted,
    /// Not sent: the endpoint was disabled, deleted or moved.
    Cancelled,
}

impl ResultFilter {
    fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Retrying => "retrying",
            Self::Exhausted => "exhausted",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The window of `stats` when the caller gives no `since`.
const DEFAULT_STATS_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    /// RFC 3339; the last 24 hours when absent.
    #[param(format = DateTime)]
    since: Option<String>,
    #[param(format = DateTime)]
    until: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Stats {
    endpoint_id: String,
    since: Option<String>,
    until: Option<String>,
    attempts: i64,
    succeeded: i64,
    failed: i64,
    /// Succeeded attempts over all attempts; `null` with no attempts.
    success_rate: Option<f64>,
    latency_p50_ms: Option<f64>,
    latency_p95_ms: Option<f64>,
    last_error: Option<LastError>,
}

/// An RFC 3339 time as milliseconds since the epoch.
pub(super) fn millis(field: &str, raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    raw.map(|raw| {
        // Any RFC 3339 time the document allows, before 1970 too.
        time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
            .ok()
            .map(|at| (at.unix_timestamp_nanos() / 1_000_000) as i64)
            .ok_or_else(|| {
                invalid(
                    field,
                    "expected an RFC 3339 time such as 2026-11-27T12:00:00Z",
                )
            })
    })
    .transpose()
}

/// 404 unless the endpoint exists and belongs to the tenant (the attempts
/// of a deleted endpoint stay readable while the ledger has them).
async fn check_endpoint(state: &ReadState, tenant: &TenantId, id: &str) -> Result<(), ApiError> {
    let client = state.client().await?;
    let known = attempts::endpoint_known(&**client, tenant.as_str(), id)
        .await
        .map_err(|e| unavailable(&e))?;
    if known {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "endpoint {id:?} does not exist"
        )))
    }
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/attempts", tag = "ledger", params(("id" = String, Path, description = "The endpoint id"), AttemptQuery),
    responses((status = 200, description = "Attempts, newest first", body = AttemptPage), NotFound, BadRequest, Unauthorized, Unavailable))]
pub async fn attempts(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(query): Query<AttemptQuery>,
) -> Result<Json<AttemptPage>, ApiError> {
    check_endpoint(&state, &tenant, &id).await?;
    attempt_page(&state, &tenant, Some(&id), &query)
        .await
        .map(Json)
}

#[utoipa::path(get, path = "/v1/attempts", tag = "ledger", params(AttemptQuery),
    responses((status = 200, description = "The tenant's attempts at every endpoint, newest first", body = AttemptPage), BadRequest, Unauthorized, Unavailable))]
pub async fn tenant_attempts(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Query(query): Query<AttemptQuery>,
) -> Result<Json<AttemptPage>, ApiError> {
    attempt_page(&state, &tenant, None, &query).await.map(Json)
}

/// A page of the tenant's attempts, of one endpoint or of all.
async fn attempt_page(
    state: &ReadState,
    tenant: &TenantId,
    endpoint: Option<&str>,
    query: &AttemptQuery,
) -> Result<AttemptPage, ApiError> {
    let limit = page_limit(query.limit)?;
    let since = millis("since", query.since.as_deref())?;
    let until = millis("until", query.until.as_deref())?;
    if let Some(event_type) = &query.event_type {
        hookfleet_contract::limits::check_text(event_type, MAX_EVENT_TYPE_CHARS)
            .map_err(|e| invalid("event_type", e))?;
    }
    // The cursor is the last row's start time and id: newest first.
    let after = parse_cursor(query.after.as_deref())?;
    let filter = AttemptFilter {
        endpoint,
        result: query.result.map(ResultFilter::as_str),
        since,
        until,
        event_type: query.event_type.as_deref(),
    };
    let client = state.client().await?;
    let data = attempts::newest_first(&**client, tenant.as_str(), &filter, &after, limit)
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(AttemptPage::of(data, limit))
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/stats", tag = "ledger", params(("id" = String, Path, description = "The endpoint id"), WindowQuery),
    responses((status = 200, description = "Health over the window", body = Stats), NotFound, BadRequest, Unauthorized, Unavailable))]
pub async fn stats(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(window): Query<WindowQuery>,
) -> Result<Json<Stats>, ApiError> {
    // Without a start, the window is the last day: the stats of an
    // endpoint's whole history are rarely wanted.
    let now = SystemTime::now();
    let since_text = window.since.clone().unwrap_or_else(|| {
        humantime::format_rfc3339_millis(now - DEFAULT_STATS_WINDOW).to_string()
    });
    let since = millis("since", Some(&since_text))?.unwrap_or_default();
    let until = millis("until", window.until.as_deref())?.unwrap_or_else(|| {
        now.duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default()
    });
    check_endpoint(&state, &tenant, &id).await?;
    let client = state.client().await?;
    let stats = endpoint_stats::over(&**client, tenant.as_str(), &id, since, until)
        .await
        .map_err(|e| unavailable(&e))?;
    let (attempts, succeeded) = (stats.attempts, stats.succeeded);
    Ok(Json(Stats {
        endpoint_id: id,
        since: Some(since_text),
        until: window.until,
        attempts,
        succeeded,
        failed: attempts - succeeded,
        success_rate: (attempts > 0).then(|| succeeded as f64 / attempts as f64),
        latency_p50_ms: stats.latency.percentile(0.5),
        latency_p95_ms: stats.latency.percentile(0.95),
        last_error: stats.last_error,
    }))
}
