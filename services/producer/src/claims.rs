//! Claiming caller-chosen event ids, so that an event sent twice with the
//! same id is delivered once. The router's concurrent handlers hand their
//! ids to one group-commit batcher: one statement claims all the ids that
//! queued up while the previous statement ran.
//!
//! Ids the producer generated are never claimed: nobody else can send
//! them, and a redelivered message re-routes to the same deterministic
//! delivery ids, which the ledger and receivers deduplicate.

use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_topology::{GroupCommit, Limits, Stopped};

/// One id to claim.
#[derive(Debug, Clone)]
pub struct Claim {
    pub tenant: String,
    pub id: String,
    pub event_type: String,
}

/// What the database says about a claimed id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    pub tenant_exists: bool,
    /// This message claimed the event id: it is the one to route it.
    pub claimed: bool,
    /// An earlier claim of the id existed.
    pub earlier: bool,
    /// When the id was first claimed, milliseconds since the epoch: the
    /// event's time when its message carries none.
    pub first_claimed_at: Option<i64>,
}

impl Standing {
    /// Whether this message should be fanned out. A repeat is not, unless
    /// it is a redelivery: then the earlier try failed or crashed and its
    /// message is this one, come back (routing again yields the same
    /// delivery ids).
    pub fn should_route(&self, redelivered: bool) -> bool {
        self.claimed || (self.earlier && redelivered)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClaimError {
    #[error("database: {0}")]
    Database(String),
    #[error(transparent)]
    Stopped(#[from] Stopped),
}

/// Ids per statement, at most.
const LIMITS: Limits = Limits {
    items: 1000,
    weight: usize::MAX,
};

/// The claim batcher. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Claims {
    batcher: GroupCommit<Claim, Standing, ClaimError>,
}

impl Claims {
    pub fn start(pool: Pool) -> Self {
        let batcher = GroupCommit::start(
            "claims",
            LIMITS,
            |_| 1,
            move |claims| {
                let pool = pool.clone();
                async move { claim_all(&pool, claims).await }
            },
        );
        Self { batcher }
    }

    pub async fn claim(&self, claim: Claim) -> Result<Standing, ClaimError> {
        self.batcher.submit(claim).await
    }
}

async fn claim_all(pool: &Pool, claims: Vec<Claim>) -> Result<Vec<Standing>, ClaimError> {
    let database = |e: &dyn std::fmt::Display| ClaimError::Database(e.to_string());
    let client = pool.get().await.map_err(|e| database(&e))?;
    // `earlier` reads the snapshot from before the insert (one statement,
    // one snapshot): it is a claim made before this one.
    let statement = client
        .prepare_cached(
            "WITH input AS (
                 SELECT x.*, EXISTS (SELECT 1 FROM tenants t WHERE t.id = x.tenant) AS known
                 FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY
                      AS x(tenant, id, event_type, n)
             ), claim AS (
                 INSERT INTO routed_events (tenant, id, event_type)
                 SELECT DISTINCT ON (tenant, id) tenant, id, event_type FROM input WHERE known
                 ON CONFLICT DO NOTHING
                 RETURNING tenant, id, routed_at
             )
             SELECT input.known, claim.id IS NOT NULL, earlier.id IS NOT NULL,
                    (extract(epoch FROM coalesce(earlier.routed_at, claim.routed_at)) * 1000)::int8
             FROM input
             LEFT JOIN claim ON claim.tenant = input.tenant AND claim.id = input.id
             LEFT JOIN routed_events earlier
                    ON earlier.tenant = input.tenant AND earlier.id = input.id
             ORDER BY input.n",
        )
        .await
        .map_err(|e| database(&e))?;
    let tenants: Vec<&str> = claims.iter().map(|c| c.tenant.as_str()).collect();
    let ids: Vec<&str> = claims.iter().map(|c| c.id.as_str()).collect();
    let types: Vec<&str> = claims.iter().map(|c| c.event_type.as_str()).collect();
    let rows = client
        .query(&statement, &[&tenants, &ids, &types])
        .await
        .map_err(|e| database(&e))?;
    let mut standings: Vec<Standing> = rows
        .iter()
        .map(|row| Standing {
            tenant_exists: row.get(0),
            claimed: row.get(1),
            earlier: row.get(2),
            first_claimed_at: row.get(3),
        })
        .collect();
    // The same id twice in one statement: the first copy holds the claim,
    // the second is a repeat of it.
    let mut seen = std::collections::HashSet::new();
    for (claim, standing) in claims.iter().zip(standings.iter_mut()) {
        if standing.claimed && !seen.insert((claim.tenant.as_str(), claim.id.as_str())) {
            standing.claimed = false;
            standing.earlier = true;
        }
    }
    Ok(standings)
}

#[cfg(test)]
mod tests {
    use super::Standing;

    fn standing(claimed: bool, earlier: bool) -> Standing {
        Standing {
            tenant_exists: true,
            claimed,
            earlier,
            first_claimed_at: Some(0),
        }
    }

    #[test]
    fn only_the_claimant_or_a_redelivery_routes() {
        assert!(standing(true, false).should_route(false));
        // A fresh repeat is skipped, but the redelivery of a failed or
        // crashed try goes ahead.
        assert!(!standing(false, true).should_route(false));
        assert!(standing(false, true).should_route(true));
    }
}
