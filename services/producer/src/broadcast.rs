//! The registry broadcast: every producer publishes a snapshot of the whole
//! endpoint registry on the registry fanout exchange, so that every worker
//! knows which endpoints are deleted or disabled and where the others now
//! send, without reading Postgres (DESIGN.md invariant 3, issue 16 item 2).
//!
//! When this process's API changes an endpoint, that endpoint's new state
//! goes out before the API answers (a `registry.change`). A whole snapshot
//! goes out after index reloads (another producer's change, or the ledger
//! disabling an endpoint, arrive as a Postgres `NOTIFY`) and every
//! `endpoints.broadcast_every` regardless, so a worker that started or
//! reconnected after a change learns it within that period.

use std::sync::Arc;
use std::time::Duration;

use hookfleet_contract::{
    EndpointState, EndpointStatus, REGISTRY_CHANGE_KIND, REGISTRY_SNAPSHOT_KIND, RegistrySnapshot,
};
use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_db::endpoint::{self, Registered};
use hookfleet_signing::Sealer;
use hookfleet_topology::{Link, PublishError, Topology};
use lapin::BasicProperties;
use tokio_util::sync::CancellationToken;

use crate::index::SubscriptionIndex;

/// Endpoints per message; a page stays far below any broker size limit.
const PAGE: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    #[error("database: {0}")]
    Pool(#[from] hookfleet_db::deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Postgres(#[from] hookfleet_db::tokio_postgres::Error),
    #[error("the broker is not connected")]
    Disconnected,
    #[error(transparent)]
    Publish(#[from] PublishError),
}

#[derive(Debug)]
pub struct RegistryBroadcaster {
    pub pool: Pool,
    pub sealer: Sealer,
    pub topology: Topology,
    pub link: Link,
    pub every: Duration,
    /// One snapshot at a time, so pages of two snapshots never interleave
    /// from one producer.
    pub sending: tokio::sync::Mutex<()>,
}

impl RegistryBroadcaster {
    /// Reads the registry and publishes it, confirmed by the broker.
    pub async fn broadcast(&self) -> Result<(), BroadcastError> {
        let _one_at_a_time = self.sending.lock().await;
        let publisher = self.link.publisher().ok_or(BroadcastError::Disconnected)?;
        let client = self.pool.get().await?;
        let registry = endpoint::registry(&**client, None).await?;
        drop(client);
        let taken_at = registry.taken_at;
        let endpoints: Vec<EndpointState> = registry
            .endpoints
            .into_iter()
            .map(|registered| self.state(registered, taken_at))
            .collect();
        let id = format!("snap_{taken_at:x}_{:08x}", random_u32());
        let pages = endpoints.len().div_ceil(PAGE).max(1);
        let exchange = self.topology.registry_exchange();
        for (page, chunk) in endpoints
            .chunks(PAGE)
            .chain(endpoints.is_empty().then_some(&[][..]))
            .enumerate()
        {
            let snapshot = RegistrySnapshot {
                id: id.clone(),
                taken_at,
                page: page as u32,
                pages: pages as u32,
                endpoints: chunk.to_vec(),
            };
            let body = serde_json::to_vec(&snapshot).unwrap_or_default();
            let properties = BasicProperties::default()
                .with_type(REGISTRY_SNAPSHOT_KIND.into())
                .with_content_type(hookfleet_contract::headers::JSON_CONTENT_TYPE.into())
                .with_message_id(id.as_str().into());
            publisher.broadcast(&exchange, &body, properties).await?;
        }
        metrics::counter!("hookfleet_registry_broadcasts_total").increment(1);
        Ok(())
    }

    /// Broadcasts the whole registry; a failure is logged, and the next
    /// periodic broadcast makes up for it.
    pub async fn changed(&self) {
        if let Err(error) = self.broadcast().await {
            tracing::warn!(%error, "registry broadcast failed; the next periodic one will carry the change");
        }
    }

    /// Broadcasts one endpoint's state after this process's API changed it
    /// (a `registry.change`: one row read and one small message, where a
    /// whole snapshot would cost the registry's size per change). A failure
    /// is logged; the next periodic snapshot carries the change.
    pub async fn endpoint_changed(&self, tenant: &str, id: &str) {
        let result = async {
            let publisher = self.link.publisher().ok_or(BroadcastError::Disconnected)?;
            let client = self.pool.get().await?;
            let registry = endpoint::registry(&**client, Some((tenant, id))).await?;
            drop(client);
            for registered in registry.endpoints {
                let state = self.state(registered, registry.taken_at);
                let body = serde_json::to_vec(&state).unwrap_or_default();
                let properties = BasicProperties::default()
                    .with_type(REGISTRY_CHANGE_KIND.into())
                    .with_content_type(hookfleet_contract::headers::JSON_CONTENT_TYPE.into());
                publisher
                    .broadcast(&self.topology.registry_exchange(), &body, properties)
                    .await?;
            }
            Ok::<_, BroadcastError>(())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(%error, endpoint_id = id, "registry change broadcast failed; the next periodic snapshot will carry it");
        }
    }

    /// Broadcasts after index reloads (a second later, so that a burst of
    /// them makes one snapshot) and every `every`, until `cancel` fires;
    /// forgets tombstones older than 30 days on the way.
    pub async fn run(self: Arc<Self>, index: Arc<SubscriptionIndex>, cancel: CancellationToken) {
        loop {
            let periodic = tokio::select! {
                _ = cancel.cancelled() => return,
                _ = index.reloaded().notified() => false,
                _ = tokio::time::sleep(self.every) => true,
            };
            if !periodic {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            if self.link.is_ready() {
                self.changed().await;
            }
            if periodic {
                self.forget_tombstones().await;
            }
        }
    }

    async fn forget_tombstones(&self) {
        let result = async {
            let client = self.pool.get().await?;
            client
                .execute(
                    "DELETE FROM endpoint_tombstones WHERE deleted_at < now() - interval '30 days'",
                    &[],
                )
                .await?;
            Ok::<_, BroadcastError>(())
        }
        .await;
        if let Err(error) = result {
            tracing::warn!(%error, "could not forget old endpoint tombstones");
        }
    }

    /// An endpoint as the workers need to know it at `now_millis`.
    fn state(&self, registered: Registered, now_millis: i64) -> EndpointState {
        let (endpoint, enabled, disabled_reason, untouched) = match registered {
            Registered::Deleted {
                id,
                tenant,
                deleted_at,
            } => {
                return EndpointState {
                    endpoint_id: id,
                    tenant,
                    version: deleted_at,
                    status: EndpointStatus::Deleted,
                };
            }
            Registered::Live {
                endpoint,
                enabled,
                disabled_reason,
                untouched,
            } => (endpoint, enabled, disabled_reason, untouched),
        };
        let status = if !enabled {
            EndpointStatus::Disabled {
                reason: disabled_reason,
            }
        } else if untouched {
            // Never changed: tasks carry its target already, and resealing
            // thousands of untouched endpoints per snapshot is waste.
            EndpointStatus::Enabled { target: None }
        } else {
            // Its current target, sealed for the task context, as the
            // router seals it.
            match endpoint.delivery_target(&self.sealer, now_millis) {
                Ok(target) => EndpointStatus::Enabled {
                    target: Some(target),
                },
                Err(error) => {
                    tracing::error!(%error, endpoint_id = %endpoint.id, "an endpoint's secret does not open");
                    EndpointStatus::Disabled {
                        reason: Some(format!("its signing secret does not open: {error}")),
                    }
                }
            }
        };
        EndpointState {
            endpoint_id: endpoint.id,
            tenant: endpoint.tenant,
            version: endpoint.version,
            status,
        }
    }
}

/// Tells apart snapshots of the same millisecond from different producers.
fn random_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now()) as u32
}
