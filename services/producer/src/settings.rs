//! The producer's settings.

use std::time::Duration;

use hookfleet_config::{
    AmqpSettings, AuthSettings, DatabaseSettings, ListenSettings, LogSettings, SecretsSettings,
    TracingSettings,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Unknown top-level sections are ignored so that one environment (or one
// ConfigMap) can configure every service; unknown keys inside a section
// are refused.
#[serde(default)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub database: DatabaseSettings,
    pub listen: ListenSettings,
    pub log: LogSettings,
    pub tracing: TracingSettings,
    pub ingest: IngestSettings,
    pub secrets: SecretsSettings,
    pub auth: AuthSettings,
    pub endpoints: EndpointSettings,
    pub ledger: LedgerSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            amqp: AmqpSettings::default(),
            database: DatabaseSettings::default(),
            listen: ListenSettings::on_port(8080),
            log: LogSettings::default(),
            tracing: TracingSettings::default(),
            ingest: IngestSettings::default(),
            secrets: SecretsSettings::default(),
            auth: AuthSettings::default(),
            endpoints: EndpointSettings::default(),
            ledger: LedgerSettings::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// The largest payload accepted, in bytes (HTTP answers 413 beyond it;
    /// AMQP messages beyond it are parked).
    pub max_payload_bytes: usize,
    /// Accept `http://` endpoint URLs (for local development and tests).
    pub allow_http_endpoints: bool,
    /// How long an event id is remembered: a repeat within it (an HTTP
    /// retry, an `Idempotency-Key`, a republished AMQP message) is not
    /// delivered again.
    #[serde(with = "hookfleet_config::duration")]
    pub idempotency_retention: Duration,
    /// Events a second one tenant may send over HTTP, per producer
    /// replica, on average (0: no limit); beyond it, 429 with Retry-After.
    pub rate_per_second: u32,
    /// How many events a tenant may send at once above that rate.
    pub burst: u32,
    /// Bind each AMQP publisher to one tenant: an event published over
    /// AMQP is accepted only if its `user_id` property (which RabbitMQ
    /// checks against the connection's user) is its `x-tenant`; otherwise
    /// it is parked. Events the services publish themselves carry a stamp
    /// instead and are not affected.
    pub amqp_tenant_is_user: bool,
}

impl Default for IngestSettings {
    fn default() -> Self {
        Self {
            max_payload_bytes: 256 * 1024,
            allow_http_endpoints: false,
            idempotency_retention: Duration::from_secs(86400),
            rate_per_second: 10_000,
            burst: 20_000,
            amqp_tenant_is_user: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EndpointSettings {
    /// How long the previous secret stays valid after a rotation.
    #[serde(with = "hookfleet_config::duration")]
    pub rotation_grace: Duration,
    /// How often the whole registry is broadcast to the workers besides
    /// after each change: the longest a worker that missed a change (it
    /// started or reconnected after it) may act on what a task says.
    #[serde(with = "hookfleet_config::duration")]
    pub broadcast_every: Duration,
    /// The most endpoints one tenant may have (0: no limit).
    pub max_per_tenant: i64,
    /// Internal networks endpoint URLs may point at (comma-separated
    /// CIDRs); every other internal address is refused when an endpoint is
    /// created or changed. The workers check again at delivery, after DNS,
    /// with their own `delivery.ssrf_allow`.
    pub ssrf_allow: String,
}

impl Default for EndpointSettings {
    fn default() -> Self {
        Self {
            rotation_grace: Duration::from_secs(86400),
            broadcast_every: Duration::from_secs(15),
            max_per_tenant: 1_000,
            ssrf_allow: String::new(),
        }
    }
}

/// Where the ledger's API is: the producer forwards the ledger's paths
/// there, so that the whole API answers on the producer's base URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerSettings {
    /// The ledger's base URL, as the producer reaches it.
    pub url: String,
    /// How long a forwarded call may take, in milliseconds (connecting
    /// gets at most 5 s of it).
    pub timeout_ms: u64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8081".into(),
            timeout_ms: 60_000,
        }
    }
}
