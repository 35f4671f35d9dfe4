//! Endpoint health: an endpoint that answered 410 Gone, or that has failed
//! without a single success for `health.disable_after` (5 days by
//! default), is disabled in the registry with the reason and the time, and
//! an `endpoint.disabled` event is published to the events exchange so the
//! tenant's own endpoints can hear of it. Re-enabling is an API call.

use std::sync::Arc;
use std::time::Duration;

use hookfleet_contract::{
    EndpointId, EndpointState, EndpointStatus, REGISTRY_CHANGE_KIND, checked_context, headers,
};
use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_db::endpoint;
use hookfleet_topology::{Link, Topology, persistent_json, traced_headers};
use lapin::BasicProperties;
use tokio_util::sync::CancellationToken;

/// The event type announcing a disabled endpoint.
pub const ENDPOINT_DISABLED: &str = "endpoint.disabled";

#[derive(Debug)]
pub struct EndpointHealth {
    pub pool: Pool,
    pub link: Link,
    pub topology: Topology,
    /// Stamps the `endpoint.disabled` events as checked.
    pub stamper: hookfleet_signing::Stamper,
    pub disable_after: Duration,
    pub sweep_every: Duration,
}

/// An endpoint to disable, and why.
struct Verdict {
    tenant: String,
    id: String,
    /// `None` for an AMQP destination.
    url: Option<String>,
    reason: String,
}

impl EndpointHealth {
    /// Sweeps every `sweep_every` until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.sweep_every) => {}
            }
            self.sweep(None).await;
        }
    }

    /// Disables the unhealthy endpoints among `only` (all when `None`).
    /// Failures are logged; the next sweep tries again. The recorder names
    /// the endpoints that just answered 410; the periodic sweep finds the
    /// failing ones through the hourly stats rollups first.
    pub async fn sweep(&self, only: Option<&[String]>) {
        match self.verdicts(only).await {
            Ok(verdicts) => {
                for verdict in verdicts {
                    if let Err(error) = self.disable(&verdict).await {
                        tracing::warn!(%error, endpoint_id = %verdict.id, "could not disable an endpoint");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "endpoint health sweep failed"),
        }
    }

    async fn verdicts(&self, only: Option<&[String]>) -> Result<Vec<Verdict>, HealthError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                // The periodic sweep first narrows the endpoints down with
                // the hourly rollups to those with no success hour since
                // the cutoff and a failure hour since their last success
                // (a handful, where a query per attempt table partition
                // and endpoint would cost seconds for thousands); then it
                // judges those, and the ones asked for, on their attempts.
                "WITH candidates AS MATERIALIZED (
                     SELECT e.tenant, e.id, e.url FROM endpoints e
                     LEFT JOIN LATERAL (
                         SELECT max(hour) AS hour FROM endpoint_stats s
                         WHERE s.endpoint_id = e.id AND s.succeeded > 0
                     ) ok ON true
                     WHERE e.enabled AND ($1::text[] IS NULL OR e.id = ANY($1))
                       AND ($1::text[] IS NOT NULL OR (
                           coalesce(ok.hour, '-infinity') < now() - make_interval(secs => $2)
                           AND EXISTS (
                               SELECT 1 FROM endpoint_stats s
                               WHERE s.endpoint_id = e.id AND s.attempts > s.succeeded
                                 AND s.hour >= coalesce(ok.hour, '-infinity')))))
                 SELECT c.tenant, c.id, c.url, last.status_code,
                        to_json(fail.first_fail) #>> '{}',
                        fail.first_fail < now() - make_interval(secs => $2)
                 FROM candidates c
                 LEFT JOIN LATERAL (
                     SELECT status_code FROM attempts a
                     WHERE a.endpoint_id = c.id ORDER BY started_at DESC LIMIT 1
                 ) last ON true
                 LEFT JOIN LATERAL (
                     SELECT max(started_at) AS last_ok FROM attempts a
                     WHERE a.endpoint_id = c.id AND a.result = 'succeeded'
                 ) ok ON true
                 LEFT JOIN LATERAL (
                     SELECT min(started_at) AS first_fail FROM attempts a
                     WHERE a.endpoint_id = c.id AND a.result <> 'succeeded'
                       AND a.started_at > coalesce(ok.last_ok, '-infinity')
                 ) fail ON true",
                &[
                    &only.map(<[String]>::to_vec),
                    &self.disable_after.as_secs_f64(),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let gone = row.get::<_, Option<i32>>(3) == Some(410);
                let failing = row.get::<_, Option<bool>>(5).unwrap_or(false);
                let reason = if gone {
                    "the endpoint answered 410 Gone".to_owned()
                } else if failing {
                    format!(
                        "every delivery has failed since {} (longer than {})",
                        row.get::<_, Option<String>>(4).unwrap_or_default(),
                        humantime::format_duration(self.disable_after)
                    )
                } else {
                    return None;
                };
                Some(Verdict {
                    tenant: row.get(0),
                    id: row.get(1),
                    url: row.get(2),
                    reason,
                })
            })
            .collect())
    }

    /// Disables one endpoint (if still enabled), lets the routers know, and
    /// announces it.
    async fn disable(&self, verdict: &Verdict) -> Result<(), HealthError> {
        let client = self.pool.get().await?;
        let disabled =
            endpoint::disable(&**client, &verdict.tenant, &verdict.id, &verdict.reason).await?;
        let Some((at, at_millis)) = disabled else {
            return Ok(());
        };
        tracing::warn!(endpoint_id = %verdict.id, reason = %verdict.reason, "endpoint disabled");
        metrics::counter!("hookfleet_endpoints_disabled_total").increment(1);
        let publisher = self.link.publisher().ok_or(HealthError::Disconnected)?;
        // Workers first, before the announcement can be routed (to this
        // very endpoint, by a router whose index has not caught up): they
        // cancel its tasks from now on, without waiting for the producers'
        // next snapshot.
        let change = EndpointState {
            endpoint_id: EndpointId::from_stored(verdict.id.clone()),
            tenant: verdict.tenant.clone(),
            version: at_millis,
            status: EndpointStatus::Disabled {
                reason: Some(verdict.reason.clone()),
            },
        };
        let change_properties = BasicProperties::default()
            .with_type(REGISTRY_CHANGE_KIND.into())
            .with_content_type(headers::JSON_CONTENT_TYPE.into());
        if let Err(error) = publisher
            .broadcast(
                &self.topology.registry_exchange(),
                &serde_json::to_vec(&change).unwrap_or_default(),
                change_properties,
            )
            .await
        {
            tracing::warn!(%error, "could not tell the workers; the producers' next snapshot will");
        }
        let payload = serde_json::json!({
            "endpoint_id": verdict.id,
            "url": verdict.url,
            "reason": verdict.reason,
            "disabled_at": at,
        })
        .to_string();
        let id = format!("{ENDPOINT_DISABLED}:{}:{at_millis}", verdict.id);
        let checked = self.stamper.stamp(
            &checked_context(&verdict.tenant, Some((&id, ENDPOINT_DISABLED))),
            payload.as_bytes(),
        );
        let properties = persistent_json()
            .with_message_id(id.as_str().into())
            .with_timestamp((at_millis / 1000) as u64)
            // hookfleet's own event: the tenant's catalogue (schemas,
            // strict_types) does not apply to it.
            .with_headers(traced_headers([
                (headers::TENANT, verdict.tenant.as_str()),
                (headers::CHECKED, checked.as_str()),
            ]));
        publisher
            .publish(
                &self.topology.events_exchange(),
                ENDPOINT_DISABLED,
                payload.as_bytes(),
                properties,
            )
            .await?;
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
enum HealthError {
    #[error("database: {0}")]
    Pool(#[from] hookfleet_db::deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Postgres(#[from] hookfleet_db::tokio_postgres::Error),
    #[error("the broker is not connected")]
    Disconnected,
    #[error(transparent)]
    Publish(#[from] hookfleet_topology::PublishError),
}
