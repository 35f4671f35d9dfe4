//! Failure containment per endpoint: a cap on concurrent deliveries and a
//! circuit breaker (DESIGN.md invariant 5). Pure state, driven by the
//! caller's clock, so it is unit tested without I/O.
//!
//! A task that may not go now is not held: the caller reschedules it
//! through the delay levels, so a slow or dead endpoint never occupies
//! more than its cap of a worker's slots.

use std::time::{Duration, Instant};

/// Limits for one endpoint within one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deliveries to one endpoint in flight at once.
    pub max_in_flight: u32,
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long the breaker stays open before it lets one probe through.
    pub open_for: Duration,
}

/// Whether a delivery may start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// Try again after this long (breaker open, or probing).
    Later(Duration),
    /// At the in-flight cap: a slot frees when a delivery in flight ends.
    AtCap,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; its result decides.
    HalfOpen,
}

/// The containment state of one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointGate {
    state: State,
    in_flight: u32,
}

impl Default for EndpointGate {
    fn default() -> Self {
        Self {
            state: State::Closed { failures: 0 },
            in_flight: 0,
        }
    }
}

/// When a task turned away by the in-flight cap is tried again.
const CAP_RETRY: Duration = Duration::from_secs(1);

impl EndpointGate {
    /// Admits a delivery (counting it in flight) or says when to retry.
    pub fn admit(&mut self, limits: &Limits, now: Instant) -> Admission {
        match self.state {
            State::Open { until } if now < until => return Admission::Later(until - now),
            State::Open { .. } => {
                if self.in_flight >= limits.max_in_flight {
                    return Admission::AtCap;
                }
                self.state = State::HalfOpen;
            }
            State::HalfOpen => return Admission::Later(limits.open_for.min(CAP_RETRY * 5)),
            State::Closed { .. } if self.in_flight >= limits.max_in_flight => {
                return Admission::AtCap;
            }
            State::Closed { .. } => {}
        }
        self.in_flight += 1;
        Admission::Go
    }

    /// Records how an admitted delivery ended.
    pub fn finish(&mut self, limits: &Limits, succeeded: bool, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.state = match (self.state, succeeded) {
            (_, true) => State::Closed { failures: 0 },
            (State::HalfOpen, false) => State::Open {
                until: now + limits.open_for,
            },
            (State::Closed { failures }, false) if failures + 1 >= limits.failure_threshold => {
                State::Open {
                    until: now + limits.open_for,
                }
            }
            (State::Closed { failures }, false) => State::Closed {
                failures: failures + 1,
            },
            // A late failure while already open keeps it open.
            (open @ State::Open { .. }, false) => open,
        };
    }

    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }

    /// Nothing in flight and nothing remembered: the entry can be dropped.
    pub fn is_idle(&self) -> bool {
        self.in_flight == 0 && self.state == State::Closed { failures: 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_in_flight: 2,
        failure_threshold: 3,
        open_for: Duration::from_secs(30),
    };

    #[test]
    fn the_in_flight_cap_turns_tasks_away_until_one_finishes() {
        let now = Instant::now();
        let mut gate = EndpointGate::default();
        assert_eq!(gate.admit(&LIMITS, now), Admission::Go);
        assert_eq!(gate.admit(&LIMITS, now), Admission::Go);
        assert_eq!(gate.admit(&LIMITS, now), Admission::AtCap);
        gate.finish(&LIMITS, true, now);
        assert_eq!(gate.admit(&LIMITS, now), Admission::Go);
    }

    #[tokio::test]
    async fn a_task_waiting_for_a_slot_starts_when_one_ends() {
        let containment = std::sync::Arc::new(Containment::new(LIMITS));
        containment.admit("ep").unwrap();
        containment.admit("ep").unwrap();
        assert_eq!(containment.admit("ep"), Err(Refused::AtCap));
        let waiting = tokio::spawn({
            let containment = containment.clone();
            async move { containment.admit_waiting("ep").await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "it started over the cap");
        containment.finish("ep", true);
        let admitted = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("it still waits after a slot freed")
            .unwrap();
        assert_eq!(admitted, Ok(()));
    }

    #[test]
    fn consecutive_failures_open_the_breaker_and_a_probe_closes_it() {
        let t0 = Instant::now();
        let mut gate = EndpointGate::default();
        for _ in 0..3 {
            assert_eq!(gate.admit(&LIMITS, t0), Admission::Go);
            gate.finish(&LIMITS, false, t0);
        }
        assert!(gate.is_open());
        assert_eq!(
            gate.admit(&LIMITS, t0 + Duration::from_secs(10)),
            Admission::Later(Duration::from_secs(20))
        );
        // After the open period one probe goes; others wait for its result.
        let t1 = t0 + Duration::from_secs(31);
        assert_eq!(gate.admit(&LIMITS, t1), Admission::Go);
        assert!(matches!(gate.admit(&LIMITS, t1), Admission::Later(_)));
        gate.finish(&LIMITS, true, t1);
        assert!(!gate.is_open());
        assert_eq!(gate.admit(&LIMITS, t1), Admission::Go);
    }

    #[test]
    fn a_failed_probe_reopens_the_breaker() {
        let t0 = Instant::now();
        let mut gate = EndpointGate::default();
        for _ in 0..3 {
            gate.admit(&LIMITS, t0);
            gate.finish(&LIMITS, false, t0);
        }
        let t1 = t0 + Duration::from_secs(31);
        assert_eq!(gate.admit(&LIMITS, t1), Admission::Go);
        gate.finish(&LIMITS, false, t1);
        assert_eq!(
            gate.admit(&LIMITS, t1),
            Admission::Later(Duration::from_secs(30))
        );
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let now = Instant::now();
        let mut gate = EndpointGate::default();
        for succeeded in [false, false, true, false, false] {
            gate.admit(&LIMITS, now);
            gate.finish(&LIMITS, succeeded, now);
        }
        assert!(!gate.is_open());
        assert!(!gate.is_idle());
    }
}

/// The gates of every endpoint this worker has seen recently.
#[derive(Debug)]
pub struct Containment {
    limits: Limits,
    gates: std::sync::Mutex<std::collections::HashMap<String, EndpointGate>>,
    /// Told when a delivery ends, for a lane's task waiting for a slot.
    freed: tokio::sync::Notify,
}

/// Why a delivery may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The breaker is open or probing: try again after this long.
    Later(Duration),
    /// The endpoint is at its in-flight cap in this worker.
    AtCap,
}

impl Refused {
    /// How long to put a task off for.
    pub fn wait(self) -> Duration {
        match self {
            Refused::Later(wait) => wait,
            Refused::AtCap => CAP_RETRY,
        }
    }
}

impl Containment {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            gates: Default::default(),
            freed: tokio::sync::Notify::new(),
        }
    }

    /// `Ok` if a delivery to `endpoint` may start now (call [`Self::finish`]
    /// after it), else why not.
    pub fn admit(&self, endpoint: &str) -> Result<(), Refused> {
        let Ok(mut gates) = self.gates.lock() else {
            return Ok(());
        };
        let gate = gates.entry(endpoint.to_owned()).or_default();
        match gate.admit(&self.limits, Instant::now()) {
            Admission::Go => Ok(()),
            Admission::Later(wait) => Err(Refused::Later(wait)),
            Admission::AtCap => Err(Refused::AtCap),
        }
    }

    /// Like [`Self::admit`], but at the in-flight cap it waits in hand for
    /// a slot instead of refusing. For a lane's task: put off through the
    /// delay levels, it would come back behind everything its lane holds,
    /// and its key with it.
    pub async fn admit_waiting(&self, endpoint: &str) -> Result<(), Refused> {
        loop {
            let freed = self.freed.notified();
            match self.admit(endpoint) {
                Err(Refused::AtCap) => {
                    // A wake-up may go to a waiter of another endpoint:
                    // look again now and then all the same.
                    let _ = tokio::time::timeout(Duration::from_millis(50), freed).await;
                }
                admitted => return admitted,
            }
        }
    }

    pub fn finish(&self, endpoint: &str, succeeded: bool) {
        let Ok(mut gates) = self.gates.lock() else {
            return;
        };
        if let Some(gate) = gates.get_mut(endpoint) {
            let was_open = gate.is_open();
            gate.finish(&self.limits, succeeded, Instant::now());
            // Kept as a running count: scanning every gate on every
            // delivery would put O(endpoints) work on the hot path.
            match (was_open, gate.is_open()) {
                (false, true) => metrics::gauge!("hookfleet_circuit_breakers_open").increment(1),
                (true, false) => metrics::gauge!("hookfleet_circuit_breakers_open").decrement(1),
                _ => {}
            }
            if gate.is_idle() {
                gates.remove(endpoint);
            }
        }
        drop(gates);
        self.freed.notify_one();
    }
}
