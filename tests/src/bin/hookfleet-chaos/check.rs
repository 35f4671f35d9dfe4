//! The verdict, from the outside only: what the receivers recorded, the
//! ledger's tables and the dead-letter queue, set against the events the
//! producer accepted.
//!
//! Matching receiver arrivals with ledger attempts: an attempt is one try
//! of one delivery, identified by (delivery, attempt number), and the
//! ledger records it once (`ON CONFLICT DO NOTHING`). Per (event,
//! endpoint), the arrivals the receiver answered with a status must equal
//! the ledger's attempts with that status, and the arrivals it hung or
//! reset must equal the ledger's attempts without a status (a reset is an
//! attempt the receiver saw and the worker got no status for: it counts on
//! both sides, as an attempt without a status). Two differences are
//! expected and classified rather than failed:
//!
//! - the receiver saw more than the ledger holds when a worker died (or
//!   lost the broker) after the HTTP call but before its outcome was
//!   published: the task comes back with the same attempt number, is sent
//!   again, and the ledger keeps one row (or the retry it had already
//!   scheduled runs twice). Receivers cannot see attempt numbers, so the
//!   receiver tells which worker process sent each request (the owner of
//!   the connection's socket, from /proc), and a pair's *repeats* are
//!   explained when one of its arrivals was sent by a worker that was
//!   SIGKILLed afterwards, or during a broker outage (a worker killed after
//!   scheduling the next retry but before acking forks the chain, so every
//!   later attempt can come twice), or when the pair was still on its way
//!   through a broker outage (accepted before the outage ended, first
//!   arrival after it began: its routing or task may be done twice, and a
//!   database outage right after can delay the second copy by a minute).
//!   Excess arrivals in a pair without such a cause are mismatches;
//! - the ledger holds attempts without a status that no receiver saw when
//!   the connection timed out or was refused before a request was read.
//!
//! The AMQP destination is an endpoint like the others whose "receiver" is
//! the chaos tool's consumer of the destination's queue: every message
//! there is a 200, and a ledger attempt with 200 (a confirm) is a message
//! that must be there. Its failed attempts have no status and no arrival
//! when the broker was unreachable, did not confirm in time or nacked; a
//! publish the broker stored but whose confirm the worker never saw is an
//! arrival beside a failed attempt (counted as such, and its retry as a
//! duplicate). An unroutable publish (our queue is always bound) is a
//! mismatch.
//!
//! Anything else is a mismatch and fails the run. Every figure is also
//! split by path: how the event came in (`POST /v1/events`, or through the
//! inbound source) and where it went (HTTP endpoints, the AMQP
//! destination).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::destination::ConsumerSummary;
use crate::faults::{FaultRecord, Malformed};
use crate::inbound::InboundSummary;
use crate::receiver::{Answer, Arrival};

/// One endpoint of the run.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointInfo {
    pub id: String,
    pub name: &'static str,
    pub behaviour_text: String,
    pub event_types: Vec<&'static str>,
    /// The AMQP destination (its arrivals come from the queue consumer).
    pub amqp: bool,
}

/// One attempt row of the ledger.
#[derive(Debug, Clone)]
pub struct LedgerAttempt {
    pub event_id: String,
    pub endpoint_id: String,
    pub status_code: Option<i32>,
    pub error: Option<String>,
}

/// One parked message (read from the ledger's `parked` table).
#[derive(Debug, Clone)]
pub struct DeadMessage {
    pub message_id: Option<String>,
    pub reason: Option<String>,
    pub parked_by: Option<String>,
    /// For a parked delivery task: its event and endpoint.
    pub task: Option<(String, String)>,
}

/// Everything observed at the end of the run.
#[derive(Debug, Default)]
pub struct Observed {
    pub accepted: BTreeMap<String, &'static str>,
    /// When each accepted event's 202 came (seconds since the origin).
    pub accepted_at: HashMap<String, f64>,
    /// The seconds of the load (since the origin) in which ingest
    /// answered a 503.
    pub seconds_with_503: BTreeSet<u64>,
    /// Seconds of load.
    pub load_s: u64,
    /// Duplicates beyond this share of the deliveries fail the run (a
    /// cluster run's goal); `None`: reported only.
    pub max_duplicate_ratio: Option<f64>,
    /// Events the load created, and gave up on (never a 202).
    pub sent: u64,
    pub given_up: u64,
    /// Ingest calls answered other than 202, by status (0: no answer).
    pub ingest_refusals: BTreeMap<u16, u64>,
    pub arrivals: Vec<Arrival>,
    pub unreadable_requests: u64,
    pub endpoints: Vec<EndpointInfo>,
    /// (event, endpoint) → state.
    pub deliveries: HashMap<(String, String), String>,
    pub attempts: Vec<LedgerAttempt>,
    pub ledger_events: BTreeSet<String>,
    pub dead: Vec<DeadMessage>,
    pub malformed: Vec<Malformed>,
    pub faults: Vec<FaultRecord>,
    /// Services that exited without being told to, and how.
    pub crashes: Vec<String>,
    /// Exit statuses when the fleet was stopped at the end, by service.
    pub final_exits: Vec<(String, String)>,
    pub settled: bool,
    pub settle_s: f64,
    /// The endpoint with `"ordered": true`, and the keyed events sent.
    pub ordered_endpoint: Option<usize>,
    pub ordered_sends: Vec<crate::order::OrderedSend>,
    /// The accepted events that came through the inbound source, and what
    /// that load did.
    pub inbound_ids: BTreeSet<String>,
    pub inbound: InboundSummary,
    /// The AMQP destination's consumer, if the run had one.
    pub destination: Option<ConsumerSummary>,
}

/// One path's share of the deliveries: how the events came in, where they
/// went.
#[derive(Debug, Default, Clone, Serialize)]
pub struct PathFigures {
    pub expected: usize,
    pub delivered: usize,
    pub exhausted: usize,
    pub lost: usize,
    pub duplicates: usize,
}

/// The figures of the summary table.
/// How ingest answered while one outage lasted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutageIngest {
    pub fault: String,
    pub from_s: f64,
    pub until_s: f64,
    /// Whole seconds of the outage.
    pub seconds: u64,
    /// Of those, the seconds in which ingest answered a 503.
    pub seconds_with_503: usize,
}

/// For each outage among `faults`, the seconds of it in which ingest
/// answered a 503 (`seconds_with_503` are seconds since the origin).
pub fn ingest_during_outages(
    faults: &[FaultRecord],
    seconds_with_503: &BTreeSet<u64>,
) -> Vec<OutageIngest> {
    faults
        .iter()
        .filter(|f| f.fault.ends_with(" restart"))
        .filter_map(|f| {
            let until_s = f.until_s?;
            let (first, last) = (f.at_s.floor() as u64, until_s.ceil() as u64);
            Some(OutageIngest {
                fault: f.fault.clone(),
                from_s: f.at_s,
                until_s,
                seconds: last.saturating_sub(first),
                seconds_with_503: seconds_with_503.range(first..last).count(),
            })
        })
        .collect()
}

#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    pub events_sent: u64,
    pub events_given_up: u64,
    pub ingest_refusals: BTreeMap<u16, u64>,
    /// Seconds of the load with at least one 503 from ingest, and their
    /// share of the load's seconds.
    pub seconds_with_503: usize,
    pub share_of_seconds_with_503: f64,
    /// Ingest while each outage lasted (issue 16 item 16: known tokens
    /// keep ingest open through a PostgreSQL outage).
    pub ingest_during_outages: Vec<OutageIngest>,
    /// The longest time during the load without a successful delivery
    /// anywhere, and when it began.
    pub longest_delivery_gap_s: f64,
    pub longest_delivery_gap_at_s: f64,
    /// From the 202 to the first 200 at a healthy endpoint, in seconds:
    /// for events accepted outside broker faults and during them.
    pub latency_outside_faults: Latency,
    pub latency_during_faults: Latency,
    pub accepted_events: usize,
    pub expected_deliveries: usize,
    pub delivered: usize,
    pub exhausted: usize,
    pub exhausted_by_endpoint: BTreeMap<String, usize>,
    pub lost: usize,
    pub lost_examples: Vec<String>,
    pub duplicates: usize,
    pub duplicate_ratio: f64,
    /// Events delivered that the load never saw accepted (a 202 lost on the
    /// way back); not a failure.
    pub delivered_not_confirmed: usize,
    pub receiver_arrivals: usize,
    pub receiver_arrivals_by_answer: BTreeMap<String, usize>,
    /// Arrivals whose sending worker could not be told.
    pub sender_unknown: usize,
    pub ledger_attempts: usize,
    pub matched_attempts: usize,
    /// Arrivals beyond the ledger's rows after a worker kill or broker
    /// outage (the same attempt sent again).
    pub repeats_explained: usize,
    /// Ledger attempts no receiver saw, by class (timeout, refused).
    pub ledger_only: BTreeMap<String, usize>,
    pub mismatches: usize,
    pub mismatch_examples: Vec<String>,
    pub ledger_events_missing: usize,
    pub ledger_state_mismatches: usize,
    pub ledger_state_examples: Vec<String>,
    pub dlq_messages: usize,
    /// Parked tasks beyond one per exhausted delivery (a worker killed
    /// between parking and acking parks again), and anything else there.
    pub dlq_repeated_tasks: usize,
    pub dlq_other: usize,
    pub malformed_published: usize,
    pub malformed_dead_lettered: usize,
    pub malformed_missing: Vec<String>,
    /// Each malformed message's `x-hookfleet-reason`.
    pub malformed_reasons: BTreeMap<String, String>,
    pub exhausted_in_dlq: usize,
    pub exhausted_not_in_dlq: usize,
    pub unreadable_requests: u64,
    pub crashes: Vec<String>,
    pub failed_faults: Vec<String>,
    pub settled: bool,
    pub settle_s: f64,
    /// Arrivals at the ordered endpoint checked for order per key, and
    /// those out of order.
    pub order_checked: usize,
    pub order_violations: usize,
    pub order_examples: Vec<String>,
    /// The inbound load (events through the source).
    pub inbound: InboundSummary,
    /// Expected, delivered, exhausted, lost and duplicates by path.
    pub paths: BTreeMap<String, PathFigures>,
    pub destination: Option<ConsumerSummary>,
    /// Destination messages the broker stored whose publish the ledger
    /// records as failed (the confirm was lost with the connection or came
    /// too late); their retry is a duplicate.
    pub amqp_confirm_lost: usize,
    pub failures: Vec<String>,
}

/// A latency distribution, in seconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Latency {
    pub count: usize,
    pub p50_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
}

impl Latency {
    fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Self {
            count: values.len(),
            p50_s: at(0.5),
            p99_s: at(0.99),
            max_s: values[values.len() - 1],
        }
    }

    fn text(&self) -> String {
        format!(
            "p50 {:.2} s, p99 {:.2} s, max {:.2} s ({} deliveries)",
            self.p50_s, self.p99_s, self.max_s, self.count
        )
    }
}

/// Whether a fault takes (part of) the broker away: a restart of the one
/// broker, or a node of a cluster killed or stopped.
fn is_broker_fault(fault: &FaultRecord) -> bool {
    fault.fault.starts_with("rabbitmq ")
}

/// A failed publish to the AMQP destination, by its recorded error:
/// `broker` (unreachable, channel or connection gone), `timeout` (no
/// confirm in time), `nack`, `unroutable` or `other`.
fn classify_amqp_error(error: Option<&str>) -> &'static str {
    let error = error.unwrap_or_default().to_lowercase();
    if error.contains("unroutable") {
        "unroutable"
    } else if error.contains("nack") {
        "nack"
    } else if error.contains("timeout") || error.contains("timed out") {
        "timeout"
    } else if error.contains("broker") || error.contains("channel") || error.contains("connection")
    {
        "broker"
    } else {
        "other"
    }
}

/// How an event came in and where a delivery of it went, as the table
/// names the path.
fn path_name(inbound: bool, amqp: bool) -> String {
    format!(
        "{} → {}",
        if inbound {
            "inbound (GitHub-signed)"
        } else {
            "POST /v1/events"
        },
        if amqp {
            "AMQP destination"
        } else {
            "HTTP endpoints"
        }
    )
}

fn classify_error(error: Option<&str>) -> &'static str {
    let error = error.unwrap_or_default().to_lowercase();
    if error.contains("timeout") || error.contains("timed out") {
        "timeout"
    } else if error.contains("refused") {
        "refused"
    } else if error.contains("reset") || error.contains("closed") || error.contains("connection") {
        "reset"
    } else {
        "other"
    }
}

/// Arrivals or ledger attempts per (event id, endpoint id).
type ByPair<'a, T> = HashMap<(String, String), Vec<&'a T>>;

impl Observed {
    /// How many of a pair's arrivals were interrupted before the worker
    /// that sent them could finish the task: sent by a worker SIGKILLed
    /// afterwards, or while the broker went away. One is enough to explain
    /// every repeat of the pair: the task comes back with the same attempt
    /// number, and if the worker had already scheduled the next retry, both
    /// chains run on, so every later attempt can come twice.
    fn interrupted(&self, seen: &[&Arrival]) -> usize {
        seen.iter()
            .filter(|arrival| {
                let at = arrival.at.as_secs_f64();
                self.faults.iter().any(|f| match f.fault.as_str() {
                    "worker SIGKILL" => match (arrival.sender, f.pid) {
                        (Some(sender), Some(killed)) => sender == killed && f.at_s >= at - 0.5,
                        // Sender unknown (it died before it was looked
                        // up): a kill about then.
                        _ => (f.at_s - at).abs() <= 2.0,
                    },
                    _ if is_broker_fault(f) => {
                        at >= f.at_s - 3.0 && at <= f.until_s.unwrap_or(f.at_s) + 3.0
                    }
                    _ => false,
                })
            })
            .count()
    }

    /// Whether an (event, endpoint) pair was still on its way when the
    /// broker went away: the event accepted before a broker fault ended and
    /// its first arrival there after the fault began. Such an event's
    /// routing or task can run twice (at-least-once: a publish whose
    /// confirm, or a delivery whose ack, was lost with the connection is
    /// done again), and when a database outage then holds the router back,
    /// the second copy arrives long after the broker came back, beyond the
    /// arrival-time window of [`Self::interrupted`].
    fn in_flight_through_broker_fault(&self, event_id: &str, seen: &[&Arrival]) -> bool {
        let (Some(accepted), Some(first)) = (
            self.accepted_at.get(event_id),
            seen.iter().map(|a| a.at.as_secs_f64()).reduce(f64::min),
        ) else {
            return false;
        };
        self.faults
            .iter()
            .filter(|f| is_broker_fault(f))
            .any(|f| *accepted <= f.until_s.unwrap_or(f.at_s) + 3.0 && first >= f.at_s)
    }

    /// What the faults cost in time: ingest 503s, the longest silence at
    /// the receivers, and the latency to the healthy endpoints.
    fn timing(&self, v: &mut Verdict) {
        v.seconds_with_503 = self.seconds_with_503.len();
        v.share_of_seconds_with_503 = if self.load_s == 0 {
            0.0
        } else {
            v.seconds_with_503 as f64 / self.load_s as f64
        };
        v.ingest_during_outages = ingest_during_outages(&self.faults, &self.seconds_with_503);
        let mut delivered_at: Vec<f64> = self
            .arrivals
            .iter()
            .filter(|a| a.answer == Answer::Ok)
            .map(|a| a.at.as_secs_f64())
            .filter(|at| *at <= self.load_s as f64)
            .collect();
        delivered_at.sort_by(f64::total_cmp);
        let mut previous = 0.0;
        for at in delivered_at {
            if at - previous > v.longest_delivery_gap_s {
                v.longest_delivery_gap_s = at - previous;
                v.longest_delivery_gap_at_s = previous;
            }
            previous = at;
        }
        let windows: Vec<(f64, f64)> = self
            .faults
            .iter()
            .filter(|f| is_broker_fault(f))
            .map(|f| (f.at_s, f.until_s.unwrap_or(f.at_s)))
            .collect();
        let mut first_ok: HashMap<(&str, usize), f64> = HashMap::new();
        for arrival in &self.arrivals {
            let healthy = self.endpoints[arrival.endpoint].name.starts_with("healthy");
            if healthy && arrival.answer == Answer::Ok {
                let at = arrival.at.as_secs_f64();
                first_ok
                    .entry((arrival.event_id.as_str(), arrival.endpoint))
                    .and_modify(|t| *t = t.min(at))
                    .or_insert(at);
            }
        }
        let (mut during, mut outside) = (Vec::new(), Vec::new());
        for ((event_id, _), at) in first_ok {
            let Some(accepted) = self.accepted_at.get(event_id) else {
                continue;
            };
            let latency = (at - accepted).max(0.0);
            if windows
                .iter()
                .any(|(from, to)| *accepted >= *from && *accepted <= *to)
            {
                during.push(latency);
            } else {
                outside.push(latency);
            }
        }
        v.latency_outside_faults = Latency::of(outside);
        v.latency_during_faults = Latency::of(during);
    }

    /// The run judged: every accepted event at every subscribed endpoint
    /// (or exhausted and parked), the ledger against the receivers, the
    /// dead-letter queue, the order per key, and what fails the run.
    pub fn verdict(&self) -> Verdict {
        let mut v = Verdict {
            accepted_events: self.accepted.len(),
            events_sent: self.sent,
            events_given_up: self.given_up,
            ingest_refusals: self.ingest_refusals.clone(),
            unreadable_requests: self.unreadable_requests,
            crashes: self.crashes.clone(),
            settled: self.settled,
            settle_s: self.settle_s,
            dlq_messages: self.dead.len(),
            inbound: self.inbound.clone(),
            destination: self.destination.clone(),
            ..Verdict::default()
        };
        let arrivals = self.arrivals_by_pair(&mut v);
        let ledger = self.attempts_by_pair(&mut v);
        self.check_deliveries(&mut v, &arrivals);
        self.timing(&mut v);
        v.duplicate_ratio = if v.delivered == 0 {
            0.0
        } else {
            v.duplicates as f64 / v.delivered as f64
        };
        self.check_ledger_states(&mut v, &arrivals);
        self.match_attempts(&mut v, &arrivals, &ledger);
        self.check_dead_letters(&mut v);
        v.failed_faults = self
            .faults
            .iter()
            .filter(|f| !f.ok)
            .map(|f| format!("{} at {} s: {}", f.fault, f.at_s, f.detail))
            .collect();

        self.check_order(&mut v);
        v.failures = self.failures(&v);
        v
    }

    /// Endpoints by id.
    fn by_id(&self) -> HashMap<&str, &EndpointInfo> {
        self.endpoints.iter().map(|e| (e.id.as_str(), e)).collect()
    }

    /// Arrivals per (event, endpoint id), in arrival order; counts them
    /// by answer and those of an unknown sender.
    fn arrivals_by_pair(&self, v: &mut Verdict) -> ByPair<'_, Arrival> {
        let mut arrivals: HashMap<(String, String), Vec<&Arrival>> = HashMap::new();
        for arrival in &self.arrivals {
            let endpoint = &self.endpoints[arrival.endpoint];
            *v.receiver_arrivals_by_answer
                .entry(format!("{:?}", arrival.answer).to_lowercase())
                .or_default() += 1;
            arrivals
                .entry((arrival.event_id.clone(), endpoint.id.clone()))
                .or_default()
                .push(arrival);
        }
        v.receiver_arrivals = self.arrivals.len();
        // The destination's messages carry no sender.
        v.sender_unknown = self
            .arrivals
            .iter()
            .filter(|a| a.sender.is_none() && !self.endpoints[a.endpoint].amqp)
            .count();
        arrivals
    }

    /// Ledger attempts per (event, endpoint id).
    fn attempts_by_pair(&self, v: &mut Verdict) -> ByPair<'_, LedgerAttempt> {
        let mut ledger: HashMap<(String, String), Vec<&LedgerAttempt>> = HashMap::new();
        for attempt in &self.attempts {
            ledger
                .entry((attempt.event_id.clone(), attempt.endpoint_id.clone()))
                .or_default()
                .push(attempt);
        }
        v.ledger_attempts = self.attempts.len();

        ledger
    }

    /// Every accepted event at every subscribed endpoint, or exhausted:
    /// delivered, duplicates, exhausted and lost, by path; and every
    /// accepted event in the ledger.
    fn check_deliveries(&self, v: &mut Verdict, arrivals: &ByPair<'_, Arrival>) {
        for (event_id, event_type) in &self.accepted {
            for endpoint in &self.endpoints {
                if !endpoint.event_types.contains(event_type) {
                    continue;
                }
                v.expected_deliveries += 1;
                let path = v
                    .paths
                    .entry(path_name(
                        self.inbound_ids.contains(event_id),
                        endpoint.amqp,
                    ))
                    .or_default();
                path.expected += 1;
                let key = (event_id.clone(), endpoint.id.clone());
                let ok = arrivals
                    .get(&key)
                    .map_or(0, |a| a.iter().filter(|a| a.answer == Answer::Ok).count());
                let state = self.deliveries.get(&key).map(String::as_str);
                if ok > 0 {
                    v.delivered += 1;
                    v.duplicates += ok - 1;
                    path.delivered += 1;
                    path.duplicates += ok - 1;
                    if state != Some("succeeded") {
                        v.ledger_state_mismatches += 1;
                        push_example(
                            &mut v.ledger_state_examples,
                            format!(
                                "{event_id} at {}: arrived (200) but the ledger says {state:?}",
                                endpoint.name
                            ),
                        );
                    }
                } else if state == Some("exhausted") {
                    path.exhausted += 1;
                    v.exhausted += 1;
                    *v.exhausted_by_endpoint
                        .entry(endpoint.name.to_owned())
                        .or_default() += 1;
                } else {
                    path.lost += 1;
                    v.lost += 1;
                    push_example(
                        &mut v.lost_examples,
                        format!(
                            "{event_id} at {}: {} arrival(s), none 200; ledger state {state:?}",
                            endpoint.name,
                            arrivals.get(&key).map_or(0, Vec::len)
                        ),
                    );
                }
            }
            if !self.ledger_events.contains(event_id) {
                v.ledger_events_missing += 1;
            }
        }
    }

    /// The ledger's delivery states against the receivers: a ledger that
    /// says succeeded where no 200 arrived; and 200s for events never
    /// accepted.
    fn check_ledger_states(&self, v: &mut Verdict, arrivals: &ByPair<'_, Arrival>) {
        let by_id = self.by_id();
        for ((event_id, endpoint_id), state) in &self.deliveries {
            let ok = arrivals
                .get(&(event_id.clone(), endpoint_id.clone()))
                .is_some_and(|a| a.iter().any(|a| a.answer == Answer::Ok));
            if state == "succeeded" && !ok {
                v.ledger_state_mismatches += 1;
                let name = by_id.get(endpoint_id.as_str()).map_or("?", |e| e.name);
                push_example(
                    &mut v.ledger_state_examples,
                    format!("{event_id} at {name}: the ledger says succeeded, no 200 arrived"),
                );
            }
        }
        v.delivered_not_confirmed = arrivals
            .iter()
            .filter(|((event_id, _), a)| {
                !self.accepted.contains_key(event_id) && a.iter().any(|a| a.answer == Answer::Ok)
            })
            .count();
    }

    /// Receiver arrivals against ledger attempts, pair by pair.
    fn match_attempts(
        &self,
        v: &mut Verdict,
        arrivals: &ByPair<'_, Arrival>,
        ledger: &ByPair<'_, LedgerAttempt>,
    ) {
        let by_id = self.by_id();
        let pairs: BTreeSet<&(String, String)> = arrivals.keys().chain(ledger.keys()).collect();
        for key in pairs {
            let seen = arrivals.get(key).map(Vec::as_slice).unwrap_or_default();
            let rows = ledger.get(key).map(Vec::as_slice).unwrap_or_default();
            let endpoint = by_id.get(key.1.as_str()).copied();
            self.match_pair(v, &key.0, endpoint, seen, rows);
        }
    }

    /// One (event, endpoint)'s arrivals against its ledger attempts,
    /// status by status: the matched, the repeats a fault explains, the
    /// ledger-only attempts an error explains, and the mismatches.
    fn match_pair(
        &self,
        v: &mut Verdict,
        event_id: &str,
        endpoint: Option<&EndpointInfo>,
        seen: &[&Arrival],
        rows: &[&LedgerAttempt],
    ) {
        let name = endpoint.map_or("?", |e| e.name);
        let amqp = endpoint.is_some_and(|e| e.amqp);
        let interrupted =
            self.interrupted(seen) > 0 || self.in_flight_through_broker_fault(event_id, seen);
        // Statuses first: each status counted on both sides.
        let mut statuses: BTreeMap<u16, (usize, usize)> = BTreeMap::new();
        for arrival in seen {
            if let Some(code) = arrival.answer.status() {
                statuses.entry(code).or_default().0 += 1;
            }
        }
        for row in rows {
            if let Some(code) = row.status_code {
                statuses.entry(code as u16).or_default().1 += 1;
            }
        }
        let seen_without = seen.iter().filter(|a| a.answer.status().is_none()).count();
        let mut rows_without: Vec<&&LedgerAttempt> =
            rows.iter().filter(|r| r.status_code.is_none()).collect();
        if amqp {
            // Messages beyond the confirms, beside publishes recorded as
            // failed that the broker may have stored all the same.
            let ok = statuses.entry(200).or_default();
            let mut stored = ok.0.saturating_sub(ok.1);
            rows_without.retain(|row| {
                let unconfirmed = matches!(
                    classify_amqp_error(row.error.as_deref()),
                    "timeout" | "broker"
                );
                if stored > 0 && unconfirmed {
                    stored -= 1;
                    ok.1 += 1;
                    v.amqp_confirm_lost += 1;
                    false
                } else {
                    true
                }
            });
        }
        let mut classes = vec![(seen_without, rows_without.len(), None)];
        classes.extend(statuses.into_iter().map(|(c, (s, r))| (s, r, Some(c))));
        for (seen_n, rows_n, code) in classes {
            v.matched_attempts += seen_n.min(rows_n);
            let what = code.map_or("no status".to_owned(), |c| format!("HTTP {c}"));
            if seen_n > rows_n && interrupted {
                v.repeats_explained += seen_n - rows_n;
            } else if seen_n > rows_n {
                v.mismatches += seen_n - rows_n;
                push_example(
                    &mut v.mismatch_examples,
                    format!(
                        "{} at {name}: receiver saw {seen_n} attempt(s) with {what}, ledger has {rows_n}; arrivals {}",
                        event_id,
                        describe_arrivals(seen)
                    ),
                );
            } else if rows_n > seen_n {
                match code {
                    Some(_) => {
                        v.mismatches += rows_n - seen_n;
                        push_example(
                            &mut v.mismatch_examples,
                            format!(
                                "{} at {name}: ledger has {rows_n} attempt(s) with {what}, receiver saw {seen_n}",
                                event_id
                            ),
                        );
                    }
                    None => {
                        // Which of the rows without a status had no
                        // arrival cannot be told apart; classify the
                        // excess by the rows' errors, the least
                        // explainable first.
                        if amqp {
                            // No arrival answers a failed publish: each
                            // is ledger-only, by its error.
                            for row in &rows_without {
                                let class = classify_amqp_error(row.error.as_deref());
                                if class == "unroutable" || class == "other" {
                                    v.mismatches += 1;
                                    push_example(
                                        &mut v.mismatch_examples,
                                        format!(
                                            "{} at {name}: a publish failed ({:?})",
                                            event_id, row.error
                                        ),
                                    );
                                } else {
                                    *v.ledger_only.entry(format!("AMQP {class}")).or_default() += 1;
                                }
                            }
                            continue;
                        }
                        let mut errors: Vec<&str> = rows_without
                            .iter()
                            .map(|r| classify_error(r.error.as_deref()))
                            .collect();
                        errors.sort_by_key(|c| match *c {
                            "timeout" => 2,
                            "refused" => 1,
                            _ => 0,
                        });
                        for class in errors.into_iter().rev().take(rows_n - seen_n) {
                            if class == "timeout" || class == "refused" {
                                *v.ledger_only.entry(class.to_owned()).or_default() += 1;
                            } else {
                                v.mismatches += 1;
                                push_example(
                                    &mut v.mismatch_examples,
                                    format!(
                                        "{} at {name}: ledger has an attempt without status ({class}) no receiver saw",
                                        event_id
                                    ),
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The dead-letter queue: every malformed message with a reason, and
    /// every exhausted delivery's task.
    fn check_dead_letters(&self, v: &mut Verdict) {
        let mut reasons: HashMap<&str, Option<&str>> = HashMap::new();
        let mut parked_tasks: BTreeSet<(String, String)> = BTreeSet::new();
        let malformed_ids: BTreeSet<&str> = self
            .malformed
            .iter()
            .map(|m| m.message_id.as_str())
            .collect();
        for message in &self.dead {
            if let Some(id) = &message.message_id {
                reasons.insert(id.as_str(), message.reason.as_deref());
            }
            if message.parked_by.as_deref() == Some("worker")
                && let Some(task) = &message.task
            {
                if !parked_tasks.insert(task.clone()) {
                    v.dlq_repeated_tasks += 1;
                }
            } else if !message
                .message_id
                .as_deref()
                .is_some_and(|id| malformed_ids.contains(id))
            {
                v.dlq_other += 1;
            }
        }
        for message in &self.malformed {
            if !message.published {
                continue;
            }
            v.malformed_published += 1;
            match reasons.get(message.message_id.as_str()) {
                Some(Some(reason)) if !reason.is_empty() => {
                    v.malformed_dead_lettered += 1;
                    v.malformed_reasons
                        .insert(message.message_id.clone(), (*reason).to_owned());
                }
                Some(_) => v.malformed_missing.push(format!(
                    "{} ({}): no reason",
                    message.message_id, message.kind
                )),
                None => v.malformed_missing.push(format!(
                    "{} ({}): not in the queue",
                    message.message_id, message.kind
                )),
            }
        }
        for ((event_id, endpoint_id), state) in &self.deliveries {
            if state == "exhausted" {
                if parked_tasks.contains(&(event_id.clone(), endpoint_id.clone())) {
                    v.exhausted_in_dlq += 1;
                } else {
                    v.exhausted_not_in_dlq += 1;
                }
            }
        }
    }

    /// Arrivals at the ordered endpoint against the order its events were
    /// sent in, per key.
    fn check_order(&self, v: &mut Verdict) {
        let Some(ordered) = self.ordered_endpoint else {
            return;
        };
        let arrivals: Vec<crate::order::OrderedArrival> = self
            .arrivals
            .iter()
            .filter(|a| a.endpoint == ordered)
            .map(|a| crate::order::OrderedArrival {
                event_id: a.event_id.clone(),
                at: a.at,
                ok: a.answer.status().is_some_and(|s| (200..300).contains(&s)),
            })
            .collect();
        let found = crate::order::violations(&self.ordered_sends, &arrivals);
        v.order_checked = arrivals.len();
        v.order_violations = found.len();
        v.order_examples = found.into_iter().take(5).collect();
    }

    /// What fails the run, each said in a line.
    fn failures(&self, v: &Verdict) -> Vec<String> {
        let mut failures = Vec::new();
        let mut fail = |cond: bool, text: String| {
            if cond {
                failures.push(text);
            }
        };
        fail(v.accepted_events == 0, "no event was accepted".into());
        fail(
            v.inbound.sent > 0 && self.inbound_ids.is_empty(),
            "no event was accepted through the inbound source".into(),
        );
        fail(
            v.inbound.redeliveries_renamed > 0,
            format!(
                "{} redeliveries of an accepted delivery id were named another event",
                v.inbound.redeliveries_renamed
            ),
        );
        if let Some(destination) = &self.destination {
            let expected: usize = v
                .paths
                .iter()
                .filter(|(path, _)| path.ends_with("AMQP destination"))
                .map(|(_, figures)| figures.expected)
                .sum();
            fail(
                expected == 0,
                "no event was routed to the AMQP destination".into(),
            );
            fail(
                destination.unreadable > 0,
                format!(
                    "{} messages without a webhook-id in the destination queue",
                    destination.unreadable
                ),
            );
        }
        fail(v.lost > 0, format!("{} deliveries lost", v.lost));
        if let Some(max) = self.max_duplicate_ratio {
            fail(
                v.duplicate_ratio > max,
                format!(
                    "{} duplicates, {:.2}% of the deliveries (at most {:.1}%)",
                    v.duplicates,
                    v.duplicate_ratio * 100.0,
                    max * 100.0
                ),
            );
        }
        fail(
            v.order_violations > 0,
            format!(
                "{} arrivals out of order per key at the ordered endpoint: {:?}",
                v.order_violations, v.order_examples
            ),
        );
        fail(
            v.mismatches > 0,
            format!("{} receiver/ledger attempt mismatches", v.mismatches),
        );
        fail(
            v.ledger_state_mismatches > 0,
            format!(
                "{} ledger delivery states contradict the receivers",
                v.ledger_state_mismatches
            ),
        );
        fail(
            v.ledger_events_missing > 0,
            format!(
                "{} accepted events missing from the ledger",
                v.ledger_events_missing
            ),
        );
        fail(
            !v.malformed_missing.is_empty() || v.malformed_published < self.malformed.len(),
            format!(
                "malformed messages: {} published of {}, {} dead-lettered with a reason",
                v.malformed_published,
                self.malformed.len(),
                v.malformed_dead_lettered
            ),
        );
        fail(
            v.exhausted_not_in_dlq > 0,
            format!(
                "{} exhausted deliveries not in the dead-letter queue",
                v.exhausted_not_in_dlq
            ),
        );
        fail(
            v.unreadable_requests > 0,
            format!(
                "{} unreadable requests at the receivers",
                v.unreadable_requests
            ),
        );
        fail(
            !v.crashes.is_empty(),
            format!("crashes: {}", v.crashes.join("; ")),
        );
        fail(
            !v.failed_faults.is_empty(),
            format!("faults that failed: {}", v.failed_faults.join("; ")),
        );
        for (service, status) in &self.final_exits {
            fail(
                status != "exit status: 0",
                format!("{service} ended with {status} on SIGTERM at the end"),
            );
        }
        fail(!v.settled, "did not settle in time".into());
        failures
    }
}

/// Refused calls by status, for the table.
fn refusals(by_status: &BTreeMap<u16, u64>) -> String {
    if by_status.is_empty() {
        return "0".into();
    }
    by_status
        .iter()
        .map(|(code, n)| match code {
            0 => format!("no answer {n}"),
            c => format!("{c} {n}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn push_example(examples: &mut Vec<String>, text: String) {
    if examples.len() < 10 {
        examples.push(text);
    }
}

/// The summary table, for people.
pub fn print(v: &Verdict, faults: &[FaultRecord], header: &str) {
    println!();
    println!("{header}");
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    let row = |k: &str, val: String| println!("| {k} | {val} |");
    row(
        "events sent / accepted (202) / given up: POST /v1/events",
        format!(
            "{} / {} / {}",
            v.events_sent,
            v.accepted_events.saturating_sub(v.inbound.accepted),
            v.events_given_up
        ),
    );
    row(
        "  calls refused while faults lasted (retried, same event id)",
        refusals(&v.ingest_refusals),
    );
    row(
        "inbound (GitHub-signed) sent / accepted (200) / given up",
        format!(
            "{} / {} / {}",
            v.inbound.sent, v.inbound.accepted, v.inbound.given_up
        ),
    );
    row(
        "  inbound calls refused while faults lasted (retried, same delivery id)",
        refusals(&v.inbound.refusals),
    );
    row(
        "  provider redeliveries of accepted delivery ids: sent / answered 200 / named another event",
        format!(
            "{} / {} / {}",
            v.inbound.redeliveries_sent,
            v.inbound.redeliveries_accepted,
            v.inbound.redeliveries_renamed
        ),
    );
    row(
        "seconds of load with a 503 from ingest",
        format!(
            "{} ({:.1}% of the load's seconds)",
            v.seconds_with_503,
            v.share_of_seconds_with_503 * 100.0
        ),
    );
    for outage in &v.ingest_during_outages {
        row(
            &format!(
                "  during the {} ({:.1}-{:.1} s)",
                outage.fault, outage.from_s, outage.until_s
            ),
            format!(
                "{} of its {} s with a 503",
                outage.seconds_with_503, outage.seconds
            ),
        );
    }
    row(
        "longest time without a delivery (during the load)",
        format!(
            "{:.1} s (from {:.1} s)",
            v.longest_delivery_gap_s, v.longest_delivery_gap_at_s
        ),
    );
    row(
        "latency 202 → 200 at a healthy endpoint, accepted outside broker faults",
        v.latency_outside_faults.text(),
    );
    row(
        "  accepted during broker faults",
        v.latency_during_faults.text(),
    );
    row(
        "deliveries expected (event × subscribed endpoint)",
        v.expected_deliveries.to_string(),
    );
    row("delivered (a 200 arrived)", v.delivered.to_string());
    row(
        "exhausted (recorded, in the DLQ)",
        format!(
            "{} ({}; {} in the DLQ)",
            v.exhausted,
            v.exhausted_by_endpoint
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            v.exhausted_in_dlq
        ),
    );
    row("**lost**", format!("**{}**", v.lost));
    for (path, f) in &v.paths {
        row(
            &format!("  {path}"),
            format!(
                "expected {}, delivered {}, exhausted {}, **lost {}**, duplicates {}",
                f.expected, f.delivered, f.exhausted, f.lost, f.duplicates
            ),
        );
    }
    row(
        "out of order per key at the ordered endpoint",
        format!(
            "{} of {} arrivals checked",
            v.order_violations, v.order_checked
        ),
    );
    row(
        "duplicates at receivers (200s beyond the first)",
        format!(
            "{} ({:.3}% of delivered; goal ≤ 0.5%)",
            v.duplicates,
            v.duplicate_ratio * 100.0
        ),
    );
    row(
        "delivered, 202 never seen by the load",
        v.delivered_not_confirmed.to_string(),
    );
    row(
        "receiver arrivals",
        format!(
            "{} ({})",
            v.receiver_arrivals,
            v.receiver_arrivals_by_answer
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    row(
        "  sending worker unknown (connection gone before it was looked up)",
        v.sender_unknown.to_string(),
    );
    if let Some(d) = &v.destination {
        row(
            &format!("AMQP destination queue {} (consumer)", d.queue),
            format!(
                "{} messages, held back by webhook-id {}, its own redeliveries {}, without webhook-id {}, {} session(s)",
                d.messages, d.deduplicated, d.consumer_redeliveries, d.unreadable, d.sessions
            ),
        );
        row(
            "  stored though the ledger records the publish failed (confirm lost)",
            v.amqp_confirm_lost.to_string(),
        );
    }
    row("ledger attempt rows", v.ledger_attempts.to_string());
    row("  matched 1:1", v.matched_attempts.to_string());
    row(
        "  arrivals repeated after a kill/broker restart (ledger keeps one)",
        v.repeats_explained.to_string(),
    );
    row(
        "  ledger-only attempts (no request reached a receiver)",
        if v.ledger_only.is_empty() {
            "0".into()
        } else {
            v.ledger_only
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    row("  **mismatches**", format!("**{}**", v.mismatches));
    row(
        "ledger events missing / delivery states contradicting receivers",
        format!(
            "{} / {}",
            v.ledger_events_missing, v.ledger_state_mismatches
        ),
    );
    row(
        "malformed messages dead-lettered with a reason",
        format!("{} of {}", v.malformed_dead_lettered, v.malformed_published),
    );
    row(
        "dead-letter queue messages",
        format!(
            "{} ({} malformed, {} exhausted tasks, {} parked again after a kill, {} other)",
            v.dlq_messages,
            v.malformed_dead_lettered,
            v.exhausted_in_dlq,
            v.dlq_repeated_tasks,
            v.dlq_other
        ),
    );
    row(
        "crashes (exits not caused by the run)",
        v.crashes.len().to_string(),
    );
    row(
        "settled",
        format!(
            "{} after {:.0} s",
            if v.settled { "yes" } else { "NO" },
            v.settle_s
        ),
    );
    println!();
    println!("| at (s) | fault | detail |");
    println!("|---|---|---|");
    // Worker kills are many: one row for them all (the report lists each).
    let kills: Vec<&FaultRecord> = faults
        .iter()
        .filter(|f| f.fault == "worker SIGKILL")
        .collect();
    if let (Some(first), Some(last)) = (kills.first(), kills.last()) {
        let failed = kills.iter().filter(|f| !f.ok).count();
        println!(
            "| {:.1}-{:.1} | worker SIGKILL ×{}{} | a random worker, each replaced at once (every kill in report.json) |",
            first.at_s,
            last.at_s,
            kills.len(),
            if failed > 0 { " **FAILED**" } else { "" }
        );
    }
    for fault in faults.iter().filter(|f| f.fault != "worker SIGKILL") {
        let at = match fault.until_s {
            Some(until) => format!("{:.1}-{:.1}", fault.at_s, until),
            None => format!("{:.1}", fault.at_s),
        };
        let mark = if fault.ok { "" } else { " **FAILED**" };
        println!("| {at} | {}{mark} | {} |", fault.fault, fault.detail);
    }
    for (title, list) in [
        ("lost", &v.lost_examples),
        ("mismatches", &v.mismatch_examples),
        ("ledger states", &v.ledger_state_examples),
        ("malformed", &v.malformed_missing),
    ] {
        if !list.is_empty() {
            println!();
            println!("{title} (first {}):", list.len());
            for line in list {
                println!("  {line}");
            }
        }
    }
    println!();
    if v.failures.is_empty() {
        println!("chaos: PASSED");
    } else {
        println!("chaos: FAILED");
        for failure in &v.failures {
            println!("  - {failure}");
        }
    }
}

/// Arrivals for a mismatch example: what each was answered, when, and by
/// which worker process it was sent.
fn describe_arrivals(arrivals: &[&Arrival]) -> String {
    arrivals
        .iter()
        .map(|a| {
            format!(
                "{:?} at {:.1} s from pid {}",
                a.answer,
                a.at.as_secs_f64(),
                a.sender.map_or("?".into(), |p| p.to_string())
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const PUSH: &str = "github.push";

    fn outage(fault: &str, at_s: f64, until_s: Option<f64>) -> FaultRecord {
        FaultRecord {
            at_s,
            until_s,
            fault: fault.into(),
            detail: String::new(),
            ok: true,
            pid: None,
        }
    }

    #[test]
    fn ingest_503s_are_counted_within_each_outage() {
        let faults = [
            outage("rabbitmq restart", 90.1, Some(113.2)),
            outage("worker SIGKILL", 95.0, None),
            outage("postgres restart", 270.0, Some(302.7)),
        ];
        // 89 is before the broker outage, 113 its last second, 200
        // between the two, 280 inside the database outage.
        let seconds: BTreeSet<u64> = [89, 90, 100, 113, 200, 280].into();
        let during = ingest_during_outages(&faults, &seconds);
        let counted: Vec<(&str, u64, usize)> = during
            .iter()
            .map(|o| (o.fault.as_str(), o.seconds, o.seconds_with_503))
            .collect();
        assert_eq!(
            counted,
            vec![("rabbitmq restart", 24, 3), ("postgres restart", 33, 1)]
        );
    }

    fn endpoint(id: &str, name: &'static str, amqp: bool) -> EndpointInfo {
        EndpointInfo {
            id: id.into(),
            name,
            behaviour_text: String::new(),
            event_types: vec![PUSH],
            amqp,
        }
    }

    fn arrival(endpoint: usize, event_id: &str, at: u64) -> Arrival {
        Arrival {
            endpoint,
            event_id: event_id.into(),
            answer: Answer::Ok,
            at: Duration::from_secs(at),
            sender: Some(1),
        }
    }

    fn attempt(
        event_id: &str,
        endpoint_id: &str,
        status: Option<i32>,
        error: &str,
    ) -> LedgerAttempt {
        LedgerAttempt {
            event_id: event_id.into(),
            endpoint_id: endpoint_id.into(),
            status_code: status,
            error: (!error.is_empty()).then(|| error.into()),
        }
    }

    /// Two inbound events to an HTTP endpoint and the AMQP destination;
    /// the second one's first publish lost its confirm, so the destination
    /// has it twice.
    fn observed() -> Observed {
        let events = ["src_1:a", "src_1:b"];
        let mut deliveries = HashMap::new();
        for event in events {
            for endpoint in ["ep_h", "ep_d"] {
                deliveries.insert((event.into(), endpoint.into()), "succeeded".into());
            }
        }
        Observed {
            accepted: events.iter().map(|e| ((*e).to_owned(), PUSH)).collect(),
            inbound_ids: events.iter().map(|e| (*e).to_owned()).collect(),
            ledger_events: events.iter().map(|e| (*e).to_owned()).collect(),
            endpoints: vec![
                endpoint("ep_h", "healthy-all", false),
                endpoint("ep_d", "amqp-dest", true),
            ],
            arrivals: vec![
                arrival(0, "src_1:a", 1),
                arrival(0, "src_1:b", 1),
                arrival(1, "src_1:a", 1),
                arrival(1, "src_1:b", 1),
                arrival(1, "src_1:b", 3),
            ],
            attempts: vec![
                attempt("src_1:a", "ep_h", Some(200), ""),
                attempt("src_1:b", "ep_h", Some(200), ""),
                attempt("src_1:a", "ep_d", Some(200), ""),
                attempt("src_1:b", "ep_d", None, "timeout"),
                attempt("src_1:b", "ep_d", Some(200), ""),
            ],
            deliveries,
            destination: Some(ConsumerSummary::default()),
            settled: true,
            ..Observed::default()
        }
    }

    #[test]
    fn a_destination_message_whose_confirm_was_lost_is_a_duplicate_not_a_mismatch() {
        let v = observed().verdict();
        assert_eq!(v.failures, Vec::<String>::new());
        assert_eq!((v.lost, v.duplicates, v.mismatches), (0, 1, 0));
        assert_eq!(v.amqp_confirm_lost, 1);
        let to_amqp = &v.paths["inbound (GitHub-signed) → AMQP destination"];
        assert_eq!(
            (to_amqp.expected, to_amqp.delivered, to_amqp.duplicates),
            (2, 2, 1)
        );
        let to_http = &v.paths["inbound (GitHub-signed) → HTTP endpoints"];
        assert_eq!(
            (to_http.expected, to_http.delivered, to_http.lost),
            (2, 2, 0)
        );
    }

    #[test]
    fn a_confirmed_publish_missing_from_the_queue_is_lost() {
        let mut observed = observed();
        observed
            .arrivals
            .retain(|a| !(a.endpoint == 1 && a.event_id == "src_1:a"));
        let v = observed.verdict();
        assert_eq!(v.lost, 1);
        assert_eq!(
            v.paths["inbound (GitHub-signed) → AMQP destination"].lost,
            1
        );
        assert_eq!(v.mismatches, 1, "the ledger's 200 has no message");
        assert_eq!(v.ledger_state_mismatches, 1);
        assert!(!v.failures.is_empty());
    }

    #[test]
    fn an_unroutable_publish_is_a_mismatch_and_broker_failures_are_ledger_only() {
        let mut observed = observed();
        observed.attempts.push(attempt(
            "src_1:a",
            "ep_d",
            None,
            "unroutable: no queue is bound to exchange \"x\" for routing key \"github.push\"",
        ));
        observed.attempts.push(attempt(
            "src_1:a",
            "ep_d",
            None,
            "broker channel: the broker is not connected",
        ));
        let v = observed.verdict();
        assert_eq!(v.mismatches, 1);
        assert_eq!(v.ledger_only.get("AMQP broker"), Some(&1));
    }
}
