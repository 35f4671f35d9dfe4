//! The delivery task: one event for one endpoint, as the router hands it to
//! the worker fleet.
//!
//! On the wire the AMQP body is the payload, untouched, and the task's
//! metadata is JSON in the [`crate::headers::META`] header.

use serde::{Deserialize, Serialize};

use crate::domain::EventType;
use crate::ids::{DeliveryId, EndpointId, EventId};
use crate::ordering::{LaneTask, OrderingKey};
use crate::registry::DeliveryTarget;

/// One event for one endpoint: what a worker needs to send it, sign it and
/// record the attempt, without asking anyone (workers need only RabbitMQ).
/// The router makes one per subscribed endpoint, a replay or recovery one
/// per endpoint it resends to, both with [`DeliveryTask::new`]; each retry
/// republishes it with `attempt` one higher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryTask {
    pub delivery_id: DeliveryId,
    pub event_id: EventId,
    pub tenant: String,
    pub event_type: EventType,
    pub endpoint_id: EndpointId,
    pub url: String,
    /// The signing secrets in effect, newest first, each sealed for this
    /// endpoint (see `hookfleet_signing::Sealer`); never plaintext.
    pub sealed_secrets: Vec<String>,
    /// The endpoint's ed25519 key for `v1a` signatures, sealed like the
    /// secrets (context `<endpoint id>#ed25519`), when it has one.
    #[serde(default)]
    pub sealed_ed25519: Option<String>,
    /// The endpoint's custom headers, sent with the webhook: one entry,
    /// [`SEALED_HEADERS`], holding them sealed.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// 1 for the first try; incremented each time the task is rescheduled.
    pub attempt: u32,
    /// The attempt this retry chain started at: 1 for the scheduled chain;
    /// a replay starts a new chain after the attempts made before it, and
    /// the retry schedule counts from there.
    #[serde(default = "first_attempt")]
    pub chain_start: u32,
    /// Why the chain started: on schedule, or a manual replay.
    #[serde(default)]
    pub trigger: Trigger,
    /// When the event was accepted, milliseconds since the epoch.
    pub event_created_at: i64,
    /// The endpoint's `updated_at` (milliseconds) in the registry the task
    /// was made from: a worker whose registry view is older than this
    /// trusts the task (see the worker's `registry_view`). 0 when unknown.
    #[serde(default)]
    pub endpoint_version: i64,
    /// Where to deliver instead of `url`, for an endpoint that is not a
    /// URL (tasks from before destinations existed have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<crate::Destination>,
    /// The lane this task is decided in (an ordered endpoint and a keyed
    /// event, or a rate-limited endpoint); `None` for the deliver queue.
    /// Its retries come back to the same lane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lane: Option<crate::LaneTask>,
}

fn first_attempt() -> u32 {
    1
}

/// The routing key delivery tasks for the deliver queue carry on the
/// deliver exchange (and after the delay bits in the delay levels).
pub const TASK_ROUTING_KEY: &str = "task";

/// The routing key of lane `lane`'s tasks on the deliver exchange.
pub fn lane_routing_key(lane: u16) -> String {
    format!("lane.{lane}")
}

/// How many retry queues there are. Fixed, like [`crate::LANES`]: the
/// queue count does not grow with the number of endpoints (DESIGN.md
/// invariant 5), and every worker must agree on it.
pub const RETRY_QUEUES: u16 = 16;

/// The retry queue a delivery's retries come back to: by hash of its id,
/// so every copy of one retry reaches the same queue, whose single active
/// consumer can tell a copy it has already handled (see the worker's
/// `retry_queue`).
pub fn retry_queue_of(delivery_id: &DeliveryId) -> u16 {
    (crate::ordering::fnv1a(&[delivery_id.as_str().as_bytes()]) % u64::from(RETRY_QUEUES)) as u16
}

/// The routing key of retry queue `queue`'s tasks on the deliver exchange.
pub fn retry_routing_key(queue: u16) -> String {
    format!("retry.{queue}")
}

/// What started a delivery's attempts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The event was routed to the endpoint.
    #[default]
    Scheduled,
    /// Someone asked for the event to be sent again.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Manual => "manual",
        }
    }
}

/// The one key of an endpoint's custom headers as stored and carried: its
/// value is the whole name-to-value map, sealed (context
/// [`headers_context`]). No header can be named so (`:` is not allowed in
/// a name), so a map holding it is never a tenant's own. A map without it
/// is plaintext, as tasks made before headers were sealed are.
pub const SEALED_HEADERS: &str = ":sealed";

/// The sealing context of an endpoint's custom headers.
pub fn headers_context(endpoint_id: &str) -> String {
    format!("{endpoint_id}#headers")
}

/// The sealing context of an endpoint's ed25519 key at rest (in Postgres).
pub fn ed25519_context(endpoint_id: &str) -> String {
    format!("{endpoint_id}#ed25519")
}

/// The sealing context of the signing secrets a delivery task carries: the
/// tenant, the endpoint and the URL, so a secret copied into a task with
/// another URL (or for another tenant or endpoint) does not open and the
/// worker signs nothing (issue 16, item 4). At rest in Postgres the
/// context stays the endpoint id: the row binds the rest.
///
/// The parts are joined with NUL, which none of them can contain, so two
/// different triples never give the same context.
pub fn task_secret_context(tenant: &str, endpoint_id: &str, url: &str) -> String {
    format!("task.v2\0{tenant}\0{endpoint_id}\0{url}")
}

/// What a task's secrets are bound to besides its tenant and endpoint (the
/// `url` of [`task_secret_context`]): the URL, or for an AMQP destination
/// (whose task has no URL) its exchange, routing key and sealed broker URL
/// if it has one, so a task copied with another destination (or with its
/// broker URL swapped or removed) does not open either.
pub fn task_address(url: &str, destination: Option<&crate::Destination>) -> String {
    match destination {
        None => url.to_owned(),
        Some(crate::Destination::Amqp {
            exchange,
            routing_key,
            sealed_url: None,
        }) => format!("amqp:{exchange}\0{routing_key}"),
        Some(crate::Destination::Amqp {
            exchange,
            routing_key,
            sealed_url: Some(sealed),
        }) => format!("amqp:{exchange}\0{routing_key}\0{sealed}"),
    }
}

/// [`task_secret_context`] for the task's ed25519 key.
pub fn task_ed25519_context(tenant: &str, endpoint_id: &str, url: &str) -> String {
    format!("{}#ed25519", task_secret_context(tenant, endpoint_id, url))
}

/// The endpoint a task goes to, as the registry has it when the task is
/// made: its delivery target with every secret that may still sign
/// (sealed for the task context), and what decides its lane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub endpoint_id: EndpointId,
    /// The endpoint's `updated_at` (milliseconds) in the registry the
    /// target was read from; 0 when unknown.
    pub endpoint_version: i64,
    /// Where and how to deliver, as the registry broadcast carries it.
    pub delivery: DeliveryTarget,
    /// Deliver in order per ordering key.
    pub ordered: bool,
    /// Attempts per second at most, fleet-wide.
    pub rate_limit: Option<u32>,
}

/// The event a task carries, as far as the task needs it.
#[derive(Debug, Clone, Copy)]
pub struct TaskEvent<'a> {
    pub tenant: &'a str,
    pub event_id: &'a EventId,
    pub event_type: &'a EventType,
    pub created_at: i64,
    /// Its tasks for ordered endpoints take this key's lane.
    pub ordering_key: Option<&'a OrderingKey>,
}

/// Where a task's retry chain starts, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// 1 when routed; after the attempts made so far, for a replay.
    pub first_attempt: u32,
    pub trigger: Trigger,
}

impl Chain {
    /// The scheduled chain of a routed event.
    pub const ROUTED: Self = Self {
        first_attempt: 1,
        trigger: Trigger::Scheduled,
    };

    /// A manual resend, recorded as attempt `attempt` of its delivery.
    pub fn manual(attempt: u32) -> Self {
        Self {
            first_attempt: attempt,
            trigger: Trigger::Manual,
        }
    }
}

impl DeliveryTask {
    /// The task that sends `event` to `target` at `now_millis`: the one
    /// way a task is made. The delivery id is derived, so the same event
    /// and endpoint always make the same delivery; the task carries the
    /// secrets that sign at `now_millis`; an ordered or rate-limited
    /// endpoint's task takes its lane.
    pub fn new(event: TaskEvent<'_>, target: &Target, now_millis: i64, chain: Chain) -> Self {
        let delivery = &target.delivery;
        Self {
            delivery_id: DeliveryId::derive(event.tenant, event.event_id, &target.endpoint_id),
            event_id: event.event_id.clone(),
            tenant: event.tenant.to_owned(),
            event_type: event.event_type.clone(),
            endpoint_id: target.endpoint_id.clone(),
            url: delivery.url.clone(),
            sealed_secrets: delivery.secrets_at(now_millis),
            sealed_ed25519: delivery.sealed_ed25519.clone(),
            headers: delivery.headers.clone(),
            attempt: chain.first_attempt,
            chain_start: chain.first_attempt,
            trigger: chain.trigger,
            event_created_at: event.created_at,
            destination: delivery.destination.clone(),
            endpoint_version: target.endpoint_version,
            lane: LaneTask::assign(
                target.endpoint_id.as_str(),
                target.ordered,
                target.rate_limit,
                event.ordering_key,
            ),
        }
    }

    /// The context this task's sealed secrets must open with.
    pub fn secret_context(&self) -> String {
        task_secret_context(&self.tenant, self.endpoint_id.as_str(), &self.address())
    }

    /// The context this task's sealed ed25519 key must open with.
    pub fn ed25519_context(&self) -> String {
        task_ed25519_context(&self.tenant, self.endpoint_id.as_str(), &self.address())
    }

    /// Where the task goes, as its secrets are bound to it
    /// ([`task_address`]).
    pub fn address(&self) -> String {
        task_address(&self.url, self.destination.as_ref())
    }

    /// The attempt's place in its retry chain: 1 for the chain's first.
    pub fn chain_attempt(&self) -> u32 {
        self.attempt.saturating_sub(self.chain_start) + 1
    }

    /// The routing key on the deliver exchange (after the delay bits, for
    /// a retry): its lane's, or the deliver queue's.
    pub fn routing_key(&self) -> String {
        match &self.lane {
            Some(lane) => lane_routing_key(lane.lane),
            None => TASK_ROUTING_KEY.to_owned(),
        }
    }

    /// The routing key of this task's next retry: its lane's, or its
    /// retry queue's. A task deferred without an attempt (breaker, limits)
    /// goes back by [`Self::routing_key`] instead: it is the same attempt,
    /// which the retry queue would take for a copy already handled.
    pub fn retry_routing_key(&self) -> String {
        match &self.lane {
            Some(lane) => lane_routing_key(lane.lane),
            None => retry_routing_key(retry_queue_of(&self.delivery_id)),
        }
    }

    pub fn to_meta_json(&self) -> String {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_meta_json(raw: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_bound_to_the_destination_too() {
        let amqp = |exchange: &str| crate::Destination::Amqp {
            exchange: exchange.into(),
            routing_key: "{type}".into(),
            sealed_url: None,
        };
        let a = task_address("", Some(&amqp("orders")));
        assert_ne!(a, task_address("", Some(&amqp("billing"))));
        assert_ne!(a, task_address("", None));
        let elsewhere = crate::Destination::Amqp {
            exchange: "orders".into(),
            routing_key: "{type}".into(),
            sealed_url: Some("v1.sealed".into()),
        };
        assert_ne!(a, task_address("", Some(&elsewhere)));
        assert_eq!(
            task_address("https://x.example/h", None),
            "https://x.example/h"
        );
    }

    fn target(ordered: bool, rate_limit: Option<u32>) -> Target {
        Target {
            endpoint_id: EndpointId::from_stored("ep_1".into()),
            endpoint_version: 7,
            delivery: DeliveryTarget {
                url: "https://example.com/h".into(),
                secrets: vec![
                    crate::SealedSecret {
                        sealed: "new".into(),
                        valid_until: None,
                    },
                    crate::SealedSecret {
                        sealed: "old".into(),
                        valid_until: Some(1_000),
                    },
                ],
                sealed_ed25519: None,
                headers: [("x-a".to_owned(), "1".to_owned())].into(),
                destination: None,
            },
            ordered,
            rate_limit,
        }
    }

    #[test]
    fn the_constructor_derives_the_delivery_and_picks_the_secrets_and_lane() {
        let event_id = EventId::parse("evt_1").unwrap();
        let event_type = EventType::parse("order.created").unwrap();
        let key = OrderingKey::parse("customer-9").unwrap();
        let event = TaskEvent {
            tenant: "acme",
            event_id: &event_id,
            event_type: &event_type,
            created_at: 42,
            ordering_key: Some(&key),
        };
        let routed = DeliveryTask::new(event, &target(false, None), 999, Chain::ROUTED);
        let endpoint = EndpointId::from_stored("ep_1".into());
        assert_eq!(
            routed.delivery_id,
            DeliveryId::derive("acme", &event_id, &endpoint)
        );
        assert_eq!(routed.sealed_secrets, vec!["new", "old"]);
        assert_eq!((routed.attempt, routed.chain_start), (1, 1));
        assert_eq!(routed.trigger, Trigger::Scheduled);
        assert_eq!(routed.endpoint_version, 7);
        assert_eq!(routed.event_created_at, 42);
        assert_eq!(routed.headers["x-a"], "1");
        // Neither ordered nor rate-limited: the deliver queue.
        assert_eq!(routed.lane, None);

        // A replay after the grace period: the old secret no longer signs,
        // and the chain starts at the reserved attempt.
        let ordered = DeliveryTask::new(event, &target(true, None), 1_000, Chain::manual(4));
        assert_eq!(ordered.sealed_secrets, vec!["new"]);
        assert_eq!((ordered.attempt, ordered.chain_start), (4, 4));
        assert_eq!(ordered.chain_attempt(), 1);
        assert_eq!(ordered.trigger, Trigger::Manual);
        // The same delivery as the routed task: replays record under it.
        assert_eq!(ordered.delivery_id, routed.delivery_id);
        let lane = ordered
            .lane
            .clone()
            .expect("an ordered endpoint and a keyed event");
        assert_eq!(lane.ordering_key, Some(key.clone()));
        assert_eq!(ordered.routing_key(), lane_routing_key(lane.lane));

        let limited = DeliveryTask::new(event, &target(false, Some(5)), 0, Chain::ROUTED);
        assert_eq!(limited.lane.map(|l| l.rate_limit), Some(Some(5)));
    }

    #[test]
    fn a_task_from_before_destinations_still_parses() {
        let old = r#"{"delivery_id": "dlv_1", "event_id": "evt_1", "tenant": "acme",
            "event_type": "a.b", "endpoint_id": "ep_1", "url": "https://example.com/h",
            "sealed_secrets": ["v1.x"], "attempt": 1, "event_created_at": 0}"#;
        let task = DeliveryTask::from_meta_json(old).unwrap();
        assert_eq!(task.destination, None);
        // And a task without a destination is written as before.
        assert!(!task.to_meta_json().contains("destination"));
    }

    #[test]
    fn a_retry_goes_to_its_deliverys_retry_queue_or_its_lane() {
        let raw = r#"{"delivery_id": "dlv_1", "event_id": "evt_1", "tenant": "acme",
            "event_type": "a.b", "endpoint_id": "ep_1", "url": "https://example.com/h",
            "sealed_secrets": ["v1.x"], "attempt": 1, "event_created_at": 0}"#;
        let mut task = DeliveryTask::from_meta_json(raw).unwrap();
        let id = |raw: String| serde_json::from_value::<DeliveryId>(raw.into()).unwrap();
        let queue = retry_queue_of(&task.delivery_id);
        assert!(queue < RETRY_QUEUES);
        // Stable: every worker, every release, sends one delivery's
        // retries (and any copy of one) to the same queue.
        assert_eq!(queue, retry_queue_of(&id("dlv_1".to_owned())));
        assert_eq!(task.retry_routing_key(), format!("retry.{queue}"));
        // A deferred task is not a retry: back to the deliver queue.
        assert_eq!(task.routing_key(), TASK_ROUTING_KEY);
        task.lane = Some(crate::LaneTask {
            lane: 3,
            ordering_key: None,
            rate_limit: Some(5),
        });
        assert_eq!(task.retry_routing_key(), "lane.3");
        // Delivery ids spread over the queues.
        let used: std::collections::BTreeSet<u16> = (0..200)
            .map(|n| retry_queue_of(&id(format!("dlv_{n}"))))
            .collect();
        assert_eq!(used.len(), usize::from(RETRY_QUEUES));
    }
}
