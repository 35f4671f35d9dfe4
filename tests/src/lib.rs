//! The end-to-end harness: starts hookfleet's three services in-process
//! against the real RabbitMQ and PostgreSQL, each test with its own
//! database and its own topology prefix, so tests run in parallel without
//! seeing each other's messages or rows.

pub mod destination;
pub mod fleet;
pub mod receiver;
pub mod service_env;
pub mod vhost;

use std::net::SocketAddr;
use std::time::Duration;

use hookfleet_config::{AmqpSettings, DatabaseSettings, ListenSettings, LogSettings};
use hookfleet_topology::Topology;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use destination::DestinationQueue;
pub use hookfleet_config::Durations;
pub use receiver::{Received, Receiver, Reply};
pub use vhost::ScratchVhost;

/// Where the tests find the broker and a database they may create
/// databases from. `scripts/test` makes sure both exist.
pub fn amqp_url() -> String {
    std::env::var("HOOKFLEET_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

pub fn admin_database_url() -> String {
    std::env::var("HOOKFLEET_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://hookfleet:hookfleet@127.0.0.1:5432/postgres".into())
}

/// Tuning a test may change before the fleet starts.
#[derive(Debug, Clone)]
pub struct Options {
    pub workers: usize,
    /// Connect the services to Postgres over TLS (`database.tls =
    /// verify-full`) at this host name, trusting this CA file.
    pub database_tls: Option<DatabaseTlsOption>,
    /// Delays before retries, the worker's `delivery.retry_schedule`
    /// ([`seconds`] makes one; empty: no retries).
    pub retry_schedule: Durations,
    pub jitter_percent: u8,
    /// The worker's `delivery.overload_min_delay`.
    pub overload_min_delay: Duration,
    pub max_payload_bytes: usize,
    pub delivery_timeout_ms: u64,
    /// The worker's `delivery.ssrf_allow`; loopback by default, since the
    /// test receivers listen on 127.0.0.1.
    pub ssrf_allow: String,
    /// The producer's `endpoints.ssrf_allow`, checked when an endpoint is
    /// created; loopback by default, like `ssrf_allow`.
    pub endpoint_ssrf_allow: String,
    pub max_in_flight_per_endpoint: u32,
    /// The worker's `delivery.lane_prefetch` and `delivery.lane_hold_limit`.
    pub lane_prefetch: u16,
    pub lane_hold_limit: u16,
    pub breaker_failure_threshold: u32,
    pub breaker_open_for: Duration,
    /// Export spans to this OTLP/HTTP endpoint. The first test in a test
    /// binary decides for the whole process.
    pub otlp_endpoint: Option<String>,
    /// The ledger's `health.disable_after` and `health.sweep_every`.
    pub health_disable_after: Duration,
    pub health_sweep_every: Duration,
    /// The producer's `endpoints.broadcast_every`.
    pub broadcast_every: Duration,
    /// The producer's `ingest.rate_per_second` and `ingest.burst`.
    pub ingest_rate_per_second: u32,
    pub ingest_burst: u32,
    /// The producer's `endpoints.max_per_tenant`.
    pub max_endpoints: i64,
    /// The ledger's `recover.rate_per_second` and
    /// `recover.max_in_flight_per_tenant`.
    pub recover_rate_per_second: u32,
    pub max_recoveries_per_tenant: i64,
    /// The ledger's `replay.max_in_flight_per_tenant`.
    pub max_replays_per_tenant: usize,
    /// The producer's and the ledger's HTTP servers (the port is ignored:
    /// each picks a free one).
    pub listen: ListenSettings,
    /// `auth.token_cache_ttl_ms` of the producer and the ledger.
    pub token_cache_ttl_ms: u64,
    /// The producer's `ingest.amqp_tenant_is_user`.
    pub amqp_tenant_is_user: bool,
    /// Every service's `amqp.urls`; empty: `amqp.url`, the test broker.
    pub amqp_urls: Vec<String>,
    /// Another broker than the test broker, over TLS: every service's
    /// `amqp.url` and `amqp.tls_ca_file`.
    pub amqp_tls: Option<AmqpTlsOption>,
}

/// Where and how a test reaches a broker over TLS (`amqps://`).
#[derive(Debug, Clone)]
pub struct AmqpTlsOption {
    pub url: String,
    pub ca_file: String,
}

/// Where and how a test reaches Postgres over TLS.
#[derive(Debug, Clone)]
pub struct DatabaseTlsOption {
    /// A name in the server's certificate that resolves to this machine.
    pub host: String,
    pub ca_file: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workers: 1,
            database_tls: None,
            retry_schedule: seconds(&[1, 2]),
            jitter_percent: 0,
            overload_min_delay: Duration::ZERO,
            max_payload_bytes: 256 * 1024,
            delivery_timeout_ms: 5_000,
            ssrf_allow: "127.0.0.0/8,::1/128".into(),
            endpoint_ssrf_allow: "127.0.0.0/8,::1/128".into(),
            max_in_flight_per_endpoint: 8,
            lane_prefetch: 1000,
            lane_hold_limit: 500,
            // High enough that tests of retries never trip it.
            breaker_failure_threshold: 100,
            breaker_open_for: Duration::from_secs(30),
            otlp_endpoint: None,
            health_disable_after: Duration::from_secs(5 * 24 * 3600),
            health_sweep_every: Duration::from_secs(60),
            broadcast_every: Duration::from_secs(15),
            ingest_rate_per_second: 2_000,
            ingest_burst: 10_000,
            max_endpoints: 1_000,
            recover_rate_per_second: 50,
            max_recoveries_per_tenant: 2,
            max_replays_per_tenant: 4,
            listen: ListenSettings::on_port(0),
            token_cache_ttl_ms: 30_000,
            amqp_tenant_is_user: false,
            amqp_urls: Vec::new(),
            amqp_tls: None,
        }
    }
}

/// A running fleet with its own database and topology prefix.
#[derive(Debug)]
pub struct TestApp {
    /// Unique to this test; the database name and the topology prefix.
    pub name: String,
    pub amqp: AmqpSettings,
    pub database_url: String,
    pub producer: SocketAddr,
    pub ledger: SocketAddr,
    pub workers: Vec<Worker>,
    /// A client that sends this test's tenant token on every request.
    pub http: reqwest::Client,
    pub admin_token: String,
    /// The tenant the test acts as, and its API token.
    pub tenant: String,
    pub token: String,
    pub options: Options,
    /// The key sealing signing secrets, shared by producer and workers.
    pub secrets: hookfleet_config::SecretsSettings,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    cleaned: bool,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        init_telemetry(options.otlp_endpoint.as_deref());
        let name = format!("hft_{}", uuid::Uuid::new_v4().simple());
        let admin = admin_database_url();
        hookfleet_db::create_database(&admin, &name)
            .await
            .expect("create the test database (run scripts/test, which sets up Postgres)");
        let mut database = DatabaseSettings {
            url: hookfleet_db::with_database(&admin, &name),
            pool_size: 4,
            migrate_on_start: true,
            ..Default::default()
        };
        if let Some(tls) = &options.database_tls {
            let mut url = reqwest::Url::parse(&database.url).expect("the test database URL");
            url.set_host(Some(&tls.host)).expect("a host name");
            database.url = url.to_string();
            database.tls = hookfleet_config::DatabaseTls::VerifyFull;
            database.tls_ca_file = tls.ca_file.clone();
        }
        let amqp = AmqpSettings {
            url: options
                .amqp_tls
                .as_ref()
                .map_or_else(amqp_url, |tls| tls.url.clone()),
            urls: options.amqp_urls.clone(),
            prefix: name.clone(),
            prefetch: 32,
            delay_levels: 6,
            quorum_group_size: None,
            tls_ca_file: options
                .amqp_tls
                .as_ref()
                .map(|tls| tls.ca_file.clone())
                .unwrap_or_default(),
        };
        let secrets = hookfleet_config::SecretsSettings {
            key: hookfleet_signing::Sealer::generate_key(),
        };
        let admin_token = format!("admin-{}", uuid::Uuid::new_v4().simple());
        let cancel = CancellationToken::new();
        let mut tasks = Vec::new();

        // The ledger first (it migrates): the producer forwards to it.
        let ledger = hookfleet_ledger::start(
            hookfleet_ledger::Settings {
                amqp: amqp.clone(),
                database: database.clone(),
                listen: ListenSettings {
                    port: 0,
                    ..options.listen.clone()
                },
                auth: hookfleet_config::AuthSettings {
                    token_cache_ttl_ms: options.token_cache_ttl_ms,
                    ..Default::default()
                },
                health: hookfleet_ledger::settings::HealthSettings {
                    disable_after: options.health_disable_after,
                    sweep_every: options.health_sweep_every,
                },
                secrets: secrets.clone(),
                recover: hookfleet_ledger::settings::RecoverSettings {
                    rate_per_second: options.recover_rate_per_second,
                    max_in_flight_per_tenant: options.max_recoveries_per_tenant,
                    ..Default::default()
                },
                replay: hookfleet_ledger::settings::ReplaySettings {
                    max_in_flight_per_tenant: options.max_replays_per_tenant,
                },
                ..Default::default()
            },
            cancel.clone(),
        )
        .await
        .expect("start the ledger");
        tasks.push(ledger.task);

        // The producer forwards the ledger's paths: one base URL.
        let producer = hookfleet_producer::start(
            producer_settings(
                &amqp,
                &database,
                &secrets,
                &admin_token,
                &options,
                ledger.addr,
            ),
            cancel.clone(),
        )
        .await
        .expect("start the producer");
        tasks.push(producer.task);

        let workers = options.workers;

        let app = Self {
            name,
            amqp,
            database_url: database.url,
            producer: producer.addr,
            ledger: ledger.addr,
            workers: Vec::new(),
            http: reqwest::Client::new(),
            admin_token,
            tenant: TENANT.to_owned(),
            token: String::new(),
            options,
            secrets,
            cancel,
            tasks,
            cleaned: false,
        };
        app.wait_ready().await;
        let mut app = app;
        app.token = app.new_tenant(TENANT).await;
        app.http = client_with_token(&app.token);
        for _ in 0..workers {
            app.add_worker().await;
        }
        app
    }

    /// Starts one more in-process producer on the same database and
    /// topology (as a second replica would be) and waits until it is
    /// ready; returns where its API listens.
    pub async fn add_producer(&mut self) -> SocketAddr {
        let database = DatabaseSettings {
            url: self.database_url.clone(),
            pool_size: 4,
            migrate_on_start: false,
            ..Default::default()
        };
        let running = hookfleet_producer::start(
            producer_settings(
                &self.amqp,
                &database,
                &self.secrets,
                &self.admin_token,
                &self.options,
                self.ledger,
            ),
            self.cancel.clone(),
        )
        .await
        .expect("start another producer");
        wait_ready(&self.http, running.addr).await;
        self.tasks.push(running.task);
        running.addr
    }

    /// Starts one more in-process worker and waits until it is ready.
    pub async fn add_worker(&mut self) -> usize {
        let cancel = self.cancel.child_token();
        let running = hookfleet_worker::start(
            worker_settings(&self.amqp, &self.secrets, &self.options),
            cancel.clone(),
        )
        .await
        .expect("start a worker");
        wait_ready(&self.http, running.addr).await;
        self.workers.push(Worker {
            addr: running.addr,
            cancel,
            task: Some(running.task),
        });
        self.workers.len() - 1
    }

    /// Stops worker `index` as SIGTERM would, and waits until it has drained
    /// and exited.
    pub async fn stop_worker(&mut self, index: usize) {
        let worker = &mut self.workers[index];
        worker.cancel.cancel();
        if let Some(task) = worker.task.take() {
            task.await.expect("the worker task ended cleanly");
        }
    }

    /// The environment that configures a worker *process* for this test.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        worker_process_settings(&self.amqp, &self.secrets, &self.options).env()
    }

    /// Waits until every service reports ready (broker connected, topology
    /// declared).
    async fn wait_ready(&self) {
        for addr in [self.producer, self.ledger] {
            wait_ready(&self.http, addr).await;
        }
    }

    /// Creates a tenant through the admin API and returns a token for it.
    pub async fn new_tenant(&self, id: &str) -> String {
        let admin = reqwest::Client::new();
        let response = admin
            .post(self.producer_url("/v1/tenants"))
            .bearer_auth(&self.admin_token)
            .json(&serde_json::json!({ "id": id }))
            .send()
            .await
            .expect("POST /v1/tenants");
        assert_eq!(response.status(), 201, "tenant {id} not created");
        let response = admin
            .post(self.producer_url(&format!("/v1/tenants/{id}/tokens")))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("POST /v1/tenants/{id}/tokens");
        assert_eq!(response.status(), 201, "no token for tenant {id}");
        let body: serde_json::Value = response.json().await.expect("token JSON");
        body["token"].as_str().expect("token").to_owned()
    }

    pub fn topology(&self) -> Topology {
        Topology::from_settings(&self.amqp)
    }

    pub fn producer_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.producer)
    }

    pub fn ledger_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ledger)
    }

    /// A connection to this test's database.
    pub async fn db(&self) -> hookfleet_db::tokio_postgres::Client {
        let (client, connection) = hookfleet_db::tokio_postgres::connect(
            &self.database_url,
            hookfleet_db::tokio_postgres::NoTls,
        )
        .await
        .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }

    /// Creates an endpoint through the API; returns (id, secret).
    pub async fn create_endpoint(&self, url: &str, event_types: &[&str]) -> (String, String) {
        let response = self
            .http
            .post(self.producer_url("/v1/endpoints"))
            .json(&serde_json::json!({ "url": url, "event_types": event_types }))
            .send()
            .await
            .expect("POST /v1/endpoints");
        assert_eq!(response.status(), 201, "endpoint not created");
        let body: serde_json::Value = response.json().await.expect("endpoint JSON");
        (
            body["id"].as_str().expect("id").to_owned(),
            body["secret"].as_str().expect("secret").to_owned(),
        )
    }

    /// Creates an endpoint publishing to an AMQP exchange; returns its id.
    pub async fn create_destination(
        &self,
        exchange: &str,
        routing_key: &str,
        event_types: &[&str],
    ) -> String {
        let response = self
            .http
            .post(self.producer_url("/v1/endpoints"))
            .json(&serde_json::json!({
                "destination": {"type": "amqp", "exchange": exchange, "routing_key": routing_key},
                "event_types": event_types,
            }))
            .send()
            .await
            .expect("POST /v1/endpoints");
        assert_eq!(response.status(), 201, "destination endpoint not created");
        let body: serde_json::Value = response.json().await.expect("endpoint JSON");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Sends an event whose payload is exactly `payload` (raw JSON text);
    /// returns its id.
    pub async fn send_event(&self, event_type: &str, payload: &str) -> String {
        let body = format!(
            "{{\"type\": {}, \"payload\": {payload}}}",
            serde_json::json!(event_type)
        );
        let response = self
            .http
            .post(self.producer_url("/v1/events"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("POST /v1/events");
        assert_eq!(response.status(), 202, "event not accepted");
        let body: serde_json::Value = response.json().await.expect("accepted JSON");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Stops the fleet, waits for it to drain, and removes this test's
    /// queues, exchanges and database.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        for worker in &mut self.workers {
            if let Some(task) = worker.task.take() {
                let _ = task.await;
            }
        }
        cleanup(&self.name, &self.amqp).await;
        self.cleaned = true;
    }
}

impl Drop for TestApp {
    /// A test that panicked still removes what it created.
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        self.cancel.cancel();
        let name = self.name.clone();
        let amqp = self.amqp.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(cleanup(&name, &amqp));
            }
        })
        .join();
    }
}

/// Installs the process's logging (and span export) once.
fn init_telemetry(otlp_endpoint: Option<&str>) {
    static GUARD: std::sync::OnceLock<hookfleet_telemetry::TelemetryGuard> =
        std::sync::OnceLock::new();
    GUARD.get_or_init(|| {
        hookfleet_telemetry::init(
            &LogSettings {
                level: "warn".into(),
                ..LogSettings::default()
            },
            &hookfleet_config::TracingSettings {
                otlp_endpoint: otlp_endpoint.unwrap_or_default().to_owned(),
                export_interval_ms: 100,
                ..Default::default()
            },
            "hookfleet-tests",
        )
    });
}

/// The tenant every test acts as unless it makes others.
pub const TENANT: &str = "acme";

/// A client that authenticates as the holder of `token`.
pub fn client_with_token(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {token}");
    headers.insert(
        reqwest::header::AUTHORIZATION,
        reqwest::header::HeaderValue::from_str(&value).expect("a token is a valid header"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

/// An in-process worker.
#[derive(Debug)]
pub struct Worker {
    /// Where its `/healthz` and `/readyz` listen.
    pub addr: SocketAddr,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

async fn wait_ready(http: &reqwest::Client, addr: SocketAddr) {
    eventually(Duration::from_secs(30), || async move {
        let response = http
            .get(format!("http://{addr}/readyz"))
            .send()
            .await
            .ok()?;
        response.status().is_success().then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("service at {addr} never became ready"));
}

async fn cleanup(name: &str, amqp: &AmqpSettings) {
    if let Ok((_, connection)) = hookfleet_topology::Nodes::from_settings(amqp)
        .connect_first("hookfleet-test-cleanup")
        .await
    {
        if let Ok(channel) = connection.create_channel().await {
            let _ = Topology::from_settings(amqp).delete(&channel).await;
            let _ = channel.close(200, "bye".into()).await;
        }
        let _ = connection.close(200, "bye".into()).await;
    }
    let _ = hookfleet_db::drop_database(&admin_database_url(), name).await;
}

fn producer_settings(
    amqp: &AmqpSettings,
    database: &DatabaseSettings,
    secrets: &hookfleet_config::SecretsSettings,
    admin_token: &str,
    options: &Options,
    ledger: SocketAddr,
) -> hookfleet_producer::Settings {
    hookfleet_producer::Settings {
        amqp: amqp.clone(),
        database: database.clone(),
        listen: ListenSettings {
            port: 0,
            ..options.listen.clone()
        },
        ingest: hookfleet_producer::settings::IngestSettings {
            max_payload_bytes: options.max_payload_bytes,
            allow_http_endpoints: true,
            rate_per_second: options.ingest_rate_per_second,
            burst: options.ingest_burst,
            amqp_tenant_is_user: options.amqp_tenant_is_user,
            ..Default::default()
        },
        secrets: secrets.clone(),
        auth: hookfleet_config::AuthSettings {
            admin_token: admin_token.to_owned(),
            token_cache_ttl_ms: options.token_cache_ttl_ms,
            ..Default::default()
        },
        endpoints: hookfleet_producer::settings::EndpointSettings {
            ssrf_allow: options.endpoint_ssrf_allow.clone(),
            broadcast_every: options.broadcast_every,
            max_per_tenant: options.max_endpoints,
            ..Default::default()
        },
        ledger: hookfleet_producer::settings::LedgerSettings {
            url: format!("http://{ledger}"),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A retry schedule of whole seconds: `seconds(&[1, 2])` is `1s,2s`.
pub fn seconds(delays: &[u64]) -> Durations {
    Durations(delays.iter().map(|s| Duration::from_secs(*s)).collect())
}

/// What a worker process started by a test is told: the in-process
/// workers' settings that a test may change, through the environment.
fn worker_process_settings(
    amqp: &AmqpSettings,
    secrets: &hookfleet_config::SecretsSettings,
    options: &Options,
) -> service_env::ServiceSettings {
    let d = worker_settings(amqp, secrets, options).delivery;
    service_env::ServiceSettings {
        amqp: service_env::AmqpEnv {
            url: Some(amqp.url.clone()),
            urls: Some(amqp.urls.clone()),
            prefix: Some(amqp.prefix.clone()),
            prefetch: Some(amqp.prefetch),
            delay_levels: Some(amqp.delay_levels),
            tls_ca_file: Some(amqp.tls_ca_file.clone()),
            ..Default::default()
        },
        secrets_key: Some(secrets.key.clone()),
        listen_port: Some(0),
        log_level: Some("warn".into()),
        delivery: service_env::DeliveryEnv {
            retry_schedule: Some(d.retry_schedule.0),
            jitter_percent: Some(d.jitter_percent),
            overload_min_delay: Some(d.overload_min_delay),
            ssrf_allow: Some(d.ssrf_allow),
            timeout_ms: Some(d.timeout_ms),
            drain_ms: Some(d.drain_ms),
            max_in_flight_per_endpoint: Some(d.max_in_flight_per_endpoint),
            lane_prefetch: Some(d.lane_prefetch),
            lane_hold_limit: Some(d.lane_hold_limit),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn worker_settings(
    amqp: &AmqpSettings,
    secrets: &hookfleet_config::SecretsSettings,
    options: &Options,
) -> hookfleet_worker::Settings {
    let mut settings = hookfleet_worker::Settings {
        amqp: amqp.clone(),
        secrets: secrets.clone(),
        listen: ListenSettings::on_port(0),
        ..Default::default()
    };
    settings.delivery.retry_schedule = options.retry_schedule.clone();
    settings.delivery.jitter_percent = options.jitter_percent;
    settings.delivery.overload_min_delay = options.overload_min_delay;
    settings.delivery.ssrf_allow = options.ssrf_allow.clone();
    settings.delivery.timeout_ms = options.delivery_timeout_ms;
    settings.delivery.connect_timeout_ms = options.delivery_timeout_ms;
    settings.delivery.drain_ms = 5_000;
    settings.delivery.max_in_flight_per_endpoint = options.max_in_flight_per_endpoint;
    settings.delivery.lane_prefetch = options.lane_prefetch;
    settings.delivery.lane_hold_limit = options.lane_hold_limit;
    settings.delivery.breaker_failure_threshold = options.breaker_failure_threshold;
    settings.delivery.breaker_open_for = options.breaker_open_for;
    settings
}

/// Polls `check` until it yields a value or `limit` passes. A bound on
/// waiting, not a timing assertion: tests fail on a missing result, never
/// on a slow one that arrives within the bound.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The rows of the `parked` table, oldest first, as messages (properties
/// decoded, `routing_key` the one the message was sent with), read once
/// the ledger has caught up: `dead_queue` holds nothing ready and the
/// table has not grown over two looks 200 ms apart (the ledger writes a
/// batch it took within its batch wait of 20 ms and one insert). Gives what there is after `limit`.
pub async fn parked_when_settled(
    channel: &lapin::Channel,
    dead_queue: &str,
    db: &hookfleet_db::tokio_postgres::Client,
    limit: Duration,
) -> anyhow::Result<Vec<Taken>> {
    let deadline = tokio::time::Instant::now() + limit;
    let (mut seen, mut unchanged) = (None, 0);
    loop {
        let waiting = channel
            .queue_declare(
                dead_queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await?
            .message_count();
        let rows = db
            .query(
                "SELECT properties, body, coalesce(original_routing_key, '')
                 FROM parked ORDER BY id",
                &[],
            )
            .await?;
        unchanged = if waiting == 0 && seen == Some(rows.len()) {
            unchanged + 1
        } else {
            0
        };
        let settled = unchanged >= 2;
        if settled || tokio::time::Instant::now() >= deadline {
            return rows
                .iter()
                .map(|row| {
                    let properties: Vec<u8> = row.get(0);
                    Ok(Taken {
                        properties: hookfleet_topology::decode_properties(&properties)
                            .ok_or_else(|| anyhow::anyhow!("stored properties do not decode"))?,
                        body: row.get(1),
                        routing_key: row.get(2),
                    })
                })
                .collect();
        }
        seen = (waiting == 0).then_some(rows.len());
        // Longer than the ledger's batch wait: a batch taken is written by then.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A message taken from a queue with `basic_get`, or a parked one.
#[derive(Debug, Clone)]
pub struct Taken {
    pub routing_key: String,
    pub properties: lapin::BasicProperties,
    pub body: Vec<u8>,
}

impl Taken {
    pub fn header(&self, name: &str) -> Option<&str> {
        hookfleet_topology::header_str(&self.properties, name)
    }
}

impl TestApp {
    /// Takes (and acks) every message now in `queue`.
    pub async fn drain_queue(&self, queue: &str) -> Vec<Taken> {
        let connection = hookfleet_topology::connect(&self.amqp.url, "hookfleet-test-reader")
            .await
            .expect("connect to the broker");
        let channel = connection.create_channel().await.expect("channel");
        let mut taken = Vec::new();
        while let Some(message) = channel
            .basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic.get")
        {
            taken.push(Taken {
                routing_key: message.delivery.routing_key.to_string(),
                properties: message.delivery.properties.clone(),
                body: message.delivery.data.clone(),
            });
        }
        let _ = channel.close(200, "bye".into()).await;
        let _ = connection.close(200, "bye".into()).await;
        taken
    }

    /// Every parked message, oldest first, once the ledger has moved all
    /// of `{p}.dead` into its `parked` table (where parked messages live,
    /// issue 16 item 5); see [`parked_when_settled`]. Reading does not
    /// remove them.
    pub async fn parked(&self) -> Vec<Taken> {
        let connection = hookfleet_topology::connect(&self.amqp.url, "hookfleet-test-parked")
            .await
            .expect("connect to the broker");
        let channel = connection.create_channel().await.expect("channel");
        let db = self.db().await;
        let parked = parked_when_settled(
            &channel,
            &self.topology().dead_queue(),
            &db,
            Duration::from_secs(30),
        )
        .await
        .expect("read the parked messages");
        let _ = channel.close(200, "bye".into()).await;
        let _ = connection.close(200, "bye".into()).await;
        parked
    }

    /// Waits until the ledger shows the delivery of `event_id` to
    /// `endpoint_id` in `state`; returns its attempt count.
    pub async fn wait_for_delivery_state(
        &self,
        event_id: &str,
        endpoint_id: &str,
        state: &str,
        limit: Duration,
    ) -> Option<i32> {
        let db = self.db().await;
        eventually(limit, || async {
            let row = db
                .query_opt(
                    "SELECT attempts FROM deliveries
                     WHERE event_id = $1 AND endpoint_id = $2 AND state = $3",
                    &[&event_id, &endpoint_id, &state],
                )
                .await
                .ok()??;
            Some(row.get::<_, i32>(0))
        })
        .await
    }
}

impl TestApp {
    /// Publishes a message to this test's events exchange straight over
    /// AMQP, as an application would, and waits for the broker's confirm.
    pub async fn publish_raw(
        &self,
        routing_key: &str,
        properties: lapin::BasicProperties,
        body: &[u8],
    ) {
        let connection = hookfleet_topology::connect(&self.amqp.url, "hookfleet-test-app")
            .await
            .expect("connect to the broker");
        let publisher = hookfleet_topology::Publisher::open(&connection)
            .await
            .expect("a confirming channel");
        publisher
            .publish(
                &self.topology().events_exchange(),
                routing_key,
                body,
                properties,
            )
            .await
            .expect("the broker confirmed the event");
        let _ = publisher.channel().close(200, "bye".into()).await;
        let _ = connection.close(200, "bye".into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The map `worker_env` kept by hand before `service_env`, as it was.
    fn hand_kept_worker_env(
        amqp: &AmqpSettings,
        secrets: &hookfleet_config::SecretsSettings,
        options: &Options,
    ) -> Vec<(String, String)> {
        let settings = worker_settings(amqp, secrets, options);
        let d = &settings.delivery;
        [
            ("AMQP__URL", amqp.url.clone()),
            ("AMQP__URLS", amqp.urls.join(",")),
            ("AMQP__PREFIX", amqp.prefix.clone()),
            ("AMQP__PREFETCH", amqp.prefetch.to_string()),
            ("AMQP__DELAY_LEVELS", amqp.delay_levels.to_string()),
            ("AMQP__TLS_CA_FILE", amqp.tls_ca_file.clone()),
            ("SECRETS__KEY", secrets.key.clone()),
            ("LISTEN__PORT", "0".into()),
            ("LOG__LEVEL", "warn".into()),
            ("DELIVERY__RETRY_SCHEDULE", d.retry_schedule.to_string()),
            ("DELIVERY__JITTER_PERCENT", d.jitter_percent.to_string()),
            (
                "DELIVERY__OVERLOAD_MIN_DELAY",
                humantime::format_duration(d.overload_min_delay).to_string(),
            ),
            ("DELIVERY__SSRF_ALLOW", d.ssrf_allow.clone()),
            ("DELIVERY__TIMEOUT_MS", d.timeout_ms.to_string()),
            ("DELIVERY__DRAIN_MS", d.drain_ms.to_string()),
            (
                "DELIVERY__MAX_IN_FLIGHT_PER_ENDPOINT",
                d.max_in_flight_per_endpoint.to_string(),
            ),
            ("DELIVERY__LANE_PREFETCH", d.lane_prefetch.to_string()),
            ("DELIVERY__LANE_HOLD_LIMIT", d.lane_hold_limit.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("HOOKFLEET__{k}"), v))
        .collect()
    }

    fn amqp() -> AmqpSettings {
        AmqpSettings {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            prefix: "hft_test".into(),
            prefetch: 32,
            delay_levels: 6,
            ..Default::default()
        }
    }

    #[test]
    fn a_worker_process_gets_the_environment_the_hand_kept_map_gave() {
        let secrets = hookfleet_config::SecretsSettings {
            key: "a-key".into(),
        };
        let cases = [
            (amqp(), Options::default()),
            (
                AmqpSettings {
                    urls: vec!["amqp://a/%2f".into(), "amqp://b/%2f".into()],
                    tls_ca_file: "/ca.pem".into(),
                    ..amqp()
                },
                Options {
                    retry_schedule: Durations::default(),
                    overload_min_delay: Duration::from_millis(1500),
                    ssrf_allow: String::new(),
                    jitter_percent: 20,
                    delivery_timeout_ms: 700,
                    max_in_flight_per_endpoint: 3,
                    lane_prefetch: 10,
                    lane_hold_limit: 5,
                    ..Options::default()
                },
            ),
            (
                amqp(),
                Options {
                    retry_schedule: seconds(&[1; 12]),
                    ..Options::default()
                },
            ),
        ];
        for (amqp, options) in cases {
            assert_eq!(
                worker_process_settings(&amqp, &secrets, &options).env(),
                hand_kept_worker_env(&amqp, &secrets, &options),
                "{options:?}"
            );
        }
    }
}
