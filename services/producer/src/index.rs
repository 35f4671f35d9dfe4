//! The subscription index: every enabled endpoint's subscriptions in
//! memory, so the router matches an event without a query.
//!
//! It is reloaded whole when the registry changes: the API reloads it
//! before answering (so a router in the same process sees a new endpoint at
//! once) and sends a Postgres `NOTIFY`, on which every other producer
//! reloads too. A periodic reload is the safety net for a missed
//! notification.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use hookfleet_contract::{EndpointId, EventType, TenantId};
use hookfleet_db::deadpool_postgres::Pool;
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
}

#[derive(Debug)]
pub struct SubscriptionIndex {
    pool: Pool,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Serialises reloads; a reload asked for during one runs after it.
    reloading: tokio::sync::Mutex<()>,
    changed: Notify,
}

impl SubscriptionIndex {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
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
                        ed25519_key, destination
                 FROM endpoints WHERE enabled",
                &[],
            )
            .await?;
        let mut snapshot = Snapshot {
            endpoints: rows.len(),
            ..Snapshot::default()
        };
        for row in &rows {
            let tenant: String = row.get(1);
            let headers: serde_json::Value = row.get(5);
            let previous: Option<String> = row.get(6);
            let until: Option<i64> = row.get(7);
            let subscriber = Arc::new(Subscriber {
                id: EndpointId::from_stored(row.get(0)),
                url: row.get::<_, Option<String>>(2).unwrap_or_default(),
                destination: row
                    .get::<_, Option<serde_json::Value>>(9)
                    .and_then(|d| serde_json::from_value(d).ok()),
                sealed_secret: row.get(3),
                previous: previous.zip(until),
                headers: serde_json::from_value(headers).unwrap_or_default(),
                sealed_ed25519: row.get(8),
            });
            for pattern in row.get::<_, Vec<String>>(4) {
                snapshot
                    .by_pattern
                    .entry((tenant.clone(), pattern))
                    .or_default()
                    .push(subscriber.clone());
            }
        }
        if let Ok(mut current) = self.snapshot.write() {
            *current = Arc::new(snapshot);
        }
        Ok(())
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
    pub async fn maintain(self: Arc<Self>, database_url: String, cancel: CancellationToken) {
        changes::keep_fresh(
            "subscription index",
            &database_url,
            CHANNEL,
            &self.changed,
            &cancel,
            || self.reload(),
        )
        .await;
    }
}
