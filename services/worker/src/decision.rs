//! What follows an attempt: a pure function from the task, what the
//! receiver answered and the retry policy to the next step, and the ledger
//! record of the attempt. No I/O, no clock: the caller passes the random
//! number that places a retry in its jitter band and the times.

use std::time::Duration;

use hookfleet_contract::{AttemptId, AttemptOutcome, AttemptResult, DeliveryTask};

use crate::classify::{Response, Verdict, classify};
use crate::retry::RetryPolicy;
use crate::sender::Sent;

/// The next step for a delivery after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A 2xx: the delivery is done.
    Delivered,
    /// Try again after this many whole seconds (rounded up, so a retry is
    /// never early: a 1.2 s delay waits 2 s, not 1).
    Retry { seconds: u64 },
    /// No more attempts: the task is parked with this reason.
    Dead { reason: String },
}

/// Decides what follows `sent` for `task`; `unit` is a random number in
/// [0, 1) for the jitter.
pub fn decide(task: &DeliveryTask, sent: &Sent, policy: &RetryPolicy, unit: f64) -> Decision {
    let verdict = classify(&sent.response);
    if verdict == Verdict::Delivered {
        return Decision::Delivered;
    }
    match policy.next_delay(task.chain_attempt(), verdict, sent.retry_after, unit) {
        Some(delay) => Decision::Retry {
            seconds: whole_seconds(delay),
        },
        None if verdict == Verdict::Gone => Decision::Dead {
            reason: "the endpoint answered 410 Gone; it is to be disabled".to_owned(),
        },
        None => Decision::Dead {
            reason: format!(
                "exhausted after {} attempts; last: {}",
                task.chain_attempt(),
                describe(&sent.response)
            ),
        },
    }
}

/// A delay in whole seconds, rounded up.
fn whole_seconds(delay: Duration) -> u64 {
    let seconds = delay.as_secs();
    if delay.subsec_nanos() > 0 {
        seconds + 1
    } else {
        seconds
    }
}

fn describe(response: &Response) -> String {
    match response {
        Response::Status(code) => format!("HTTP {code}"),
        Response::Timeout => "timeout".to_owned(),
        Response::Failed(text) => text.clone(),
    }
}

/// When an attempt began and, for a retry, when the next is due
/// (milliseconds since the epoch).
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub started_at: i64,
    pub next_attempt_at: Option<i64>,
}

/// The ledger's record of the attempt.
pub fn outcome(
    task: &DeliveryTask,
    sent: &Sent,
    decision: &Decision,
    times: Times,
    traceparent: Option<String>,
) -> AttemptOutcome {
    let verdict = classify(&sent.response);
    let result = match decision {
        Decision::Delivered => AttemptResult::Succeeded,
        Decision::Retry { .. } => AttemptResult::Retrying,
        Decision::Dead { .. } => AttemptResult::Exhausted,
    };
    let (status_code, error) = match &sent.response {
        Response::Status(code) if verdict == Verdict::Delivered => (Some(*code), None),
        Response::Status(code) => (Some(*code), Some(format!("HTTP {code}"))),
        Response::Timeout => (None, Some("timeout".to_owned())),
        Response::Failed(text) => (None, Some(text.clone())),
    };
    AttemptOutcome {
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
        started_at: times.started_at,
        duration_ms: sent.duration.as_millis() as i64,
        next_attempt_at: times.next_attempt_at,
        endpoint_gone: verdict == Verdict::Gone,
        trigger: task.trigger,
        traceparent,
    }
}

#[cfg(test)]
mod tests {
    use hookfleet_contract::{DeliveryId, EndpointId, EventId, EventType, Trigger};

    use super::*;

    fn task(attempt: u32) -> DeliveryTask {
        DeliveryTask {
            delivery_id: DeliveryId::derive(
                "acme",
                &EventId::parse("evt_1").unwrap(),
                &EndpointId::parse("ep_1").unwrap(),
            ),
            event_id: EventId::parse("evt_1").unwrap(),
            tenant: "acme".into(),
            event_type: EventType::parse("a.b").unwrap(),
            endpoint_id: EndpointId::parse("ep_1").unwrap(),
            url: "http://example.com/h".into(),
            sealed_secrets: vec![],
            sealed_ed25519: None,
            headers: Default::default(),
            attempt,
            chain_start: 1,
            trigger: Trigger::Scheduled,
            event_created_at: 0,
            endpoint_version: 0,
            destination: None,
            lane: None,
        }
    }

    fn sent(response: Response, retry_after: Option<Duration>) -> Sent {
        Sent {
            response,
            retry_after,
            excerpt: None,
            duration: Duration::from_millis(3),
        }
    }

    fn policy(schedule: &str, jitter: u8) -> RetryPolicy {
        RetryPolicy::new(
            hookfleet_config::Durations::parse(schedule).unwrap().0,
            jitter,
            Duration::from_secs(10),
            Duration::from_secs(3600),
        )
    }

    #[test]
    fn a_2xx_is_delivered() {
        let decision = decide(
            &task(1),
            &sent(Response::Status(204), None),
            &policy("5s", 0),
            0.5,
        );
        assert_eq!(decision, Decision::Delivered);
    }

    #[test]
    fn a_failure_retries_on_the_schedule() {
        let policy = policy("5s,5m", 0);
        let failed = sent(Response::Status(500), None);
        assert_eq!(
            decide(&task(1), &failed, &policy, 0.5),
            Decision::Retry { seconds: 5 }
        );
        assert_eq!(
            decide(&task(2), &failed, &policy, 0.5),
            Decision::Retry { seconds: 300 }
        );
        match decide(&task(3), &failed, &policy, 0.5) {
            Decision::Dead { reason } => {
                assert_eq!(reason, "exhausted after 3 attempts; last: HTTP 500")
            }
            other => panic!("expected dead, got {other:?}"),
        }
    }

    #[test]
    fn a_jittered_delay_is_rounded_up_never_down() {
        // 1 s with 20% jitter at the bottom of the band is 0.8 s: flooring
        // made it 0 s, a retry at once.
        let policy = policy("1s", 20);
        let failed = sent(Response::Status(500), None);
        assert_eq!(
            decide(&task(1), &failed, &policy, 0.0),
            Decision::Retry { seconds: 1 }
        );
        assert_eq!(
            decide(&task(1), &failed, &policy, 0.99),
            Decision::Retry { seconds: 2 }
        );
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(3)), 3);
    }

    #[test]
    fn gone_is_dead_at_once_and_says_why() {
        let decision = decide(
            &task(1),
            &sent(Response::Status(410), None),
            &policy("5s", 0),
            0.5,
        );
        assert!(matches!(decision, Decision::Dead { reason } if reason.contains("410 Gone")));
    }

    #[test]
    fn retry_after_is_honoured_for_overload() {
        let decision = decide(
            &task(1),
            &sent(Response::Status(503), Some(Duration::from_secs(120))),
            &policy("5s", 0),
            0.5,
        );
        assert_eq!(decision, Decision::Retry { seconds: 120 });
    }

    #[test]
    fn the_outcome_records_status_error_and_result() {
        let task = task(2);
        let failed = sent(Response::Status(500), None);
        let decision = Decision::Retry { seconds: 5 };
        let times = Times {
            started_at: 1_000,
            next_attempt_at: Some(6_000),
        };
        let outcome = outcome(&task, &failed, &decision, times, None);
        assert_eq!(outcome.result, AttemptResult::Retrying);
        assert_eq!(outcome.status_code, Some(500));
        assert_eq!(outcome.error.as_deref(), Some("HTTP 500"));
        assert_eq!(outcome.attempt, 2);
        assert_eq!(outcome.next_attempt_at, Some(6_000));
        assert_eq!(outcome.attempt_id, AttemptId::derive(&task.delivery_id, 2));
    }
}
