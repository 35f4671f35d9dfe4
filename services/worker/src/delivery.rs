//! Handling one delivery task: send it, then record the outcome and either
//! finish it, schedule its retry through the delay levels, or dead-letter it
//! when no attempts are left. The task is acked only once everything it
//! caused is confirmed by the broker (DESIGN.md invariant 1).

use std::sync::Arc;

use bytes::Bytes;
use hookfleet_contract::{
    ATTEMPT_OUTCOME_KIND, AttemptId, AttemptOutcome, AttemptResult, DeliveryTask,
};
use hookfleet_signing::Sealer;
use hookfleet_topology::{
    PublishError, Publisher, TASK_ROUTING_KEY, Topology, ack, continue_trace_from, persistent_json,
    requeue, task_properties, traced_headers,
};
use lapin::message::Delivery;
use tracing::Instrument;

use crate::breaker::Containment;
use crate::classify::{Response, Verdict, classify};
use crate::intake::Intake;
use crate::registry_view::RegistryView;
use crate::retry::RetryPolicy;
use crate::sender::{Keys, Sender, Sent};

#[derive(Debug)]
pub struct Deliverer {
    pub topology: Topology,
    pub sender: Sender,
    pub policy: RetryPolicy,
    pub sealer: Sealer,
    pub containment: Containment,
    /// Which endpoints are gone, disabled or moved (issue 16 item 2).
    pub registry: Arc<RegistryView>,
}

impl Deliverer {
    pub async fn handle(self: Arc<Self>, publisher: Publisher, delivery: Delivery) {
        let task = match crate::intake::take(&delivery, &self.sealer, &self.registry) {
            Intake::Deliver(deliver) => *deliver,
            Intake::Cancel(cancelled) => {
                crate::registry_view::cancel(&publisher, &self.topology, &delivery, &cancelled)
                    .await;
                return;
            }
            Intake::Malformed(reason) => {
                tracing::warn!(%reason, "parking a malformed delivery task");
                metrics::counter!("hookfleet_tasks_dead_lettered_total", "reason" => "malformed")
                    .increment(1);
                match publisher
                    .park(&self.topology, &delivery, &reason, "worker")
                    .await
                {
                    Ok(()) => ack(&delivery).await,
                    Err(error) => {
                        tracing::warn!(%error, "parking failed; requeueing");
                        requeue(&delivery).await;
                    }
                }
                return;
            }
        };
        let (task, keys) = task;
        let span = tracing::info_span!(
            "deliver",
            delivery_id = %task.delivery_id,
            event_id = %task.event_id,
            endpoint_id = %task.endpoint_id,
            attempt = task.attempt,
            status = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        continue_trace_from(&span, &delivery.properties);
        self.attempt(publisher, delivery, task, keys)
            .instrument(span)
            .await
    }

    async fn attempt(
        &self,
        publisher: Publisher,
        delivery: Delivery,
        task: DeliveryTask,
        keys: Keys,
    ) {
        if let Err(wait) = self.containment.admit(task.endpoint_id.as_str()) {
            self.defer(&publisher, &delivery, &task, wait).await;
            return;
        }
        let started_at = hookfleet_contract::now_millis();
        let in_flight = metrics::gauge!("hookfleet_deliveries_in_flight");
        in_flight.increment(1);
        let sent = self
            .sender
            .send(&task, &keys, Bytes::copy_from_slice(&delivery.data))
            .await;
        in_flight.decrement(1);
        metrics::histogram!("hookfleet_attempt_duration_seconds").record(sent.duration);
        if let Response::Status(code) = sent.response {
            tracing::Span::current().record("status", code);
        }
        self.containment.finish(
            task.endpoint_id.as_str(),
            classify(&sent.response) == Verdict::Delivered,
        );
        match self
            .settle(&publisher, &delivery, &task, &sent, started_at)
            .await
        {
            Ok(()) => ack(&delivery).await,
            Err(error) => {
                tracing::warn!(%error, delivery_id = %task.delivery_id, "recording the attempt failed; requeueing");
                requeue(&delivery).await;
            }
        }
    }

    /// Puts a task that may not go now (breaker open, endpoint at its
    /// in-flight cap) back through the delay levels, unchanged and without
    /// an HTTP call: it is not an attempt.
    async fn defer(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        task: &DeliveryTask,
        wait: std::time::Duration,
    ) {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let route = self.topology.delay_route(seconds, TASK_ROUTING_KEY);
        let properties = task_properties(task);
        match publisher
            .publish(
                &route.exchange,
                &route.routing_key,
                &delivery.data,
                properties,
            )
            .await
        {
            Ok(()) => {
                tracing::debug!(delivery_id = %task.delivery_id, seconds, "deferred");
                metrics::counter!("hookfleet_deliveries_deferred_total").increment(1);
                ack(delivery).await;
            }
            Err(error) => {
                tracing::warn!(%error, "deferring failed; requeueing");
                requeue(delivery).await;
            }
        }
    }

    /// Publishes what follows from the attempt: the outcome for the
    /// ledger, then the retry or the dead letter.
    ///
    /// The outcome goes first because it is idempotent (its attempt id is
    /// derived, the ledger keeps one row) and the retry or dead letter is
    /// not: if a publish fails the task is requeued and attempted again,
    /// and with the old order (park or retry, then outcome) a failed
    /// outcome publish left a parked copy or a scheduled retry behind for
    /// every try: two copies of a 410 task in the dead queue with no
    /// process killed (issue 16 item 17).
    async fn settle(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        task: &DeliveryTask,
        sent: &Sent,
        started_at: i64,
    ) -> Result<(), PublishError> {
        let verdict = classify(&sent.response);
        let next_delay = self.policy.next_delay(
            task.chain_attempt(),
            verdict,
            sent.retry_after,
            rand::random::<f64>(),
        );
        let retry = match (verdict, next_delay) {
            (Verdict::Delivered, _) | (_, None) => None,
            (_, Some(delay)) => Some(self.topology.delay_route(delay.as_secs(), TASK_ROUTING_KEY)),
        };
        let (result, next_attempt_at) = match (verdict, &retry) {
            (Verdict::Delivered, _) => (AttemptResult::Succeeded, None),
            (_, Some(route)) => (
                AttemptResult::Retrying,
                Some(hookfleet_contract::now_millis() + route.seconds as i64 * 1000),
            ),
            (_, None) => (AttemptResult::Exhausted, None),
        };
        let (status_code, error) = match &sent.response {
            Response::Status(code) if verdict == Verdict::Delivered => (Some(*code), None),
            Response::Status(code) => (Some(*code), Some(format!("HTTP {code}"))),
            Response::Timeout => (None, Some("timeout".to_owned())),
            Response::Failed(text) => (None, Some(text.clone())),
        };
        let outcome = AttemptOutcome {
            attempt_id: AttemptId::derive(&task.delivery_id, task.attempt),
            delivery_id: task.delivery_id.clone(),
            event_id: task.event_id.clone(),
            endpoint_id: task.endpoint_id.clone(),
            tenant: task.tenant.clone(),
            event_created_at: task.event_created_at,
            attempt: task.attempt,
            result,
            status_code,
            error,
            response_excerpt: sent.excerpt.clone(),
            started_at,
            duration_ms: sent.duration.as_millis() as i64,
            next_attempt_at,
            endpoint_gone: verdict == Verdict::Gone,
            trigger: task.trigger,
        };
        let body = serde_json::to_vec(&outcome).unwrap_or_default();
        let properties = persistent_json()
            .with_type(ATTEMPT_OUTCOME_KIND.into())
            .with_message_id(outcome.attempt_id.as_str().into())
            .with_headers(traced_headers([]));
        publisher
            .publish(&self.topology.ledger_exchange(), "", &body, properties)
            .await?;
        metrics::counter!("hookfleet_attempts_total", "result" => result.as_str()).increment(1);

        match (result, retry) {
            (AttemptResult::Retrying, Some(route)) => {
                let mut next = task.clone();
                next.attempt += 1;
                publisher
                    .publish(
                        &route.exchange,
                        &route.routing_key,
                        &delivery.data,
                        task_properties(&next),
                    )
                    .await?;
                metrics::counter!("hookfleet_retries_scheduled_total").increment(1);
                metrics::histogram!("hookfleet_retry_delay_seconds").record(route.seconds as f64);
            }
            (AttemptResult::Exhausted, _) => {
                let reason = if verdict == Verdict::Gone {
                    "the endpoint answered 410 Gone; it is to be disabled".to_owned()
                } else {
                    format!(
                        "exhausted after {} attempts; last: {}",
                        task.chain_attempt(),
                        describe(&sent.response)
                    )
                };
                publisher
                    .park(&self.topology, delivery, &reason, "worker")
                    .await?;
                let why = if verdict == Verdict::Gone {
                    "gone"
                } else {
                    "exhausted"
                };
                metrics::counter!("hookfleet_tasks_dead_lettered_total", "reason" => why)
                    .increment(1);
            }
            _ => {}
        }
        Ok(())
    }
}

fn describe(response: &Response) -> String {
    match response {
        Response::Status(code) => format!("HTTP {code}"),
        Response::Timeout => "timeout".to_owned(),
        Response::Failed(text) => text.clone(),
    }
}
