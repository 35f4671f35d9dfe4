//! Configuration, loaded the same way by every service.
//!
//! Layers, later ones winning: the defaults of the service's settings struct,
//! an optional TOML file (`--config PATH` or `HOOKFLEET_CONFIG`), then
//! environment variables `HOOKFLEET__SECTION__KEY` (for example
//! `HOOKFLEET__AMQP__URL`). A bad value fails at start with an error that
//! names the key, because `config` reports the path of the field it could
//! not deserialize. A list from the environment is comma-separated
//! (`HOOKFLEET__AMQP__URLS=amqp://a:5672,amqp://b:5672`).

use std::path::Path;

pub mod duration;
pub use duration::Durations;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The variable prefix, and the separator between sections and keys.
pub const ENV_PREFIX: &str = "HOOKFLEET";
pub const ENV_SEPARATOR: &str = "__";
/// The variable naming an optional settings file.
pub const FILE_VARIABLE: &str = "HOOKFLEET_CONFIG";
/// The settings that are lists, split on commas when they come from the
/// environment (every other value stays one string, commas and all).
const LIST_KEYS: [&str; 1] = ["amqp.urls"];

#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct SettingsError(#[from] config::ConfigError);

/// Loads `T`, starting from `T::default()`. `file` overrides
/// `HOOKFLEET_CONFIG`; `env` is the environment to read (pass
/// `std::env::vars()`; tests pass their own).
pub fn load<T>(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<T, SettingsError>
where
    T: Default + Serialize + DeserializeOwned,
{
    let env: std::collections::HashMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    let mut builder =
        config::Config::builder().add_source(config::Config::try_from(&T::default())?);
    let file = file
        .map(|p| p.to_string_lossy().into_owned())
        .or_else(|| env.get(FILE_VARIABLE).cloned());
    if let Some(path) = file {
        builder = builder.add_source(config::File::new(&path, config::FileFormat::Toml));
    }
    let mut environment = config::Environment::with_prefix(ENV_PREFIX)
        .prefix_separator(ENV_SEPARATOR)
        .separator(ENV_SEPARATOR)
        .try_parsing(true)
        .list_separator(",");
    for key in LIST_KEYS {
        environment = environment.with_list_parse_key(key);
    }
    builder = builder.add_source(environment.source(Some(env)));
    Ok(builder.build()?.try_deserialize()?)
}

/// The broker connection and the names of the topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port/vhost`: the one broker node, when
    /// `urls` is empty.
    pub url: String,
    /// The nodes of a RabbitMQ cluster, in order of preference. When set,
    /// `url` is ignored. A service connects to the first node that answers
    /// and, when that connection is lost, to the next one in the list.
    pub urls: Vec<String>,
    /// Prefix of every exchange and queue name, so several installations
    /// (or tests) can share one broker.
    pub prefix: String,
    /// How many unacknowledged messages a consumer may hold.
    pub prefetch: u16,
    /// Binary delay levels for retries: delays up to 2^levels - 1 seconds
    /// (17: about 36 hours). Every service must use the same value.
    pub delay_levels: u8,
    /// How many nodes hold a replica of each quorum queue
    /// (`x-quorum-initial-group-size`) when it is first declared. Unset:
    /// the broker's default, every node of the cluster. Every service must
    /// use the same value: the broker refuses to redeclare a queue with
    /// another.
    pub quorum_group_size: Option<u16>,
    /// For `amqps://` URLs: a PEM file of the CA certificates the broker's
    /// certificate must chain to, besides the system's roots (empty: the
    /// system's roots only). The broker's name in the URL must be in its
    /// certificate.
    pub tls_ca_file: String,
}

impl AmqpSettings {
    /// The broker nodes to try, in order: `urls`, or else `url`.
    pub fn nodes(&self) -> Vec<String> {
        let urls: Vec<String> = self
            .urls
            .iter()
            .map(|url| url.trim())
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            vec![self.url.clone()]
        } else {
            urls
        }
    }
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            urls: Vec::new(),
            prefix: "hookfleet".into(),
            prefetch: 64,
            delay_levels: 17,
            quorum_group_size: None,
            tls_ca_file: String::new(),
        }
    }
}

/// The PostgreSQL connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    pub pool_size: usize,
    /// Run the migrations when the service starts.
    pub migrate_on_start: bool,
    /// `disable` (the default): plain TCP, for a database on the same
    /// host or network. `verify-full`: TLS, with the server's certificate
    /// checked against `tls_ca_file` (or the system's roots) and its name
    /// against the URL's host, as libpq's `sslmode=verify-full`. This
    /// setting decides; an `sslmode` in the URL is overridden.
    pub tls: DatabaseTls,
    /// PEM file of the certificate authorities the server's certificate
    /// must chain to; empty: the system's roots.
    pub tls_ca_file: String,
}

/// Whether and how the connection to PostgreSQL is encrypted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatabaseTls {
    #[default]
    Disable,
    VerifyFull,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: "postgres://hookfleet:hookfleet@127.0.0.1:5432/hookfleet".into(),
            pool_size: 8,
            migrate_on_start: true,
            tls: DatabaseTls::Disable,
            tls_ca_file: String::new(),
        }
    }
}

/// Where a service's HTTP server listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenSettings {
    pub host: String,
    /// 0 picks a free port (tests use this).
    pub port: u16,
    /// A connection that has not sent a request's headers within this
    /// many milliseconds is closed (slow clients cannot hold sockets).
    pub header_read_timeout_ms: u64,
    /// A request whose body has not arrived within this many milliseconds
    /// is refused.
    pub body_read_timeout_ms: u64,
    /// Requests served at once; more are refused with 503 and
    /// `Retry-After` rather than queued.
    pub max_concurrent_requests: usize,
}

impl ListenSettings {
    pub fn on_port(port: u16) -> Self {
        Self {
            host: "127.0.0.1".into(),
            port,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            max_concurrent_requests: 1024,
        }
    }
}

impl Default for ListenSettings {
    fn default() -> Self {
        Self::on_port(0)
    }
}

/// The key that seals signing secrets at rest and in delivery tasks. The
/// producer and every worker must have the same one.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecretsSettings {
    /// Base64 of 32 random bytes (`openssl rand -base64 32`). Required.
    pub key: String,
}

impl std::fmt::Debug for SecretsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsSettings { key: <redacted> }")
    }
}

/// Who may manage tenants, and how long a token's lookup is trusted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// The admin token: creates tenants and issues their API tokens.
    /// Empty disables the admin API.
    pub admin_token: String,
    /// Serve the admin API (`/v1/tenants...`) on this `host:port` only,
    /// instead of beside the tenant API, so it need not face the internet.
    /// Empty: on the main listener.
    pub admin_listen: String,
    /// How long a valid token is trusted without asking Postgres again, in
    /// milliseconds. A revoked or expired token stops working within this
    /// time (at once on the instance that revoked it).
    pub token_cache_ttl_ms: u64,
    /// While Postgres is unreachable, a token found valid within this many
    /// milliseconds is still accepted, so ingest stays open during an
    /// outage. A revocation cannot be made during one. The producer's
    /// inbound path likewise uses a source found within this time.
    pub token_outage_grace_ms: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            admin_token: String::new(),
            admin_listen: String::new(),
            token_cache_ttl_ms: 30_000,
            token_outage_grace_ms: 15 * 60_000,
        }
    }
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("admin_token", &"<redacted>")
            .field("admin_listen", &self.admin_listen)
            .field("token_cache_ttl_ms", &self.token_cache_ttl_ms)
            .field("token_outage_grace_ms", &self.token_outage_grace_ms)
            .finish()
    }
}

/// Distributed tracing (OpenTelemetry, exported over OTLP/HTTP).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingSettings {
    /// The OTLP/HTTP endpoint, such as `http://localhost:4318` (Jaeger's
    /// OTLP port). Empty: no export, no spans recorded.
    pub otlp_endpoint: String,
    /// The `service.name` of this process's spans; empty: the service's own.
    pub service_name: String,
    /// The share of new traces recorded, 0.0 to 1.0. Traces started
    /// upstream follow the caller's decision.
    pub sampling_ratio: f64,
    /// How often finished spans are sent, in milliseconds.
    pub export_interval_ms: u64,
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            otlp_endpoint: String::new(),
            service_name: String::new(),
            sampling_ratio: 1.0,
            export_interval_ms: 5000,
        }
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// A `tracing` filter such as `info` or `hookfleet_worker=debug,info`.
    pub level: String,
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    #[serde(default, deny_unknown_fields)]
    struct Sample {
        amqp: AmqpSettings,
        listen: ListenSettings,
        log: LogSettings,
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_apply_without_any_source() {
        let s: Sample = load(None, env(&[])).unwrap();
        assert_eq!(s.amqp, AmqpSettings::default());
    }

    #[test]
    fn environment_overrides_by_section_and_key() {
        let s: Sample = load(
            None,
            env(&[
                ("HOOKFLEET__AMQP__PREFIX", "custom"),
                ("HOOKFLEET__LISTEN__PORT", "8080"),
                ("HOOKFLEET__LOG__FORMAT", "json"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(s.amqp.prefix, "custom");
        assert_eq!(s.listen.port, 8080);
        assert_eq!(s.log.format, LogFormat::Json);
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = load::<Sample>(None, env(&[("HOOKFLEET__LISTEN__PORT", "eighty")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("listen.port"), "{err}");
    }

    #[test]
    fn one_url_is_the_one_node() {
        let s: Sample = load(
            None,
            env(&[("HOOKFLEET__AMQP__URL", "amqp://guest:guest@rabbit:5672/%2f")]),
        )
        .unwrap();
        assert_eq!(s.amqp.nodes(), ["amqp://guest:guest@rabbit:5672/%2f"]);
    }

    #[test]
    fn a_url_list_from_the_environment_is_comma_separated_and_wins_over_url() {
        let s: Sample = load(
            None,
            env(&[
                ("HOOKFLEET__AMQP__URL", "amqp://ignored:5672"),
                (
                    "HOOKFLEET__AMQP__URLS",
                    "amqp://g:g@rabbit-0:5672/%2f, amqp://g:g@rabbit-1:5672/%2f,amqp://g:g@rabbit-2:5672/%2f",
                ),
                // Other values keep their commas.
                ("HOOKFLEET__LOG__LEVEL", "hookfleet_worker=debug,info"),
                ("HOOKFLEET__AMQP__QUORUM_GROUP_SIZE", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(
            s.amqp.nodes(),
            [
                "amqp://g:g@rabbit-0:5672/%2f",
                "amqp://g:g@rabbit-1:5672/%2f",
                "amqp://g:g@rabbit-2:5672/%2f"
            ]
        );
        assert_eq!(s.log.level, "hookfleet_worker=debug,info");
        assert_eq!(s.amqp.quorum_group_size, Some(3));
    }

    #[test]
    fn a_url_list_from_a_file() {
        let dir = std::env::temp_dir().join(format!("hookfleet-urls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("settings.toml");
        std::fs::write(
            &path,
            "[amqp]\nurls = [\"amqp://a:5672\", \"amqp://b:5672\"]\n",
        )
        .unwrap();
        let s: Sample = load(Some(&path), env(&[])).unwrap();
        assert_eq!(s.amqp.nodes(), ["amqp://a:5672", "amqp://b:5672"]);
        assert_eq!(s.amqp.quorum_group_size, None);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_sits_between_defaults_and_environment() {
        let dir = std::env::temp_dir().join(format!("hookfleet-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("settings.toml");
        std::fs::write(&path, "[amqp]\nprefix = \"from-file\"\nprefetch = 7\n").unwrap();
        let s: Sample = load(Some(&path), env(&[("HOOKFLEET__AMQP__PREFETCH", "9")])).unwrap();
        assert_eq!(s.amqp.prefix, "from-file");
        assert_eq!(s.amqp.prefetch, 9);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
