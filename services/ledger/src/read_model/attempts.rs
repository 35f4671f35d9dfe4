//! Attempts: a tenant's, an endpoint's or an event's, a page at a time.

use hookfleet_db::tokio_postgres::{GenericClient, Row};
use serde::Serialize;

use super::Error;

/// The columns [`AttemptView::from_row`] reads, in order.
const COLUMNS: &str = "id, delivery_id, event_id, endpoint_id, attempt, result,
    status_code, error, to_json(started_at) #>> '{}', duration_ms,
    to_json(next_attempt_at) #>> '{}', (extract(epoch FROM started_at) * 1000)::int8,
    response_excerpt";

/// One attempt as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptView {
    id: String,
    delivery_id: String,
    event_id: String,
    endpoint_id: String,
    attempt: i32,
    result: String,
    status_code: Option<i32>,
    error: Option<String>,
    started_at: String,
    duration_ms: i32,
    next_attempt_at: Option<String>,
    /// The start of the endpoint's answer, as the worker kept it.
    response_excerpt: Option<String>,
    #[serde(skip)]
    started_millis: i64,
}

impl AttemptView {
    fn from_row(row: &Row) -> Self {
        Self {
            id: row.get(0),
            delivery_id: row.get(1),
            event_id: row.get(2),
            endpoint_id: row.get(3),
            attempt: row.get(4),
            result: row.get(5),
            status_code: row.get(6),
            error: row.get(7),
            started_at: row.get(8),
            duration_ms: row.get(9),
            next_attempt_at: row.get(10),
            started_millis: row.get(11),
            response_excerpt: row.get(12),
        }
    }

    /// The cursor of the page after this attempt: its start time and id.
    pub fn cursor(&self) -> String {
        format!("{}~{}", self.started_millis, self.id)
    }
}

/// A position in a list of attempts: the last row's start time in
/// milliseconds and its id (see [`AttemptView::cursor`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    pub at: Option<i64>,
    pub id: Option<String>,
}

/// Which of a tenant's attempts to read.
#[derive(Debug, Clone, Default)]
pub struct AttemptFilter<'a> {
    /// Only this endpoint's.
    pub endpoint: Option<&'a str>,
    /// Only attempts with this result (`succeeded`, `retrying`, ...).
    pub result: Option<&'a str>,
    /// Bounds on `started_at`, milliseconds since the epoch.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Only attempts at events of this type (exact).
    pub event_type: Option<&'a str>,
}

/// A page of the tenant's attempts matching `filter`, newest first, after
/// `after`.
pub async fn newest_first(
    client: &impl GenericClient,
    tenant: &str,
    filter: &AttemptFilter<'_>,
    after: &Cursor,
    limit: i64,
) -> Result<Vec<AttemptView>, Error> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM attempts
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
                &tenant,
                &filter.endpoint,
                &filter.result,
                &filter.since,
                &filter.until,
                &after.at,
                &after.id,
                &limit,
                &filter.event_type,
            ],
        )
        .await?;
    Ok(rows.iter().map(AttemptView::from_row).collect())
}

/// Every attempt at the event created at `created_at` (RFC 3339), oldest
/// first.
pub async fn of_event(
    client: &impl GenericClient,
    tenant: &str,
    event_id: &str,
    created_at: &str,
) -> Result<Vec<AttemptView>, Error> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM attempts WHERE tenant = $1 AND event_id = $2
                   AND event_created_at = $3::text::timestamptz
                 ORDER BY started_at, attempt"
            ),
            &[&tenant, &event_id, &created_at],
        )
        .await?;
    Ok(rows.iter().map(AttemptView::from_row).collect())
}

/// A page of the attempts at the event created at `created_at`, oldest
/// first, after `after`.
pub async fn of_event_page(
    client: &impl GenericClient,
    tenant: &str,
    event_id: &str,
    created_at: &str,
    after: &Cursor,
    limit: i64,
) -> Result<Vec<AttemptView>, Error> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM attempts
                 WHERE tenant = $1 AND event_id = $2
                   AND event_created_at = $6::text::timestamptz
                   AND ($3::int8 IS NULL
                        OR (started_at, id) > (to_timestamp($3 / 1000.0), $4::text))
                 ORDER BY started_at, id
                 LIMIT $5"
            ),
            &[
                &tenant,
                &event_id,
                &after.at,
                &after.id,
                &limit,
                &created_at,
            ],
        )
        .await?;
    Ok(rows.iter().map(AttemptView::from_row).collect())
}

/// Whether the tenant knows endpoint `id`: it is in the registry, or the
/// ledger still holds attempts at it (those of a deleted endpoint stay
/// readable while the ledger keeps them).
pub async fn endpoint_known(
    client: &impl GenericClient,
    tenant: &str,
    id: &str,
) -> Result<bool, Error> {
    if hookfleet_db::endpoint::exists(client, tenant, id).await? {
        return Ok(true);
    }
    let attempted = client
        .query_opt(
            "SELECT 1 FROM attempts WHERE tenant = $1 AND endpoint_id = $2 LIMIT 1",
            &[&tenant, &id],
        )
        .await?;
    Ok(attempted.is_some())
}
