//! The subscription index: every enabled endpoint's subscriptions in
//! memory, so the router matches an event without a query.
//!
//! It is reloaded whole when the registry changes: the API reloads it
//! before answering (so a router in the same process sees a new endpoint at
//! once) and sends a Postgres `NOTIFY`, on which every other producer
//! reloads too. A periodic reload is the safety net for a missed
//! notification.
//!
//! The secrets it holds are sealed for the task context (tenant, endpoint
//! and URL, `hookfleet_contract::task_secret_context`), resealed from the
//! registry's at-rest form (`hookfleet_db::endpoint`) when an endpoint is
//! new or changed (a reload reuses what the last one resealed for an
//! unchanged `updated_at`), so the router copies them into tasks as they
//! are.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use hookfleet_contract::{EventType, Target, TenantId};
use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_db::endpoint::{self, StoredEndpoint};
use hookfleet_signing::Sealer;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::changes;
use crate::registry::RegistryError;

/// The notification channel registry changes are announced on.
pub const CHANNEL: &str = endpoint::CHANGES_CHANNEL;

#[derive(Debug, Default)]
struct Snapshot {
    /// (tenant, pattern) to the endpoints subscribed with that pattern.
    by_pattern: HashMap<(String, String), Vec<Arc<Target>>>,
    endpoints: usize,
    /// Every subscriber by id, for the next reload to reuse.
    by_id: HashMap<String, Arc<Target>>,
}

#[derive(Debug)]
pub struct SubscriptionIndex {
    pool: Pool,
    sealer: Sealer,
    /// Signalled after every reload, for the registry broadcast.
    reloaded: Notify,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Serialises reloads; a reload asked for during one runs after it.
    reloading: tokio::sync::Mutex<()>,
    changed: Notify,
}

impl SubscriptionIndex {
    pub fn new(pool: Pool, sealer: Sealer) -> Self {
        Self {
            pool,
            sealer,
            reloaded: Notify::new(),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            reloading: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
        }
    }

    /// The endpoints of `tenant` subscribed to `event_type`, each once.
    pub fn subscribers(&self, tenant: &TenantId, event_type: &EventType) -> Vec<Arc<Target>> {
        let snapshot = self.snapshot.read().map(|s| s.clone()).unwrap_or_default();
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        for pattern in event_type.matching_patterns() {
            let key = (tenant.as_str().to_owned(), pattern);
            for subscriber in snapshot.by_pattern.get(&key).into_iter().flatten() {
                if seen.insert(subscriber.endpoint_id.clone()) {
                    found.push(subscriber.clone());
                }
            }
        }
        found.sort_by(|a, b| a.endpoint_id.cmp(&b.endpoint_id));
        found
    }

    /// How many enabled endpoints the index holds.
    pub fn len(&self) -> usize {
        self.snapshot
            .read()
            .map(|s| s.endpoints)
            .unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads every enabled endpoint from the registry.
    pub async fn reload(&self) -> Result<(), RegistryError> {
        let _one_at_a_time = self.reloading.lock().await;
        let client = self.pool.get().await?;
        let stored = endpoint::enabled(&**client).await?;
        drop(client);
        let mut snapshot = Snapshot {
            endpoints: stored.len(),
            ..Snapshot::default()
        };
        let last = self.snapshot.read().map(|s| s.clone()).unwrap_or_default();
        let now = hookfleet_contract::now_millis();
        for endpoint in stored {
            let unchanged = last
                .by_id
                .get(endpoint.id.as_str())
                .filter(|s| s.endpoint_version == endpoint.version);
            let subscriber = match unchanged {
                Some(subscriber) => subscriber.clone(),
                None => match endpoint.target(&self.sealer, now) {
                    Ok(target) => Arc::new(target),
                    Err(error) => {
                        tracing::error!(%error, endpoint_id = %endpoint.id, "an endpoint's secret does not open; it gets no deliveries");
                        continue;
                    }
                },
            };
            let StoredEndpoint {
                tenant,
                event_types,
                ..
            } = endpoint;
            for pattern in event_types {
                snapshot
                    .by_pattern
                    .entry((tenant.clone(), pattern))
                    .or_default()
                    .push(subscriber.clone());
            }
            snapshot
                .by_id
                .insert(subscriber.endpoint_id.as_str().to_owned(), subscriber);
        }
        if let Ok(mut current) = self.snapshot.write() {
            *current = Arc::new(snapshot);
        }
        self.reloaded.notify_one();
        Ok(())
    }

    /// Signalled after each reload (a permit is kept if nobody waits).
    pub fn reloaded(&self) -> &Notify {
        &self.reloaded
    }

    /// After a change through this process's API: reload now, and tell the
    /// other producers.
    pub async fn changed(&self) {
        if let Err(error) = self.reload().await {
            tracing::warn!(%error, "subscription index reload failed");
            self.changed.notify_one();
        }
        changes::announce(&self.pool, CHANNEL).await;
    }

    /// Keeps the index fresh until `cancel` fires: reloads on every
    /// notification from another producer, and every minute regardless.
    pub async fn maintain(
        self: Arc<Self>,
        database: hookfleet_config::DatabaseSettings,
        cancel: CancellationToken,
    ) {
        changes::keep_fresh(
            "subscription index",
            &database,
            CHANNEL,
            &self.changed,
            &cancel,
            || self.reload(),
        )
        .await;
    }
}
