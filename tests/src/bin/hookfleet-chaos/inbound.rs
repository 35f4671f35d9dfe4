//! The inbound part of the load: a GitHub source (`POST /v1/sources`), and
//! events posted to its `/v1/inbound/{source_id}` as GitHub posts them
//! (`X-Hub-Signature-256` over the body, a fresh `X-GitHub-Delivery` per
//! event, `X-GitHub-Event: push`, so the event type is `github.push`).
//!
//! A delivery is retried with the same delivery id and body until it is
//! answered 200, as a provider retries: while the broker or the database
//! is down the producer answers 503 or nothing. The event counts as
//! accepted once a 200 came. Every [`REDELIVER_EVERY`]-th accepted
//! delivery is then sent once more, as a provider's redelivery (GitHub's
//! "Redeliver", Stripe's retry after a lost answer): it must be answered
//! 200 with the same event id and deliver nothing more, which the check
//! sees as duplicates if it does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::load::Load;

/// The type of every event from the source: `{prefix}.{X-GitHub-Event}`,
/// and a push has no `action`.
pub const INBOUND_TYPE: &str = "github.push";

/// Every this many accepted inbound deliveries, one is sent again.
pub const REDELIVER_EVERY: u64 = 10;

/// A GitHub source of the run.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: String,
    /// `{producer}/v1/inbound/{id}`.
    pub url: String,
    secret: String,
    /// No token: a provider has none.
    client: reqwest::Client,
}

/// Creates the source through the API, with a secret of our own (GitHub
/// takes the one it is given).
pub async fn create_source(
    api: &reqwest::Client,
    producer: &str,
    name: &str,
) -> anyhow::Result<Source> {
    let secret = format!("chaos-{}", uuid::Uuid::new_v4().simple());
    let response = api
        .post(format!("{producer}/v1/sources"))
        .json(&serde_json::json!({ "name": name, "kind": "github", "secret": secret }))
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    anyhow::ensure!(status == 201, "POST /v1/sources answered {status}: {body}");
    let (Some(id), Some(path)) = (body["id"].as_str(), body["ingest_path"].as_str()) else {
        anyhow::bail!("no id or ingest_path in {body}");
    };
    Ok(Source {
        id: id.to_owned(),
        url: format!("{producer}{path}"),
        secret,
        client: reqwest::Client::new(),
    })
}

/// What the inbound load did, for the report.
#[derive(Debug, Default)]
pub struct InboundLoad {
    /// Accepted inbound event ids (`{source id}:{delivery id}`).
    pub accepted: Mutex<BTreeSet<String>>,
    pub sent: AtomicU64,
    pub given_up: AtomicU64,
    /// Answers other than 200, by status (0: no answer).
    pub refusals: Mutex<BTreeMap<u16, u64>>,
    pub redeliveries_sent: AtomicU64,
    pub redeliveries_accepted: AtomicU64,
    /// Redeliveries answered 200 with another event id than the first time.
    pub redeliveries_renamed: AtomicU64,
}

/// The inbound load's figures.
#[derive(Debug, Default, Clone, Serialize)]
pub struct InboundSummary {
    pub sent: u64,
    pub accepted: usize,
    pub given_up: u64,
    pub refusals: BTreeMap<u16, u64>,
    pub redeliveries_sent: u64,
    pub redeliveries_accepted: u64,
    pub redeliveries_renamed: u64,
}

impl InboundLoad {
    pub fn summary(&self) -> InboundSummary {
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        InboundSummary {
            sent: n(&self.sent),
            accepted: self.accepted.lock().map(|a| a.len()).unwrap_or(0),
            given_up: n(&self.given_up),
            refusals: self.refusals.lock().map(|r| r.clone()).unwrap_or_default(),
            redeliveries_sent: n(&self.redeliveries_sent),
            redeliveries_accepted: n(&self.redeliveries_accepted),
            redeliveries_renamed: n(&self.redeliveries_renamed),
        }
    }

    pub fn ids(&self) -> BTreeSet<String> {
        self.accepted.lock().map(|a| a.clone()).unwrap_or_default()
    }
}

/// Sends inbound event `seq` until it is accepted (or given up), and
/// redelivers it if its turn.
pub async fn send(
    load: Arc<Load>,
    origin: Instant,
    source: Source,
    seq: u64,
    give_up: CancellationToken,
) {
    let inbound = &load.inbound;
    let number = inbound.sent.fetch_add(1, Ordering::Relaxed);
    let delivery = uuid::Uuid::new_v4().to_string();
    let body = serde_json::to_vec(&serde_json::json!({
        "ref": "refs/heads/main",
        "after": format!("{seq:040x}"),
        "repository": { "full_name": "hookfleet/chaos" },
        "seq": seq,
        "note": "hookfleet-chaos",
    }))
    .unwrap_or_default();
    let Some(id) = post_until_200(&load, origin, &source, &delivery, &body, &give_up).await else {
        inbound.given_up.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let at = origin.elapsed().as_secs_f64();
    if let Ok(mut accepted_at) = load.accepted_at.lock() {
        accepted_at.insert(id.clone(), at);
    }
    if let Ok(mut accepted) = inbound.accepted.lock() {
        accepted.insert(id.clone());
    }
    if let Ok(mut accepted) = load.accepted.lock() {
        accepted.insert(id.clone(), INBOUND_TYPE);
    }
    if number % REDELIVER_EVERY != REDELIVER_EVERY - 1 {
        return;
    }
    // A second after the 200: the first copy is likely still on its way
    // through the router, the case the router's claim has to decide.
    tokio::select! {
        _ = give_up.cancelled() => return,
        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
    }
    inbound.redeliveries_sent.fetch_add(1, Ordering::Relaxed);
    if let Some(again) = post_until_200(&load, origin, &source, &delivery, &body, &give_up).await {
        inbound
            .redeliveries_accepted
            .fetch_add(1, Ordering::Relaxed);
        if again != id {
            inbound.redeliveries_renamed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// GitHub's signature header: `sha256=` + hex HMAC-SHA256 of the body.
fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Posts the delivery until a 200, returning the event id it names. None
/// on a refusal a retry cannot change (a 4xx other than 429) or when told
/// to give up.
async fn post_until_200(
    load: &Load,
    origin: Instant,
    source: &Source,
    delivery: &str,
    body: &[u8],
    give_up: &CancellationToken,
) -> Option<String> {
    let signature = signature(&source.secret, body);
    let mut backoff = Duration::from_millis(250);
    loop {
        let answer = source
            .client
            .post(&source.url)
            .timeout(Duration::from_secs(10))
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/hookfleet-chaos")
            .header("x-github-event", "push")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", &signature)
            .body(body.to_vec())
            .send()
            .await;
        let status = answer.as_ref().map_or(0, |r| r.status().as_u16());
        if status == 200
            && let Ok(response) = answer
        {
            let named: serde_json::Value = response.json().await.unwrap_or_default();
            // The id the producer promises: the source's and the provider's.
            return Some(
                named["id"]
                    .as_str()
                    .map_or_else(|| format!("{}:{delivery}", source.id), str::to_owned),
            );
        }
        if status == 503
            && let Ok(mut seconds) = load.seconds_with_503.lock()
        {
            seconds.insert(origin.elapsed().as_secs());
        }
        load.retries.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut refusals) = load.inbound.refusals.lock() {
            *refusals.entry(status).or_default() += 1;
        }
        if (400..500).contains(&status) && status != 429 {
            return None;
        }
        tokio::select! {
            _ = give_up.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_githubs() {
        // GitHub's documented example ("Validating webhook deliveries").
        assert_eq!(
            signature("It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
    }
}
