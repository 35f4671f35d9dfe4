//! The ledger's read API, tenant-scoped like every hookfleet call: events
//! with their deliveries and attempts, an endpoint's attempts and its
//! health over a window.

mod dlq;
mod endpoints;
mod events;
mod recover;
mod replay;

use axum::Router;
use axum::routing::{get, post};
use hookfleet_contract::auth::Authenticate;
use hookfleet_contract::{ApiError, TenantId};
use hookfleet_db::TokenStore;
use hookfleet_db::tokio_postgres::Row;
use std::sync::Arc;

use crate::dlq::DeadLetters;
use crate::recover::Recoveries;
use crate::replay::Resender;
use serde::Serialize;

use crate::store::LedgerStore;

/// What the read handlers share.
#[derive(Debug, Clone)]
pub struct ReadState {
    pub store: LedgerStore,
    pub tokens: TokenStore,
    pub resender: Resender,
    pub recoveries: Arc<Recoveries>,
    /// Replays in flight per tenant (issue 16 item 5).
    pub replays: Arc<crate::quota::InFlight>,
    pub dead_letters: DeadLetters,
}

impl ReadState {
    /// A connection of the pool, or 503.
    async fn client(&self) -> Result<hookfleet_db::deadpool_postgres::Object, ApiError> {
        self.store.pool().get().await.map_err(|e| unavailable(&e))
    }
}

impl Authenticate for ReadState {
    async fn tenant_for(&self, token: &str) -> Result<Option<TenantId>, ApiError> {
        self.tokens.tenant_for(token).await
    }

    fn admin_token(&self) -> Option<&str> {
        None
    }
}

pub fn router(state: ReadState) -> Router {
    Router::new()
        .route("/v1/events/{id}", get(events::event))
        .route("/v1/events/{id}/attempts", get(events::attempts))
        .route("/v1/events/{id}/replay", post(replay::replay))
        .route("/v1/attempts", get(endpoints::tenant_attempts))
        .route("/v1/endpoints/{id}/attempts", get(endpoints::attempts))
        .route("/v1/endpoints/{id}/stats", get(endpoints::stats))
        .route("/v1/endpoints/{id}/recover", post(recover::recover))
        .route("/v1/recoveries/{id}", get(recover::progress))
        .route("/v1/dlq", get(dlq::list))
        .route("/v1/dlq/requeue", post(dlq::requeue))
        .with_state(state)
}

/// The ledger's part of the one OpenAPI document (the producer serves
/// the whole of it at `/openapi.json`).
#[derive(Debug, utoipa::OpenApi)]
#[openapi(paths(
    events::event,
    events::attempts,
    endpoints::tenant_attempts,
    endpoints::attempts,
    endpoints::stats,
    replay::replay,
    recover::recover,
    recover::progress,
    dlq::list,
    dlq::requeue,
), components(schemas(hookfleet_contract::ErrorBody<'static>)))]
pub struct LedgerApi;

fn unavailable(error: &dyn std::fmt::Display) -> ApiError {
    tracing::error!(%error, "ledger query failed");
    ApiError::unavailable("the ledger database is unreachable; retry")
}

/// The columns [`AttemptView::from_row`] reads, in order.
const ATTEMPT_COLUMNS: &str = "id, delivery_id, event_id, endpoint_id, attempt, result,
    status_code, error, to_json(started_at) #>> '{}', duration_ms,
    to_json(next_attempt_at) #>> '{}', (extract(epoch FROM started_at) * 1000)::int8,
    response_excerpt";

fn invalid(field: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request("invalid_field", format!("{field}: {message}"))
}

/// A page size: 50 when absent, at most 500.
fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let limit = limit.unwrap_or(50);
    if (1..=500).contains(&limit) {
        Ok(limit)
    } else {
        Err(invalid("limit", "must be between 1 and 500"))
    }
}

/// The times a cursor can hold: from the epoch to about year 33658, all
/// within what Postgres can represent (a time beyond would fail the
/// query).
const CURSOR_MILLIS: std::ops::RangeInclusive<i64> = 0..=999_999_999_999_999;

/// An attempt cursor (`next` of a previous page): the last row's start
/// time in milliseconds and its id.
fn parse_cursor(after: Option<&str>) -> Result<(Option<i64>, Option<String>), ApiError> {
    let Some(cursor) = after else {
        return Ok((None, None));
    };
    cursor
        .split_once('~')
        .and_then(|(at, id)| {
            let at = at
                .parse::<i64>()
                .ok()
                .filter(|at| CURSOR_MILLIS.contains(at))?;
            Some((Some(at), Some(id.to_owned())))
        })
        .ok_or_else(|| invalid("after", "not a cursor this API returned"))
}

/// A page of attempts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttemptPage {
    data: Vec<AttemptView>,
    /// Pass as `after` for the next page; `null` on the last.
    next: Option<String>,
}

impl AttemptPage {
    /// The page of `rows` (read with [`ATTEMPT_COLUMNS`]), asked for with
    /// `limit`: a full page has a cursor to the next.
    fn of(rows: &[Row], limit: i64) -> Self {
        let data: Vec<AttemptView> = rows.iter().map(AttemptView::from_row).collect();
        let next = (data.len() as i64 == limit)
            .then(|| {
                data.last()
                    .map(|a| format!("{}~{}", a.started_millis, a.id))
            })
            .flatten();
        Self { data, next }
    }
}

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
}

#[cfg(test)]
mod document_tests {
    use utoipa::OpenApi;

    /// `shared/contract/openapi/ledger.json` is what the producer serves
    /// and forwards; it must be this document. `HOOKFLEET_BLESS=1 cargo
    /// test -p hookfleet-ledger document` rewrites it after a change.
    #[test]
    fn the_checked_in_document_is_the_ledgers() {
        let generated = serde_json::to_value(super::LedgerApi::openapi()).unwrap();
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/contract/openapi/ledger.json"
        );
        if std::env::var_os("HOOKFLEET_BLESS").is_some() {
            let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
            std::fs::write(path, text).unwrap();
            return;
        }
        let checked_in: serde_json::Value =
            serde_json::from_str(hookfleet_contract::api_error::LEDGER_OPENAPI)
                .expect("ledger.json is JSON");
        assert!(
            checked_in == generated,
            "shared/contract/openapi/ledger.json differs from the ledger's handlers; \
             rerun with HOOKFLEET_BLESS=1 and commit it"
        );
    }
}
