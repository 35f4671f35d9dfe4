//! A lean webhook receiver for the benchmark: it only counts arrivals,
//! drops repeats, and takes each healthy arrival's latency from the send
//! time the load generator wrote into the payload.
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

#[derive(Debug, Default)]
struct Tally {
    /// Per endpoint, a bit per event sequence number already seen.
    seen: Vec<Vec<u64>>,
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
    behaviours: Vec<Behaviour>,
    /// Distinct (endpoint, event) arrivals at healthy endpoints.
    healthy: AtomicU64,
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
    pub fn healthy(&self) -> u64 {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn summary(&self) -> Summary {
        let tally = self.tally.lock().unwrap_or_else(|e| e.into_inner());
        let mut latencies_ns = tally.latencies_ns.clone();
        latencies_ns.sort_unstable();
        Summary {
            healthy: self.healthy(),
            first: tally.first,
            last: tally.last,
            latencies_ns,
            duplicates: tally.duplicates,
            failing_hits: tally.failing_hits,
            hanging_hits: tally.hanging_hits,
            unreadable: tally.unreadable,
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
        let arrived_ns = at.duration_since(self.origin).as_nanos() as u64;
        tally.latencies_ns.push(arrived_ns.saturating_sub(sent_ns));
        tally.first.get_or_insert(at);
        tally.last = Some(at);
        self.healthy.fetch_add(1, Ordering::Relaxed);
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
        behaviours: Vec<Behaviour>,
        events: u64,
    ) -> std::io::Result<Self> {
        let words = events.div_ceil(64) as usize;
        let sink = Arc::new(Sink {
            origin,
            healthy: AtomicU64::new(0),
            tally: Mutex::new(Tally {
                seen: vec![vec![0; words]; behaviours.len()],
                latencies_ns: Vec::with_capacity(
                    (events as usize).saturating_mul(behaviours.len()),
                ),
                ..Tally::default()
            }),
            behaviours,
        });
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
        .filter(|i| *i < sink.behaviours.len());
    let Some(endpoint) = endpoint else {
        return StatusCode::NOT_FOUND;
    };
    match sink.behaviours[endpoint] {
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
}
