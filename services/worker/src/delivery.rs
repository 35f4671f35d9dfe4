//! Handling one delivery task: take it in ([`crate::intake`]: its secrets
//! opened under its own context, the registry view's verdict), send it,
//! decide what follows (a pure function, [`crate::decision`]), and carry
//! that out: the attempt's outcome joins the batched ledger record, then
//! the task is finished, its retry scheduled through the delay levels, or
//! it is parked when no attempts are left. The task is acked only once
//! everything it caused is confirmed by the broker (DESIGN.md invariant 1).

use std::sync::Arc;

use bytes::Bytes;
use hookfleet_contract::{ATTEMPT_OUTCOMES_KIND, DeliveryTask};
use hookfleet_signing::Sealer;
use hookfleet_topology::{
    PublishError, Publisher, Settle, Topology, continue_trace_from, task_properties,
};
use lapin::message::Delivery;
use tracing::Instrument;

use crate::amqp_destination::AmqpDestinations;
use crate::breaker::Containment;
use crate::classify::{Response, Verdict, classify};
use crate::decision::{Decision, Times, decide, outcome};
use crate::intake::Intake;
use crate::registry_view::RegistryView;
use crate::retry::RetryPolicy;
use crate::sender::{Keys, Sender, Sent};

/// A worker's delivery logic: everything one task needs, shared by all
/// of the worker's concurrent handlers.
#[derive(Debug)]
pub struct Deliverer {
    pub topology: Topology,
    pub sender: Sender,
    pub policy: RetryPolicy,
    pub sealer: Sealer,
    pub containment: Containment,
    pub destinations: AmqpDestinations,
    /// Which endpoints are gone, disabled or moved (issue 16 item 2).
    pub registry: Arc<RegistryView>,
}

/// What became of a task, for a lane holder that must know whether its
/// key is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// Delivered, parked (exhausted, gone or malformed) or cancelled: the
    /// delivery has ended.
    Ended,
    /// Sent back through the delay levels (a retry, or deferred by the
    /// breaker or a limit) to come back to its queue in this many seconds.
    Rescheduled { seconds: u64 },
    /// Nothing it caused is confirmed: it goes back to its queue as it is.
    Requeue,
}

impl Deliverer {
    /// Handles one task off the deliver queue and settles it.
    pub async fn handle(self: Arc<Self>, publisher: Publisher, delivery: Delivery, settle: Settle) {
        match self.process(&publisher, &delivery).await {
            Handled::Requeue => settle.requeue(),
            Handled::Ended | Handled::Rescheduled { .. } => settle.ack(),
        }
    }

    /// Handles one task, up to the point of settling it: everything it
    /// caused is confirmed unless the answer is [`Handled::Requeue`].
    pub async fn process(&self, publisher: &Publisher, delivery: &Delivery) -> Handled {
        let (task, keys) = match crate::intake::take(delivery, &self.sealer, &self.registry) {
            Intake::Deliver(deliver) => *deliver,
            Intake::Cancel(cancelled) => {
                let task = &cancelled.task;
                tracing::info!(delivery_id = %task.delivery_id, endpoint_id = %task.endpoint_id, reason = %cancelled.reason, "task cancelled");
                return match crate::registry_view::record(publisher, &self.topology, &cancelled)
                    .await
                {
                    Ok(()) => {
                        metrics::counter!("hookfleet_attempts_total", "result" => "cancelled")
                            .increment(1);
                        Handled::Ended
                    }
                    Err(error) => {
                        tracing::warn!(%error, "recording a cancellation failed; requeueing");
                        Handled::Requeue
                    }
                };
            }
            Intake::Malformed(reason) => {
                tracing::warn!(%reason, "parking a malformed delivery task");
                metrics::counter!("hookfleet_tasks_dead_lettered_total", "reason" => "malformed")
                    .increment(1);
                return match publisher
                    .park(&self.topology, delivery, &reason, "worker")
                    .await
                {
                    Ok(()) => Handled::Ended,
                    Err(error) => {
                        tracing::warn!(%error, "parking failed; requeueing");
                        Handled::Requeue
                    }
                };
            }
        };
        // What a cluster run's duplicates are traced back with: every
        // copy of a task a worker takes, and whether the broker says it
        // was handed out before.
        tracing::debug!(
            delivery_id = %task.delivery_id,
            attempt = task.attempt,
            redelivered = delivery.redelivered,
            routing_key = %delivery.routing_key,
            "task taken"
        );
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
        let settled = self
            .attempt(publisher, delivery, &task, keys)
            .instrument(span)
            .await;
        match settled {
            Ok(handled) => handled,
            Err(error) => {
                tracing::warn!(%error, delivery_id = %task.delivery_id, "recording the attempt failed; requeueing");
                Handled::Requeue
            }
        }
    }

    async fn attempt(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        task: &DeliveryTask,
        keys: Keys,
    ) -> Result<Handled, PublishError> {
        let admitted = if task.lane.is_some() {
            self.containment
                .admit_waiting(task.endpoint_id.as_str())
                .await
        } else {
            self.containment.admit(task.endpoint_id.as_str())
        };
        if let Err(refused) = admitted {
            let seconds = self
                .defer(publisher, delivery, task, refused.wait())
                .await?;
            return Ok(Handled::Rescheduled { seconds });
        }
        let started_at = hookfleet_contract::now_millis();
        let in_flight = metrics::gauge!("hookfleet_deliveries_in_flight");
        in_flight.increment(1);
        let sent = match &task.destination {
            Some(destination) => {
                self.destinations
                    .send(task, destination, &keys, &delivery.data)
                    .await
            }
            None => {
                self.sender
                    .send(task, &keys, Bytes::copy_from_slice(&delivery.data))
                    .await
            }
        };
        in_flight.decrement(1);
        metrics::histogram!("hookfleet_attempt_duration_seconds").record(sent.duration);
        if let Response::Status(code) = sent.response {
            tracing::Span::current().record("status", code);
        }
        self.containment.finish(
            task.endpoint_id.as_str(),
            classify(&sent.response) == Verdict::Delivered,
        );
        let decision = decide(task, &sent, &self.policy, rand::random::<f64>());
        let handled = match decision {
            Decision::Retry { seconds } => Handled::Rescheduled { seconds },
            Decision::Delivered | Decision::Dead { .. } => Handled::Ended,
        };
        self.settle(publisher, delivery, task, &sent, decision, started_at)
            .await?;
        Ok(handled)
    }

    /// Puts a task that may not go now (breaker open, endpoint at its
    /// in-flight cap, over its rate limit) back through the delay levels to
    /// its queue (a lane's task to its lane), unchanged and without an HTTP
    /// call: it is not an attempt.
    pub async fn defer(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        task: &DeliveryTask,
        wait: std::time::Duration,
    ) -> Result<u64, PublishError> {
        let seconds = wait.as_secs_f64().ceil().max(1.0) as u64;
        let route = self.topology.delay_route(seconds, &task.routing_key());
        publisher
            .publish(
                &route.exchange,
                &route.routing_key,
                &delivery.data,
                task_properties(task),
            )
            .await?;
        tracing::debug!(delivery_id = %task.delivery_id, seconds, "deferred");
        metrics::counter!("hookfleet_deliveries_deferred_total").increment(1);
        Ok(route.seconds)
    }

    /// Hands the outcome to the batched ledger record and, once it is
    /// confirmed, carries out the decision (the retry or the dead letter);
    /// returns when both are confirmed.
    ///
    /// The outcome goes first because it is idempotent (its attempt id is
    /// derived, the ledger keeps one row) and the retry or dead letter is
    /// not: if a publish fails the task is requeued and attempted again,
    /// and with both at once (or the follow-up first) a failed outcome left
    /// a parked copy or a forked retry chain behind for every try: two
    /// copies of a 410 task in the dead queue with no process killed
    /// (issue 16 item 17). A delivered task has no follow-up, so the fast
    /// path waits for the record alone, as before.
    async fn settle(
        &self,
        publisher: &Publisher,
        delivery: &Delivery,
        task: &DeliveryTask,
        sent: &Sent,
        decision: Decision,
        started_at: i64,
    ) -> Result<(), PublishError> {
        let mut next_attempt_at = None;
        let follow_up = async {
            match &decision {
                Decision::Delivered => Ok(()),
                Decision::Retry { seconds } => {
                    // A lane's task comes back to its lane, any other to
                    // its retry queue (crate::retry_queue).
                    let route = self
                        .topology
                        .delay_route(*seconds, &task.retry_routing_key());
                    let mut next = task.clone();
                    next.attempt += 1;
                    metrics::counter!("hookfleet_retries_scheduled_total").increment(1);
                    metrics::histogram!("hookfleet_retry_delay_seconds")
                        .record(route.seconds as f64);
                    publisher
                        .publish(
                            &route.exchange,
                            &route.routing_key,
                            &delivery.data,
                            task_properties(&next),
                        )
                        .await?;
                    tracing::debug!(
                        delivery_id = %task.delivery_id,
                        attempt = next.attempt,
                        seconds = route.seconds,
                        "retry scheduled"
                    );
                    Ok(())
                }
                Decision::Dead { reason } => {
                    let why = if classify(&sent.response) == Verdict::Gone {
                        "gone"
                    } else {
                        "exhausted"
                    };
                    metrics::counter!("hookfleet_tasks_dead_lettered_total", "reason" => why)
                        .increment(1);
                    publisher
                        .park(&self.topology, delivery, reason, "worker")
                        .await
                }
            }
        };
        if let Decision::Retry { seconds } = &decision {
            next_attempt_at = Some(hookfleet_contract::now_millis() + *seconds as i64 * 1000);
        }
        let times = Times {
            started_at,
            next_attempt_at,
        };
        let traceparent = hookfleet_telemetry::traceparent();
        let record = outcome(task, sent, &decision, times, traceparent);
        metrics::counter!("hookfleet_attempts_total", "result" => record.result.as_str())
            .increment(1);
        let body = serde_json::to_vec(&record).unwrap_or_default();
        let ledger = self.topology.ledger_exchange();
        publisher
            .record(&ledger, ATTEMPT_OUTCOMES_KIND, body)
            .await?;
        follow_up.await
    }
}
