//! The ledger's settings.

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
    pub recorder: RecorderSettings,
    pub health: HealthSettings,
    pub recover: RecoverSettings,
    pub replay: ReplaySettings,
    pub retention: RetentionSettings,
    /// The key sealing signing secrets: replay and recovery reseal them
    /// for each task's tenant, endpoint and URL.
    pub secrets: SecretsSettings,
    /// Only the token cache is read here (the admin API is the producer's).
    pub auth: AuthSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            amqp: AmqpSettings::default(),
            database: DatabaseSettings::default(),
            listen: ListenSettings::on_port(8081),
            log: LogSettings::default(),
            tracing: TracingSettings::default(),
            recorder: RecorderSettings::default(),
            health: HealthSettings::default(),
            recover: RecoverSettings::default(),
            replay: ReplaySettings::default(),
            retention: RetentionSettings::default(),
            secrets: SecretsSettings::default(),
            auth: AuthSettings::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecorderSettings {
    /// The most records written in one transaction.
    pub batch_size: usize,
    /// How long to wait for a batch to fill before writing what there is,
    /// in milliseconds.
    pub batch_wait_ms: u64,
}

impl Default for RecorderSettings {
    fn default() -> Self {
        Self {
            batch_size: 256,
            batch_wait_ms: 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthSettings {
    /// An endpoint failing without a success for this long is disabled.
    #[serde(with = "hookfleet_config::duration")]
    pub disable_after: Duration,
    /// How often endpoints are checked.
    #[serde(with = "hookfleet_config::duration")]
    pub sweep_every: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            disable_after: Duration::from_secs(432000),
            sweep_every: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecoverSettings {
    /// Resends per second of one recovery, so that recovering an endpoint
    /// does not flood it (or the workers).
    pub rate_per_second: u32,
    /// Recoveries one tenant may have running at once (0: no limit);
    /// beyond it, 429 with Retry-After.
    pub max_in_flight_per_tenant: i64,
    /// Recoveries this ledger runs at once, over all tenants; the others
    /// wait their turn.
    pub max_running: usize,
}

impl Default for RecoverSettings {
    fn default() -> Self {
        Self {
            rate_per_second: 50,
            max_in_flight_per_tenant: 2,
            max_running: 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplaySettings {
    /// Replays one tenant may have in flight at once in this ledger (0: no
    /// limit); beyond it, 429 with Retry-After.
    pub max_in_flight_per_tenant: usize,
}

impl Default for ReplaySettings {
    fn default() -> Self {
        Self {
            max_in_flight_per_tenant: 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSettings {
    /// How long events, deliveries and attempts are kept, counted from the
    /// event's creation; whole days are dropped once older than this.
    #[serde(with = "hookfleet_config::duration")]
    pub period: Duration,
    /// How often partitions are made ahead and expired ones dropped.
    #[serde(with = "hookfleet_config::duration")]
    pub check_every: Duration,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(2592000),
            check_every: Duration::from_secs(3600),
        }
    }
}
