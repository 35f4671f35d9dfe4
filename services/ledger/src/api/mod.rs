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
use std::sync::Arc;

use crate::dlq::DeadLetters;
use crate::read_model::attempts::{AttemptView, Cursor};
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
fn parse_cursor(after: Option<&str>) -> Result<Cursor, ApiError> {
    let Some(cursor) = after else {
        return Ok(Cursor::default());
    };
    cursor
        .split_once('~')
        .and_then(|(at, id)| {
            let at = at
                .parse::<i64>()
                .ok()
                .filter(|at| CURSOR_MILLIS.contains(at))?;
            Some(Cursor {
                at: Some(at),
                id: Some(id.to_owned()),
            })
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
    /// The page of `data`, asked for with `limit`: a full page has a
    /// cursor to the next.
    fn of(data: Vec<AttemptView>, limit: i64) -> Self {
        let next = (data.len() as i64 == limit)
            .then(|| data.last().map(AttemptView::cursor))
            .flatten();
        Self { data, next }
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
