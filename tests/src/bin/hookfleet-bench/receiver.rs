//! A lean webhook receiver for the benchmark: it only counts arrivals,
//! drops repeats, and takes each healthy arrival's latency from the send
//! time the load generator wrote into the payload. At an ordered endpoint
//! it also checks that each ordering key's events arrive in the order
//! they were sent (scenario h), and it keeps every endpoint's arrival
//! times, for the rates of a rate-limited endpoint and its neighbour
//! (scenario i).
//!
//! Endpoint `i` is the path `/ep/{i}`; what it answers depends on its
//! [`Behaviour`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::any;
use tokio::task::JoinHandle;

/// How one endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// 200 at once.
    Healthy,
    /// 500 at once.
    Failing,
    /// Never answers.
    Hanging,
}

/// One endpoint of a scenario: how the receiver answers it, and what it
/// asks of hookfleet when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub behaviour: Behaviour,
    /// Created with `"ordered": true`: the receiver checks the order of
    /// each ordering key's events.
    pub ordered: bool,
    /// Created with `"rate_limit": N` (attempts per second).
    pub rate_limit: Option<u32>,
}

impl Endpoint {
    pub const fn new(behaviour: Behaviour) -> Self {
        Self {
            behaviour,
            ordered: false,
            rate_limit: None,
        }
    }

    pub const fn healthy() -> Self {
        Self::new(Behaviour::Healthy)
    }
}

#[derive(Debug, Default)]
struct Tally {
    /// Per endpoint, a bit per event sequence number already seen.
    seen: Vec<Vec<u64>>,
    /// Per endpoint, the arrival times (since the origin) of its distinct
    /// healthy arrivals, in the order they were recorded.
    arrivals_ns: Vec<Vec<u64>>,
    /// Per ordered endpoint, the highest sequence number arrived so far of
    /// each ordering key (empty for an unordered endpoint).
    highest_per_key: Vec<Vec<Option<u64>>>,
    /// Arrivals at ordered endpoints that came after a later event of
    /// their key.
    out_of_order: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    latencies_ns: Vec<u64>,
    duplicates: u64,
    failing_hits: u64,
    hanging_hits: u64,
    unreadable: u64,
}

/// What the receiver saw.
#[derive(Debug)]
pub struct Sink {
    origin: Instant,
    endpoints: Vec<Endpoint>,
    /// Distinct (endpoint, event) arrivals at healthy endpoints.
    healthy: AtomicU64,
    /// The same, at healthy endpoints without a rate limit: what the load
    /// generators' window counts, so a limited endpoint's backlog does not
    /// hold back the load for the others.
    unlimited: AtomicU64,
    tally: Mutex<Tally>,
}

/// A summary taken once the run is over.
#[derive(Debug, Clone)]
pub struct Summary {
    pub healthy: u64,
    pub first: Option<Instant>,
    pub last: Option<Instant>,
    /// Sorted ascending.
    pub latencies_ns: Vec<u64>,
    pub duplicates: u64,
    pub failing_hits: u64,
    pub hanging_hits: u64,
    pub unreadable: u64,
    /// Per endpoint, the arrival times since the origin, sorted.
    pub arrivals_ns: Vec<Vec<u64>>,
    /// Arrivals at ordered endpoints that came after a later event of
    /// their key.
    pub out_of_order: u64,
}

impl Summary {
    /// Healthy deliveries per second from the first to the last arrival.
    pub fn rate(&self) -> Option<f64> {
        let span = self.last?.duration_since(self.first?).as_secs_f64();
        (span > 0.0 && self.healthy > 1).then(|| (self.healthy - 1) as f64 / span)
    }

    /// The latency at quantile `q` (0..=1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.latencies_ns.is_empty() {
            return None;
        }
        let rank = ((self.latencies_ns.len() as f64) * q).ceil() as usize;
        let index = rank.clamp(1, self.latencies_ns.len()) - 1;
        Some(self.latencies_ns[index] as f64 / 1e6)
    }
}

impl Sink {
    /// Bookkeeping for `endpoints` and `events` events each.
    fn new(origin: Instant, endpoints: Vec<Endpoint>, events: u64) -> Self {
        let words = events.div_ceil(64) as usize;
        let keys = crate::load::ORDERING_KEYS as usize;
        Self {
            origin,
            healthy: AtomicU64::new(0),
            unlimited: AtomicU64::new(0),
            tally: Mutex::new(Tally {
                seen: vec![vec![0; words]; endpoints.len()],
                arrivals_ns: endpoints
                    .iter()
                    .map(|_| Vec::with_capacity(events as usize))
                    .collect(),
                highest_per_key: endpoints
                    .iter()
                    .map(|e| {
                        if e.ordered {
                            vec![None; keys]
                        } else {
                            Vec::new()
                        }
                    })
                    .collect(),
                latencies_ns: Vec::with_capacity((events as usize).saturating_mul(endpoints.len())),
                ..Tally::default()
            }),
            endpoints,
        }
    }

    pub fn healthy(&self) -> u64 {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn unlimited(&self) -> u64 {
        self.unlimited.load(Ordering::Relaxed)
    }

    pub fn summary(&self) -> Summary {
        let tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        let mut latencies_ns = tally.latencies_ns.clone();
        latencies_ns.sort_unstable();
        let mut arrivals_ns = tally.arrivals_ns.clone();
        for times in &mut arrivals_ns {
            times.sort_unstable();
        }
        Summary {
            healthy: self.healthy(),
            first: tally.first,
            last: tally.last,
            latencies_ns,
            duplicates: tally.duplicates,
            failing_hits: tally.failing_hits,
            hanging_hits: tally.hanging_hits,
            unreadable: tally.unreadable,
            arrivals_ns,
            out_of_order: tally.out_of_order,
        }
    }

    fn record(&self, endpoint: usize, body: &[u8], at: Instant) {
        let parsed = number_after(body, b"\"seq\":").zip(number_after(body, b"\"sent_ns\":"));
        let mut tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        let Some((seq, sent_ns)) = parsed else {
            tally.unreadable += 1;
            return;
        };
        let bits = &mut tally.seen[endpoint];
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if bits.len() <= word {
            bits.resize(word + 1, 0);
        }
        if bits[word] & bit != 0 {
            tally.duplicates += 1;
            return;
        }
        bits[word] |= bit;
        // Recorded before the answer: an ordered endpoint's next event of
        // the key is not sent before this one is answered, so the order
        // recorded is the order of arrival.
        if let Some(highest) =
            tally.highest_per_key[endpoint].get_mut(crate::load::ordering_key(seq) as usize)
        {
            match highest {
                Some(later) if *later > seq => tally.out_of_order += 1,
                _ => *highest = Some(seq),
            }
        }
        let arrived_ns = at.duration_since(self.origin).as_nanos() as u64;
        tally.latencies_ns.push(arrived_ns.saturating_sub(sent_ns));
        tally.arrivals_ns[endpoint].push(arrived_ns);
        tally.first.get_or_insert(at);
        tally.last = Some(at);
        self.healthy.fetch_add(1, Ordering::Relaxed);
        if self.endpoints[endpoint].rate_limit.is_none() {
            self.unlimited.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A running receiver.
#[derive(Debug)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub sink: Arc<Sink>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Listens on a free port of 127.0.0.1. `events` sizes the bookkeeping.
    pub async fn start(
        origin: Instant,
        endpoints: Vec<Endpoint>,
        events: u64,
    ) -> std::io::Result<Self> {
        let sink = Arc::new(Sink::new(origin, endpoints, events));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(any(arrive)).with_state(sink.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, sink, task })
    }

    pub fn url(&self, endpoint: usize) -> String {
        format!("http://{}/ep/{endpoint}", self.addr)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn arrive(State(sink): State<Arc<Sink>>, uri: Uri, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let endpoint = uri
        .path()
        .strip_prefix("/ep/")
        .and_then(|i| i.parse::<usize>().ok())
        .filter(|i| *i < sink.endpoints.len());
    let Some(endpoint) = endpoint else {
        return StatusCode::NOT_FOUND;
    };
    match sink.endpoints[endpoint].behaviour {
        Behaviour::Healthy => {
            sink.record(endpoint, &body, at);
            StatusCode::OK
        }
        Behaviour::Failing => {
            if let Ok(mut tally) = sink.tally.lock() {
                tally.failing_hits += 1;
            }
            StatusCode::INTERNAL_SERVER_ERROR
        }
        Behaviour::Hanging => {
            if let Ok(mut tally) = sink.tally.lock() {
                tally.hanging_hits += 1;
            }
            // Until the worker gives up and closes the connection.
            tokio::time::sleep(Duration::from_secs(24 * 3600)).await;
            StatusCode::GATEWAY_TIMEOUT
        }
    }
}

/// The unsigned integer right after `key` in `body`.
fn number_after(body: &[u8], key: &[u8]) -> Option<u64> {
    let start = body.windows(key.len()).position(|w| w == key)? + key.len();
    let digits = body[start..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&body[start..start + digits])
        .ok()?
        .parse()
        .ok()
}

/// A JSON payload of exactly `size` bytes (unless the fields alone are
/// longer) carrying its sequence number and send time.
pub fn payload(seq: u64, sent_ns: u64, size: usize) -> String {
    let head = format!("{{\"seq\":{seq},\"sent_ns\":{sent_ns},\"pad\":\"");
    let pad = size.saturating_sub(head.len() + 2);
    let mut out = String::with_capacity(head.len() + pad + 2);
    out.push_str(&head);
    out.extend(std::iter::repeat_n('x', pad));
    out.push_str("\"}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_sized_and_readable() {
        let body = payload(1234, 987_654_321, 1024);
        assert_eq!(body.len(), 1024);
        assert_eq!(number_after(body.as_bytes(), b"\"seq\":"), Some(1234));
        assert_eq!(
            number_after(body.as_bytes(), b"\"sent_ns\":"),
            Some(987_654_321)
        );
        assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok());
    }

    /// The first events of one ordering key, in the order they were sent.
    fn events_of_one_key(n: usize) -> Vec<u64> {
        let key = crate::load::ordering_key(0);
        (0..)
            .filter(|seq| crate::load::ordering_key(*seq) == key)
            .take(n)
            .collect()
    }

    fn arrive_at(sink: &Sink, endpoint: usize, seqs: &[u64]) {
        for seq in seqs {
            sink.record(endpoint, payload(*seq, 0, 64).as_bytes(), Instant::now());
        }
    }

    #[test]
    fn an_ordered_endpoint_counts_arrivals_behind_a_later_event_of_their_key() {
        let ordered = Endpoint {
            ordered: true,
            ..Endpoint::healthy()
        };
        let sink = Sink::new(Instant::now(), vec![ordered, Endpoint::healthy()], 100_000);
        let seqs = events_of_one_key(4);
        // In order, with a repeat (dropped) and another key in between.
        let other = (0..)
            .find(|s| crate::load::ordering_key(*s) != crate::load::ordering_key(0))
            .unwrap();
        arrive_at(&sink, 0, &[seqs[0], other, seqs[1], seqs[1]]);
        assert_eq!(sink.summary().out_of_order, 0);
        // The fourth overtakes the third.
        arrive_at(&sink, 0, &[seqs[3], seqs[2]]);
        assert_eq!(sink.summary().out_of_order, 1);
        // An unordered endpoint is not checked.
        arrive_at(&sink, 1, &[seqs[3], seqs[2]]);
        let summary = sink.summary();
        assert_eq!((summary.out_of_order, summary.duplicates), (1, 1));
        assert_eq!(summary.arrivals_ns.iter().map(Vec::len).sum::<usize>(), 7);
    }

    #[test]
    fn a_rate_limited_endpoint_is_outside_the_window_count() {
        let limited = Endpoint {
            rate_limit: Some(200),
            ..Endpoint::healthy()
        };
        let sink = Sink::new(Instant::now(), vec![Endpoint::healthy(), limited], 10);
        arrive_at(&sink, 0, &[1, 2]);
        arrive_at(&sink, 1, &[1, 2, 3]);
        assert_eq!((sink.healthy(), sink.unlimited()), (5, 2));
    }
}
