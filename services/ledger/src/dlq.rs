//! Parked messages, seen per tenant: what is parked and why, and
//! requeueing it. Every service parks to the `{p}.dead` queue; the ledger
//! moves each message from there into the `parked` table
//! ([`crate::parking`]), so a tenant lists and requeues its own rows and
//! one noisy tenant cannot push another's out of reach (issue 16 item 5).
//!
//! A listing reads each body cut to [`LISTED_BODY_MAX`] in Postgres and
//! pages by row id, so it never holds whole 256 KiB bodies; a requeue
//! holds one page of [`REQUEUE_PAGE`] messages at a time.

use hookfleet_contract::{AttemptOutcome, DeliveryTask, EventRouted, Trigger, headers};
use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_db::tokio_postgres::Row;
use hookfleet_topology::{Link, PublishError, decode_properties, header_str, traced_headers};
use lapin::BasicProperties;
use lapin::types::FieldTable;
use serde::Serialize;

/// The most of a parked message's body a listing shows.
pub const LISTED_BODY_MAX: usize = 16 * 1024;

/// How many messages a requeue republishes (and holds in memory) at once.
const REQUEUE_PAGE: i64 = 32;

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("the broker is not connected")]
    Disconnected,
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("database: {0}")]
    Postgres(#[from] hookfleet_db::tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] hookfleet_db::deadpool_postgres::PoolError),
}

/// A parked message as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Parked {
    /// The AMQP message id: the event id, delivery id or record id.
    pub message_id: Option<String>,
    /// `event`, `task` (a delivery that was exhausted or malformed) or `record`.
    pub kind: String,
    pub reason: Option<String>,
    pub parked_by: Option<String>,
    pub event_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub original_exchange: Option<String>,
    pub original_routing_key: Option<String>,
    /// When the ledger took it off the dead-letter queue (RFC 3339).
    pub parked_at: String,
    /// The body, as text, cut to its first 16 KiB.
    pub body: String,
    /// Whether `body` was cut.
    pub body_truncated: bool,
    #[serde(skip)]
    id: i64,
}

/// The columns [`Parked::from_row`] reads, in order: the body cut to
/// [`LISTED_BODY_MAX`] in Postgres, and the whole body's length.
fn view_columns() -> String {
    format!(
        "id, message_id, kind, reason, parked_by, event_id, endpoint_id,
         original_exchange, original_routing_key, to_json(parked_at) #>> '{{}}',
         substring(body FROM 1 FOR {LISTED_BODY_MAX}), octet_length(body)"
    )
}

impl Parked {
    fn from_row(row: &Row) -> Self {
        let shown: Vec<u8> = row.get(10);
        let size: i32 = row.get(11);
        Self {
            id: row.get(0),
            message_id: row.get(1),
            kind: row.get(2),
            reason: row.get(3),
            parked_by: row.get(4),
            event_id: row.get(5),
            endpoint_id: row.get(6),
            original_exchange: row.get(7),
            original_routing_key: row.get(8),
            parked_at: row.get(9),
            body: String::from_utf8_lossy(&shown).into_owned(),
            body_truncated: shown.len() < size as usize,
        }
    }
}

/// What a parked message is and whose, read from its properties and body.
pub(crate) struct Identity {
    pub kind: &'static str,
    pub tenant: Option<String>,
    pub event_id: Option<String>,
    pub endpoint_id: Option<String>,
    pub task: Option<DeliveryTask>,
}

pub(crate) fn identify(properties: &BasicProperties, body: &[u8]) -> Identity {
    let meta = header_str(properties, headers::META);
    if let Some(task) = meta.and_then(|m| DeliveryTask::from_meta_json(m).ok()) {
        return Identity {
            kind: "task",
            tenant: Some(task.tenant.clone()),
            event_id: Some(task.event_id.to_string()),
            endpoint_id: Some(task.endpoint_id.to_string()),
            task: Some(task),
        };
    }
    if let Some(routed) = meta.and_then(|m| serde_json::from_str::<EventRouted>(m).ok()) {
        return Identity {
            kind: "record",
            tenant: Some(routed.tenant),
            event_id: Some(routed.event_id.to_string()),
            endpoint_id: None,
            task: None,
        };
    }
    if let Ok(outcome) = serde_json::from_slice::<AttemptOutcome>(body) {
        return Identity {
            kind: "record",
            tenant: Some(outcome.tenant),
            event_id: Some(outcome.event_id.to_string()),
            endpoint_id: Some(outcome.endpoint_id.to_string()),
            task: None,
        };
    }
    Identity {
        kind: "event",
        tenant: header_str(properties, headers::TENANT).map(str::to_owned),
        event_id: properties.message_id().as_ref().map(|m| m.to_string()),
        endpoint_id: None,
        task: None,
    }
}

/// Which of the tenant's parked messages a call is about.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only those with one of these message ids.
    pub message_ids: Option<Vec<String>>,
    /// Only those for this endpoint.
    pub endpoint_id: Option<String>,
}

/// What a requeue put back, and whether the tenant has more that it left
/// (the call stops at its limit).
#[derive(Debug)]
pub struct Requeued {
    pub data: Vec<Parked>,
    pub more: bool,
}

#[derive(Debug, Clone)]
pub struct DeadLetters {
    pub pool: Pool,
    pub link: Link,
}

impl DeadLetters {
    /// A page of the tenant's parked messages, oldest first, after row
    /// `after`; with `limit` of them, the page's last row id is the cursor
    /// to the next.
    pub async fn list(
        &self,
        tenant: &str,
        filter: &Filter,
        after: i64,
        limit: i64,
    ) -> Result<(Vec<Parked>, Option<i64>), DlqError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {} FROM parked
                     WHERE tenant = $1 AND id > $2
                       AND ($3::text IS NULL OR endpoint_id = $3)
                       AND ($4::text[] IS NULL OR message_id = ANY($4))
                     ORDER BY id LIMIT $5",
                    view_columns()
                ),
                &[
                    &tenant,
                    &after,
                    &filter.endpoint_id,
                    &filter.message_ids,
                    &limit,
                ],
            )
            .await?;
        let page: Vec<Parked> = rows.iter().map(Parked::from_row).collect();
        let next = (page.len() as i64 == limit)
            .then(|| page.last().map(|p| p.id))
            .flatten();
        Ok((page, next))
    }

    /// Puts up to `limit` of the tenant's parked messages (oldest first)
    /// back where they came from, a page at a time: each page is
    /// republished with publisher confirms, then its rows are deleted. A
    /// dead delivery task comes back as a new, manually triggered retry
    /// chain. A message that does not say where it came from stays parked.
    ///
    /// At least once: if the ledger stops (or Postgres goes) between the
    /// broker's confirms and the delete's commit, the rows stay, and the
    /// next requeue sends them again: a duplicate delivery, which receivers
    /// drop by its unchanged `webhook-id`.
    pub async fn requeue(
        &self,
        tenant: &str,
        filter: &Filter,
        limit: i64,
    ) -> Result<Requeued, DlqError> {
        let publisher = self.link.publisher().ok_or(DlqError::Disconnected)?;
        let mut requeued = Vec::new();
        let mut after = 0_i64;
        loop {
            let want = REQUEUE_PAGE.min(limit - requeued.len() as i64);
            if want <= 0 {
                break;
            }
            let mut client = self.pool.get().await?;
            let transaction = client.transaction().await?;
            // SKIP LOCKED: two requeues at once share the rows out instead
            // of both sending them.
            let rows = transaction
                .query(
                    &format!(
                        "SELECT {}, properties, body FROM parked
                         WHERE tenant = $1 AND id > $2 AND original_exchange IS NOT NULL
                           AND ($3::text IS NULL OR endpoint_id = $3)
                           AND ($4::text[] IS NULL OR message_id = ANY($4))
                         ORDER BY id LIMIT $5
                         FOR UPDATE SKIP LOCKED",
                        view_columns()
                    ),
                    &[
                        &tenant,
                        &after,
                        &filter.endpoint_id,
                        &filter.message_ids,
                        &want,
                    ],
                )
                .await?;
            let mut sending = Vec::with_capacity(rows.len());
            let mut failed = None;
            for row in &rows {
                let parked = Parked::from_row(row);
                after = parked.id;
                let stored: Vec<u8> = row.get(12);
                let body: Vec<u8> = row.get(13);
                let Some(properties) = decode_properties(&stored) else {
                    tracing::error!(
                        id = parked.id,
                        "a parked message's properties do not decode; left parked"
                    );
                    continue;
                };
                let exchange = parked.original_exchange.clone().unwrap_or_default();
                let key = parked.original_routing_key.clone().unwrap_or_default();
                let properties = restored(properties, &body);
                // Sent one after another, confirmed together below.
                match publisher.send(&exchange, &key, &body, properties).await {
                    Ok(sent) => sending.push((parked, sent)),
                    Err(error) => {
                        failed = Some(error);
                        break;
                    }
                }
            }
            let page_full = rows.len() as i64 == want;
            let mut confirmed = Vec::with_capacity(sending.len());
            for (parked, sent) in sending {
                match sent.confirmed().await {
                    Ok(()) => confirmed.push(parked),
                    Err(error) => failed = Some(error),
                }
            }
            let ids: Vec<i64> = confirmed.iter().map(|p| p.id).collect();
            transaction
                .execute("DELETE FROM parked WHERE id = ANY($1)", &[&ids])
                .await?;
            transaction.commit().await?;
            metrics::counter!("hookfleet_parked_requeued_total").increment(ids.len() as u64);
            requeued.extend(confirmed);
            if let Some(error) = failed {
                return Err(error.into());
            }
            if !page_full {
                return Ok(Requeued {
                    data: requeued,
                    more: false,
                });
            }
        }
        let client = self.pool.get().await?;
        let more = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM parked
                   WHERE tenant = $1 AND id > $2 AND original_exchange IS NOT NULL
                     AND ($3::text IS NULL OR endpoint_id = $3)
                     AND ($4::text[] IS NULL OR message_id = ANY($4)))",
                &[&tenant, &after, &filter.endpoint_id, &filter.message_ids],
            )
            .await?
            .get(0);
        Ok(Requeued {
            data: requeued,
            more,
        })
    }
}

/// A parked message's properties as it is sent back: a task as a new,
/// manually triggered retry chain; anything else with its own headers
/// less what parking added.
fn restored(properties: BasicProperties, body: &[u8]) -> BasicProperties {
    let table = match identify(&properties, body).task {
        Some(mut task) => {
            task.attempt += 1;
            task.chain_start = task.attempt;
            task.trigger = Trigger::Manual;
            traced_headers([(headers::META, task.to_meta_json().as_str())])
        }
        None => original_headers(&properties),
    };
    properties.with_headers(table)
}

/// A parked message's headers less what parking added and the broker's
/// dead-lettering history (which would make the broker take the message's
/// next dead-lettering for a cycle).
fn original_headers(properties: &BasicProperties) -> FieldTable {
    let mut table = FieldTable::default();
    if let Some(original) = properties.headers() {
        for (name, value) in original.inner() {
            let name = name.as_str();
            let added = name.starts_with("x-hookfleet-") && name != headers::META;
            let history = matches!(
                name,
                "x-death"
                    | "x-first-death-exchange"
                    | "x-first-death-queue"
                    | "x-first-death-reason"
                    | "x-last-death-exchange"
                    | "x-last-death-queue"
                    | "x-last-death-reason"
                    | "x-delivery-count"
            );
            if !added && !history {
                table.insert(name.into(), value.clone());
            }
        }
    }
    table
}
