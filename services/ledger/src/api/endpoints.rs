//! An endpoint's attempts, filtered by result and time window, and its
//! health over a window.

use hookfleet_contract::api_error::responses::{BadRequest, NotFound, Unauthorized, Unavailable};
use std::time::{SystemTime, UNIX_EPOCH};

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

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LastError {
    at: String,
    status_code: Option<i32>,
    error: Option<String>,
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
    let (cursor_at, cursor_id) = parse_cursor(query.after.as_deref())?;
    let client = state.client().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {ATTEMPT_COLUMNS} FROM attempts
                 WHERE tenant = $1 AND ($2::text IS NULL OR endpoint_id = $2)
                   AND ($3::text IS NULL OR result = $3)
                   AND ($4::int8 IS NULL OR started_at >= to_timestamp($4 / 1000.0))
                   AND ($5::int8 IS NULL OR started_at < to_timestamp($5 / 1000.0))
                   AND ($6::int8 IS NULL
                        OR (started_at, id) < (to_timestamp($6 / 1000.0), $7::text))
                   AND ($9::text IS NULL OR EXISTS (
                        SELECT 1 FROM events e
                        WHERE e.tenant = attempts.tenant AND e.id = attempts.event_id
                          AND e.event_type = $9))
                 ORDER BY started_at DESC, id DESC
                 LIMIT $8"
            ),
            &[
                &tenant.as_str(),
                &endpoint,
                &query.result.map(ResultFilter::as_str),
                &since,
                &until,
                &cursor_at,
                &cursor_id,
                &limit,
                &query.event_type,
            ],
        )
        .await
        .map_err(|e| unavailable(&e))?;
    Ok(AttemptPage::of(&rows, limit))
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
    // Whole hours come from the hourly rollups; the ragged ends of the
    // window from the attempts themselves.
    let (first_hour, last_hour) = whole_hours(since, until);
    let mut histogram = LatencyHistogram::default();
    let (mut attempts, mut succeeded) = (0_i64, 0_i64);
    for row in client
        .query(
            "SELECT attempts, succeeded, latency FROM endpoint_stats
             WHERE endpoint_id = $1 AND tenant = $2
               AND hour >= to_timestamp($3::int8 / 1000.0)
               AND hour < to_timestamp($4::int8 / 1000.0)",
            &[&id, &tenant.as_str(), &first_hour, &last_hour],
        )
        .await
        .map_err(|e| unavailable(&e))?
    {
        attempts += row.get::<_, i64>(0);
        succeeded += row.get::<_, i64>(1);
        for (bucket, count) in row.get::<_, Vec<i64>>(2).into_iter().enumerate() {
            histogram.add(bucket as i32, count);
        }
    }
    for row in client
        .query(
            "SELECT hookfleet_latency_bucket(duration_ms), result = 'succeeded' FROM attempts
             WHERE tenant = $1 AND endpoint_id = $2
               AND ((started_at >= to_timestamp($3::int8 / 1000.0)
                     AND started_at < to_timestamp($4::int8 / 1000.0))
                 OR (started_at >= to_timestamp($5::int8 / 1000.0)
                     AND started_at < to_timestamp($6::int8 / 1000.0)))",
            &[
                &tenant.as_str(),
                &id,
                &since,
                &first_hour.min(until),
                &last_hour.max(since),
                &until,
            ],
        )
        .await
        .map_err(|e| unavailable(&e))?
    {
        histogram.add(row.get(0), 1);
        attempts += 1;
        succeeded += i64::from(row.get::<_, bool>(1));
    }
    let last_error = client
        .query_opt(
            "SELECT to_json(started_at) #>> '{}', status_code, error FROM attempts
             WHERE tenant = $1 AND endpoint_id = $2 AND result <> 'succeeded'
               AND started_at >= to_timestamp($3::int8 / 1000.0)
               AND started_at < to_timestamp($4::int8 / 1000.0)
             ORDER BY started_at DESC LIMIT 1",
            &[&tenant.as_str(), &id, &since, &until],
        )
        .await
        .map_err(|e| unavailable(&e))?
        .map(|r| LastError {
            at: r.get(0),
            status_code: r.get(1),
            error: r.get(2),
        });
    Ok(Json(Stats {
        endpoint_id: id,
        since: Some(since_text),
        until: window.until,
        attempts,
        succeeded,
        failed: attempts - succeeded,
        success_rate: (attempts > 0).then(|| succeeded as f64 / attempts as f64),
        latency_p50_ms: histogram.percentile(0.5),
        latency_p95_ms: histogram.percentile(0.95),
        last_error,
    }))
}

const HOUR_MS: i64 = 3_600_000;

/// The whole hours within `[since, until)` in milliseconds, as `[first,
/// last)`; empty (first >= last) when there are none.
fn whole_hours(since: i64, until: i64) -> (i64, i64) {
    let first = since + (HOUR_MS - since.rem_euclid(HOUR_MS)) % HOUR_MS;
    let last = until - until.rem_euclid(HOUR_MS);
    if first < last {
        (first, last)
    } else {
        (until, until)
    }
}

/// Attempt durations by bucket, as `hookfleet_latency_bucket` (migration
/// V7) sorts them: bucket b holds ln(d) / ln(1.25) in [b, b + 1).
#[derive(Debug)]
struct LatencyHistogram([i64; 50]);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self([0; 50])
    }
}

impl LatencyHistogram {
    fn add(&mut self, bucket: i32, count: i64) {
        if let Some(slot) = usize::try_from(bucket).ok().and_then(|b| self.0.get_mut(b)) {
            *slot += count;
        }
    }

    /// The `q` quantile, as the geometric middle of its bucket (within 12%
    /// of the exact value), rounded to 0.1 ms; `None` when empty.
    fn percentile(&self, q: f64) -> Option<f64> {
        let total: i64 = self.0.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as i64).max(1);
        let mut seen = 0;
        let bucket = self.0.iter().position(|&count| {
            seen += count;
            seen >= rank
        })?;
        Some((1.25_f64.powf(bucket as f64 + 0.5) * 10.0).round() / 10.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_hours_leave_the_ragged_ends_out() {
        let h = HOUR_MS;
        assert_eq!(whole_hours(h / 2, 3 * h + 5), (h, 3 * h));
        assert_eq!(whole_hours(h, 3 * h), (h, 3 * h));
        // Less than an hour, or no whole hour inside: none.
        assert_eq!(whole_hours(h + 1, 2 * h - 1), (2 * h - 1, 2 * h - 1));
        assert_eq!(whole_hours(h / 2, h + h / 2), (h + h / 2, h + h / 2));
    }

    #[test]
    fn percentiles_come_from_the_bucket_holding_the_rank() {
        let mut histogram = LatencyHistogram::default();
        assert_eq!(histogram.percentile(0.5), None);
        // 90 attempts near 10 ms (bucket 10), 10 near 100 ms (bucket 20).
        histogram.add(10, 90);
        histogram.add(20, 10);
        let p50 = histogram.percentile(0.5).unwrap();
        let p95 = histogram.percentile(0.95).unwrap();
        assert!((9.3..=11.6).contains(&p50), "{p50}");
        assert!((86.7..=108.4).contains(&p95), "{p95}");
        // Out-of-range buckets are ignored rather than panicking.
        histogram.add(50, 1);
        histogram.add(-1, 1);
        assert_eq!(histogram.percentile(1.0), Some(p95));
    }
}
