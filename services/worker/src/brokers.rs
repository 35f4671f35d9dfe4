//! Connections to other brokers, for AMQP destinations with a `url`: one
//! connection and one confirm channel per distinct URL, opened when first
//! needed, reused by every delivery to that broker, and opened again after
//! the broker closed the channel (a missing exchange does that) or the
//! connection was lost.
//!
//! Bounded: at most [`MAX_BROKERS`] per worker. Opening one more closes the
//! least recently used, after a grace period that lets publishes on it
//! finish. A tenant can name any number of brokers, and each open
//! connection costs the worker a socket and a task.
//!
//! The broker's host goes through the same address policy as HTTP
//! endpoints (`delivery.ssrf_allow`), resolved here before every
//! connection. A plain `amqp://` connection is then made to the very
//! address that was checked (no DNS rebinding between check and connect);
//! an `amqps://` one to the name, which its certificate must match.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookfleet_contract::BrokerUrl;
use hookfleet_contract::address::AddressPolicy;
use lapin::options::ConfirmSelectOptions;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties};

/// The most connections to other brokers one worker keeps open.
pub const MAX_BROKERS: usize = 64;

/// Other brokers' connections, by URL.
#[derive(Debug)]
pub struct Brokers {
    policy: Arc<AddressPolicy>,
    /// How long connecting may take; also the grace an evicted connection
    /// gets (the longest a publish on it waits for its confirm).
    timeout: Duration,
    cap: usize,
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    /// Keyed by the URL in clear (credentials included: two endpoints
    /// share a connection only when they log in alike).
    by_url: HashMap<String, Arc<Slot>>,
    /// Ticks at every use, for least-recently-used eviction.
    clock: u64,
}

#[derive(Debug, Default)]
struct Slot {
    last_used: AtomicU64,
    /// Held while connecting, so that concurrent deliveries to one broker
    /// open one connection.
    open: tokio::sync::Mutex<Option<Open>>,
}

#[derive(Debug)]
struct Open {
    connection: Connection,
    channel: Channel,
}

impl Brokers {
    pub fn new(policy: Arc<AddressPolicy>, timeout: Duration) -> Self {
        Self::with_cap(policy, timeout, MAX_BROKERS)
    }

    pub fn with_cap(policy: Arc<AddressPolicy>, timeout: Duration, cap: usize) -> Self {
        Self {
            policy,
            timeout,
            cap: cap.max(1),
            slots: Mutex::new(Slots::default()),
        }
    }

    /// A confirm channel to the broker at `url`, opened if need be. The
    /// error says why, with the URL masked.
    pub async fn channel(&self, url: &BrokerUrl) -> Result<Channel, String> {
        let slot = self.slot(url);
        let mut open = slot.open.lock().await;
        if let Some(current) = open.as_mut() {
            if current.channel.status().connected() {
                return Ok(current.channel.clone());
            }
            if current.connection.status().connected() {
                let channel = confirm_channel(&current.connection)
                    .await
                    .map_err(|e| format!("broker {}: channel: {e}", url.masked()))?;
                current.channel = channel.clone();
                return Ok(channel);
            }
        }
        if let Some(lost) = open.take() {
            let _ = lost.connection.close(200, "reconnecting".into()).await;
        }
        let connection = self.connect(url).await?;
        let channel = confirm_channel(&connection)
            .await
            .map_err(|e| format!("broker {}: channel: {e}", url.masked()))?;
        metrics::counter!("hookfleet_destination_broker_connections_total").increment(1);
        *open = Some(Open {
            connection,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    /// How many brokers this worker holds a place for.
    pub fn len(&self) -> usize {
        self.slots.lock().map(|s| s.by_url.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The URL's slot, marked used; a new one evicts the least recently
    /// used when the cap is reached.
    fn slot(&self, url: &BrokerUrl) -> Arc<Slot> {
        let Ok(mut slots) = self.slots.lock() else {
            // A poisoned map: carry on without reuse rather than fail.
            return Arc::new(Slot::default());
        };
        slots.clock += 1;
        let now = slots.clock;
        if let Some(slot) = slots.by_url.get(url.expose()) {
            slot.last_used.store(now, Ordering::Relaxed);
            return slot.clone();
        }
        if slots.by_url.len() >= self.cap
            && let Some(oldest) = slots
                .by_url
                .iter()
                .min_by_key(|(_, slot)| slot.last_used.load(Ordering::Relaxed))
                .map(|(key, _)| key.clone())
            && let Some(evicted) = slots.by_url.remove(&oldest)
        {
            let grace = self.timeout;
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                if let Some(open) = evicted.open.lock().await.take() {
                    let _ = open
                        .connection
                        .close(200, "least recently used destination broker".into())
                        .await;
                }
            });
        }
        let slot = Arc::new(Slot {
            last_used: AtomicU64::new(now),
            open: tokio::sync::Mutex::new(None),
        });
        slots.by_url.insert(url.expose().to_owned(), slot.clone());
        slot
    }

    /// Connects to the broker at `url`, if the address policy lets it.
    async fn connect(&self, url: &BrokerUrl) -> Result<Connection, String> {
        let masked = url.masked();
        let mut uri: AMQPUri = url
            .expose()
            .parse()
            .map_err(|_| format!("broker {masked}: not an AMQP URI"))?;
        let (name, ip) = self.permitted_address(url).await?;
        // lapin's parser turns an IPv6 literal host into "localhost"; the host
        // is always set here. TLS needs the name its certificate is for.
        uri.authority.host = if url.is_tls() { name } else { ip.to_string() };
        let connect = Connection::connect_uri(
            uri,
            ConnectionProperties::default()
                .with_connection_name("hookfleet-worker-destination".into()),
        );
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(format!("broker {masked}: {error}")),
            Err(_) => Err(format!(
                "broker {masked}: no answer within {:?}",
                self.timeout
            )),
        }
    }

    /// The host's name and an address of it the policy permits.
    async fn permitted_address(&self, url: &BrokerUrl) -> Result<(String, IpAddr), String> {
        let (name, addresses) = match url.host() {
            Some(url::Host::Ipv4(ip)) => (ip.to_string(), vec![IpAddr::V4(ip)]),
            Some(url::Host::Ipv6(ip)) => (ip.to_string(), vec![IpAddr::V6(ip)]),
            Some(url::Host::Domain(name)) => {
                let resolved =
                    tokio::time::timeout(self.timeout, tokio::net::lookup_host((name, url.port())))
                        .await
                        .map_err(|_| format!("broker {}: DNS: no answer", url.masked()))?
                        .map_err(|e| format!("broker {}: DNS: {e}", url.masked()))?;
                (name.to_owned(), resolved.map(|a| a.ip()).collect())
            }
            None => return Err(format!("broker {}: no host", url.masked())),
        };
        let mut refused = None;
        for ip in addresses {
            match self.policy.refusal(ip) {
                None => return Ok((name, ip)),
                Some(kind) => refused = Some(format!("{ip} is a {kind} address")),
            }
        }
        Err(format!(
            "refused by the SSRF guard: {name}: {}",
            refused.unwrap_or_else(|| "no addresses".to_owned())
        ))
    }
}

async fn confirm_channel(connection: &Connection) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(raw: &str) -> BrokerUrl {
        BrokerUrl::parse(raw).unwrap()
    }

    #[tokio::test]
    async fn internal_brokers_are_refused_before_connecting() {
        let brokers = Brokers::new(Arc::new(AddressPolicy::default()), Duration::from_secs(2));
        let error = brokers
            .channel(&url("amqp://app:pw@127.0.0.1:5672/billing"))
            .await
            .unwrap_err();
        assert!(error.contains("refused by the SSRF guard"), "{error}");
        assert!(error.contains("loopback"), "{error}");
        let error = brokers
            .channel(&url("amqp://app:pw@[::1]/billing"))
            .await
            .unwrap_err();
        assert!(error.contains("refused by the SSRF guard"), "{error}");
    }

    #[tokio::test]
    async fn the_least_recently_used_broker_makes_room() {
        let brokers = Brokers::with_cap(
            Arc::new(AddressPolicy::default()),
            Duration::from_millis(10),
            2,
        );
        let (a, b, c) = (
            url("amqp://10.0.0.1/"),
            url("amqp://10.0.0.2/"),
            url("amqp://10.0.0.3/"),
        );
        brokers.slot(&a);
        brokers.slot(&b);
        brokers.slot(&a);
        brokers.slot(&c);
        assert_eq!(brokers.len(), 2);
        let kept: Vec<String> = brokers
            .slots
            .lock()
            .unwrap()
            .by_url
            .keys()
            .cloned()
            .collect();
        assert!(kept.contains(&a.expose().to_owned()), "{kept:?}");
        assert!(kept.contains(&c.expose().to_owned()), "{kept:?}");
    }
}
