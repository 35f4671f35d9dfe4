//! Sends one signed webhook over HTTP and reports what happened.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hookfleet_contract::DeliveryTask;
use hookfleet_signing::{Ed25519Key, SigningSecret, signature_header};
use reqwest::header::{HeaderMap, HeaderValue};

use crate::classify::Response;
use crate::retry::parse_retry_after;
use crate::settings::DeliverySettings;
use crate::ssrf::{AddressPolicy, GuardedResolver};

/// What a webhook is signed with: every active HMAC secret, and the
/// endpoint's ed25519 key when it has one.
#[derive(Debug, Clone)]
pub struct Keys {
    pub secrets: Vec<SigningSecret>,
    pub ed25519: Option<Ed25519Key>,
}

impl Keys {
    /// The `webhook-signature` value: a `v1` per secret, and a `v1a` when
    /// the endpoint has an ed25519 key.
    pub fn signature(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut signature = signature_header(&self.secrets, msg_id, timestamp, body);
        if let Some(key) = &self.ed25519 {
            signature.push(' ');
            signature.push_str(&key.sign(msg_id, timestamp, body));
        }
        signature
    }
}

/// The result of one HTTP attempt.
#[derive(Debug, Clone)]
pub struct Sent {
    pub response: Response,
    /// The receiver's `Retry-After`, parsed.
    pub retry_after: Option<Duration>,
    /// The start of the response body, capped, lossily decoded as UTF-8.
    pub excerpt: Option<String>,
    pub duration: Duration,
}

/// An HTTP client shared by all deliveries of a worker: pooled connections,
/// no redirects, bounded time.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: Arc<AddressPolicy>,
    excerpt_bytes: usize,
}

impl Sender {
    pub fn new(
        settings: &DeliverySettings,
        policy: Arc<AddressPolicy>,
    ) -> Result<Self, reqwest::Error> {
        let builder = reqwest::Client::builder();
        // reqwest would otherwise take a proxy from the environment, and
        // the proxy would resolve the name, past the SSRF guard.
        let builder = if settings.proxy.is_empty() {
            builder.no_proxy()
        } else {
            builder.proxy(reqwest::Proxy::all(&settings.proxy)?)
        };
        let client = builder
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
            .timeout(Duration::from_millis(settings.timeout_ms))
            .user_agent(concat!("hookfleet/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(Self {
            client,
            policy,
            excerpt_bytes: settings.response_excerpt_bytes,
        })
    }

    /// POSTs `body` to the task's endpoint, signed with every secret.
    pub async fn send(&self, task: &DeliveryTask, keys: &Keys, body: Bytes) -> Sent {
        // Parsed once, for the guard and the request both.
        let url = reqwest::Url::parse(&task.url);
        if let Some(refused) = url.as_ref().ok().and_then(|url| self.refuse_literal(url)) {
            return Sent {
                response: Response::Failed(refused),
                retry_after: None,
                excerpt: None,
                duration: Duration::ZERO,
            };
        }
        let timestamp = hookfleet_contract::now_millis() / 1000;
        let mut headers = HeaderMap::new();
        let trace = hookfleet_telemetry::trace_headers();
        for (name, value) in crate::webhook::headers(task, keys, &body, timestamp, trace) {
            if let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }
        let started = Instant::now();
        let request = match url {
            Ok(url) => self.client.post(url),
            // reqwest says what is wrong with it.
            Err(_) => self.client.post(&task.url),
        };
        let result = request.headers(headers).body(body).send().await;
        let (response, retry_after, excerpt) = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
                (
                    Response::Status(status),
                    retry_after,
                    self.excerpt(response).await,
                )
            }
            Err(error) if error.is_timeout() => (Response::Timeout, None, None),
            Err(error) => (Response::Failed(describe(error)), None, None),
        };
        Sent {
            response,
            retry_after,
            excerpt,
            duration: started.elapsed(),
        }
    }

    /// Hostnames are checked by the resolver; IP literals never reach it,
    /// so they are checked here.
    fn refuse_literal(&self, url: &reqwest::Url) -> Option<String> {
        let ip = match url.host()? {
            url::Host::Ipv4(v4) => IpAddr::V4(v4),
            url::Host::Ipv6(v6) => IpAddr::V6(v6),
            url::Host::Domain(_) => return None,
        };
        let kind = self.policy.refusal(ip)?;
        Some(format!(
            "refused by the SSRF guard: {ip} is a {kind} address"
        ))
    }

    /// Reads at most `excerpt_bytes` of the body; the rest is never buffered.
    async fn excerpt(&self, mut response: reqwest::Response) -> Option<String> {
        let mut kept = Vec::new();
        while kept.len() < self.excerpt_bytes {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = self.excerpt_bytes - kept.len();
                    kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
        (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).into_owned())
    }
}

/// The error and its causes in one line ("error sending request: connection
/// refused"), without the URL, which the ledger already has.
fn describe(error: reqwest::Error) -> String {
    let mut causes = String::new();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        causes.push_str(": ");
        causes.push_str(&cause.to_string());
        source = cause.source();
    }
    format!("{}{causes}", error.without_url())
}
