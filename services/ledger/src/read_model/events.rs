//! An event as the ledger recorded it, and the state of its deliveries.

use hookfleet_db::tokio_postgres::GenericClient;
use serde::Serialize;

use super::Error;

/// An event's record, the newest under its id.
#[derive(Debug)]
pub struct StoredEvent {
    pub event_type: String,
    /// RFC 3339; names the day partitions its deliveries and attempts are
    /// in.
    pub created_at: String,
    /// The payload's JSON text, as accepted.
    pub payload: String,
    /// The inbound source (`src_...`) it came in through, if any.
    pub source: Option<String>,
}

/// The tenant's event `id`, if the ledger has it. An id reused after the
/// idempotency window names a new event: the newest is the one read (the
/// ledger keeps the older until retention).
pub async fn event(
    client: &impl GenericClient,
    tenant: &str,
    id: &str,
) -> Result<Option<StoredEvent>, Error> {
    let row = client
        .query_opt(
            "SELECT event_type, to_json(created_at) #>> '{}', payload, source
             FROM events WHERE tenant = $1 AND id = $2
             ORDER BY created_at DESC LIMIT 1",
            &[&tenant, &id],
        )
        .await?;
    Ok(row.map(|row| StoredEvent {
        event_type: row.get(0),
        created_at: row.get(1),
        payload: row.get(2),
        source: row.get(3),
    }))
}

/// When the tenant's event `id` (the newest under that id) was created,
/// RFC 3339, if the ledger has it.
pub async fn created_at(
    client: &impl GenericClient,
    tenant: &str,
    id: &str,
) -> Result<Option<String>, Error> {
    let row = client
        .query_opt(
            "SELECT to_json(created_at) #>> '{}' FROM events WHERE tenant = $1 AND id = $2
             ORDER BY created_at DESC LIMIT 1",
            &[&tenant, &id],
        )
        .await?;
    Ok(row.map(|row| row.get(0)))
}

// One delivery as the API shows it (a doc comment would change the
// checked-in API document).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    id: String,
    endpoint_id: String,
    state: String,
    attempts: i32,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    next_attempt_at: Option<String>,
}

/// The deliveries of the event created at `created_at` (RFC 3339), by
/// endpoint: naming the event's time spares a look into every other day's
/// partition.
pub async fn deliveries(
    client: &impl GenericClient,
    tenant: &str,
    event_id: &str,
    created_at: &str,
) -> Result<Vec<DeliveryView>, Error> {
    let rows = client
        .query(
            "SELECT id, endpoint_id, state, attempts, last_status_code, last_error,
                    to_json(next_attempt_at) #>> '{}'
             FROM deliveries WHERE tenant = $1 AND event_id = $2
                 AND event_created_at = $3::text::timestamptz
             ORDER BY endpoint_id",
            &[&tenant, &event_id, &created_at],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| DeliveryView {
            id: r.get(0),
            endpoint_id: r.get(1),
            state: r.get(2),
            attempts: r.get(3),
            last_status_code: r.get(4),
            last_error: r.get(5),
            next_attempt_at: r.get(6),
        })
        .collect())
}
