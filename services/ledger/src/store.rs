//! Writing ledger records to Postgres: one transaction per batch, one
//! multi-row statement per table, and `ON CONFLICT DO NOTHING` so that a
//! redelivered record leaves exactly one row (DESIGN.md invariant 2).

use std::collections::{HashMap, HashSet};

use hookfleet_contract::{AttemptOutcome, AttemptResult, EventRouted, Trigger};
use hookfleet_db::deadpool_postgres::Pool;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Pool(#[from] hookfleet_db::deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Postgres(#[from] hookfleet_db::tokio_postgres::Error),
}

/// A batch of parsed records.
#[derive(Debug, Default)]
pub struct Batch {
    pub events: Vec<(EventRouted, String)>,
    pub attempts: Vec<AttemptOutcome>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.attempts.is_empty()
    }
}

#[derive(Debug, Clone)]
pub struct LedgerStore {
    pool: Pool,
}

/// Whether `new` sets its delivery's state rather than `old`: the later
/// attempt, except that a 200 of a scheduled chain stays. A scheduled
/// chain that goes on after a 200 is a duplicate of itself (a retry
/// published twice, as dead-lettering may do when a broker node fails over,
/// forks the chain), and its later failures do not undo a webhook the
/// endpoint received. Only a resend (manual) starts over.
fn supersedes(new: &AttemptOutcome, old: &AttemptOutcome) -> bool {
    let scheduled_success = |a: &AttemptOutcome| {
        a.result == AttemptResult::Succeeded && a.trigger == Trigger::Scheduled
    };
    if old.result == AttemptResult::Succeeded && new.trigger == Trigger::Scheduled {
        return false;
    }
    if scheduled_success(new) && old.trigger == Trigger::Scheduled {
        return true;
    }
    new.attempt > old.attempt
}

/// The delivery state an attempt leaves behind.
fn delivery_state(result: AttemptResult) -> &'static str {
    match result {
        AttemptResult::Succeeded => "succeeded",
        AttemptResult::Retrying => "failed",
        AttemptResult::Exhausted => "exhausted",
        // The endpoint was deleted or disabled: a recovery after enabling
        // it sends the delivery again (it is not succeeded, pending or
        // failed).
        AttemptResult::Cancelled => "cancelled",
    }
}

impl LedgerStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Writes the batch in one transaction; nothing is written on error.
    pub async fn write(&self, batch: &Batch) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        if !batch.events.is_empty() {
            // A delivery attempted in this batch gets its row from the
            // attempt; a `pending` row first would be written for nothing.
            let attempted: HashSet<&str> = batch
                .attempts
                .iter()
                .map(|a| a.delivery_id.as_str())
                .collect();
            write_events(&tx, &batch.events, &attempted).await?;
        }
        if !batch.attempts.is_empty() {
            write_attempts(&tx, &batch.attempts).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Every statement is prepared once per connection (the statement cache of
/// the pool's connections), not parsed and planned for every batch.
async fn execute(
    tx: &hookfleet_db::deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn hookfleet_db::tokio_postgres::types::ToSql + Sync)],
) -> Result<u64, StoreError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&statement, params).await?)
}

async fn write_events(
    tx: &hookfleet_db::deadpool_postgres::Transaction<'_>,
    events: &[(EventRouted, String)],
    attempted: &HashSet<&str>,
) -> Result<(), StoreError> {
    let (mut tenants, mut ids, mut types, mut payloads) = (vec![], vec![], vec![], vec![]);
    let (mut created, mut routed, mut fan_out, mut sources) = (vec![], vec![], vec![], vec![]);
    let mut ordering_keys = vec![];
    let (mut d_ids, mut d_tenants, mut d_events, mut d_endpoints, mut d_created) =
        (vec![], vec![], vec![], vec![], vec![]);
    for (event, payload) in events {
        tenants.push(event.tenant.as_str());
        ids.push(event.event_id.as_str());
        types.push(event.event_type.as_str());
        payloads.push(payload.as_str());
        created.push(event.created_at);
        routed.push(event.routed_at);
        fan_out.push(event.deliveries.len() as i32);
        sources.push(event.source.as_deref());
        ordering_keys.push(event.ordering_key.as_ref().map(|k| k.as_str()));
        for delivery in &event.deliveries {
            if attempted.contains(delivery.delivery_id.as_str()) {
                continue;
            }
            d_ids.push(delivery.delivery_id.as_str());
            d_tenants.push(event.tenant.as_str());
            d_events.push(event.event_id.as_str());
            d_endpoints.push(delivery.endpoint_id.as_str());
            d_created.push(event.created_at);
        }
    }
    execute(
        tx,
        "INSERT INTO events (tenant, id, event_type, payload, created_at, routed_at, fan_out,
                             source, ordering_key)
         SELECT t, i, ty, p, to_timestamp(c / 1000.0), to_timestamp(r / 1000.0), f, s, k
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::int4[],
                     $8::text[], $9::text[])
              AS x(t, i, ty, p, c, r, f, s, k)
         ON CONFLICT DO NOTHING",
        &[
            &tenants,
            &ids,
            &types,
            &payloads,
            &created,
            &routed,
            &fan_out,
            &sources,
            &ordering_keys,
        ],
    )
    .await?;
    if !d_ids.is_empty() {
        execute(
            tx,
            "INSERT INTO deliveries (id, tenant, event_id, endpoint_id, event_created_at)
             SELECT d, t, e, ep, to_timestamp(c / 1000.0)
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[])
                  AS x(d, t, e, ep, c)
             ON CONFLICT DO NOTHING",
            &[&d_ids, &d_tenants, &d_events, &d_endpoints, &d_created],
        )
        .await?;
    }
    Ok(())
}

async fn write_attempts(
    tx: &hookfleet_db::deadpool_postgres::Transaction<'_>,
    attempts: &[AttemptOutcome],
) -> Result<(), StoreError> {
    let mut columns = AttemptColumns::default();
    for attempt in attempts {
        columns.push(attempt);
    }
    // The attempts, and the hourly rollups of the ones actually inserted
    // (a redelivered record inserts nothing and adds nothing).
    execute(
        tx,
        "WITH inserted AS (
         INSERT INTO attempts (id, delivery_id, tenant, event_id, endpoint_id, attempt, result,
                               status_code, error, response_excerpt, started_at, duration_ms,
                               next_attempt_at, trigger, event_created_at)
         SELECT id, d, t, e, ep, n, r, s, err, ex, to_timestamp(st / 1000.0), du,
                to_timestamp(na / 1000.0), tr, to_timestamp(c / 1000.0)
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[],
                     $7::text[], $8::int4[], $9::text[], $10::text[], $11::int8[], $12::int4[],
                     $13::int8[], $14::text[], $15::int8[])
              AS x(id, d, t, e, ep, n, r, s, err, ex, st, du, na, tr, c)
         ON CONFLICT DO NOTHING
         RETURNING endpoint_id, started_at, tenant, result, duration_ms)
         INSERT INTO endpoint_stats (endpoint_id, hour, tenant, attempts, succeeded, latency)
         SELECT endpoint_id, date_bin('1 hour', started_at, '2000-01-01 00:00:00+00'), tenant,
                count(*), count(*) FILTER (WHERE result = 'succeeded'),
                hookfleet_latency_histogram(duration_ms)
         FROM inserted GROUP BY 1, 2, 3
         ON CONFLICT (endpoint_id, hour) DO UPDATE SET
             attempts = endpoint_stats.attempts + EXCLUDED.attempts,
             succeeded = endpoint_stats.succeeded + EXCLUDED.succeeded,
             latency = ARRAY(SELECT a + b FROM unnest(endpoint_stats.latency, EXCLUDED.latency)
                                                   AS l(a, b))",
        &[
            &columns.ids,
            &columns.deliveries,
            &columns.tenants,
            &columns.events,
            &columns.endpoints,
            &columns.numbers,
            &columns.results,
            &columns.statuses,
            &columns.errors,
            &columns.excerpts,
            &columns.started,
            &columns.durations,
            &columns.next,
            &columns.triggers,
            &columns.created,
        ],
    )
    .await?;

    // The latest attempt per delivery sets its state (see `supersedes`);
    // one row per delivery, since a statement may not update the same row
    // twice.
    let mut latest: HashMap<&str, &AttemptOutcome> = HashMap::new();
    for attempt in attempts {
        let entry = latest
            .entry(attempt.delivery_id.as_str())
            .or_insert(attempt);
        if supersedes(attempt, entry) {
            *entry = attempt;
        }
    }
    let resent: Vec<&str> = latest
        .values()
        .filter(|a| a.trigger == Trigger::Manual)
        .map(|a| a.delivery_id.as_str())
        .collect();
    let mut columns = AttemptColumns::default();
    for attempt in latest.values() {
        columns.push(attempt);
    }
    let states: Vec<&str> = latest.values().map(|a| delivery_state(a.result)).collect();
    execute(
        tx,
        "INSERT INTO deliveries (id, tenant, event_id, endpoint_id, state, attempts,
                                 last_status_code, last_error, next_attempt_at, updated_at,
                                 event_created_at)
         SELECT d, t, e, ep, st, n, s, err, to_timestamp(na / 1000.0), now(),
                to_timestamp(c / 1000.0)
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int4[],
                     $7::int4[], $8::text[], $9::int8[], $10::int8[])
              AS x(d, t, e, ep, st, n, s, err, na, c)
         ON CONFLICT (id, event_created_at) DO UPDATE SET
             state = EXCLUDED.state,
             attempts = EXCLUDED.attempts,
             last_status_code = EXCLUDED.last_status_code,
             last_error = EXCLUDED.last_error,
             next_attempt_at = EXCLUDED.next_attempt_at,
             updated_at = now()
         WHERE (deliveries.attempts <= EXCLUDED.attempts
                AND (deliveries.state <> 'succeeded' OR EXCLUDED.id = ANY($11::text[])))
            OR (EXCLUDED.state = 'succeeded' AND deliveries.state <> 'succeeded'
                AND NOT EXCLUDED.id = ANY($11::text[]))",
        &[
            &columns.deliveries,
            &columns.tenants,
            &columns.events,
            &columns.endpoints,
            &states,
            &columns.numbers,
            &columns.statuses,
            &columns.errors,
            &columns.next,
            &columns.created,
            &resent,
        ],
    )
    .await?;
    Ok(())
}

/// Attempts turned into one array per column, for `UNNEST`.
#[derive(Default)]
struct AttemptColumns<'a> {
    ids: Vec<&'a str>,
    deliveries: Vec<&'a str>,
    tenants: Vec<&'a str>,
    events: Vec<&'a str>,
    endpoints: Vec<&'a str>,
    numbers: Vec<i32>,
    results: Vec<&'a str>,
    statuses: Vec<Option<i32>>,
    errors: Vec<Option<&'a str>>,
    excerpts: Vec<Option<&'a str>>,
    started: Vec<i64>,
    durations: Vec<i32>,
    next: Vec<Option<i64>>,
    triggers: Vec<&'static str>,
    created: Vec<i64>,
}

impl<'a> AttemptColumns<'a> {
    fn push(&mut self, a: &'a AttemptOutcome) {
        self.ids.push(a.attempt_id.as_str());
        self.deliveries.push(a.delivery_id.as_str());
        self.tenants.push(a.tenant.as_str());
        self.events.push(a.event_id.as_str());
        self.endpoints.push(a.endpoint_id.as_str());
        self.numbers.push(a.attempt as i32);
        self.results.push(a.result.as_str());
        self.statuses.push(a.status_code.map(i32::from));
        self.errors.push(a.error.as_deref());
        self.excerpts.push(a.response_excerpt.as_deref());
        self.started.push(a.started_at);
        self.durations
            .push(a.duration_ms.min(i64::from(i32::MAX)) as i32);
        self.next.push(a.next_attempt_at);
        self.triggers.push(a.trigger.as_str());
        self.created.push(a.event_created_at);
    }
}

#[cfg(test)]
mod tests {
    use hookfleet_contract::{AttemptId, DeliveryId, EndpointId, EventId};

    use super::*;

    fn outcome(attempt: u32, result: AttemptResult, trigger: Trigger) -> AttemptOutcome {
        let event = EventId::parse("evt_1").unwrap();
        let delivery = DeliveryId::derive("t", &event, &EndpointId::parse("ep_a").unwrap());
        AttemptOutcome {
            attempt_id: AttemptId::derive(&delivery, attempt),
            delivery_id: delivery,
            event_id: event,
            endpoint_id: EndpointId::parse("ep_a").unwrap(),
            tenant: "t".into(),
            event_created_at: 0,
            attempt,
            result,
            status_code: None,
            error: None,
            response_excerpt: None,
            started_at: 0,
            duration_ms: 0,
            next_attempt_at: None,
            endpoint_gone: false,
            trigger,
            traceparent: None,
        }
    }

    use AttemptResult::{Exhausted, Retrying, Succeeded};
    use Trigger::{Manual, Scheduled};

    #[test]
    fn a_later_attempt_sets_the_state() {
        assert!(supersedes(
            &outcome(2, Retrying, Scheduled),
            &outcome(1, Retrying, Scheduled)
        ));
        assert!(!supersedes(
            &outcome(1, Retrying, Scheduled),
            &outcome(2, Exhausted, Scheduled)
        ));
    }

    #[test]
    fn a_forked_chain_failing_after_its_twin_succeeded_does_not_undo_the_success() {
        // Attempt 3 got a 200; a duplicate of the chain went on to exhaust.
        assert!(!supersedes(
            &outcome(5, Exhausted, Scheduled),
            &outcome(3, Succeeded, Scheduled)
        ));
        // The same, recorded in the other order.
        assert!(supersedes(
            &outcome(3, Succeeded, Scheduled),
            &outcome(5, Exhausted, Scheduled)
        ));
    }

    #[test]
    fn a_resend_after_a_success_sets_the_state_again() {
        assert!(supersedes(
            &outcome(4, Retrying, Manual),
            &outcome(3, Succeeded, Scheduled)
        ));
        assert!(!supersedes(
            &outcome(3, Succeeded, Scheduled),
            &outcome(4, Retrying, Manual)
        ));
    }
}
