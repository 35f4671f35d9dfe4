//! An endpoint's attempts, filtered by result and time window, and its
//! health over a window.

use std::time::UNIX_EPOCH;

use axum::Json;
use axum::extract::{Path, Query, State};
use hookfleet_contract::auth::Tenant;
use hookfleet_contract::{ApiError, TenantId};
use serde::{Deserialize, Serialize};

use super::{
    ATTEMPT_COLUMNS, AttemptPage, ReadState, invalid, page_limit, parse_cursor, unavailable,
};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AttemptQuery {
    /// `succeeded`, `retrying` or `exhausted`.
    result: Option<String>,
    /// RFC 3339 bounds of the window on `started_at`.
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    /// The `next` of the previous page.
    after: Option<String>,
}

/// The window of `stats` when the caller gives no `since`.
const DEFAULT_STATS_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WindowQuery {
    /// RFC 3339; the last 24 hours when absent.
    since: Option<String>,
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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LastError {
    at: String,
    status_code: Option<i32>,
    error: Option<String>,
}

/// An RFC 3339 time as milliseconds since the epoch.
pub(super) fn millis(field: &str, raw: Option<&str>) -> Result<Option<i64>, ApiError> {
    raw.map(|raw| {
        humantime::parse_rfc3339_weak(raw)
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64)
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
    let client = state
        .store
        .pool()
        .get()
        .await
        .map_err(|e| unavailable(&e))?;
    let known = client
        .query_opt(
            "SELECT 1 FROM endpoints WHERE tenant = $1 AND id = $2
             UNION ALL
             SELECT 1 FROM attempts WHERE tenant = $1 AND endpoint_id = $2
             LIMIT 1",
            &[&tenant.as_str(), &id],
        )
        .await
        .map_err(|e| unavailable(&e))?
        .is_some();
    if known {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "endpoint {id:?} does not exist"
        )))
    }
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/attempts", tag = "ledger", params(("id" = String, Path, description = "The endpoint id"), AttemptQuery),
    responses((status = 200, description = "Attempts, newest first", body = AttemptPage), (status = 404, description = "No such resource (or another tenant's)", body = super::ErrorBody), (status = 400, description = "Invalid input; the message names the field", body = super::ErrorBody), (status = 401, description = "Missing or invalid token", body = super::ErrorBody), (status = 503, description = "Broker or database unreachable; retry", body = super::ErrorBody)))]
pub async fn attempts(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(query): Query<AttemptQuery>,
) -> Result<Json<AttemptPage>, ApiError> {
    let limit = page_limit(query.limit)?;
    if let Some(result) = &query.result
        && !["succeeded", "retrying", "exhausted"].contains(&result.as_str())
    {
        return Err(invalid(
            "result",
            "must be succeeded, retrying or exhausted",
        ));
    }
    let since = millis("since", query.since.as_deref())?;
    let until = millis("until", query.until.as_deref())?;
    // The cursor is the last row's start time and id: newest first.
    let (cursor_at, cursor_id) = parse_cursor(query.after.as_deref())?;
    check_endpoint(&state, &tenant, &id).await?;
    let client = state
        .store
        .pool()
        .get()
        .await
        .map_err(|e| unavailable(&e))?;
    let rows = client
        .query(
            &format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts
                 WHERE tenant = $1 AND endpoint_id = $2
                   AND ($3::text IS NULL OR result = $3)
                   AND ($4::int8 IS NULL OR started_at >= to_timestamp($4 / 1000.0))
                   AND ($5::int8 IS NULL OR started_at < to_timestamp($5 / 1000.0))
                   AND ($6::int8 IS NULL
                        OR (started_at, id) < (to_timestamp($6 / 1000.0), $7::text))
                 ORDER BY started_at DESC, id DESC
                 LIMIT $8"
            ),
            &[
                &tenant.as_str(),
                &id,
                &query.result,
                &since,
                &until,
                &cursor_at,
                &cursor_id,
                &limit,
            ],
        )
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(Json(AttemptPage::of(&rows, limit)))
}

#[utoipa::path(get, path = "/v1/endpoints/{id}/stats", tag = "ledger", params(("id" = String, Path, description = "The endpoint id"), WindowQuery),
    responses((status = 200, description = "Health over the window", body = Stats), (status = 404, description = "No such resource (or another tenant's)", body = super::ErrorBody), (status = 400, description = "Invalid input; the message names the field", body = super::ErrorBody), (status = 401, description = "Missing or invalid token", body = super::ErrorBody), (status = 503, description = "Broker or database unreachable; retry", body = super::ErrorBody)))]
pub async fn stats(
    State(state): State<ReadState>,
    Tenant(tenant): Tenant,
    Path(id): Path<String>,
    Query(window): Query<WindowQuery>,
) -> Result<Json<Stats>, ApiError> {
    // Without a start, the window is the last day: the stats of an
    // endpoint's whole history are rarely wanted and cost a scan of it.
    let since_text = window.since.clone().unwrap_or_else(|| {
        humantime::format_rfc3339_millis(std::time::SystemTime::now() - DEFAULT_STATS_WINDOW)
            .to_string()
    });
    let since = millis("since", Some(&since_text))?;
    let until = millis("until", window.until.as_deref())?;
    check_endpoint(&state, &tenant, &id).await?;
    let client = state
        .store
        .pool()
        .get()
        .await
        .map_err(|e| unavailable(&e))?;
    let window_sql = "tenant = $1 AND endpoint_id = $2
        AND ($3::int8 IS NULL OR started_at >= to_timestamp($3 / 1000.0))
        AND ($4::int8 IS NULL OR started_at < to_timestamp($4 / 1000.0))";
    let row = client
        .query_one(
            &format!(
                "SELECT count(*),
                        count(*) FILTER (WHERE result = 'succeeded'),
                        percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms),
                        percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)
                 FROM attempts WHERE {window_sql}"
            ),
            &[&tenant.as_str(), &id, &since, &until],
        )
        .await
        .map_err(|e| unavailable(&e))?;
    let last_error = client
        .query_opt(
            &format!(
                "SELECT to_json(started_at) #>> '{{}}', status_code, error FROM attempts
                 WHERE {window_sql} AND result <> 'succeeded'
                 ORDER BY started_at DESC LIMIT 1"
            ),
            &[&tenant.as_str(), &id, &since, &until],
        )
        .await
        .map_err(|e| unavailable(&e))?
        .map(|r| LastError {
            at: r.get(0),
            status_code: r.get(1),
            error: r.get(2),
        });
    let attempts: i64 = row.get(0);
    let succeeded: i64 = row.get(1);
    Ok(Json(Stats {
        endpoint_id: id,
        since: Some(since_text),
        until: window.until,
        attempts,
        succeeded,
        failed: attempts - succeeded,
        success_rate: (attempts > 0).then(|| succeeded as f64 / attempts as f64),
        latency_p50_ms: row.get(2),
        latency_p95_ms: row.get(3),
        last_error,
    }))
}
