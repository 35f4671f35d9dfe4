//! The worker's view of the endpoint registry, learnt from the producers'
//! broadcasts (see `hookfleet_producer::broadcast`), so that a task made
//! before its endpoint changed is not sent as it was (DESIGN.md "Trust":
//! the registry is the truth) while the worker still needs only RabbitMQ
//! (invariant 3).
//!
//! What a task gets, given the latest complete snapshot:
//!
//! - the endpoint is disabled: **cancelled**, recorded in the ledger as a
//!   `cancelled` attempt with the reason, and not sent. A recovery after
//!   enabling the endpoint sends it again.
//! - the endpoint is deleted (the snapshot lists the last 30 days'
//!   deletions), or absent while its id says it was created well before
//!   the snapshot: **cancelled** likewise.
//! - the endpoint is enabled: the task goes to its **current** URL, signed
//!   with its current secrets (and a rotated-out one only within its
//!   grace), with its current custom headers. A receiver that moved or
//!   rotated its secret is what the user meant, and pending retries keep
//!   flowing; "not at all" would drop every retry in flight at each
//!   rotation or URL fix. The current secrets are sealed for the current
//!   URL, so a forged broadcast cannot aim them elsewhere.
//! - the task is newer than the snapshot's entry (`endpoint_version`), or
//!   the worker has no snapshot yet: sent as the task says.
//!
//! The window: a worker acts on a change once the broadcast reaches it.
//! The API broadcasts before it answers, so a retry due after a `DELETE`
//! or `disable` answered is cancelled; the ledger's own disabling (410,
//! failing too long) reaches workers after the producers' next index
//! reload, within a second or so. A worker that starts, or reconnects,
//! after a change learns it from the next periodic snapshot
//! (`endpoints.broadcast_every`, 15 s), and until then sends what tasks
//! say. If no producer runs, views do not change, and neither can the
//! registry through the API.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use hookfleet_config::AmqpSettings;
use hookfleet_contract::{
    ATTEMPT_OUTCOMES_KIND, AttemptId, AttemptOutcome, AttemptResult, DeliveryTask, EndpointId,
    EndpointState, EndpointStatus, REGISTRY_CHANGE_KIND, REGISTRY_SNAPSHOT_KIND, RegistrySnapshot,
};
use hookfleet_topology::{Link, PublishError, Publisher, Topology, supervise};
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

/// How long before a snapshot an endpoint must have been created for its
/// absence to mean it was deleted: covers the time between making an id
/// and committing its row, and clock skew between hosts.
const CREATION_MARGIN_MS: i64 = 60_000;

/// What to do with a task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send it as it is.
    Send(DeliveryTask),
    /// Send it to the endpoint's current target (the task has been
    /// rewritten; its secrets must be opened again).
    Retarget(DeliveryTask),
    /// Do not send it; record why.
    Cancel(Cancelled),
}

/// A task that will not be sent, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cancelled {
    pub task: DeliveryTask,
    pub reason: String,
}

/// The endpoints of one snapshot, kept small: most endpoints were never
/// changed since they were made (`Enabled { target: None }`), and every
/// task for one already says where it goes, so all the view needs of them
/// is that they exist, for which tenant, and their version. Those are kept
/// as hashes (about 40 bytes each instead of a few hundred; scenario e's
/// 100,000 endpoints made a worker hold 184 MiB when each was a whole
/// `EndpointState`); the rest whole.
#[derive(Debug, Default)]
struct Entries {
    /// Hash of the endpoint id -> (hash of the tenant, version).
    untouched: HashMap<u64, (u64, i64)>,
    changed: HashMap<EndpointId, EndpointState>,
}

impl Entries {
    fn insert(&mut self, hasher: &RandomState, state: EndpointState) {
        if let EndpointStatus::Enabled { target: None } = state.status {
            self.untouched.insert(
                hasher.hash_one(&state.endpoint_id),
                (hasher.hash_one(&state.tenant), state.version),
            );
        } else {
            self.changed.insert(state.endpoint_id.clone(), state);
        }
    }

    fn get(&self, hasher: &RandomState, endpoint_id: &EndpointId) -> Option<Entry<'_>> {
        if let Some(state) = self.changed.get(endpoint_id) {
            return Some(Entry::Whole(state));
        }
        self.untouched
            .get(&hasher.hash_one(endpoint_id))
            .map(|&(tenant, version)| Entry::Untouched { tenant, version })
    }
}

/// What a snapshot or a change says of one endpoint.
#[derive(Debug, Clone, Copy)]
enum Entry<'a> {
    Whole(&'a EndpointState),
    /// Enabled and never changed since it was made.
    Untouched {
        tenant: u64,
        version: i64,
    },
}

impl Entry<'_> {
    fn version(&self) -> i64 {
        match self {
            Entry::Whole(state) => state.version,
            Entry::Untouched { version, .. } => *version,
        }
    }
}

/// One whole snapshot.
#[derive(Debug, Default)]
struct Complete {
    taken_at: i64,
    entries: Entries,
}

/// Pages of a snapshot still arriving, compacted as they come.
#[derive(Debug)]
struct Partial {
    taken_at: i64,
    arrived: Vec<bool>,
    entries: Entries,
}

#[derive(Debug, Default)]
pub struct RegistryView {
    /// Keyed at random per process, so an endpoint id cannot be chosen to
    /// collide with another's.
    hasher: RandomState,
    current: RwLock<Option<Arc<Complete>>>,
    assembling: std::sync::Mutex<HashMap<String, Partial>>,
    /// Single changes newer than the current snapshot.
    changes: std::sync::Mutex<HashMap<EndpointId, EndpointState>>,
}

impl RegistryView {
    /// Takes in one page; once every page of a snapshot newer than the
    /// current one is in, it becomes current.
    pub fn apply(&self, page: RegistrySnapshot) {
        let current_at = self.taken_at().unwrap_or(i64::MIN);
        if page.taken_at < current_at || page.pages == 0 || page.page >= page.pages {
            return;
        }
        let Ok(mut assembling) = self.assembling.lock() else {
            return;
        };
        // Snapshots older than the current one will never be used.
        assembling.retain(|_, p| p.taken_at >= current_at);
        let partial = assembling
            .entry(page.id.clone())
            .or_insert_with(|| Partial {
                taken_at: page.taken_at,
                arrived: vec![false; page.pages as usize],
                entries: Entries::default(),
            });
        let Some(arrived) = partial.arrived.get_mut(page.page as usize) else {
            return;
        };
        *arrived = true;
        for state in page.endpoints {
            partial.entries.insert(&self.hasher, state);
        }
        if partial.arrived.iter().all(|&a| a) {
            let Some(done) = assembling.remove(&page.id) else {
                return;
            };
            let complete = Complete {
                taken_at: done.taken_at,
                entries: done.entries,
            };
            if let Ok(mut current) = self.current.write()
                && current
                    .as_ref()
                    .is_none_or(|c| c.taken_at <= complete.taken_at)
            {
                if let Ok(mut changes) = self.changes.lock() {
                    changes.retain(|_, change| change.version > complete.taken_at);
                }
                *current = Some(Arc::new(complete));
            }
        }
    }

    /// When the current snapshot was taken, if there is one.
    pub fn taken_at(&self) -> Option<i64> {
        self.current
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.taken_at))
    }

    /// Takes in one endpoint's change, broadcast on its own between
    /// snapshots (the ledger disabling an endpoint); it counts until a
    /// snapshot taken after it arrives.
    pub fn apply_change(&self, change: EndpointState) {
        if let Ok(mut changes) = self.changes.lock() {
            let newer = changes
                .get(&change.endpoint_id)
                .is_none_or(|known| known.version <= change.version);
            if newer {
                changes.insert(change.endpoint_id.clone(), change);
            }
        }
    }

    /// What to do with `task` at `now_millis`.
    pub fn verdict(&self, task: DeliveryTask, now_millis: i64) -> Verdict {
        let current = self.current.read().ok().and_then(|c| c.clone());
        let changed = self
            .changes
            .lock()
            .ok()
            .and_then(|c| c.get(&task.endpoint_id).cloned());
        let listed = current
            .as_ref()
            .and_then(|c| c.entries.get(&self.hasher, &task.endpoint_id));
        let entry = match (listed, changed.as_ref()) {
            (Some(listed), Some(changed)) if listed.version() > changed.version => Some(listed),
            (_, Some(changed)) => Some(Entry::Whole(changed)),
            (listed, None) => listed,
        };
        let tenant_matches = match entry {
            Some(Entry::Untouched { tenant, .. }) => tenant == self.hasher.hash_one(&task.tenant),
            Some(Entry::Whole(state)) => state.tenant == task.tenant,
            None => true,
        };
        judge(
            entry,
            tenant_matches,
            current.as_ref().map(|c| c.taken_at),
            task,
            now_millis,
        )
    }
}

/// The verdict on `task` given what the newest news says of its endpoint
/// (`entry`), whether it names the task's tenant, and when the current
/// snapshot was taken, if there is one.
fn judge(
    entry: Option<Entry<'_>>,
    tenant_matches: bool,
    taken_at: Option<i64>,
    mut task: DeliveryTask,
    now_millis: i64,
) -> Verdict {
    let cancel = |task: DeliveryTask, reason: String| Verdict::Cancel(Cancelled { task, reason });
    let Some(entry) = entry else {
        let made_before = task
            .endpoint_id
            .created_at_millis()
            .zip(taken_at)
            .is_some_and(|(made, taken_at)| made < taken_at - CREATION_MARGIN_MS);
        return if made_before {
            cancel(task, "the endpoint was deleted".into())
        } else {
            Verdict::Send(task)
        };
    };
    if !tenant_matches {
        return cancel(
            task,
            "the task names another tenant than the endpoint's".into(),
        );
    }
    let entry = match entry {
        // Never changed since it was made: the task says it all.
        Entry::Untouched { .. } => return Verdict::Send(task),
        Entry::Whole(entry) => entry,
    };
    if task.endpoint_version > entry.version {
        // Made from a newer registry than this snapshot.
        return Verdict::Send(task);
    }
    match &entry.status {
        EndpointStatus::Deleted => cancel(task, "the endpoint was deleted".into()),
        EndpointStatus::Disabled { reason } => {
            let reason = match reason {
                Some(reason) => format!("the endpoint is disabled: {reason}"),
                None => "the endpoint is disabled".to_owned(),
            };
            cancel(task, reason)
        }
        EndpointStatus::Enabled { target: None } => Verdict::Send(task),
        EndpointStatus::Enabled {
            target: Some(target),
        } => {
            let secrets = target.secrets_at(now_millis);
            // Made from this very version, and no secret expired since.
            if task.endpoint_version == entry.version
                && task.url == target.url
                && task.destination == target.destination
                && task.sealed_secrets.len() == secrets.len()
            {
                return Verdict::Send(task);
            }
            task.url = target.url.clone();
            task.destination = target.destination.clone();
            task.sealed_secrets = secrets;
            task.sealed_ed25519 = target.sealed_ed25519.clone();
            task.headers = target.headers.clone();
            task.endpoint_version = entry.version;
            Verdict::Retarget(task)
        }
    }
}

/// Follows the registry broadcast until `cancel` fires: a private queue
/// bound to the registry exchange, on a connection of its own, redeclared
/// after every reconnect.
pub async fn follow(view: Arc<RegistryView>, settings: AmqpSettings, cancel: CancellationToken) {
    let topology = Topology::from_settings(&settings);
    let session_cancel = cancel.clone();
    supervise(
        &settings,
        "hookfleet-worker-registry",
        Link::default(),
        cancel,
        |connection: Arc<Connection>, _publisher: Publisher| {
            let view = view.clone();
            let topology = topology.clone();
            let cancel = session_cancel.clone();
            async move { consume(&connection, &topology, &view, &cancel).await }
        },
    )
    .await;
}

async fn consume(
    connection: &Connection,
    topology: &Topology,
    view: &RegistryView,
    cancel: &CancellationToken,
) -> lapin::Result<()> {
    let channel = connection.create_channel().await?;
    let queue = topology.declare_registry_view(&channel).await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => {
                let _ = channel.close(200, "bye".into()).await;
                return Ok(());
            }
            next = consumer.next() => match next {
                Some(Ok(message)) => take(view, &message),
                Some(Err(error)) => return Err(error),
                None => return Err(lapin::Error::from(lapin::ErrorKind::InvalidChannelState(
                    lapin::ChannelState::Closed,
                    "consumer ended",
                ))),
            },
        }
    }
}

fn take(view: &RegistryView, message: &Delivery) {
    match message.properties.kind().as_ref().map(|k| k.as_str()) {
        Some(REGISTRY_SNAPSHOT_KIND) => {
            match serde_json::from_slice::<RegistrySnapshot>(&message.data) {
                Ok(page) => view.apply(page),
                Err(error) => {
                    tracing::warn!(%error, "a registry snapshot page does not parse; ignored")
                }
            }
        }
        Some(REGISTRY_CHANGE_KIND) => {
            match serde_json::from_slice::<EndpointState>(&message.data) {
                Ok(change) => view.apply_change(change),
                Err(error) => tracing::warn!(%error, "a registry change does not parse; ignored"),
            }
        }
        _ => {}
    }
}

/// Records a cancelled task's outcome in the ledger, confirmed.
pub(crate) async fn record(
    publisher: &Publisher,
    topology: &Topology,
    cancelled: &Cancelled,
) -> Result<(), PublishError> {
    let task = &cancelled.task;
    let outcome = AttemptOutcome {
        attempt_id: AttemptId::derive(&task.delivery_id, task.attempt),
        delivery_id: task.delivery_id.clone(),
        event_id: task.event_id.clone(),
        endpoint_id: task.endpoint_id.clone(),
        tenant: task.tenant.clone(),
        event_created_at: task.event_created_at,
        attempt: task.attempt,
        result: AttemptResult::Cancelled,
        status_code: None,
        error: Some(format!("not sent: {}", cancelled.reason)),
        response_excerpt: None,
        started_at: hookfleet_contract::now_millis(),
        duration_ms: 0,
        next_attempt_at: None,
        endpoint_gone: false,
        trigger: task.trigger,
        traceparent: hookfleet_telemetry::traceparent(),
    };
    let body = serde_json::to_vec(&outcome).unwrap_or_default();
    publisher
        .record(&topology.ledger_exchange(), ATTEMPT_OUTCOMES_KIND, body)
        .await
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use hookfleet_contract::{
        DeliveryId, DeliveryTarget, EventId, EventType, SealedSecret, Trigger, now_millis,
    };

    use super::*;

    fn task(endpoint: &EndpointId, version: i64) -> DeliveryTask {
        DeliveryTask {
            delivery_id: DeliveryId::derive("acme", &EventId::parse("e1").unwrap(), endpoint),
            event_id: EventId::parse("e1").unwrap(),
            tenant: "acme".into(),
            event_type: EventType::parse("a.b").unwrap(),
            endpoint_id: endpoint.clone(),
            url: "https://old.example/h".into(),
            sealed_secrets: vec!["old".into()],
            sealed_ed25519: None,
            headers: BTreeMap::new(),
            attempt: 2,
            chain_start: 1,
            trigger: Trigger::Scheduled,
            event_created_at: 1,
            endpoint_version: version,
            destination: None,
            lane: None,
        }
    }

    fn enabled(endpoint: &EndpointId, version: i64, url: &str) -> EndpointState {
        EndpointState {
            endpoint_id: endpoint.clone(),
            tenant: "acme".into(),
            version,
            status: EndpointStatus::Enabled {
                target: Some(DeliveryTarget {
                    url: url.into(),
                    secrets: vec![
                        SealedSecret {
                            sealed: "new".into(),
                            valid_until: None,
                        },
                        SealedSecret {
                            sealed: "expired".into(),
                            valid_until: Some(5),
                        },
                    ],
                    sealed_ed25519: None,
                    headers: BTreeMap::new(),
                    destination: None,
                }),
            },
        }
    }

    fn snapshot(
        id: &str,
        taken_at: i64,
        page: u32,
        pages: u32,
        e: Vec<EndpointState>,
    ) -> RegistrySnapshot {
        RegistrySnapshot {
            id: id.into(),
            taken_at,
            page,
            pages,
            endpoints: e,
        }
    }

    #[test]
    fn without_a_snapshot_the_task_goes_as_it_is() {
        let view = RegistryView::default();
        let ep = EndpointId::generate();
        assert_eq!(view.verdict(task(&ep, 1), 10), Verdict::Send(task(&ep, 1)));
    }

    #[test]
    fn a_snapshot_counts_only_once_every_page_is_in_and_never_goes_back() {
        let view = RegistryView::default();
        let ep = EndpointId::generate();
        view.apply(snapshot("s2", 2_000, 1, 2, vec![]));
        assert_eq!(view.taken_at(), None);
        view.apply(snapshot(
            "s2",
            2_000,
            0,
            2,
            vec![enabled(&ep, 1, "https://a")],
        ));
        assert_eq!(view.taken_at(), Some(2_000));
        // An older snapshot arriving late changes nothing.
        view.apply(snapshot("s1", 1_000, 0, 1, vec![]));
        assert_eq!(view.taken_at(), Some(2_000));
        assert!(matches!(
            view.verdict(task(&ep, 1), 10),
            Verdict::Retarget(_)
        ));
    }

    #[test]
    fn disabled_and_deleted_endpoints_cancel_the_task() {
        let view = RegistryView::default();
        let gone = EndpointId::generate();
        let off = EndpointId::generate();
        let mut disabled = enabled(&off, 3, "https://a");
        disabled.status = EndpointStatus::Disabled {
            reason: Some("by the API".into()),
        };
        let later = now_millis() + 2 * CREATION_MARGIN_MS;
        let fresh = EndpointId::generate();
        let tombstone = EndpointState {
            endpoint_id: fresh.clone(),
            tenant: "acme".into(),
            version: later,
            status: EndpointStatus::Deleted,
        };
        view.apply(snapshot("s", later, 0, 1, vec![disabled, tombstone]));
        // Deleted right after it was made: the tombstone says so.
        assert!(matches!(
            view.verdict(task(&fresh, 1), later),
            Verdict::Cancel(_)
        ));
        let Verdict::Cancel(c) = view.verdict(task(&gone, 1), later) else {
            panic!("a deleted endpoint's task was not cancelled");
        };
        assert_eq!(c.reason, "the endpoint was deleted");
        let Verdict::Cancel(c) = view.verdict(task(&off, 3), later) else {
            panic!("a disabled endpoint's task was not cancelled");
        };
        assert_eq!(c.reason, "the endpoint is disabled: by the API");
        // Re-enabled after the snapshot: the task is newer, it goes.
        assert!(matches!(
            view.verdict(task(&off, 4), later),
            Verdict::Send(_)
        ));
    }

    #[test]
    fn a_single_change_counts_until_a_newer_snapshot() {
        let view = RegistryView::default();
        let ep = EndpointId::generate();
        let mut disabled = enabled(&ep, 10, "https://a");
        disabled.status = EndpointStatus::Disabled {
            reason: Some("410".into()),
        };
        // No snapshot yet: the change alone decides.
        view.apply_change(disabled);
        assert!(matches!(view.verdict(task(&ep, 5), 0), Verdict::Cancel(_)));
        // An older snapshot does not undo it.
        view.apply(snapshot("s1", 5, 0, 1, vec![enabled(&ep, 4, "https://a")]));
        assert!(matches!(view.verdict(task(&ep, 4), 0), Verdict::Cancel(_)));
        // A newer one (re-enabled since) does.
        view.apply(snapshot(
            "s2",
            20,
            0,
            1,
            vec![enabled(&ep, 15, "https://a")],
        ));
        assert!(matches!(
            view.verdict(task(&ep, 15), 0),
            Verdict::Retarget(_)
        ));
    }

    #[test]
    fn an_endpoint_created_just_before_the_snapshot_is_not_taken_for_deleted() {
        let view = RegistryView::default();
        let new = EndpointId::generate();
        view.apply(snapshot("s", now_millis(), 0, 1, vec![]));
        assert!(matches!(view.verdict(task(&new, 1), 0), Verdict::Send(_)));
        let foreign = EndpointId::parse("ep_custom").unwrap();
        assert!(matches!(
            view.verdict(task(&foreign, 1), 0),
            Verdict::Send(_)
        ));
    }

    #[test]
    fn an_untouched_endpoint_is_kept_as_hashes_and_still_checked_for_its_tenant() {
        let view = RegistryView::default();
        let ep = EndpointId::generate();
        let later = now_millis() + 2 * CREATION_MARGIN_MS;
        let untouched = EndpointState {
            endpoint_id: ep.clone(),
            tenant: "acme".into(),
            version: 1,
            status: EndpointStatus::Enabled { target: None },
        };
        view.apply(snapshot("s", later, 0, 1, vec![untouched]));
        let current = view.current.read().unwrap().clone().unwrap();
        assert_eq!(current.entries.untouched.len(), 1);
        assert!(current.entries.changed.is_empty());
        // Listed, so not taken for deleted although made long before.
        assert_eq!(
            view.verdict(task(&ep, 1), later),
            Verdict::Send(task(&ep, 1))
        );
        let mut foreign = task(&ep, 1);
        foreign.tenant = "mallory".into();
        let Verdict::Cancel(c) = view.verdict(foreign, later) else {
            panic!("another tenant's task for an untouched endpoint was sent");
        };
        assert_eq!(
            c.reason,
            "the task names another tenant than the endpoint's"
        );
    }

    #[test]
    fn a_moved_or_rotated_endpoint_gets_the_task_at_its_current_target() {
        let view = RegistryView::default();
        let ep = EndpointId::generate();
        view.apply(snapshot(
            "s",
            100,
            0,
            1,
            vec![enabled(&ep, 7, "https://new.example/h")],
        ));
        let Verdict::Retarget(t) = view.verdict(task(&ep, 5), 10) else {
            panic!("not retargeted");
        };
        assert_eq!(t.url, "https://new.example/h");
        // The rotated-out secret is past its grace at 10.
        assert_eq!(t.sealed_secrets, vec!["new".to_owned()]);
        assert_eq!(t.endpoint_version, 7);
        // Another tenant's task for this endpoint is refused.
        let mut foreign = task(&ep, 5);
        foreign.tenant = "mallory".into();
        assert!(matches!(view.verdict(foreign, 10), Verdict::Cancel(_)));
    }
}
