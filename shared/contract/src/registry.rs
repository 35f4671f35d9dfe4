//! The registry broadcast: the producer's view of every endpoint, published
//! on the registry fanout exchange to every worker, so that a worker (which
//! reads no Postgres, DESIGN.md invariant 3) can tell whether a task it
//! holds is still wanted, and where it must go now.
//!
//! A snapshot is taken in one statement (one MVCC snapshot) and published
//! in pages; a worker replaces its view only once it holds every page of a
//! snapshot newer than the one it has.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::EndpointId;

/// The AMQP `type` property of a [`RegistrySnapshot`] page.
pub const REGISTRY_SNAPSHOT_KIND: &str = "registry.snapshot";
/// The AMQP `type` property of one endpoint's change, an [`EndpointState`]
/// as JSON, broadcast between snapshots.
pub const REGISTRY_CHANGE_KIND: &str = "registry.change";

/// One page of a snapshot of the endpoint registry, as JSON in the body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrySnapshot {
    /// Unique per snapshot; the pages of one snapshot share it.
    pub id: String,
    /// Postgres's clock when the snapshot was read, milliseconds since the
    /// epoch. A newer snapshot replaces an older one, never the reverse.
    pub taken_at: i64,
    /// This page's number, from 0, and how many pages the snapshot has.
    pub page: u32,
    pub pages: u32,
    /// Every endpoint that exists, enabled or not, and those deleted in
    /// the last 30 days. An endpoint missing from a whole snapshot did not
    /// exist when it was taken.
    pub endpoints: Vec<EndpointState>,
}

/// One endpoint as the workers need to know it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    pub endpoint_id: EndpointId,
    pub tenant: String,
    /// The endpoint's `updated_at`, milliseconds since the epoch; tasks
    /// carry it as `endpoint_version`.
    pub version: i64,
    #[serde(flatten)]
    pub status: EndpointStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EndpointStatus {
    /// Deliveries go to this target, whatever the task says. `None` for
    /// an endpoint never changed since it was made: every task for it
    /// already says what the target would.
    Enabled { target: Option<DeliveryTarget> },
    /// Deliveries are cancelled with this reason.
    Disabled { reason: Option<String> },
    /// Deleted (`version` is when): deliveries are cancelled.
    Deleted,
}

/// Where and how an endpoint's deliveries go now. The secrets are sealed
/// for the task context of this tenant, endpoint and URL
/// ([`crate::task_secret_context`]), exactly as the router seals them into
/// tasks, so a forged broadcast cannot point a secret at another URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryTarget {
    pub url: String,
    /// Newest first.
    pub secrets: Vec<SealedSecret>,
    #[serde(default)]
    pub sealed_ed25519: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// An AMQP destination instead of `url` (which is then empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<crate::Destination>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub sealed: String,
    /// When a rotated-out secret stops signing (milliseconds since the
    /// epoch); `None` for the current secret.
    #[serde(default)]
    pub valid_until: Option<i64>,
}

impl SealedSecret {
    /// Whether the secret signs at `now_millis`: the current one always, a
    /// rotated-out one until its grace period ends. The one statement of
    /// the rule: the registry's readers (`hookfleet_db::endpoint`), tasks
    /// and workers all ask this.
    pub fn signs_at(&self, now_millis: i64) -> bool {
        self.valid_until.is_none_or(|until| until > now_millis)
    }
}

impl DeliveryTarget {
    /// The sealed secrets that sign at `now_millis`, newest first.
    pub fn secrets_at(&self, now_millis: i64) -> Vec<String> {
        self.secrets
            .iter()
            .filter(|s| s.signs_at(now_millis))
            .map(|s| s.sealed.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(sealed: &str, valid_until: Option<i64>) -> SealedSecret {
        SealedSecret {
            sealed: sealed.into(),
            valid_until,
        }
    }

    #[test]
    fn a_rotated_out_secret_signs_until_its_grace_ends() {
        let target = DeliveryTarget {
            url: "https://example.com/h".into(),
            secrets: vec![secret("new", None), secret("old", Some(1_000))],
            sealed_ed25519: None,
            headers: BTreeMap::new(),
            destination: None,
        };
        assert_eq!(target.secrets_at(999), vec!["new", "old"]);
        // The grace period ends at `valid_until`, exclusive.
        assert_eq!(target.secrets_at(1_000), vec!["new"]);
        assert_eq!(target.secrets_at(5_000), vec!["new"]);
        assert!(secret("current", None).signs_at(i64::MAX));
    }
}
