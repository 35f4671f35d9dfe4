//! The chaos run's webhook receivers: one HTTP/1.1 listener on 127.0.0.1
//! whose path `/ep/{i}` is endpoint `i`, answering as that endpoint's
//! [`Behaviour`] says at that moment, and recording every arrival.
//!
//! It speaks HTTP by hand on the raw socket, because two of the faults are
//! below HTTP: a connection reset (zero linger, then close) and a hang that
//! holds the connection until the worker gives up.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How one request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// 200.
    Ok,
    /// 500.
    ServerError,
    /// 429 with `Retry-After: 1`.
    TooMany,
    /// No answer; the connection is held until the client closes it.
    Hang,
    /// The connection is reset without an answer.
    Reset,
}

impl Answer {
    /// The status the worker saw, if it saw one.
    pub fn status(self) -> Option<u16> {
        match self {
            Self::Ok => Some(200),
            Self::ServerError => Some(500),
            Self::TooMany => Some(429),
            Self::Hang | Self::Reset => None,
        }
    }
}

/// How one endpoint answers over the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Always 200.
    Healthy,
    /// Always 500: its deliveries end exhausted.
    Dead,
    /// `bad` during seconds `[from, to)` of every `period` seconds since the
    /// run started, 200 otherwise.
    Flapping {
        bad: Answer,
        period: u64,
        from: u64,
        to: u64,
    },
}

impl Behaviour {
    fn answer_at(self, since_start: Duration) -> Answer {
        match self {
            Self::Healthy => Answer::Ok,
            Self::Dead => Answer::ServerError,
            Self::Flapping {
                bad,
                period,
                from,
                to,
            } => {
                let phase = since_start.as_secs() % period;
                if (from..to).contains(&phase) {
                    bad
                } else {
                    Answer::Ok
                }
            }
        }
    }

    pub fn describe(self) -> String {
        match self {
            Self::Healthy => "healthy: 200".into(),
            Self::Dead => "dead: always 500".into(),
            Self::Flapping {
                bad,
                period,
                from,
                to,
            } => {
                let what = match bad {
                    Answer::ServerError => "500",
                    Answer::TooMany => "429 + Retry-After: 1",
                    Answer::Hang => "hangs past the timeout",
                    Answer::Reset => "connection reset",
                    Answer::Ok => "200",
                };
                format!("flapping: {what} in s {from}-{to} of every {period} s, else 200")
            }
        }
    }
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub endpoint: usize,
    /// The `webhook-id` header: the event id.
    pub event_id: String,
    pub answer: Answer,
    /// Since the run's origin.
    pub at: Duration,
    /// The worker process that sent it, if it could be told.
    pub sender: Option<u32>,
}

#[derive(Debug)]
struct Shared {
    origin: Instant,
    behaviours: Vec<Behaviour>,
    arrivals: Mutex<Vec<Arrival>>,
    /// Requests that could not be read as a webhook (no `webhook-id`, bad
    /// path): they count against the run.
    unreadable: Mutex<u64>,
    /// Requests being hung on right now.
    hanging: std::sync::atomic::AtomicU64,
    /// The worker processes that may be calling, to tell which one sent a
    /// request.
    senders: Mutex<Vec<u32>>,
}

#[derive(Debug, Clone)]
pub struct Receivers {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receivers {
    pub async fn start(origin: Instant, behaviours: Vec<Behaviour>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            origin,
            behaviours,
            arrivals: Mutex::new(Vec::new()),
            unreadable: Mutex::new(0),
            hanging: std::sync::atomic::AtomicU64::new(0),
            senders: Mutex::new(Vec::new()),
        });
        let serving = shared.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, serving.clone()));
            }
        });
        Ok(Self { addr, shared })
    }

    pub fn url(&self, endpoint: usize) -> String {
        format!("http://{}/ep/{endpoint}", self.addr)
    }

    /// A worker process that may call from now on.
    pub fn add_sender(&self, pid: u32) {
        if let Ok(mut senders) = self.shared.senders.lock() {
            senders.push(pid);
        }
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.shared
            .arrivals
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    pub fn arrival_count(&self) -> usize {
        self.shared.arrivals.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// Requests the receivers are hanging on right now (held by workers
    /// until they time out).
    pub fn hanging_now(&self) -> u64 {
        self.shared
            .hanging
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn unreadable(&self) -> u64 {
        self.shared.unreadable.lock().map(|u| *u).unwrap_or(0)
    }
}

/// One connection: requests one after another (the workers keep
/// connections alive) until the client closes it or a fault ends it.
async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    let mut buffer = Vec::with_capacity(4096);
    // A worker keeps its connection to itself, so one look-up serves every
    // request on it.
    let senders = shared.senders.lock().map(|s| s.clone()).unwrap_or_default();
    let sender = match (stream.peer_addr(), stream.local_addr()) {
        (Ok(peer), Ok(local)) => {
            tokio::task::spawn_blocking(move || owner_of(peer.port(), local.port(), &senders))
                .await
                .ok()
                .flatten()
        }
        _ => None,
    };
    loop {
        let Some((path, event_id, consumed)) = read_request(&mut stream, &mut buffer).await else {
            return;
        };
        buffer.drain(..consumed);
        let endpoint = path
            .strip_prefix("/ep/")
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|i| *i < shared.behaviours.len());
        let (Some(endpoint), Some(event_id)) = (endpoint, event_id) else {
            if let Ok(mut unreadable) = shared.unreadable.lock() {
                *unreadable += 1;
            }
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
            continue;
        };
        let at = shared.origin.elapsed();
        let answer = shared.behaviours[endpoint].answer_at(at);
        if let Ok(mut arrivals) = shared.arrivals.lock() {
            arrivals.push(Arrival {
                endpoint,
                event_id,
                answer,
                at,
                sender,
            });
        }
        let head: &[u8] = match answer {
            Answer::Ok => b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            Answer::ServerError => {
                b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
            }
            Answer::TooMany => {
                b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n"
            }
            Answer::Hang => {
                // Until the worker times out and closes (bounded, so that a
                // lost client cannot hold the task forever).
                use std::sync::atomic::Ordering::Relaxed;
                shared.hanging.fetch_add(1, Relaxed);
                let mut sink = [0u8; 1024];
                let _ = tokio::time::timeout(Duration::from_secs(120), async {
                    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
                shared.hanging.fetch_sub(1, Relaxed);
                return;
            }
            Answer::Reset => {
                // A zero linger makes the close a reset; with zero it does
                // not block on drop, which is what the deprecation warns of.
                #[allow(deprecated)]
                let _ = stream.set_linger(Some(Duration::ZERO));
                return;
            }
        };
        if stream.write_all(head).await.is_err() {
            return;
        }
    }
}

/// Reads one request (head and `content-length` body) from `stream` into
/// `buffer`; its path, its `webhook-id`, and how many bytes it took. None
/// when the connection ends.
async fn read_request(
    stream: &mut TcpStream,
    buffer: &mut Vec<u8>,
) -> Option<(String, Option<String>, usize)> {
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if buffer.len() > 64 * 1024 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let mut length = 0usize;
    let mut event_id = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok()?;
        } else if name.eq_ignore_ascii_case("webhook-id") {
            event_id = Some(value.to_owned());
        }
    }
    while buffer.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
    }
    Some((path, event_id, head_end + length))
}

/// The process among `pids` that holds the TCP socket from 127.0.0.1:`port`
/// to our `local` port: its inode from /proc/net/tcp, then whose fd it is.
fn owner_of(port: u16, local: u16, pids: &[u32]) -> Option<u32> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let wanted = (format!(":{port:04X}"), format!(":{local:04X}"));
    let inode = table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.len() > 9 && fields[1].ends_with(&wanted.0) && fields[2].ends_with(&wanted.1))
            .then(|| fields[9].to_owned())
    })?;
    let target = format!("socket:[{inode}]");
    pids.iter().rev().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|entries| {
                entries.flatten().any(|entry| {
                    std::fs::read_link(entry.path())
                        .is_ok_and(|link| link.as_os_str() == target.as_str())
                })
            })
            .unwrap_or(false)
    })
}
