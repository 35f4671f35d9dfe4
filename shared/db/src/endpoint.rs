//! The endpoint as the registry stores it (the `endpoints` table), read the
//! one way every service reads it.
//!
//! The producer's registry API writes endpoints; everything that reads
//! them to deliver (the producer's subscription index and registry
//! broadcast, the ledger's replay and recovery) reads them here: one row
//! type, one column list, and one way to turn a row into the [`Target`] a
//! delivery task is made from, its secrets resealed from the endpoint's
//! at-rest context to the task's (DESIGN.md invariant 8). Which secrets
//! sign is [`SealedSecret::signs_at`]'s rule, asked here when the target is
//! made and again when each task is.

use std::collections::BTreeMap;

use hookfleet_contract::{
    DeliveryTarget, Destination, EndpointId, SealedSecret, Target, ed25519_context, task_address,
    task_ed25519_context, task_secret_context,
};
use hookfleet_signing::{SealError, Sealer};
use tokio_postgres::{GenericClient, Row};

/// The notification channel registry changes are announced on: every
/// producer reloads its subscription index when it hears one.
pub const CHANGES_CHANNEL: &str = "hookfleet_endpoints";

/// The columns [`StoredEndpoint::from_row`] reads, in order.
pub const COLUMNS: &str = "id, tenant, COALESCE(url, ''), destination, secret, previous_secret,
    (extract(epoch FROM previous_secret_expires_at) * 1000)::int8, ed25519_key, headers,
    (extract(epoch FROM updated_at) * 1000)::int8, ordered, rate_limit, event_types";

/// One endpoint row, its secrets still sealed for the endpoint (at rest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEndpoint {
    pub id: EndpointId,
    pub tenant: String,
    /// Empty for an AMQP destination.
    pub url: String,
    pub destination: Option<Destination>,
    /// The current secret, then a rotated-out one with the end of its
    /// grace period (milliseconds since the epoch).
    pub secrets: Vec<SealedSecret>,
    pub sealed_ed25519: Option<String>,
    /// The custom headers, sealed ([`hookfleet_contract::SEALED_HEADERS`]).
    pub headers: BTreeMap<String, String>,
    /// `updated_at` in milliseconds: tasks carry it as `endpoint_version`.
    pub version: i64,
    pub ordered: bool,
    pub rate_limit: Option<u32>,
    /// The subscription patterns.
    pub event_types: Vec<String>,
}

impl StoredEndpoint {
    /// A row read with [`COLUMNS`].
    pub fn from_row(row: &Row) -> Self {
        let previous = row
            .get::<_, Option<String>>(5)
            .zip(row.get::<_, Option<i64>>(6))
            .map(|(sealed, until)| SealedSecret {
                sealed,
                valid_until: Some(until),
            });
        let current = SealedSecret {
            sealed: row.get(4),
            valid_until: None,
        };
        Self {
            id: EndpointId::from_stored(row.get(0)),
            tenant: row.get(1),
            url: row.get(2),
            destination: row
                .get::<_, Option<serde_json::Value>>(3)
                .and_then(|d| serde_json::from_value(d).ok()),
            secrets: std::iter::once(current).chain(previous).collect(),
            sealed_ed25519: row.get(7),
            headers: serde_json::from_value(row.get(8)).unwrap_or_default(),
            version: row.get(9),
            ordered: row.get(10),
            rate_limit: row
                .get::<_, Option<i32>>(11)
                .and_then(|limit| u32::try_from(limit).ok()),
            event_types: row.get(12),
        }
    }

    /// What tasks to this endpoint are made from at `now_millis`: the
    /// secrets that sign then, resealed for the task context (tenant,
    /// endpoint and address), so a worker opens them only for this target.
    pub fn target(&self, sealer: &Sealer, now_millis: i64) -> Result<Target, SealError> {
        Ok(Target {
            endpoint_id: self.id.clone(),
            endpoint_version: self.version,
            delivery: self.delivery_target(sealer, now_millis)?,
            ordered: self.ordered,
            rate_limit: self.rate_limit,
        })
    }

    /// The endpoint's delivery target at `now_millis`, as tasks and the
    /// registry broadcast carry it (see [`Self::target`]).
    pub fn delivery_target(
        &self,
        sealer: &Sealer,
        now_millis: i64,
    ) -> Result<DeliveryTarget, SealError> {
        let id = self.id.as_str();
        let address = task_address(&self.url, self.destination.as_ref());
        let context = task_secret_context(&self.tenant, id, &address);
        let secrets = self
            .secrets
            .iter()
            .filter(|secret| secret.signs_at(now_millis))
            .map(|secret| {
                Ok(SealedSecret {
                    sealed: sealer.reseal(&secret.sealed, id, &context)?,
                    valid_until: secret.valid_until,
                })
            })
            .collect::<Result<_, SealError>>()?;
        let sealed_ed25519 = self
            .sealed_ed25519
            .as_deref()
            .map(|sealed| {
                sealer.reseal(
                    sealed,
                    &ed25519_context(id),
                    &task_ed25519_context(&self.tenant, id, &address),
                )
            })
            .transpose()?;
        Ok(DeliveryTarget {
            url: self.url.clone(),
            secrets,
            sealed_ed25519,
            headers: self.headers.clone(),
            destination: self.destination.clone(),
        })
    }
}

/// Every enabled endpoint, for the subscription index.
pub async fn enabled(
    client: &impl GenericClient,
) -> Result<Vec<StoredEndpoint>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!("SELECT {COLUMNS} FROM endpoints WHERE enabled"),
            &[],
        )
        .await?;
    Ok(rows.iter().map(StoredEndpoint::from_row).collect())
}

/// The tenant's endpoint `id`, if it exists and is enabled.
pub async fn enabled_one(
    client: &impl GenericClient,
    tenant: &str,
    id: &str,
) -> Result<Option<StoredEndpoint>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            &format!("SELECT {COLUMNS} FROM endpoints WHERE tenant = $1 AND id = $2 AND enabled"),
            &[&tenant, &id],
        )
        .await?;
    Ok(row.as_ref().map(StoredEndpoint::from_row))
}

/// The tenant's enabled endpoints that event `event_id` was delivered to,
/// or only endpoint `only` (delivered to or not), by id.
pub async fn enabled_for_event(
    client: &impl GenericClient,
    tenant: &str,
    event_id: &str,
    only: Option<&str>,
) -> Result<Vec<StoredEndpoint>, tokio_postgres::Error> {
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM endpoints
                 WHERE tenant = $1 AND enabled
                   AND CASE WHEN $3::text IS NULL
                            THEN id IN (SELECT endpoint_id FROM deliveries
                                        WHERE tenant = $1 AND event_id = $2)
                            ELSE id = $3 END
                 ORDER BY id"
            ),
            &[&tenant, &event_id, &only],
        )
        .await?;
    Ok(rows.iter().map(StoredEndpoint::from_row).collect())
}

/// Whether the tenant has endpoint `id`, enabled or not.
pub async fn exists(
    client: &impl GenericClient,
    tenant: &str,
    id: &str,
) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT 1 FROM endpoints WHERE tenant = $1 AND id = $2",
            &[&tenant, &id],
        )
        .await?;
    Ok(row.is_some())
}

/// Disables the tenant's endpoint `id` with `reason` if it is enabled, and
/// announces the change on [`CHANGES_CHANNEL`]. Returns when it was
/// disabled (RFC 3339 and milliseconds), or `None` if it was not enabled.
pub async fn disable(
    client: &impl GenericClient,
    tenant: &str,
    id: &str,
    reason: &str,
) -> Result<Option<(String, i64)>, tokio_postgres::Error> {
    let disabled = client
        .query_opt(
            "UPDATE endpoints
             SET enabled = false, disabled_reason = $3, disabled_at = now(), updated_at = now()
             WHERE tenant = $1 AND id = $2 AND enabled
             RETURNING to_json(disabled_at) #>> '{}',
                       (extract(epoch FROM disabled_at) * 1000)::int8",
            &[&tenant, &id, &reason],
        )
        .await?;
    let Some(row) = disabled else {
        return Ok(None);
    };
    client
        .execute(&format!("NOTIFY {CHANGES_CHANNEL}"), &[])
        .await?;
    Ok(Some((row.get(0), row.get(1))))
}

/// One endpoint in a [`Registry`] read: as stored, or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    Live {
        endpoint: Box<StoredEndpoint>,
        enabled: bool,
        disabled_reason: Option<String>,
        /// Never changed since it was made.
        untouched: bool,
    },
    /// Deleted in the last 30 days, at `deleted_at` (milliseconds).
    Deleted {
        id: EndpointId,
        tenant: String,
        deleted_at: i64,
    },
}

/// The registry as one statement read it, for the registry broadcast.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Postgres's clock when it was read (milliseconds).
    pub taken_at: i64,
    /// By id.
    pub endpoints: Vec<Registered>,
}

/// Every endpoint and the deletions of the last 30 days, or only the
/// tenant's endpoint `only` (live or deleted), in one statement.
pub async fn registry(
    client: &impl GenericClient,
    only: Option<(&str, &str)>,
) -> Result<Registry, tokio_postgres::Error> {
    let now = "(extract(epoch FROM now()) * 1000)::int8";
    let live = format!(
        "SELECT {COLUMNS}, enabled, disabled_reason, updated_at = created_at, {now}
         FROM endpoints"
    );
    // The deletions in the same columns, the deletion time as `version`.
    let gone = format!(
        "SELECT id, tenant, NULL, NULL::jsonb, NULL, NULL, NULL::int8, NULL, NULL::jsonb,
                (extract(epoch FROM deleted_at) * 1000)::int8, NULL::bool, NULL::int4,
                NULL::text[], NULL::bool, NULL, NULL::bool, {now}
         FROM endpoint_tombstones WHERE deleted_at > now() - interval '30 days'"
    );
    let rows = match only {
        None => {
            client
                .query(&format!("{live} UNION ALL {gone} ORDER BY 1"), &[])
                .await?
        }
        Some((tenant, id)) => {
            client
                .query(
                    &format!(
                        "{live} WHERE tenant = $1 AND id = $2
                         UNION ALL {gone} AND tenant = $1 AND id = $2"
                    ),
                    &[&tenant, &id],
                )
                .await?
        }
    };
    let taken_at = match rows.first() {
        Some(row) => row.get(16),
        None => hookfleet_contract::now_millis(),
    };
    let endpoints = rows
        .iter()
        .map(|row| match row.get::<_, Option<bool>>(13) {
            Some(enabled) => Registered::Live {
                endpoint: Box::new(StoredEndpoint::from_row(row)),
                enabled,
                disabled_reason: row.get(14),
                untouched: row.get(15),
            },
            None => Registered::Deleted {
                id: EndpointId::from_stored(row.get(0)),
                tenant: row.get(1),
                deleted_at: row.get(9),
            },
        })
        .collect();
    Ok(Registry {
        taken_at,
        endpoints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(sealer: &Sealer, previous_until: i64) -> StoredEndpoint {
        StoredEndpoint {
            id: EndpointId::from_stored("ep_1".into()),
            tenant: "acme".into(),
            url: "https://example.com/h".into(),
            destination: None,
            secrets: vec![
                SealedSecret {
                    sealed: sealer.seal("whsec_new", "ep_1"),
                    valid_until: None,
                },
                SealedSecret {
                    sealed: sealer.seal("whsec_old", "ep_1"),
                    valid_until: Some(previous_until),
                },
            ],
            sealed_ed25519: Some(sealer.seal("ed-key", &ed25519_context("ep_1"))),
            headers: BTreeMap::new(),
            version: 7,
            ordered: true,
            rate_limit: None,
            event_types: vec!["*".into()],
        }
    }

    #[test]
    fn a_target_carries_the_secrets_that_sign_sealed_for_the_task() {
        let sealer = Sealer::from_base64(&Sealer::generate_key()).unwrap();
        let endpoint = stored(&sealer, 1_000);
        let context = task_secret_context("acme", "ep_1", "https://example.com/h");

        let target = endpoint.target(&sealer, 999).unwrap();
        assert_eq!((target.endpoint_version, target.ordered), (7, true));
        let opened: Vec<String> = target
            .delivery
            .secrets
            .iter()
            .map(|s| sealer.open(&s.sealed, &context).unwrap())
            .collect();
        assert_eq!(opened, vec!["whsec_new", "whsec_old"]);
        // The grace period's end travels with the secret, so a task made
        // later from the same target leaves it out.
        assert_eq!(target.delivery.secrets[1].valid_until, Some(1_000));
        assert_eq!(target.delivery.secrets_at(1_000).len(), 1);
        // Resealed for the task: the at-rest context no longer opens them.
        assert!(
            sealer
                .open(&target.delivery.secrets[0].sealed, "ep_1")
                .is_err()
        );
        let ed25519 = target.delivery.sealed_ed25519.unwrap();
        let ed_context = task_ed25519_context("acme", "ep_1", "https://example.com/h");
        assert_eq!(sealer.open(&ed25519, &ed_context).unwrap(), "ed-key");

        // After the grace period the old secret is not even resealed.
        let later = endpoint.target(&sealer, 1_000).unwrap();
        assert_eq!(later.delivery.secrets.len(), 1);
    }

    #[test]
    fn a_secret_sealed_for_another_endpoint_does_not_make_a_target() {
        let sealer = Sealer::from_base64(&Sealer::generate_key()).unwrap();
        let mut endpoint = stored(&sealer, 0);
        endpoint.secrets[0].sealed = sealer.seal("whsec_new", "ep_2");
        assert!(endpoint.target(&sealer, 0).is_err());
    }
}
