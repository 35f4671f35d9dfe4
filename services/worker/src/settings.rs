//! The worker's settings.

use std::time::Duration;

use hookfleet_config::{
    AmqpSettings, ListenSettings, LogSettings, SecretsSettings, TracingSettings,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
// Unknown top-level sections are ignored so that one environment (or one
// ConfigMap) can configure every service; unknown keys inside a section
// are refused.
#[serde(default)]
pub struct Settings {
    pub amqp: AmqpSettings,
    /// Where `/healthz` and `/readyz` listen.
    pub listen: ListenSettings,
    pub log: LogSettings,
    pub tracing: TracingSettings,
    pub delivery: DeliverySettings,
    pub secrets: SecretsSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            amqp: AmqpSettings::default(),
            listen: ListenSettings::on_port(8082),
            log: LogSettings::default(),
            tracing: TracingSettings::default(),
            delivery: DeliverySettings::default(),
            secrets: SecretsSettings::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliverySettings {
    /// Time allowed to connect to an endpoint, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Time allowed for the whole request, in milliseconds.
    pub timeout_ms: u64,
    /// How much of a response body is kept for the ledger, in bytes.
    pub response_excerpt_bytes: usize,
    /// Delays before each retry, comma-separated (`5s,5m,30m,2h,5h,10h,10h`):
    /// with the first, immediate attempt, 8 attempts in all.
    pub retry_schedule: hookfleet_config::Durations,
    /// Random spread applied to each delay, in percent (20 means ±20%).
    pub jitter_percent: u8,
    /// The least a receiver signalling overload (429, 502, 503, 504,
    /// timeout) waits before its retry.
    #[serde(with = "hookfleet_config::duration")]
    pub overload_min_delay: Duration,
    /// The longest `Retry-After` honoured; longer requests are capped.
    #[serde(with = "hookfleet_config::duration")]
    pub retry_after_max: Duration,
    /// Networks endpoints may resolve to although they are loopback,
    /// private, link-local or otherwise internal, comma-separated CIDRs
    /// (`10.1.0.0/16,127.0.0.1/32`). Empty: all internal addresses refused.
    pub ssrf_allow: String,
    /// Time in-flight deliveries get to finish at shutdown, in milliseconds.
    pub drain_ms: u64,
    /// Deliveries to one endpoint in flight at once in one worker; tasks
    /// beyond it are rescheduled a second later rather than waiting. 0 (the
    /// default) means the prefetch: a fast endpoint may use every slot, and
    /// a failing or hanging one is held back by its circuit breaker (a cap
    /// below the prefetch rescheduled the tasks of one busy, healthy
    /// endpoint through the delay queues, which cost most of the
    /// throughput in the benchmark).
    pub max_in_flight_per_endpoint: u32,
    /// Tasks a lane holder (ordered and rate-limited endpoints) takes in
    /// hand at most: the lane channel's prefetch.
    pub lane_prefetch: u16,
    /// Tasks a lane holder holds back in memory for blocked keys, over all
    /// keys, before a blocked key's later tasks are set aside through the
    /// delay levels; below `lane_prefetch`, so other keys and the blocked
    /// heads' retries still get through.
    pub lane_hold_limit: u16,
    /// Consecutive failures that open an endpoint's circuit breaker.
    pub breaker_failure_threshold: u32,
    /// How long an open breaker reschedules the endpoint's tasks without
    /// calling it, before one probe is let through.
    #[serde(with = "hookfleet_config::duration")]
    pub breaker_open_for: Duration,
    /// Send webhooks through this HTTP(S) proxy (`http://proxy:3128`).
    /// Empty: connect directly, and ignore `HTTP_PROXY`, `HTTPS_PROXY` and
    /// `ALL_PROXY`. Through a proxy, the proxy resolves the names, so the
    /// SSRF guard sees only literal addresses: the proxy must refuse
    /// internal addresses itself.
    pub proxy: String,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 15_000,
            timeout_ms: 15_000,
            response_excerpt_bytes: 64 * 1024,
            retry_schedule: hookfleet_config::Durations(
                [5, 300, 1800, 7200, 18_000, 36_000, 36_000]
                    .map(Duration::from_secs)
                    .to_vec(),
            ),
            jitter_percent: 20,
            overload_min_delay: Duration::from_secs(30),
            retry_after_max: Duration::from_secs(3600),
            ssrf_allow: String::new(),
            drain_ms: 20_000,
            max_in_flight_per_endpoint: 0,
            lane_prefetch: crate::lane::LANE_PREFETCH,
            lane_hold_limit: crate::lane::LANE_PREFETCH / 2,
            breaker_failure_threshold: 5,
            breaker_open_for: Duration::from_secs(30),
            proxy: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, hookfleet_config::SettingsError> {
        hookfleet_config::load(
            None,
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn a_shared_environment_configures_every_service() {
        let settings = load(&[
            ("HOOKFLEET__DELIVERY__TIMEOUT_MS", "2500"),
            ("HOOKFLEET__DATABASE__URL", "postgres://elsewhere/db"),
        ])
        .unwrap();
        assert_eq!(settings.delivery.timeout_ms, 2500);
    }

    #[test]
    fn a_bad_value_or_unknown_key_names_the_key() {
        let error = load(&[("HOOKFLEET__DELIVERY__TIMEOUT_MS", "soon")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("delivery.timeout_ms"), "{error}");
        let error = load(&[("HOOKFLEET__DELIVERY__TIMEOUT", "5")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("timeout"), "{error}");
    }

    #[test]
    fn durations_are_read_as_people_write_them_and_bad_ones_are_named() {
        let settings = load(&[
            ("HOOKFLEET__DELIVERY__RETRY_SCHEDULE", "1s, 2m,3h"),
            ("HOOKFLEET__DELIVERY__BREAKER_OPEN_FOR", "1m 30s"),
        ])
        .unwrap();
        assert_eq!(
            settings.delivery.retry_schedule.0,
            [1, 120, 10_800].map(Duration::from_secs)
        );
        assert_eq!(settings.delivery.breaker_open_for, Duration::from_secs(90));
        for (key, field) in [
            (
                "HOOKFLEET__DELIVERY__RETRY_SCHEDULE",
                "delivery.retry_schedule",
            ),
            (
                "HOOKFLEET__DELIVERY__OVERLOAD_MIN_DELAY",
                "delivery.overload_min_delay",
            ),
        ] {
            let error = load(&[(key, "5s,later")]).unwrap_err().to_string();
            assert!(error.contains(field), "{error}");
        }
    }
}
