//! The settings the test harness, the benchmark and the chaos run give the
//! services they start as processes, and the one map from them to the
//! `HOOKFLEET__SECTION__KEY` environment variables the services read (the
//! README's configuration). A tool sets only what it means to change; what
//! it leaves `None` keeps the service's default.

use std::time::Duration;

/// Settings of one service process, by section of its configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSettings {
    pub amqp: AmqpEnv,
    pub database: DatabaseEnv,
    /// `log.level`: a `tracing` filter.
    pub log_level: Option<String>,
    /// `listen.port` (0: any free port).
    pub listen_port: Option<u16>,
    /// `secrets.key`, the same in every service of a fleet.
    pub secrets_key: Option<String>,
    /// `auth.admin_token` (the producer's).
    pub admin_token: Option<String>,
    pub ingest: IngestEnv,
    pub endpoints: EndpointsEnv,
    pub delivery: DeliveryEnv,
}

/// The `amqp` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AmqpEnv {
    pub url: Option<String>,
    /// A cluster's nodes; `Some` of an empty list is set, as empty.
    pub urls: Option<Vec<String>>,
    pub prefix: Option<String>,
    pub prefetch: Option<u16>,
    pub delay_levels: Option<u8>,
    pub quorum_group_size: Option<u8>,
    pub tls_ca_file: Option<String>,
}

/// The `database` section (producer and ledger).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseEnv {
    pub url: Option<String>,
    pub pool_size: Option<u32>,
    pub migrate_on_start: Option<bool>,
}

/// The producer's `ingest` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestEnv {
    pub allow_http_endpoints: Option<bool>,
    pub max_payload_bytes: Option<usize>,
    /// Events a second per tenant; 0: no limit.
    pub rate_per_second: Option<u32>,
}

/// The producer's `endpoints` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointsEnv {
    /// 0: no limit.
    pub max_per_tenant: Option<i64>,
    /// CIDRs, comma-separated, that endpoint URLs may point at.
    pub ssrf_allow: Option<String>,
}

/// The worker's `delivery` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryEnv {
    /// `Some` of an empty list is set, as empty: no retries.
    pub retry_schedule: Option<Vec<Duration>>,
    pub jitter_percent: Option<u8>,
    pub overload_min_delay: Option<Duration>,
    pub retry_after_max: Option<Duration>,
    pub ssrf_allow: Option<String>,
    pub timeout_ms: Option<u64>,
    pub connect_timeout_ms: Option<u64>,
    pub drain_ms: Option<u64>,
    pub max_in_flight_per_endpoint: Option<u32>,
    pub lane_prefetch: Option<u16>,
    pub lane_hold_limit: Option<u16>,
    pub breaker_failure_threshold: Option<u32>,
}

impl ServiceSettings {
    /// The `HOOKFLEET__...` variables of every setting that is set, in the
    /// order of the configuration's sections.
    pub fn env(&self) -> Vec<(String, String)> {
        let Self {
            amqp,
            database,
            log_level,
            listen_port,
            secrets_key,
            admin_token,
            ingest,
            endpoints,
            delivery: d,
        } = self;
        let mut env = Env::default();
        env.set("AMQP__URL", &amqp.url);
        env.set("AMQP__URLS", &amqp.urls.as_ref().map(|u| u.join(",")));
        env.set("AMQP__PREFIX", &amqp.prefix);
        env.set("AMQP__PREFETCH", &amqp.prefetch);
        env.set("AMQP__DELAY_LEVELS", &amqp.delay_levels);
        env.set("AMQP__QUORUM_GROUP_SIZE", &amqp.quorum_group_size);
        env.set("AMQP__TLS_CA_FILE", &amqp.tls_ca_file);
        env.set("DATABASE__URL", &database.url);
        env.set("DATABASE__POOL_SIZE", &database.pool_size);
        env.set("DATABASE__MIGRATE_ON_START", &database.migrate_on_start);
        env.set("SECRETS__KEY", secrets_key);
        env.set("AUTH__ADMIN_TOKEN", admin_token);
        env.set("LISTEN__PORT", listen_port);
        env.set("LOG__LEVEL", log_level);
        env.set("INGEST__ALLOW_HTTP_ENDPOINTS", &ingest.allow_http_endpoints);
        env.set("INGEST__MAX_PAYLOAD_BYTES", &ingest.max_payload_bytes);
        env.set("INGEST__RATE_PER_SECOND", &ingest.rate_per_second);
        env.set("ENDPOINTS__MAX_PER_TENANT", &endpoints.max_per_tenant);
        env.set("ENDPOINTS__SSRF_ALLOW", &endpoints.ssrf_allow);
        env.set(
            "DELIVERY__RETRY_SCHEDULE",
            &d.retry_schedule.as_deref().map(durations),
        );
        env.set("DELIVERY__JITTER_PERCENT", &d.jitter_percent);
        env.set(
            "DELIVERY__OVERLOAD_MIN_DELAY",
            &d.overload_min_delay.map(duration),
        );
        env.set(
            "DELIVERY__RETRY_AFTER_MAX",
            &d.retry_after_max.map(duration),
        );
        env.set("DELIVERY__SSRF_ALLOW", &d.ssrf_allow);
        env.set("DELIVERY__TIMEOUT_MS", &d.timeout_ms);
        env.set("DELIVERY__CONNECT_TIMEOUT_MS", &d.connect_timeout_ms);
        env.set("DELIVERY__DRAIN_MS", &d.drain_ms);
        env.set(
            "DELIVERY__MAX_IN_FLIGHT_PER_ENDPOINT",
            &d.max_in_flight_per_endpoint,
        );
        env.set("DELIVERY__LANE_PREFETCH", &d.lane_prefetch);
        env.set("DELIVERY__LANE_HOLD_LIMIT", &d.lane_hold_limit);
        env.set(
            "DELIVERY__BREAKER_FAILURE_THRESHOLD",
            &d.breaker_failure_threshold,
        );
        env.0
    }
}

/// The pairs being collected.
#[derive(Default)]
struct Env(Vec<(String, String)>);

impl Env {
    fn set(&mut self, key: &str, value: &Option<impl ToString>) {
        if let Some(value) = value {
            self.0
                .push((format!("HOOKFLEET__{key}"), value.to_string()));
        }
    }
}

/// A duration as the services read it (`1s`, `1m 30s`).
pub fn duration(value: Duration) -> String {
    humantime::format_duration(value).to_string()
}

/// Durations as a comma-separated list (`1s,2s`).
pub fn durations(values: &[Duration]) -> String {
    values
        .iter()
        .map(|d| duration(*d))
        .collect::<Vec<_>>()
        .join(",")
}

/// `pairs` made into an environment as a process sees it: a later pair
/// overrides an earlier one of the same key.
pub fn effective(pairs: &[(String, String)]) -> std::collections::BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_set_is_in_the_environment() {
        assert!(ServiceSettings::default().env().is_empty());
        let settings = ServiceSettings {
            amqp: AmqpEnv {
                urls: Some(Vec::new()),
                ..AmqpEnv::default()
            },
            delivery: DeliveryEnv {
                retry_schedule: Some(vec![Duration::from_secs(1), Duration::from_secs(90)]),
                overload_min_delay: Some(Duration::ZERO),
                ..DeliveryEnv::default()
            },
            ..ServiceSettings::default()
        };
        assert_eq!(
            settings.env(),
            [
                ("HOOKFLEET__AMQP__URLS", ""),
                ("HOOKFLEET__DELIVERY__RETRY_SCHEDULE", "1s,1m 30s"),
                ("HOOKFLEET__DELIVERY__OVERLOAD_MIN_DELAY", "0s"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }
}
