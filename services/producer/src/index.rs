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
//! registry's at-rest form when an endpoint is new or changed (a reload
//! reuses what the last one resealed for an unchanged `updated_at`), so the
//! router copies them into tasks as they are.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use hookfleet_contract::{
    EndpointId, EventType, TenantId, ed25519_context, task_address, task_ed25519_context,
    task_secret_context,
};
use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_signing::{SealError, Sealer};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::changes;
use crate::registry::{CustomHeaders, RegistryError};

/// The notification channel registry changes are announced on.
pub const CHANNEL: &str = "hookfleet_endpoints";

/// One endpoint as the router needs it.
#[derive(Debug, Clone)]
pub struct Subscriber {
    pub id: EndpointId,
    /// Empty for an AMQP destination.
    pub url: String,
    pub destination: Option<hookfleet_contract::Destination>,
    pub sealed_secret: String,
    /// The previous secret and when it stops being valid (milliseconds
    /// since the epoch), during a rotation's grace period.
    pub previous: Option<(String, i64)>,
    pub headers: CustomHeaders,
    pub sealed_ed25519: Option<String>,
    /// `updated_at` in milliseconds: tasks carry it as `endpoint_version`.
    pub version: i64,
    /// Deliver in order per ordering key (issue 17).
    pub ordered: bool,
    /// Attempts per second at most, fleet-wide.
    pub rate_limit: Option<u32>,
}

impl Subscriber {
    /// The sealed secrets to sign with now, newest first.
    pub fn secrets_at(&self, now_millis: i64) -> Vec<String> {
        let mut secrets = vec![self.sealed_secret.clone()];
        if let Some((previous, until)) = &self.previous
            && *until > now_millis
        {
            secrets.push(previous.clone());
        }
        secrets
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    /// (tenant, pattern) to the endpoints subscribed with that pattern.
    by_pattern: HashMap<(String, String), Vec<Arc<Subscriber>>>,
    endpoints: usize,
    /// Every subscriber by id, for the next reload to reuse.
    by_id: HashMap<String, Arc<Subscriber>>,
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
    pub fn subscribers(&self, tenant: &TenantId, event_type: &EventType) -> Vec<Arc<Subscriber>> {
        let snapshot = self.snapshot.read().map(|s| s.clone()).unwrap_or_default();
        let mut seen = HashSet::new();
        let mut found = Vec::new();
        for pattern in event_type.matching_patterns() {
            let key = (tenant.as_str().to_owned(), pattern);
            for subscriber in snapshot.by_pattern.get(&key).into_iter().flatten() {
                if seen.insert(subscriber.id.clone()) {
                    found.push(subscriber.clone());
                }
            }
        }
        found.sort_by(|a, b| a.id.cmp(&b.id));
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
        let rows = client
            .query(
                "SELECT id, tenant, url, secret, event_types, headers, previous_secret,
                        (extract(epoch FROM previous_secret_expires_at) * 1000)::int8,
                        ed25519_key, (extract(epoch FROM updated_at) * 1000)::int8,
                        destination, ordered, rate_limit
                 FROM endpoints WHERE enabled",
                &[],
            )
            .await?;
        let mut snapshot = Snapshot {
            endpoints: rows.len(),
            ..Snapshot::default()
        };
        let last = self.snapshot.read().map(|s| s.clone()).unwrap_or_default();
        for row in &rows {
            let tenant: String = row.get(1);
            let unchanged = last
                .by_id
                .get(row.get::<_, &str>(0))
                .filter(|s| s.version == row.get::<_, i64>(9));
            let subscriber = match unchanged {
                Some(subscriber) => Ok(subscriber.clone()),
                None => self.subscriber(&tenant, row).map(Arc::new),
            };
            let subscriber = match subscriber {
                Ok(subscriber) => subscriber,
                Err(error) => {
                    let id: &str = row.get(0);
                    tracing::error!(%error, endpoint_id = id, "an endpoint's secret does not open; it gets no deliveries");
                    continue;
                }
            };
            for pattern in row.get::<_, Vec<String>>(4) {
                snapshot
                    .by_pattern
                    .entry((tenant.clone(), pattern))
                    .or_default()
                    .push(subscriber.clone());
            }
            snapshot
                .by_id
                .insert(subscriber.id.as_str().to_owned(), subscriber);
        }
        if let Ok(mut current) = self.snapshot.write() {
            *current = Arc::new(snapshot);
        }
        self.reloaded.notify_one();
        Ok(())
    }

    /// A row of [`Self::reload`]'s query as the router needs it, its
    /// secrets resealed from the endpoint context to the task context.
    fn subscriber(
        &self,
        tenant: &str,
        row: &hookfleet_db::tokio_postgres::Row,
    ) -> Result<Subscriber, SealError> {
        let id: String = row.get(0);
        // Empty for an AMQP destination, which then binds the secrets.
        let url: String = row.get::<_, Option<String>>(2).unwrap_or_default();
        let destination: Option<hookfleet_contract::Destination> = row
            .get::<_, Option<serde_json::Value>>(10)
            .and_then(|d| serde_json::from_value(d).ok());
        let address = task_address(&url, destination.as_ref());
        let context = task_secret_context(tenant, &id, &address);
        let reseal = |sealed: &str| self.sealer.reseal(sealed, &id, &context);
        let headers: serde_json::Value = row.get(5);
        let previous: Option<String> = row.get(6);
        let until: Option<i64> = row.get(7);
        let previous = match previous.zip(until) {
            Some((sealed, until)) => Some((reseal(&sealed)?, until)),
            None => None,
        };
        let sealed_ed25519 = row
            .get::<_, Option<String>>(8)
            .map(|sealed| {
                self.sealer.reseal(
                    &sealed,
                    &ed25519_context(&id),
                    &task_ed25519_context(tenant, &id, &address),
                )
            })
            .transpose()?;
        Ok(Subscriber {
            sealed_secret: reseal(row.get(3))?,
            previous,
            headers: serde_json::from_value(headers).unwrap_or_default(),
            sealed_ed25519,
            version: row.get(9),
            id: EndpointId::from_stored(id),
            url,
            destination,
            ordered: row.get(11),
            rate_limit: row
                .get::<_, Option<i32>>(12)
                .and_then(|limit| u32::try_from(limit).ok()),
        })
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
