//! Recover (`POST /v1/endpoints/{id}/recover`): resend to an endpoint, in
//! the background and at a bounded rate, every event since a time that it
//! has not received: deliveries that were exhausted, and events it missed
//! while disabled; each event goes out as a [replay](crate::replay). Progress
//! is kept in Postgres, so a recovery interrupted by a restart resumes where it was
//! (resent deliveries are `pending` and no longer qualify).

use std::sync::Arc;
use std::time::Duration;

use hookfleet_contract::TenantId;
use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_db::endpoint;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::replay::{ResendError, Resender};

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("database: {0}")]
    Pool(#[from] hookfleet_db::deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Postgres(#[from] hookfleet_db::tokio_postgres::Error),
}

/// A recovery as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecoveryView {
    pub id: String,
    pub endpoint_id: String,
    pub since: String,
    /// `running`, `done` or `failed`.
    pub state: String,
    /// Events to resend, and how many are sent so far.
    pub total: i32,
    pub sent: i32,
    pub error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

const COLUMNS: &str = "id, endpoint_id, to_json(since) #>> '{}', state, total, sent, error,
    to_json(created_at) #>> '{}', to_json(finished_at) #>> '{}'";

fn view(row: &hookfleet_db::tokio_postgres::Row) -> RecoveryView {
    RecoveryView {
        id: row.get(0),
        endpoint_id: row.get(1),
        since: row.get(2),
        state: row.get(3),
        total: row.get(4),
        sent: row.get(5),
        error: row.get(6),
        created_at: row.get(7),
        finished_at: row.get(8),
    }
}

/// Events one step of a recovery reads and resends; the next step reads
/// the next ones, so a recovery of a long period never holds them all.
const STEP: i64 = 1000;

/// How a request to start a recovery ended.
#[derive(Debug)]
pub enum Start {
    Started(RecoveryView),
    /// The tenant has no such endpoint.
    NoEndpoint,
    /// The tenant has this many recoveries running already.
    TooMany(i64),
}

#[derive(Debug)]
pub struct Recoveries {
    pub pool: Pool,
    pub resender: Resender,
    /// Resends per second, per recovery.
    pub rate_per_second: u32,
    pub cancel: CancellationToken,
    /// Recoveries one tenant may have running (0: no limit).
    pub max_in_flight_per_tenant: i64,
    /// Turns to run: at most this many recoveries run at once, however
    /// many are started or resumed.
    pub running: Arc<tokio::sync::Semaphore>,
}

impl Recoveries {
    /// Starts a recovery of `endpoint_id` since `since_millis`, unless the
    /// tenant has no such endpoint or its quota of running recoveries.
    pub async fn start(
        self: &Arc<Self>,
        tenant: &TenantId,
        endpoint_id: &str,
        since_millis: i64,
    ) -> Result<Start, RecoveryError> {
        let client = self.pool.get().await?;
        let running: i64 = client
            .query_one(
                "SELECT count(*) FROM recoveries WHERE tenant = $1 AND state = 'running'",
                &[&tenant.as_str()],
            )
            .await?
            .get(0);
        if self.max_in_flight_per_tenant > 0 && running >= self.max_in_flight_per_tenant {
            return Ok(Start::TooMany(running));
        }
        let id = format!("rcv_{}", uuid::Uuid::now_v7().simple());
        let row = client
            .query_opt(
                &format!(
                    "INSERT INTO recoveries (id, tenant, endpoint_id, since)
                     SELECT $1, $2, $3, to_timestamp($4::int8 / 1000.0)
                     WHERE EXISTS (SELECT 1 FROM endpoints WHERE tenant = $2 AND id = $3)
                     RETURNING {COLUMNS}"
                ),
                &[&id, &tenant.as_str(), &endpoint_id, &since_millis],
            )
            .await?;
        let Some(row) = row else {
            return Ok(Start::NoEndpoint);
        };
        tokio::spawn(self.clone().run(id));
        Ok(Start::Started(view(&row)))
    }

    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &str,
    ) -> Result<Option<RecoveryView>, RecoveryError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {COLUMNS} FROM recoveries WHERE tenant = $1 AND id = $2"),
                &[&tenant.as_str(), &id],
            )
            .await?;
        Ok(row.as_ref().map(view))
    }

    /// Resumes the recoveries a previous run left unfinished.
    pub async fn resume(self: Arc<Self>) {
        let ids = async {
            let client = self.pool.get().await?;
            let rows = client
                .query("SELECT id FROM recoveries WHERE state = 'running'", &[])
                .await?;
            Ok::<_, RecoveryError>(
                rows.iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>(),
            )
        }
        .await;
        match ids {
            Ok(ids) => {
                for id in ids {
                    tokio::spawn(self.clone().run(id));
                }
            }
            Err(error) => tracing::warn!(%error, "could not resume recoveries"),
        }
    }

    /// Runs one recovery to its end, retrying through outages, once it
    /// has a turn.
    async fn run(self: Arc<Self>, id: String) {
        let _turn = tokio::select! {
            _ = self.cancel.cancelled() => return,
            turn = self.running.clone().acquire_owned() => match turn {
                Ok(turn) => turn,
                Err(_) => return,
            },
        };
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.step(&id).await {
                Ok(Step::Finished) => return,
                Ok(Step::Continue) => backoff = Duration::from_millis(200),
                Err(error) => {
                    tracing::warn!(%error, recovery = %id, retry_in = ?backoff, "recovery paused");
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                }
            }
            if self.cancel.is_cancelled() {
                return;
            }
        }
    }

    /// Finds what is left to resend and sends it, at the configured rate.
    async fn step(&self, id: &str) -> Result<Step, StepError> {
        let client = self.pool.get().await?;
        let Some(recovery) = client
            .query_opt(
                "SELECT tenant, endpoint_id FROM recoveries WHERE id = $1 AND state = 'running'",
                &[&id],
            )
            .await?
        else {
            return Ok(Step::Finished);
        };
        let (tenant, endpoint_id): (String, String) = (recovery.get(0), recovery.get(1));
        let endpoint = endpoint::enabled_one(&**client, &tenant, &endpoint_id).await?;
        let Some(endpoint) = endpoint else {
            client
                .execute(
                    "UPDATE recoveries SET state = 'failed', finished_at = now(),
                         error = 'the endpoint is disabled or deleted; enable it and recover again'
                     WHERE id = $1",
                    &[&id],
                )
                .await?;
            return Ok(Step::Finished);
        };
        // Events of the endpoint's types since the time that it has neither
        // received nor is receiving.
        let pending: Vec<String> = client
            .query(
                "SELECT ev.id FROM recoveries r
                 JOIN endpoints ep ON ep.tenant = r.tenant AND ep.id = r.endpoint_id
                 JOIN events ev ON ev.tenant = r.tenant AND ev.created_at >= r.since
                 WHERE r.id = $1
                   AND EXISTS (
                       SELECT 1 FROM unnest(ep.event_types) p
                       WHERE p = '*' OR p = ev.event_type
                          OR (right(p, 2) = '.*' AND starts_with(ev.event_type, left(p, -1))))
                   AND NOT EXISTS (
                       SELECT 1 FROM deliveries d
                       WHERE d.tenant = r.tenant AND d.event_id = ev.id
                         AND d.endpoint_id = r.endpoint_id
                         AND d.state IN ('succeeded', 'pending', 'failed'))
                 ORDER BY ev.created_at, ev.id
                 LIMIT $2",
                &[&id, &STEP],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        client
            .execute(
                "UPDATE recoveries SET total = GREATEST(total, sent + $2) WHERE id = $1",
                &[&id, &(pending.len() as i32)],
            )
            .await?;
        let pause = Duration::from_secs_f64(1.0 / f64::from(self.rate_per_second.max(1)));
        let more = pending.len() as i64 == STEP;
        for event_id in pending {
            self.resender
                .resend(&tenant, &event_id, std::slice::from_ref(&endpoint))
                .await?;
            client
                .execute(
                    "UPDATE recoveries SET sent = sent + 1 WHERE id = $1",
                    &[&id],
                )
                .await?;
            tokio::select! {
                _ = self.cancel.cancelled() => return Ok(Step::Continue),
                _ = tokio::time::sleep(pause) => {}
            }
        }
        if more {
            // Resent deliveries are pending now: the next step reads on.
            return Ok(Step::Continue);
        }
        client
            .execute(
                "UPDATE recoveries SET state = 'done', finished_at = now() WHERE id = $1",
                &[&id],
            )
            .await?;
        Ok(Step::Finished)
    }
}

enum Step {
    Finished,
    Continue,
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("database: {0}")]
    Pool(#[from] hookfleet_db::deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Postgres(#[from] hookfleet_db::tokio_postgres::Error),
    #[error(transparent)]
    Resend(#[from] ResendError),
}
