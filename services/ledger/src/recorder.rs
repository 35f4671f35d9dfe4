//! The recorder: consumes the ledger queue in batches and writes each batch
//! in one transaction, acking only after the commit. While Postgres is
//! unreachable it holds the batch and retries, so the queue absorbs the
//! outage and nothing is lost (DESIGN.md invariant 3).

use std::sync::Arc;
use std::time::Duration;

use hookfleet_contract::{
    ATTEMPT_OUTCOME_KIND, ATTEMPT_OUTCOMES_KIND, AttemptOutcome, EVENT_ROUTED_KIND,
    EVENTS_ROUTED_KIND, EventRouted, RoutedEventRecord, headers,
};
use hookfleet_topology::{Publisher, Topology, continue_trace_from, header_str};
use lapin::Connection;
use lapin::message::Delivery;
use tokio_util::sync::CancellationToken;

use crate::batches::Batches;
use crate::health::EndpointHealth;
use crate::settings::RecorderSettings;
use crate::store::{Batch, LedgerStore, StoreError};

#[derive(Debug, Clone)]
pub struct Recorder {
    pub topology: Topology,
    pub store: LedgerStore,
    pub settings: RecorderSettings,
    pub health: Arc<EndpointHealth>,
}

/// Records a written batch in the metrics: its size, and how long after
/// the fact each record reached Postgres.
fn observe(batch: &Batch) {
    let now = hookfleet_contract::now_millis();
    let lag = metrics::histogram!("hookfleet_ledger_write_lag_seconds");
    for (event, _) in &batch.events {
        lag.record((now - event.routed_at).max(0) as f64 / 1000.0);
    }
    for attempt in &batch.attempts {
        lag.record((now - attempt.started_at - attempt.duration_ms).max(0) as f64 / 1000.0);
    }
    metrics::counter!("hookfleet_ledger_records_total", "kind" => "event")
        .increment(batch.events.len() as u64);
    metrics::counter!("hookfleet_ledger_records_total", "kind" => "attempt")
        .increment(batch.attempts.len() as u64);
    metrics::histogram!("hookfleet_ledger_batch_size")
        .record((batch.events.len() + batch.attempts.len()) as f64);
}

/// Closes one span per record, in its event's trace, to show when the
/// ledger had it. A batched record carries its trace inside; a single
/// record's message carries it in its headers.
fn mark_traces(deliveries: &[Delivery], batch: &Batch) {
    let span =
        |kind: &str| tracing::info_span!("ledger_record", kind, trace_id = tracing::field::Empty,);
    for delivery in deliveries {
        let kind = delivery.properties.kind().as_ref().map(|k| k.as_str());
        if matches!(kind, Some(EVENT_ROUTED_KIND | ATTEMPT_OUTCOME_KIND)) {
            continue_trace_from(&span(kind.unwrap_or_default()), &delivery.properties);
        }
    }
    let carried = batch
        .events
        .iter()
        .map(|(event, _)| (EVENT_ROUTED_KIND, event.traceparent.as_deref()))
        .chain(
            batch
                .attempts
                .iter()
                .map(|attempt| (ATTEMPT_OUTCOME_KIND, attempt.traceparent.as_deref())),
        );
    for (kind, traceparent) in carried {
        if traceparent.is_some() {
            hookfleet_telemetry::continue_trace(&span(kind), traceparent, None);
        }
    }
}

/// Whether Postgres refused the data itself (data exception, integrity
/// violation), as opposed to being unreachable, overloaded or shutting
/// down. Only refused records are parked; anything else is retried, so an
/// outage or a missing migration never parks good records.
fn refused(error: &hookfleet_db::tokio_postgres::Error) -> bool {
    error
        .code()
        .is_some_and(|code| matches!(&code.code()[..2], "22" | "23"))
}

/// How writing a refused batch record by record ended.
enum OneByOne {
    Done,
    Cancelled,
    Unreachable,
}

/// Adds the records of one message to `batch`, or says why it cannot be
/// recorded (then nothing of it is added).
fn parse(delivery: &Delivery, batch: &mut Batch) -> Result<(), String> {
    let kind = delivery.properties.kind().as_ref().map(|k| k.as_str());
    match kind {
        Some(EVENTS_ROUTED_KIND) => {
            let records: Vec<RoutedEventRecord> = serde_json::from_slice(&delivery.data)
                .map_err(|e| format!("routed events: {e}"))?;
            batch.events.extend(
                records
                    .into_iter()
                    .map(|record| (record.meta, record.payload.get().to_owned())),
            );
        }
        Some(EVENT_ROUTED_KIND) => {
            let meta = header_str(&delivery.properties, headers::META)
                .ok_or_else(|| format!("header {} is missing", headers::META))?;
            let meta: EventRouted =
                serde_json::from_str(meta).map_err(|e| format!("header {}: {e}", headers::META))?;
            match String::from_utf8(delivery.data.clone()) {
                Ok(payload) if !payload.contains('\0') => batch.events.push((meta, payload)),
                _ => return Err("payload is not UTF-8 JSON text".into()),
            }
        }
        Some(ATTEMPT_OUTCOMES_KIND) => {
            let outcomes: Vec<AttemptOutcome> = serde_json::from_slice(&delivery.data)
                .map_err(|e| format!("attempt outcomes: {e}"))?;
            batch.attempts.extend(outcomes.into_iter().map(printable));
        }
        Some(ATTEMPT_OUTCOME_KIND) => {
            let outcome: AttemptOutcome = serde_json::from_slice(&delivery.data)
                .map_err(|e| format!("attempt outcome: {e}"))?;
            batch.attempts.push(printable(outcome));
        }
        other => return Err(format!("unknown record type {other:?}")),
    }
    Ok(())
}

/// Postgres text cannot hold NUL; the excerpt and error are for people.
fn printable(mut outcome: AttemptOutcome) -> AttemptOutcome {
    outcome.response_excerpt = outcome
        .response_excerpt
        .map(|s| s.replace('\0', "\u{fffd}"));
    outcome.error = outcome.error.map(|s| s.replace('\0', "\u{fffd}"));
    outcome
}

impl Recorder {
    /// Runs until `cancel` fires (then returns `Ok`, leaving unwritten
    /// records in the queue) or the connection fails.
    pub async fn run(
        &self,
        connection: &Connection,
        publisher: Publisher,
        cancel: &CancellationToken,
    ) -> lapin::Result<()> {
        let mut batches = Batches::open(
            connection,
            &self.topology.ledger_queue(),
            "",
            self.settings.batch_size,
            Duration::from_millis(self.settings.batch_wait_ms),
        )
        .await?;
        while let Some(deliveries) = batches.next(cancel).await? {
            if !self.record(&publisher, &deliveries, cancel).await {
                batches.close().await;
                return Ok(());
            }
            batches.ack(&deliveries).await?;
        }
        Ok(())
    }

    /// Writes the records, parking malformed ones. `false` if cancelled
    /// before the batch was durable.
    async fn record(
        &self,
        publisher: &Publisher,
        deliveries: &[Delivery],
        cancel: &CancellationToken,
    ) -> bool {
        let mut batch = Batch::default();
        for delivery in deliveries {
            if let Err(reason) = parse(delivery, &mut batch)
                && !self.park(publisher, delivery, &reason, cancel).await
            {
                return false;
            }
        }
        if batch.is_empty() {
            return true;
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.store.write(&batch).await {
                Ok(()) => {
                    observe(&batch);
                    mark_traces(deliveries, &batch);
                    self.disable_gone(&batch).await;
                    return true;
                }
                Err(StoreError::Postgres(error)) if refused(&error) => {
                    // The database answered and refused the batch: find the
                    // record at fault instead of retrying it forever.
                    tracing::error!(%error, "batch refused; writing records one by one");
                    match self.record_one_by_one(publisher, deliveries, cancel).await {
                        OneByOne::Done => return true,
                        OneByOne::Cancelled => return false,
                        // Rewriting what was written is harmless.
                        OneByOne::Unreachable => {}
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "ledger database unreachable; holding the batch");
                    metrics::counter!("hookfleet_ledger_write_retries_total").increment(1);
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// An endpoint that answered 410 Gone is disabled at once, not at the
    /// next sweep.
    async fn disable_gone(&self, batch: &Batch) {
        let gone: Vec<String> = batch
            .attempts
            .iter()
            .filter(|a| a.endpoint_gone)
            .map(|a| a.endpoint_id.to_string())
            .collect();
        if !gone.is_empty() {
            self.health.sweep(Some(&gone)).await;
        }
    }

    async fn record_one_by_one(
        &self,
        publisher: &Publisher,
        deliveries: &[Delivery],
        cancel: &CancellationToken,
    ) -> OneByOne {
        for delivery in deliveries {
            let mut batch = Batch::default();
            if parse(delivery, &mut batch).is_err() {
                continue; // already parked
            }
            match self.store.write(&batch).await {
                Ok(()) => {}
                Err(StoreError::Postgres(error)) if refused(&error) => {
                    let reason = format!("the ledger database refused the record: {error}");
                    if !self.park(publisher, delivery, &reason, cancel).await {
                        return OneByOne::Cancelled;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "ledger database lost while isolating a bad record");
                    return OneByOne::Unreachable;
                }
            }
        }
        OneByOne::Done
    }

    async fn park(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        reason: &str,
        cancel: &CancellationToken,
    ) -> bool {
        tracing::warn!(%reason, "parking a ledger record");
        loop {
            match publisher
                .park(&self.topology, delivery, reason, "ledger")
                .await
            {
                Ok(()) => return true,
                Err(error) => tracing::warn!(%error, "parking failed; retrying"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}
