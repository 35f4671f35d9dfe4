//! The delivery task: one event for one endpoint, as the router hands it to
//! the worker fleet.
//!
//! On the wire the AMQP body is the payload, untouched, and the task's
//! metadata is JSON in the [`crate::headers::META`] header.

use serde::{Deserialize, Serialize};

use crate::ids::{DeliveryId, EndpointId, EventId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryTask {
    pub delivery_id: DeliveryId,
    pub event_id: EventId,
    pub tenant: String,
    pub event_type: String,
    pub endpoint_id: EndpointId,
    pub url: String,
    /// The signing secrets in effect, newest first, each sealed for this
    /// endpoint (see `hookfleet_signing::Sealer`); never plaintext.
    pub sealed_secrets: Vec<String>,
    /// The endpoint's ed25519 key for `v1a` signatures, sealed like the
    /// secrets (context `<endpoint id>#ed25519`), when it has one.
    #[serde(default)]
    pub sealed_ed25519: Option<String>,
    /// The endpoint's custom headers, sent with the webhook.
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
}

fn first_attempt() -> u32 {
    1
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

/// [`task_secret_context`] for the task's ed25519 key.
pub fn task_ed25519_context(tenant: &str, endpoint_id: &str, url: &str) -> String {
    format!("{}#ed25519", task_secret_context(tenant, endpoint_id, url))
}

impl DeliveryTask {
    /// The context this task's sealed secrets must open with.
    pub fn secret_context(&self) -> String {
        task_secret_context(&self.tenant, self.endpoint_id.as_str(), &self.url)
    }

    /// The context this task's sealed ed25519 key must open with.
    pub fn ed25519_context(&self) -> String {
        task_ed25519_context(&self.tenant, self.endpoint_id.as_str(), &self.url)
    }

    /// The attempt's place in its retry chain: 1 for the chain's first.
    pub fn chain_attempt(&self) -> u32 {
        self.attempt.saturating_sub(self.chain_start) + 1
    }

    pub fn to_meta_json(&self) -> String {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_meta_json(raw: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(raw)
    }
}
