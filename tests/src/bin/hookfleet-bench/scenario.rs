//! The scenarios, and running one: a fresh database and topology prefix,
//! the fleet as processes, endpoints on the receiver, load, measurements,
//! and removal of all of it.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hookfleet_db::tokio_postgres::{self, NoTls};
use hookfleet_signing::{Sealer, SigningSecret};
use hookfleet_topology::Topology;
use lapin::options::{ConfirmSelectOptions, ExchangeDeleteOptions, QueueDeleteOptions};
use tokio::task::JoinHandle;

use crate::ceiling::{self, Ceiling};
use crate::load::{self, EVENT_TYPE, Load};
use crate::receiver::{Behaviour, Endpoint, Receiver, Summary};
use crate::report::{self, CpuPerDelivery, Latency, RateLimited, Report, ScenarioReport};
use crate::{Common, RunArgs};
use hookfleet_tests::fleet::{self, Fleet, MachineTicks, ProcessStats};
use hookfleet_tests::service_env::{
    AmqpEnv, DatabaseEnv, DeliveryEnv, EndpointsEnv, IngestEnv, ServiceSettings,
};

/// Every scenario, in order.
pub const KEYS: [char; 10] = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'];
/// The tenant every scenario acts as.
const TENANT: &str = "bench";
/// Said in the settings table for a setting the benchmark leaves alone.
const SERVICE_DEFAULT: &str = "service default";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingest {
    HttpBatch,
    /// HTTP batches whose events carry ordering keys, sent so that each
    /// key's order is defined (scenario h).
    HttpKeyed,
    Amqp,
    HttpPaced,
}

/// One scenario, fully decided.
#[derive(Debug, Clone)]
pub struct Spec {
    pub key: char,
    pub title: String,
    pub ingest: Ingest,
    pub ingest_detail: String,
    /// Events per HTTP call (1: `POST /v1/events`).
    pub batch: u64,
    pub endpoints: Vec<Endpoint>,
    /// Endpoints registered by SQL that the events do not match.
    pub filler: u64,
    pub events: u64,
    /// Events per second (paced scenarios only).
    pub rate: Option<f64>,
    /// The workers' delivery settings of this scenario.
    pub delivery: DeliveryEnv,
    /// A JSON Schema put on the event type before the load (scenario j).
    pub schema: Option<serde_json::Value>,
}

impl Spec {
    pub fn healthy(&self) -> u64 {
        self.count(Behaviour::Healthy)
    }

    pub fn count(&self, behaviour: Behaviour) -> u64 {
        self.endpoints
            .iter()
            .filter(|e| e.behaviour == behaviour)
            .count() as u64
    }

    /// Healthy endpoints without a rate limit: the deliveries per event
    /// the load's window counts.
    pub fn windowed(&self) -> u64 {
        self.endpoints
            .iter()
            .filter(|e| e.behaviour == Behaviour::Healthy && e.rate_limit.is_none())
            .count() as u64
    }
}

/// Shared by every scenario of a run.
#[derive(Debug)]
struct RunContext {
    args: RunArgs,
    run_id: String,
    origin: Instant,
    log_dir: std::path::PathBuf,
    http: reqwest::Client,
}

/// How long scenario i's limited endpoint is busy (its events are this
/// many seconds' worth at its limit).
fn limited_seconds(quick: bool) -> u64 {
    if quick { 3 } else { 20 }
}

fn default_events(args: &RunArgs, key: char) -> u64 {
    match (key, args.quick) {
        ('i', quick) => u64::from(args.i_rate_limit.max(1)) * limited_seconds(quick),
        ('a' | 'b' | 'h' | 'j', false) => 40_000,
        ('c' | 'd' | 'e', false) => 8_000,
        ('a' | 'b' | 'h' | 'j', true) => 1_000,
        (_, true) => 100,
        _ => 0,
    }
}

fn spec(args: &RunArgs, key: char, a_rate: Option<f64>) -> Spec {
    let healthy = |n| vec![Endpoint::healthy(); n];
    let batch = args.batch.clamp(1, 100);
    let unpaced = match batch {
        1 => format!(
            "HTTP POST /v1/events, one event per call, {} concurrent calls",
            args.http_concurrency
        ),
        n => format!(
            "HTTP POST /v1/events/batch, {n} events per call, {} concurrent calls",
            args.http_concurrency
        ),
    };
    let events = args.events.unwrap_or(default_events(args, key));
    let mut spec = Spec {
        key,
        title: String::new(),
        ingest: Ingest::HttpBatch,
        ingest_detail: unpaced,
        batch,
        endpoints: healthy(1),
        filler: 0,
        events,
        rate: None,
        delivery: DeliveryEnv::default(),
        schema: None,
    };
    match key {
        'a' if batch == 1 => spec.title = "fan-out 1, HTTP single POSTs".into(),
        'a' => spec.title = "fan-out 1, HTTP batch ingest".into(),
        'b' => {
            spec.title = "fan-out 1, AMQP ingest".into();
            spec.ingest = Ingest::Amqp;
            spec.ingest_detail = format!(
                "AMQP publish to <prefix>.events, confirms, up to {} unconfirmed",
                args.confirm_window
            );
        }
        'c' => {
            spec.title = "fan-out 10, HTTP ingest".into();
            spec.endpoints = healthy(10);
        }
        'd' => {
            spec.title = "fan-out 10: 1 answers 500, 1 hangs".into();
            spec.endpoints = healthy(8);
            spec.endpoints.push(Endpoint::new(Behaviour::Failing));
            spec.endpoints.push(Endpoint::new(Behaviour::Hanging));
            spec.delivery = DeliveryEnv {
                timeout_ms: Some(2000),
                connect_timeout_ms: Some(2000),
                retry_schedule: Some(vec![Duration::from_secs(1); 2]),
                overload_min_delay: Some(Duration::from_secs(1)),
                ..DeliveryEnv::default()
            };
        }
        'e' => {
            spec.filler = args
                .filler
                .unwrap_or(if args.quick { 9_990 } else { 99_990 });
            spec.title = format!("{} endpoints, 10 subscribed", spec.filler + 10);
            spec.endpoints = healthy(10);
        }
        'f' => {
            let (rate, why) = match (args.paced_rate, a_rate) {
                (Some(rate), _) => (rate, "as asked"),
                (None, Some(a)) => (a / 2.0, "half of a"),
                (None, None) => (250.0, "a not run"),
            };
            paced(&mut spec, args, rate, args.paced_batch, why);
        }
        'g' => paced(&mut spec, args, args.g_rate, 1, "latency goal"),
        'h' => {
            spec.title = format!("fan-out 1, ordered, {} keys", crate::load::ORDERING_KEYS);
            spec.ingest = Ingest::HttpKeyed;
            spec.ingest_detail = format!(
                "{}; each event with an ordering_key of {} keys, each key sent by one caller, \
                 which calls again only after its previous call's 202",
                spec.ingest_detail,
                crate::load::ORDERING_KEYS,
            );
            spec.endpoints = vec![Endpoint {
                ordered: true,
                ..Endpoint::healthy()
            }];
        }
        'i' => {
            let limit = args.i_rate_limit.max(1);
            spec.title = format!("fan-out 2: one limited to {limit}/s, one not");
            spec.ingest_detail.push_str(&format!(
                "; the window counts the unlimited endpoint only; the run lasts {:.0} s at the limit",
                spec.events as f64 / f64::from(limit)
            ));
            spec.endpoints = vec![
                Endpoint::healthy(),
                Endpoint {
                    rate_limit: Some(limit),
                    ..Endpoint::healthy()
                },
            ];
        }
        'j' => {
            spec.title = "fan-out 1, HTTP ingest, 20-property schema on the type".into();
            spec.schema = Some(twenty_property_schema());
        }
        _ => {}
    }
    spec
}

/// Makes `spec` send `batch` events per call at `rate` events per second,
/// for about 30 s (3 s with --quick).
fn paced(spec: &mut Spec, args: &RunArgs, rate: f64, batch: u64, why: &str) {
    let rate = rate.max(1.0);
    let batch = batch.clamp(1, 100);
    spec.title = format!("paced at {rate:.0} events/s ({why})");
    spec.ingest = Ingest::HttpPaced;
    spec.ingest_detail = match batch {
        1 => format!("HTTP POST /v1/events, one event per call, paced at {rate:.0}/s"),
        n => {
            format!("HTTP POST /v1/events/batch, {n} events per call, paced at {rate:.0} events/s")
        }
    };
    spec.batch = batch;
    spec.rate = Some(rate);
    let seconds = if args.quick { 3.0 } else { 30.0 };
    spec.events = args
        .events
        .unwrap_or(((rate * seconds) as u64).max(if args.quick { 100 } else { 1000 }));
}

/// The scenario keys asked for, in order, each once.
fn parse_scenarios(list: &str) -> anyhow::Result<Vec<char>> {
    let mut keys = Vec::new();
    for part in list.split(',').map(str::trim) {
        match part.chars().collect::<Vec<_>>()[..] {
            [key] if KEYS.contains(&key) => {
                if !keys.contains(&key) {
                    keys.push(key);
                }
            }
            _ => bail!(
                "--scenarios: unknown scenario {part:?} (use some of {})",
                KEYS.map(String::from).join(",")
            ),
        }
    }
    keys.sort_unstable();
    Ok(keys)
}

pub async fn run_all(args: RunArgs, run_id: String) -> anyhow::Result<()> {
    let started = Instant::now();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let keys = parse_scenarios(&args.scenarios)?;
    for name in ["producer", "worker", "ledger"] {
        let path = args.bin_dir.join(format!("hookfleet-{name}"));
        anyhow::ensure!(
            path.is_file(),
            "{} is missing: build with cargo build --release first",
            path.display()
        );
    }
    let log_dir = args.log_dir.join(&run_id);
    std::fs::create_dir_all(&log_dir).with_context(|| format!("create {}", log_dir.display()))?;
    let cores = args.cores.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let ctx = RunContext {
        args: args.clone(),
        run_id: run_id.clone(),
        origin: Instant::now(),
        log_dir: log_dir.clone(),
        http: reqwest::Client::new(),
    };
    eprintln!(
        "hookfleet bench {run_id}: commit {}, {cores} cores, {} workers, scenarios {}; logs in {}",
        args.commit,
        args.workers,
        keys.iter().collect::<String>(),
        log_dir.display()
    );

    let (broker_ceiling, broker_ceiling_error) = if args.skip_ceiling {
        (None, None)
    } else {
        match measure_ceiling(&args, &run_id).await {
            Ok(c) => (Some(c), None),
            Err(error) => (None, Some(format!("{error:#}"))),
        }
    };
    let ceiling_rate = broker_ceiling.as_ref().map(|c| c.msgs_per_s);

    let mut scenarios = Vec::new();
    let mut a_rate = None;
    for key in keys {
        let spec = spec(&args, key, a_rate);
        eprintln!(
            "  [{key}] {}: {} events, {} endpoint(s) ...",
            spec.title,
            spec.events,
            spec.endpoints.len()
        );
        let mut result = match run_scenario(&ctx, &spec).await {
            Ok(result) => result,
            Err(error) => {
                eprintln!("  [{key}] failed: {error:#}");
                ScenarioReport::failed(&spec, format!("{error:#}"))
            }
        };
        result.ratio_to_ceiling = result
            .deliveries_per_s
            .zip(ceiling_rate)
            .map(|(r, c)| r / c);
        if key == 'a' && result.complete {
            a_rate = result.deliveries_per_s;
        }
        eprintln!("  [{key}] {}", report::one_line(&result));
        scenarios.push(result);
    }
    report::set_goals(&mut scenarios, args.batch.clamp(1, 100));

    let mut report = Report {
        tool: "hookfleet-bench",
        commit: args.commit.clone(),
        cores,
        run_id,
        started_unix_s,
        quick: args.quick,
        workers: args.workers,
        settings: settings(&args),
        broker_ceiling,
        broker_ceiling_error,
        scenarios,
        goals: Vec::new(),
        relative: Vec::new(),
        elapsed_s: 0.0,
    };
    report.goals = report::goals(&report);
    report.relative = report::relative(&report);
    report.elapsed_s = started.elapsed().as_secs_f64();
    report::print(&report);
    hookfleet_tests::fleet::write_report(&args.out, &report)?;
    let failed: Vec<String> = report
        .scenarios
        .iter()
        .filter(|s| s.error.is_some())
        .map(|s| s.key.to_string())
        .collect();
    if !failed.is_empty() {
        bail!("scenario(s) {} failed", failed.join(","));
    }
    Ok(())
}

/// The broker ceiling of this run, with progress on stderr.
async fn measure_ceiling(args: &RunArgs, run_id: &str) -> anyhow::Result<Ceiling> {
    let messages = args
        .ceiling
        .messages
        .unwrap_or(if args.quick { 5_000 } else { 50_000 });
    eprintln!("  [ceiling] {messages} persistent 1 KiB messages through a quorum queue ...");
    let result = ceiling::measure(
        &args.common.amqp_url,
        &format!("{run_id}_ceiling"),
        &args.ceiling,
        messages,
    )
    .await;
    match &result {
        Ok(c) => eprintln!(
            "  [ceiling] {:.0} msg/s (publish {:.0}/s, consume {:.0}/s)",
            c.msgs_per_s, c.publish_msgs_per_s, c.consume_msgs_per_s
        ),
        Err(error) => eprintln!("  [ceiling] failed: {error:#}"),
    }
    result
}

/// The settings every scenario ran with, for the report.
fn settings(args: &RunArgs) -> BTreeMap<String, String> {
    let or_default = |value: Option<String>| value.unwrap_or_else(|| SERVICE_DEFAULT.to_owned());
    let mut settings = BTreeMap::new();
    for (key, value) in [
        (
            "amqp.prefetch",
            or_default(args.prefetch.map(|p| p.to_string())),
        ),
        (
            "delivery.max_in_flight_per_endpoint",
            or_default(args.max_in_flight.map(|m| m.to_string())),
        ),
        ("log.level", SERVICE_DEFAULT.to_owned()),
        ("load.window_deliveries", args.window.to_string()),
        ("load.batch_events", args.batch.clamp(1, 100).to_string()),
        ("load.http_concurrency", args.http_concurrency.to_string()),
        ("load.confirm_window", args.confirm_window.to_string()),
        ("load.payload_bytes", load::PAYLOAD_BYTES.to_string()),
    ] {
        settings.insert(key.to_owned(), value);
    }
    for set in &args.set {
        if let Some((k, v)) = set.split_once('=') {
            let k = k.trim_start_matches("HOOKFLEET__");
            settings.insert(k.to_lowercase().replace("__", "."), v.to_owned());
        }
    }
    for env in &args.env {
        if let Some((k, v)) = env.split_once('=') {
            settings.insert(format!("env.{k}"), v.to_owned());
        }
    }
    settings
}

/// Runs one scenario in its own database and topology, and removes both
/// whatever happens.
async fn run_scenario(ctx: &RunContext, spec: &Spec) -> anyhow::Result<ScenarioReport> {
    let name = format!("{}_{}", ctx.run_id, spec.key);
    let admin = &ctx.args.common.database_url;
    hookfleet_db::create_database(admin, &name)
        .await
        .with_context(|| format!("create database {name}"))?;
    let database_url = hookfleet_db::with_database(admin, &name);
    let result = drive(ctx, spec, &name, &database_url).await;
    delete_topology(&ctx.args.common.amqp_url, &name).await;
    if let Err(error) = hookfleet_db::drop_database(admin, &name).await {
        eprintln!("warning: could not drop database {name}: {error}");
    }
    result
}

/// A scenario's fleet, from start-up to the measurement: the receiver,
/// the services, the tenant's API client and the producer's address.
struct Setup {
    receiver: Receiver,
    fleet: Fleet,
    producer: String,
    api: reqwest::Client,
    /// Seconds per endpoint created through the API, when filler
    /// endpoints made each create reload a large index.
    index_reload_s: Option<f64>,
}

/// Starts the fleet of scenario `spec` and registers its endpoints; then
/// loads, measures and stops it.
async fn drive(
    ctx: &RunContext,
    spec: &Spec,
    name: &str,
    database_url: &str,
) -> anyhow::Result<ScenarioReport> {
    let setup = set_up(ctx, spec, name, database_url).await?;
    let (db, db_connection) = tokio_postgres::connect(database_url, NoTls).await?;
    let db_task = tokio::spawn(db_connection);
    let result = measure(ctx, spec, name, setup, &db).await;
    drop(db);
    db_task.abort();
    result
}

/// The receiver, the services (producer first: it migrates the
/// database), the tenant, and the endpoints.
async fn set_up(
    ctx: &RunContext,
    spec: &Spec,
    name: &str,
    database_url: &str,
) -> anyhow::Result<Setup> {
    let args = &ctx.args;
    let receiver = Receiver::start(ctx.origin, spec.endpoints.clone(), spec.events).await?;
    let secrets_key = Sealer::generate_key();
    let admin_token = format!("admin-{}", uuid::Uuid::new_v4().simple());
    let envs = ServiceEnv::new(args, spec, name, database_url, &secrets_key, &admin_token);

    let bin = |service: &str| args.bin_dir.join(format!("hookfleet-{service}"));
    let log = |service: &str| ctx.log_dir.join(format!("{}-{service}.log", spec.key));
    let pid_file = args.pid_file.as_deref();
    let mut fleet = Fleet::default();
    let producer_port = fleet::free_port()?;
    fleet.spawn(
        "producer",
        &bin("producer"),
        producer_port,
        &envs.producer,
        log("producer"),
        pid_file,
    )?;
    fleet.wait_ready(&ctx.http, Duration::from_secs(60)).await?;
    fleet.spawn(
        "ledger",
        &bin("ledger"),
        fleet::free_port()?,
        &envs.ledger,
        log("ledger"),
        pid_file,
    )?;
    for n in 1..=args.workers.max(1) {
        let worker = format!("worker-{n}");
        fleet.spawn(
            &worker,
            &bin("worker"),
            fleet::free_port()?,
            &envs.worker,
            log(&worker),
            pid_file,
        )?;
    }
    fleet.wait_ready(&ctx.http, Duration::from_secs(60)).await?;

    let producer = format!("http://127.0.0.1:{producer_port}");
    let token =
        hookfleet_tests::fleet::new_tenant(&ctx.http, &producer, &admin_token, TENANT).await?;
    let api = hookfleet_tests::client_with_token(&token);
    if spec.filler > 0 {
        let started = Instant::now();
        insert_filler(database_url, spec.filler, &secrets_key).await?;
        eprintln!(
            "  [{}] {} endpoints inserted by SQL in {:.1}s",
            spec.key,
            spec.filler,
            started.elapsed().as_secs_f64()
        );
    }
    // Through the API, after the filler: every create reloads the
    // producer's index before it answers, so the last one leaves the
    // index holding every endpoint.
    let created = Instant::now();
    for (index, endpoint) in spec.endpoints.iter().enumerate() {
        let mut body = serde_json::json!({
            "url": receiver.url(index),
            "event_types": [EVENT_TYPE],
        });
        if endpoint.ordered {
            body["ordered"] = true.into();
        }
        if let Some(limit) = endpoint.rate_limit {
            body["rate_limit"] = limit.into();
        }
        hookfleet_tests::fleet::create_endpoint_from(&api, &producer, &body).await?;
    }
    let index_reload_s = (spec.filler > 0)
        .then(|| created.elapsed().as_secs_f64() / spec.endpoints.len().max(1) as f64);
    if let Some(schema) = &spec.schema {
        let response = api
            .put(format!("{producer}/v1/event-types/{EVENT_TYPE}"))
            .json(&serde_json::json!({ "schema": schema }))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "PUT /v1/event-types/{EVENT_TYPE} answered {}",
            response.status()
        );
    }
    Ok(Setup {
        receiver,
        fleet,
        producer,
        api,
        index_reload_s,
    })
}

/// The environment of each service of a scenario: the run's and the
/// scenario's settings on top of the services' defaults. Tuning flags not
/// given leave the defaults alone.
struct ServiceEnv {
    producer: Vec<(String, String)>,
    ledger: Vec<(String, String)>,
    worker: Vec<(String, String)>,
}

impl ServiceEnv {
    fn new(
        args: &RunArgs,
        spec: &Spec,
        name: &str,
        database_url: &str,
        secrets_key: &str,
        admin_token: &str,
    ) -> Self {
        let every = ServiceSettings {
            amqp: AmqpEnv {
                url: Some(args.common.amqp_url.clone()),
                prefix: Some(name.to_owned()),
                prefetch: args.prefetch,
                ..AmqpEnv::default()
            },
            secrets_key: Some(secrets_key.to_owned()),
            ..ServiceSettings::default()
        };
        let database = DatabaseEnv {
            url: Some(database_url.to_owned()),
            ..DatabaseEnv::default()
        };
        let producer = ServiceSettings {
            database: database.clone(),
            admin_token: Some(admin_token.to_owned()),
            ingest: IngestEnv {
                allow_http_endpoints: Some(true),
                ..IngestEnv::default()
            },
            endpoints: EndpointsEnv {
                ssrf_allow: Some("127.0.0.0/8".to_owned()),
                // Scenario e registers 100,000 endpoints for one tenant
                // (the ingest quota stays at its default: the headline
                // rows run with production defaults).
                max_per_tenant: Some(0),
            },
            ..every.clone()
        };
        // The ledger reseals secrets for replays and recoveries.
        let ledger = ServiceSettings {
            database,
            ..every.clone()
        };
        let worker = ServiceSettings {
            delivery: DeliveryEnv {
                ssrf_allow: Some("127.0.0.0/8".to_owned()),
                drain_ms: Some(5000),
                max_in_flight_per_endpoint: args.max_in_flight,
                ..spec.delivery.clone()
            },
            ..every
        };
        // --set KEY=VALUE (HOOKFLEET__ optional), then --env NAME=VALUE,
        // on top of everything.
        let mut overrides: Vec<(String, String)> = args
            .set
            .iter()
            .filter_map(|s| s.split_once('='))
            .map(|(k, v)| {
                let k = k.trim_start_matches("HOOKFLEET__");
                (format!("HOOKFLEET__{k}"), v.to_owned())
            })
            .collect();
        overrides.extend(
            args.env
                .iter()
                .filter_map(|s| s.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        let with_overrides = |settings: ServiceSettings| {
            let mut env = settings.env();
            env.extend(overrides.iter().cloned());
            env
        };
        Self {
            producer: with_overrides(producer),
            ledger: with_overrides(ledger),
            worker: with_overrides(worker),
        }
    }
}

/// CPU readings taken when the measurement starts.
struct Before {
    at: Instant,
    machine_ticks: MachineTicks,
    bench_cpu_s: f64,
    services: Vec<ProcessStats>,
    machine_cpu_s: Option<f64>,
}

impl Before {
    fn now(fleet: &Fleet) -> Self {
        Self {
            machine_ticks: MachineTicks::now(),
            bench_cpu_s: fleet::cpu_seconds(std::process::id()).unwrap_or(0.0),
            services: fleet.stats(),
            machine_cpu_s: fleet::machine_busy_seconds(),
            at: Instant::now(),
        }
    }

    /// What every process used since.
    fn usage(&self, fleet: &Fleet) -> Usage {
        let mut ours: Vec<u32> = self.services.iter().map(|p| p.pid).collect();
        ours.push(std::process::id());
        let split = MachineTicks::now().since(&self.machine_ticks, &ours);
        let bench_cpu_s = fleet::cpu_seconds(std::process::id()).unwrap_or(0.0) - self.bench_cpu_s;
        let machine_cpu_s = fleet::machine_busy_seconds()
            .zip(self.machine_cpu_s)
            .map(|(after, before)| after - before);
        let mut processes = fleet.stats();
        for (process, before) in processes.iter_mut().zip(&self.services) {
            process.cpu_s_measured = fleet::round3(process.cpu_s - before.cpu_s);
        }
        let accounted: f64 = processes.iter().map(|p| p.cpu_s_measured).sum::<f64>()
            + split.rabbitmq
            + split.postgres
            + split.kernel
            + bench_cpu_s;
        Usage {
            measured_s: self.at.elapsed().as_secs_f64(),
            processes,
            rabbitmq_cpu_s: split.rabbitmq,
            postgres_cpu_s: split.postgres,
            kernel_cpu_s: split.kernel,
            bench_cpu_s,
            other_cpu_s: machine_cpu_s.map(|m| (m - accounted).max(0.0)),
            machine_cpu_s,
            others: split.others,
        }
    }
}

/// CPU seconds used during the measurement, by consumer.
struct Usage {
    measured_s: f64,
    processes: Vec<ProcessStats>,
    rabbitmq_cpu_s: f64,
    postgres_cpu_s: f64,
    kernel_cpu_s: f64,
    bench_cpu_s: f64,
    machine_cpu_s: Option<f64>,
    other_cpu_s: Option<f64>,
    others: Vec<(String, f64)>,
}

/// Loads the running fleet, waits for the deliveries and the ledger,
/// reads the CPU figures, stops the fleet and reports.
async fn measure(
    ctx: &RunContext,
    spec: &Spec,
    name: &str,
    mut setup: Setup,
    db: &tokio_postgres::Client,
) -> anyhow::Result<ScenarioReport> {
    let args = &ctx.args;
    let amqp_link = if spec.ingest == Ingest::Amqp {
        let connection =
            hookfleet_topology::connect(&args.common.amqp_url, "hookfleet-bench ingest").await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Some((connection, channel))
    } else {
        None
    };

    let expected = spec.events * spec.healthy();
    let load = Arc::new(Load::new(
        ctx.origin,
        setup.receiver.sink.clone(),
        spec.windowed(),
        args.window,
    ));
    let before = Before::now(&setup.fleet);
    let progress = tokio::spawn(show_progress(spec.key, load.clone(), spec.events, expected));
    let driver = start_load(
        args,
        spec,
        name,
        &load,
        &setup,
        amqp_link.as_ref().map(|(_, channel)| channel),
    );
    let watched = watch(
        &mut setup.fleet,
        &load,
        driver,
        spec,
        expected,
        Duration::from_secs(args.stall_secs),
    )
    .await;
    progress.abort();
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
    let complete = watched?;
    let summary = setup.receiver.sink.summary();
    let (ledger_lag_ms, attempts_recorded) = ledger_lag(db, spec, &summary).await?;
    // Read every process just before stopping it, then stop them all.
    let usage = before.usage(&setup.fleet);
    let attempts_total: i64 = db
        .query_one("SELECT count(*) FROM attempts", &[])
        .await?
        .get(0);
    stop(&mut setup.fleet, spec.key).await;
    if let Some((connection, channel)) = amqp_link {
        let _ = channel.close(200, "bye".into()).await;
        let _ = connection.close(200, "bye".into()).await;
    }
    // The services' sessions have ended, so their statistics are in.
    let postgres_transactions = db
        .query_one(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database
             WHERE datname = current_database()",
            &[],
        )
        .await
        .ok()
        .map(|row| row.get::<_, i64>(0));

    let mut report = ScenarioReport::new(spec);
    report.index_reload_s = setup.index_reload_s;
    report.delivered = summary.healthy;
    report.duplicates = summary.duplicates;
    report.unreadable = summary.unreadable;
    report.failed_events = load.failed.load(Ordering::Relaxed);
    report.complete = complete;
    report.deliveries_per_s = summary.rate();
    report.ingest_events_per_s = load.send_rate();
    report.latency_ms = Latency::from(&summary);
    report.ledger_lag_ms = ledger_lag_ms;
    report.attempts_recorded = attempts_recorded;
    report.attempts_total = attempts_total;
    report.failing_hits = summary.failing_hits;
    report.hanging_hits = summary.hanging_hits;
    report.postgres_transactions = postgres_transactions;
    report.usage = usage_figures(&usage);
    report.cpu_s_per_delivery = CpuPerDelivery::of(&report);
    if spec.endpoints.iter().any(|e| e.ordered) {
        report.out_of_order = Some(summary.out_of_order);
        if summary.out_of_order > 0 {
            report.error = Some(format!(
                "{} arrival(s) at the ordered endpoint came after a later event of their key",
                summary.out_of_order
            ));
        }
    }
    let first_sent_ns = load
        .first_sent()
        .map(|at| at.duration_since(ctx.origin).as_nanos() as u64);
    report.rate_limited = RateLimited::of(spec, &summary, first_sent_ns);
    report.worker_settings = ServiceSettings {
        delivery: spec.delivery.clone(),
        ..ServiceSettings::default()
    }
    .env()
    .into_iter()
    .map(|(k, v)| {
        let k = k.trim_start_matches("HOOKFLEET__");
        (k.to_lowercase().replace("__", "."), v)
    })
    .collect();
    Ok(report)
}

/// The measured CPU figures, rounded, as the report holds them.
fn usage_figures(usage: &Usage) -> report::UsageFigures {
    report::UsageFigures {
        measured_s: usage.measured_s,
        processes: usage.processes.clone(),
        rabbitmq_cpu_s: fleet::round3(usage.rabbitmq_cpu_s),
        postgres_cpu_s: fleet::round3(usage.postgres_cpu_s),
        bench_cpu_s: fleet::round3(usage.bench_cpu_s),
        kernel_threads_cpu_s: fleet::round3(usage.kernel_cpu_s),
        machine_cpu_s: usage.machine_cpu_s.map(fleet::round3),
        other_cpu_s: usage.other_cpu_s.map(fleet::round3),
        other_processes: usage
            .others
            .iter()
            .take(5)
            .map(|(comm, seconds)| (comm.clone(), (seconds * 100.0).round() / 100.0))
            .collect(),
    }
}

/// Starts the load generator of `spec` in the background.
fn start_load(
    args: &RunArgs,
    spec: &Spec,
    name: &str,
    load: &Arc<Load>,
    setup: &Setup,
    amqp: Option<&lapin::Channel>,
) -> JoinHandle<anyhow::Result<()>> {
    let (api, producer) = (setup.api.clone(), setup.producer.clone());
    match (spec.ingest, amqp) {
        (Ingest::Amqp, Some(channel)) => tokio::spawn(load::amqp_messages(
            load.clone(),
            channel.clone(),
            Topology::new(name, hookfleet_topology::MAX_DELAY_LEVELS).events_exchange(),
            TENANT.to_owned(),
            format!("evt_{}_", name.replace('_', "")),
            spec.events,
            args.confirm_window.max(1),
        )),
        (Ingest::HttpKeyed, _) => tokio::spawn(load::http_keyed_batches(
            load.clone(),
            api,
            producer,
            spec.events,
            spec.batch,
            args.http_concurrency,
        )),
        (Ingest::HttpPaced, _) => tokio::spawn(load::http_paced(
            load.clone(),
            api,
            producer,
            spec.events,
            spec.rate.unwrap_or(250.0),
            spec.batch,
            1024,
        )),
        // Without an AMQP link (never asked for one) HTTP is all there is.
        (Ingest::HttpBatch | Ingest::Amqp, _) => tokio::spawn(load::http_batches(
            load.clone(),
            api,
            producer,
            spec.events,
            spec.batch,
            args.http_concurrency,
        )),
    }
}

/// Ledger lag: from the last arrival until the ledger holds an attempt
/// for every delivery that arrived (None if it never did within 120 s);
/// and the attempts it holds.
async fn ledger_lag(
    db: &tokio_postgres::Client,
    spec: &Spec,
    summary: &Summary,
) -> anyhow::Result<(Option<f64>, i64)> {
    let only_succeeded = spec.count(Behaviour::Healthy) < spec.endpoints.len() as u64;
    let count_sql = if only_succeeded {
        "SELECT count(*) FROM attempts WHERE result = 'succeeded'"
    } else {
        "SELECT count(*) FROM attempts"
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let recorded = db.query_one(count_sql, &[]).await?.get::<_, i64>(0);
        if recorded >= summary.healthy as i64 {
            let lag = summary
                .last
                .map(|last| last.elapsed().as_secs_f64() * 1000.0);
            return Ok((lag, recorded));
        }
        if Instant::now() > deadline {
            eprintln!(
                "  [{}] the ledger holds {recorded} of {} attempts after 120 s",
                spec.key, summary.healthy
            );
            return Ok((None, recorded));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stops every service, warning about those that did not end well.
async fn stop(fleet: &mut Fleet, key: char) {
    for (service, status) in fleet.stop(Duration::from_secs(30)).await {
        match status {
            Some(status) if status.success() => {}
            other => eprintln!("  [{key}] warning: {service} ended with {other:?}"),
        }
    }
}

/// Waits until every expected delivery arrived (`Ok(true)`), or none came
/// for `stall` (`Ok(false)`); fails if a service or the load generator
/// does.
async fn watch(
    fleet: &mut Fleet,
    load: &Load,
    driver: JoinHandle<anyhow::Result<()>>,
    spec: &Spec,
    expected: u64,
    stall: Duration,
) -> anyhow::Result<bool> {
    let mut driver = Some(driver);
    let mut target = expected;
    let (mut seen, mut changed) = (0, Instant::now());
    loop {
        let arrived = load.sink.healthy();
        if arrived >= target {
            if let Some(driver) = driver.take() {
                driver.await??;
            }
            return Ok(true);
        }
        if arrived != seen {
            (seen, changed) = (arrived, Instant::now());
        } else if changed.elapsed() > stall {
            eprintln!(
                "  [{}] no delivery for {stall:?}; {arrived} of {target} arrived",
                spec.key
            );
            if let Some(driver) = driver.take() {
                driver.abort();
            }
            return Ok(false);
        }
        if driver.as_ref().is_some_and(|d| d.is_finished())
            && let Some(finished) = driver.take()
        {
            finished.await??;
            // Events given up after repeated errors will not come.
            let failed = load.failed.load(Ordering::Relaxed);
            target = (spec.events - failed.min(spec.events)) * spec.healthy();
        }
        fleet.check_alive()?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn show_progress(key: char, load: Arc<Load>, events: u64, expected: u64) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let started = Instant::now();
    let mut before = (Instant::now(), 0u64);
    loop {
        tokio::time::sleep(every).await;
        let arrived = load.sink.healthy();
        let now = Instant::now();
        let rate = (arrived - before.1) as f64 / now.duration_since(before.0).as_secs_f64();
        before = (now, arrived);
        let line = format!(
            "  [{key}] {:>5.0}s  sent {}/{events} events  delivered {arrived}/{expected}  {rate:.0}/s",
            started.elapsed().as_secs_f64(),
            load.sent.load(Ordering::Relaxed),
        );
        if tty {
            eprint!("\r\x1b[2K{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

/// Registers `count` endpoints that the benchmark's events never match:
/// half in the benchmark's tenant subscribed to other types, half in other
/// tenants subscribed to the same type. Then tells the producers.
async fn insert_filler(database_url: &str, count: u64, key: &str) -> anyhow::Result<()> {
    let (client, connection) = tokio_postgres::connect(database_url, NoTls).await?;
    let connection = tokio::spawn(connection);
    let sealer = Sealer::from_base64(key)?;
    let secret = SigningSecret::generate().expose();
    let mut done = 0;
    while done < count {
        let n = (count - done).min(10_000);
        let mut ids = Vec::with_capacity(n as usize);
        let mut tenants = Vec::with_capacity(n as usize);
        let mut urls = Vec::with_capacity(n as usize);
        let mut types = Vec::with_capacity(n as usize);
        let mut secrets = Vec::with_capacity(n as usize);
        for i in done..done + n {
            let id = format!("ep_{}", uuid::Uuid::now_v7().simple());
            if i % 2 == 0 {
                tenants.push(TENANT.to_owned());
                types.push(format!("other.t{}", i % 100));
            } else {
                tenants.push(format!("filler{}", i % 1000));
                types.push(EVENT_TYPE.to_owned());
            }
            urls.push(format!("http://127.0.0.1:9/filler/{i}"));
            secrets.push(sealer.seal(&secret, &id));
            ids.push(id);
        }
        client
            .execute(
                "INSERT INTO endpoints (id, tenant, url, event_types, secret)
                 SELECT i, t, u, ARRAY[ty], s
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[])
                      AS x(i, t, u, ty, s)",
                &[&ids, &tenants, &urls, &types, &secrets],
            )
            .await
            .context("insert filler endpoints")?;
        done += n;
    }
    client.batch_execute("NOTIFY hookfleet_endpoints").await?;
    drop(client);
    let _ = connection.await;
    Ok(())
}

/// Deletes every queue and exchange of topology `prefix` that exists.
pub async fn delete_topology(url: &str, prefix: &str) {
    let topology = Topology::new(prefix, hookfleet_topology::MAX_DELAY_LEVELS);
    let mut queues = vec![
        topology.route_queue(),
        topology.deliver_queue(),
        topology.ledger_queue(),
        topology.dead_queue(),
    ];
    let mut exchanges = vec![
        topology.events_exchange(),
        topology.deliver_exchange(),
        topology.ledger_exchange(),
        topology.dead_exchange(),
        topology.registry_exchange(),
    ];
    for level in 0..topology.delay_levels() {
        queues.push(topology.delay_queue(level));
        exchanges.push(topology.delay_exchange(level));
    }
    for lane in 0..hookfleet_contract::LANES {
        queues.push(topology.lane_queue(lane));
        queues.push(topology.lane_state_queue(lane));
    }
    for queue in 0..hookfleet_contract::RETRY_QUEUES {
        queues.push(topology.retry_queue(queue));
    }
    delete_all(url, &queues, &exchanges).await;
}

/// Deletes queues and exchanges by name; a missing one is not an error. A
/// refusal closes the channel, so each failure opens a new one.
pub async fn delete_all(url: &str, queues: &[String], exchanges: &[String]) {
    let Ok(connection) = hookfleet_topology::connect(url, "hookfleet-bench cleanup").await else {
        eprintln!(
            "warning: cannot reach RabbitMQ to remove {}",
            queues.join(", ")
        );
        return;
    };
    let mut channel = connection.create_channel().await.ok();
    for queue in queues {
        let Some(open) = &channel else { break };
        if open
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await
            .is_err()
        {
            channel = connection.create_channel().await.ok();
        }
    }
    for exchange in exchanges {
        let Some(open) = &channel else { break };
        if open
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await
            .is_err()
        {
            channel = connection.create_channel().await.ok();
        }
    }
    if let Some(channel) = channel {
        let _ = channel.close(200, "bye".into()).await;
    }
    let _ = connection.close(200, "bye".into()).await;
}

/// Removes every database, queue and exchange a run may have created.
pub async fn cleanup_run(common: &Common, run_id: &str) {
    for key in KEYS {
        let name = format!("{run_id}_{key}");
        delete_topology(&common.amqp_url, &name).await;
        if let Err(error) = hookfleet_db::drop_database(&common.database_url, &name).await {
            eprintln!("warning: could not drop database {name}: {error}");
        }
    }
    delete_all(&common.amqp_url, &[format!("{run_id}_ceiling")], &[]).await;
}

/// The schema of scenario j: twenty properties, the three the load's
/// payloads carry required (`pad` matched against a pattern over its
/// ~1,000 characters), seventeen optional ones of every kind, nothing else
/// allowed.
fn twenty_property_schema() -> serde_json::Value {
    let mut properties = serde_json::Map::new();
    properties.insert(
        "seq".into(),
        serde_json::json!({"type": "integer", "minimum": 0}),
    );
    properties.insert(
        "sent_ns".into(),
        serde_json::json!({"type": "integer", "minimum": 0}),
    );
    properties.insert(
        "pad".into(),
        serde_json::json!({"type": "string", "maxLength": 4096, "pattern": "^x*$"}),
    );
    let kinds = [
        serde_json::json!({"type": "string", "maxLength": 64}),
        serde_json::json!({"type": "integer"}),
        serde_json::json!({"type": "number", "minimum": 0}),
        serde_json::json!({"type": "boolean"}),
        serde_json::json!({"type": "string", "enum": ["new", "paid", "shipped"]}),
        serde_json::json!({"type": "array", "items": {"type": "string"}, "maxItems": 16}),
        serde_json::json!({"type": "object", "properties": {"id": {"type": "string"}}}),
    ];
    for n in 0..17 {
        properties.insert(format!("field_{n:02}"), kinds[n % kinds.len()].clone());
    }
    serde_json::json!({
        "type": "object",
        "required": ["seq", "sent_ns", "pad"],
        "properties": properties,
        "additionalProperties": false,
    })
}

#[cfg(test)]
mod tests {
    use super::twenty_property_schema;
    use crate::receiver::payload;
    use hookfleet_producer::catalogue::TypeSchema;

    #[test]
    fn the_load_payloads_match_scenario_js_schema() {
        let schema = twenty_property_schema();
        assert_eq!(schema["properties"].as_object().unwrap().len(), 20);
        let compiled = TypeSchema::compile(&schema.to_string()).unwrap();
        let body: serde_json::Value =
            serde_json::from_str(&payload(7, 123, crate::load::PAYLOAD_BYTES)).unwrap();
        assert_eq!(compiled.problems(&body, 10), (vec![], 0));
    }
}

#[cfg(test)]
mod service_env_tests {
    use clap::Parser;
    use hookfleet_tests::service_env::effective;

    use super::{RunArgs, ServiceEnv, Spec, spec};

    fn run_args(flags: &[&str]) -> RunArgs {
        let cli = crate::Cli::try_parse_from(
            ["hookfleet-bench", "run", "--amqp-url", "amqp://b/%2f"]
                .iter()
                .chain(flags),
        )
        .expect("valid flags");
        match cli.command {
            crate::Command::Run(args) => *args,
            _ => unreachable!("a run"),
        }
    }

    /// The environment the benchmark gave its services before
    /// `service_env`, as it was kept by hand (the scenario's worker
    /// settings were a list of its own, d's alone not empty).
    fn hand_kept(args: &RunArgs, spec: &Spec) -> [Vec<(String, String)>; 3] {
        let (name, database_url, secrets_key, admin_token) =
            ("run_a", "postgres://db/run_a", "key", "admin");
        let env = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (format!("HOOKFLEET__{k}"), v.clone()))
                .collect()
        };
        let scenario_worker_env: Vec<(String, String)> = if spec.key == 'd' {
            [
                ("DELIVERY__TIMEOUT_MS", "2000"),
                ("DELIVERY__CONNECT_TIMEOUT_MS", "2000"),
                ("DELIVERY__RETRY_SCHEDULE", "1s,1s"),
                ("DELIVERY__OVERLOAD_MIN_DELAY", "1s"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
        } else {
            Vec::new()
        };
        let mut amqp = vec![
            ("AMQP__URL", args.common.amqp_url.clone()),
            ("AMQP__PREFIX", name.to_owned()),
        ];
        if let Some(prefetch) = args.prefetch {
            amqp.push(("AMQP__PREFETCH", prefetch.to_string()));
        }
        let extra: Vec<(String, String)> = args
            .set
            .iter()
            .filter_map(|s| s.split_once('='))
            .map(|(k, v)| {
                let k = k.trim_start_matches("HOOKFLEET__");
                (format!("HOOKFLEET__{k}"), v.to_owned())
            })
            .collect();
        let raw: Vec<(String, String)> = args
            .env
            .iter()
            .filter_map(|s| s.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let with = |own: &[(&str, String)], scenario: &[(String, String)]| {
            let mut all = env(&amqp);
            all.extend(env(own));
            all.extend(
                scenario
                    .iter()
                    .map(|(k, v)| (format!("HOOKFLEET__{k}"), v.clone())),
            );
            all.extend(extra.iter().cloned());
            all.extend(raw.iter().cloned());
            all
        };
        let mut worker = vec![
            ("SECRETS__KEY", secrets_key.to_owned()),
            ("DELIVERY__SSRF_ALLOW", "127.0.0.0/8".to_owned()),
            ("DELIVERY__DRAIN_MS", "5000".to_owned()),
        ];
        if let Some(max_in_flight) = args.max_in_flight {
            worker.push((
                "DELIVERY__MAX_IN_FLIGHT_PER_ENDPOINT",
                max_in_flight.to_string(),
            ));
        }
        [
            with(
                &[
                    ("DATABASE__URL", database_url.to_owned()),
                    ("SECRETS__KEY", secrets_key.to_owned()),
                    ("AUTH__ADMIN_TOKEN", admin_token.to_owned()),
                    ("INGEST__ALLOW_HTTP_ENDPOINTS", "true".to_owned()),
                    ("ENDPOINTS__SSRF_ALLOW", "127.0.0.0/8".to_owned()),
                    ("ENDPOINTS__MAX_PER_TENANT", "0".to_owned()),
                ],
                &[],
            ),
            with(
                &[
                    ("DATABASE__URL", database_url.to_owned()),
                    ("SECRETS__KEY", secrets_key.to_owned()),
                ],
                &[],
            ),
            with(&worker, &scenario_worker_env),
        ]
    }

    #[test]
    fn every_scenario_gives_its_services_the_environment_the_hand_kept_maps_gave() {
        let flag_sets: [&[&str]; 3] = [
            &[],
            &["--prefetch", "256", "--max-in-flight", "8"],
            &[
                "--set",
                "DELIVERY__TIMEOUT_MS=900",
                "--set",
                "HOOKFLEET__LOG__LEVEL=debug",
                "--env",
                "MALLOC_ARENA_MAX=2",
            ],
        ];
        for flags in flag_sets {
            let args = run_args(flags);
            for key in super::KEYS {
                let spec = spec(&args, key, Some(1000.0));
                let env =
                    ServiceEnv::new(&args, &spec, "run_a", "postgres://db/run_a", "key", "admin");
                let [producer, ledger, worker] = hand_kept(&args, &spec);
                let why = format!("scenario {key}, flags {flags:?}");
                assert_eq!(effective(&env.producer), effective(&producer), "{why}");
                assert_eq!(effective(&env.ledger), effective(&ledger), "{why}");
                assert_eq!(effective(&env.worker), effective(&worker), "{why}");
            }
        }
    }
}
