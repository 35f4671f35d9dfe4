//! A real HTTP receiver on 127.0.0.1 that records every webhook it gets and
//! answers as the test scripts it to (status codes, delays, hanging).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::any;
use tokio::sync::Notify;

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// The status it was answered with (0 for no answer).
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// How to answer a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Status(u16),
    /// Wait, then answer with the status.
    Delayed(Duration, u16),
    /// Never answer.
    Hang,
    /// The status with a `Retry-After` of so many seconds.
    RetryAfter(u16, u64),
    /// The status with a body of so many bytes.
    Body(u16, usize),
    /// A redirect to this path of the same receiver.
    Redirect(u16, &'static str),
}

#[derive(Debug)]
struct Inner {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Reply>,
    arrived: Notify,
    /// Bodies containing the needle get the status until the instant.
    failing: Mutex<Vec<(Vec<u8>, u16, Instant)>>,
    /// Percent of requests answered 500, chosen pseudo-randomly, and the
    /// generator's state.
    random_failures: Mutex<(u8, u64)>,
}

#[derive(Debug, Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Receiver {
    /// Starts a receiver on a free port, answering 200 to everything.
    pub async fn start() -> Self {
        Self::start_on(0).await.expect("bind the receiver")
    }

    /// Starts a receiver on `port` of 127.0.0.1.
    pub async fn start_on(port: u16) -> std::io::Result<Self> {
        Self::start_at(std::net::Ipv4Addr::LOCALHOST.into(), port).await
    }

    /// Starts a receiver on `host`:`port`.
    pub async fn start_at(host: std::net::IpAddr, port: u16) -> std::io::Result<Self> {
        let inner = Arc::new(Inner {
            received: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(Reply::Status(200)),
            arrived: Notify::new(),
            failing: Mutex::new(Vec::new()),
            random_failures: Mutex::new((0, 0x9e37_79b9_7f4a_7c15)),
        });
        let listener = tokio::net::TcpListener::bind((host, port)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .fallback(any(record))
            .with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, inner })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The next requests get these replies, in order; then the default.
    pub fn reply_next(&self, replies: impl IntoIterator<Item = Reply>) {
        if let Ok(mut script) = self.inner.script.lock() {
            script.extend(replies);
        }
    }

    /// Requests whose body contains `needle` are answered `status` until
    /// `until` (before any script or default).
    pub fn fail_matching(&self, needle: &str, status: u16, until: Instant) {
        if let Ok(mut failing) = self.inner.failing.lock() {
            failing.push((needle.as_bytes().to_vec(), status, until));
        }
    }

    /// Ends every [`Self::fail_matching`] now.
    pub fn stop_failing(&self) {
        if let Ok(mut failing) = self.inner.failing.lock() {
            failing.clear();
        }
    }

    /// About `percent` of requests are answered 500, at random (a fixed
    /// seed, so a run can be repeated).
    pub fn fail_randomly(&self, percent: u8) {
        if let Ok(mut random) = self.inner.random_failures.lock() {
            random.0 = percent;
        }
    }

    pub fn set_default(&self, reply: Reply) {
        if let Ok(mut default) = self.inner.default.lock() {
            *default = reply;
        }
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner
            .received
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Waits until at least `count` requests arrived or `limit` passed, and
    /// returns what arrived.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.inner.arrived.notified();
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.received();
            }
        }
    }
}

async fn record(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let now = Instant::now();
    let failing = inner.failing.lock().ok().and_then(|failing| {
        failing
            .iter()
            .find(|(needle, _, until)| {
                now < *until && body.windows(needle.len()).any(|w| w == needle.as_slice())
            })
            .map(|(_, status, _)| Reply::Status(*status))
    });
    let random = inner.random_failures.lock().ok().and_then(|mut random| {
        let (percent, state) = &mut *random;
        // xorshift64
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        (*percent > 0 && *state % 100 < u64::from(*percent)).then_some(Reply::Status(500))
    });
    let reply = failing
        .or(random)
        .or_else(|| inner.script.lock().ok().and_then(|mut s| s.pop_front()))
        .or_else(|| inner.default.lock().ok().map(|d| *d))
        .unwrap_or(Reply::Status(200));
    if let Ok(mut received) = inner.received.lock() {
        received.push(Received {
            path: uri.path().to_owned(),
            headers,
            body,
            at: Instant::now(),
            status: match reply {
                Reply::Status(code)
                | Reply::Delayed(_, code)
                | Reply::RetryAfter(code, _)
                | Reply::Body(code, _)
                | Reply::Redirect(code, _) => code,
                Reply::Hang => 0,
            },
        });
    }
    inner.arrived.notify_waiters();
    let status =
        |code: u16| StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match reply {
        Reply::Status(code) => status(code).into_response(),
        Reply::Delayed(wait, code) => {
            tokio::time::sleep(wait).await;
            status(code).into_response()
        }
        Reply::Hang => {
            std::future::pending::<()>().await;
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Reply::RetryAfter(code, seconds) => {
            (status(code), [("retry-after", seconds.to_string())]).into_response()
        }
        Reply::Body(code, size) => (status(code), "x".repeat(size)).into_response(),
        Reply::Redirect(code, to) => (status(code), [("location", to)]).into_response(),
    }
}
