//! An endpoint's health over a window: attempts, successes, latency and
//! its last failure.

use hookfleet_db::tokio_postgres::GenericClient;
use serde::Serialize;

use super::Error;
use super::latency::{LatencyHistogram, whole_hours};

/// An endpoint's attempts over a window, counted.
#[derive(Debug, Default)]
pub struct EndpointStats {
    pub attempts: i64,
    pub succeeded: i64,
    pub latency: LatencyHistogram,
    /// The window's latest attempt that did not succeed.
    pub last_error: Option<LastError>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LastError {
    at: String,
    status_code: Option<i32>,
    error: Option<String>,
}

/// The stats of the tenant's endpoint `id` over `[since, until)`
/// (milliseconds since the epoch).
pub async fn over(
    client: &impl GenericClient,
    tenant: &str,
    id: &str,
    since: i64,
    until: i64,
) -> Result<EndpointStats, Error> {
    let mut stats = EndpointStats::default();
    // Whole hours come from the hourly rollups; the ragged ends of the
    // window from the attempts themselves.
    let (first_hour, last_hour) = whole_hours(since, until);
    for row in client
        .query(
            "SELECT attempts, succeeded, latency FROM endpoint_stats
             WHERE endpoint_id = $1 AND tenant = $2
               AND hour >= to_timestamp($3::int8 / 1000.0)
               AND hour < to_timestamp($4::int8 / 1000.0)",
            &[&id, &tenant, &first_hour, &last_hour],
        )
        .await?
    {
        stats.attempts += row.get::<_, i64>(0);
        stats.succeeded += row.get::<_, i64>(1);
        for (bucket, count) in row.get::<_, Vec<i64>>(2).into_iter().enumerate() {
            stats.latency.add(bucket as i32, count);
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
                &tenant,
                &id,
                &since,
                &first_hour.min(until),
                &last_hour.max(since),
                &until,
            ],
        )
        .await?
    {
        stats.latency.add(row.get(0), 1);
        stats.attempts += 1;
        stats.succeeded += i64::from(row.get::<_, bool>(1));
    }
    stats.last_error = client
        .query_opt(
            "SELECT to_json(started_at) #>> '{}', status_code, error FROM attempts
             WHERE tenant = $1 AND endpoint_id = $2 AND result <> 'succeeded'
               AND started_at >= to_timestamp($3::int8 / 1000.0)
               AND started_at < to_timestamp($4::int8 / 1000.0)
             ORDER BY started_at DESC LIMIT 1",
            &[&tenant, &id, &since, &until],
        )
        .await?
        .map(|r| LastError {
            at: r.get(0),
            status_code: r.get(1),
            error: r.get(2),
        });
    Ok(stats)
}
