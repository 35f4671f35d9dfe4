//! One chaos run: a database and topology prefix of its own, the fleet as
//! processes, endpoints on the receivers, the load, the faults on their
//! schedule, the settling, and what is observed at the end.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hookfleet_contract::{DeliveryTask, headers};
use hookfleet_signing::Sealer;
use hookfleet_tests::fleet::{self, Fleet};
use hookfleet_tests::service_env::{
    AmqpEnv, DatabaseEnv, DeliveryEnv, EndpointsEnv, IngestEnv, ServiceSettings,
};
use hookfleet_topology::{Nodes, Topology, header_str};
use tokio_util::sync::CancellationToken;

use crate::RunArgs;
use crate::check::{DeadMessage, EndpointInfo, LedgerAttempt, Observed};
use crate::cluster::Cluster;
use crate::destination::DestinationConsumer;
use crate::faults::{self, FaultLog, Malformed, Schedule};
use crate::inbound::INBOUND_TYPE;
use crate::load::{self, Load};
use crate::receiver::{Answer, Behaviour, Receivers};

const TENANT: &str = "chaos";
/// The same in every service: retries of up to 2^6 - 1 s need no more.
const DELAY_LEVELS: u8 = 6;
const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
const DELIVERY_TIMEOUT_MS: u64 = 2_000;
const DRAIN_MS: u64 = 5_000;

/// The HTTP endpoints: three healthy (one ordered), four flapping in turn
/// (each bad for a few seconds of every 20), one dead. Each event type of
/// `POST /v1/events` goes to five of them; the inbound source's events
/// (`github.push`) to a healthy and a flapping one, and to the AMQP
/// destination (created apart, with `chaos.b`).
fn endpoints() -> Vec<(&'static str, Behaviour, Vec<&'static str>)> {
    let flap = |bad, from, to| Behaviour::Flapping {
        bad,
        period: 20,
        from,
        to,
    };
    vec![
        (
            "healthy-all",
            Behaviour::Healthy,
            vec!["chaos.a", "chaos.b", INBOUND_TYPE],
        ),
        ("healthy-a", Behaviour::Healthy, vec!["chaos.a"]),
        (
            "flap-500",
            flap(Answer::ServerError, 0, 6),
            vec!["chaos.a", INBOUND_TYPE],
        ),
        ("dead-500", Behaviour::Dead, vec!["chaos.a"]),
        ("flap-reset", flap(Answer::Reset, 6, 10), vec!["chaos.b"]),
        ("flap-429", flap(Answer::TooMany, 10, 14), vec!["chaos.b"]),
        ("flap-hang", flap(Answer::Hang, 14, 19), vec!["chaos.b"]),
        (ORDERED, Behaviour::Healthy, vec!["chaos.a", "chaos.b"]),
    ]
}

/// The endpoint created with `"ordered": true`; the check verifies order
/// per key from its arrivals.
const ORDERED: &str = "healthy-ordered";

/// The AMQP destination endpoint and what it subscribes to: every inbound
/// event and half of the others.
const DESTINATION: &str = "amqp-dest";
const DESTINATION_TYPES: [&str; 2] = [INBOUND_TYPE, "chaos.b"];

/// Every this many events of the load, one comes through the inbound
/// source instead of `POST /v1/events`.
const INBOUND_EVERY: u64 = 5;

/// The service environment of the run (HOOKFLEET__ + key).
struct ServiceEnv {
    producer: Vec<(String, String)>,
    ledger: Vec<(String, String)>,
    worker: Vec<(String, String)>,
}

fn service_env(
    args: &RunArgs,
    name: &str,
    database_url: &str,
    admin_token: &str,
    secrets_key: &str,
) -> ServiceEnv {
    let cluster = args.cluster_ctl.is_some();
    let every = ServiceSettings {
        amqp: AmqpEnv {
            // One URL, or a cluster's nodes: a list either way.
            urls: Some(vec![args.common.amqp_url.clone()]),
            prefix: Some(name.to_owned()),
            delay_levels: Some(DELAY_LEVELS),
            // The broker's default on three nodes, said out loud.
            quorum_group_size: cluster.then_some(3),
            ..AmqpEnv::default()
        },
        log_level: Some("warn".to_owned()),
        secrets_key: Some(secrets_key.to_owned()),
        ..ServiceSettings::default()
    };
    let database = DatabaseEnv {
        url: Some(database_url.to_owned()),
        pool_size: Some(4),
        migrate_on_start: None,
    };
    let producer = ServiceSettings {
        database: database.clone(),
        admin_token: Some(admin_token.to_owned()),
        ingest: IngestEnv {
            allow_http_endpoints: Some(true),
            max_payload_bytes: Some(MAX_PAYLOAD_BYTES),
            // The chaos run measures availability, not the per-tenant
            // quotas.
            rate_per_second: Some(0),
        },
        endpoints: EndpointsEnv {
            max_per_tenant: Some(0),
            ssrf_allow: Some("127.0.0.0/8".to_owned()),
        },
        ..every.clone()
    };
    let ledger = ServiceSettings {
        database: DatabaseEnv {
            migrate_on_start: Some(false),
            ..database
        },
        ..every.clone()
    };
    let worker_log = if cluster {
        // Every task taken and retry scheduled, to trace duplicates back.
        "warn,hookfleet_worker::delivery=debug,hookfleet_worker::retry_queue=debug"
    } else {
        "warn"
    };
    let worker = ServiceSettings {
        log_level: Some(worker_log.to_owned()),
        delivery: DeliveryEnv {
            ssrf_allow: Some("127.0.0.0/8".to_owned()),
            retry_schedule: Some([1, 2, 4, 8].map(Duration::from_secs).to_vec()),
            timeout_ms: Some(DELIVERY_TIMEOUT_MS),
            connect_timeout_ms: Some(DELIVERY_TIMEOUT_MS),
            overload_min_delay: Some(Duration::from_secs(1)),
            retry_after_max: Some(Duration::from_secs(5)),
            drain_ms: Some(DRAIN_MS),
            // Containment is off: the breaker would hold the dead
            // endpoint's tasks in the delay levels for the whole run (one
            // probe per `open_for`), so they would never exhaust; and a
            // worker killed between deferring a task (the in-flight cap)
            // and acking it leaves two copies that no receiver can tell
            // from a bug. The containment tests cover both.
            breaker_failure_threshold: Some(1_000_000),
            max_in_flight_per_endpoint: Some(100_000),
            ..DeliveryEnv::default()
        },
        ..every
    };
    ServiceEnv {
        producer: producer.env(),
        ledger: ledger.env(),
        worker: worker.env(),
    }
}

/// The running fleet and how to add workers to it.
struct Services<'a> {
    fleet: Fleet,
    env: ServiceEnv,
    bin_dir: &'a Path,
    log_dir: &'a Path,
    pid_file: Option<&'a Path>,
    workers: Vec<String>,
    next_worker: usize,
    crashes: Vec<String>,
    /// Told of every worker started, to tell senders apart.
    receivers: Option<Receivers>,
}

impl Services<'_> {
    fn spawn(&mut self, service: &str, name: &str) -> anyhow::Result<u16> {
        let env = match service {
            "producer" => &self.env.producer,
            "ledger" => &self.env.ledger,
            _ => &self.env.worker,
        };
        let port = fleet::free_port()?;
        self.fleet.spawn(
            name,
            &self.bin_dir.join(format!("hookfleet-{service}")),
            port,
            env,
            self.log_dir.join(format!("{name}.log")),
            self.pid_file,
        )?;
        Ok(port)
    }

    fn add_worker(&mut self) -> anyhow::Result<String> {
        self.next_worker += 1;
        let name = format!("worker-{}", self.next_worker);
        self.spawn("worker", &name)?;
        if let (Some(receivers), Some(pid)) = (&self.receivers, self.fleet.pid(&name)) {
            receivers.add_sender(pid);
        }
        self.workers.push(name.clone());
        Ok(name)
    }

    /// A worker picked at random, no longer counted as running.
    fn pick_worker(&mut self) -> Option<String> {
        if self.workers.is_empty() {
            return None;
        }
        let index = (uuid::Uuid::new_v4().as_u128() % self.workers.len() as u128) as usize;
        let name = self.workers.remove(index);
        Some(name)
    }

    /// A worker that has been ready (its signal handling is installed by
    /// then), the one with the most deliveries in flight, so that draining
    /// has something to drain; no longer counted as running.
    async fn pick_ready_worker(&mut self, http: &reqwest::Client) -> Option<String> {
        let mut ready = Vec::new();
        for name in &self.workers {
            let Some(port) = self.fleet.port(name) else {
                continue;
            };
            let answered = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if answered {
                let held = in_flight(http, Some(port)).await.unwrap_or(0);
                ready.push((held, name.clone()));
            }
        }
        let (_, name) = ready.into_iter().max_by_key(|(held, _)| *held)?;
        self.workers.retain(|w| *w != name);
        Some(name)
    }

    /// Notes services that exited on their own.
    fn watch(&mut self, log: &FaultLog) {
        for (name, status) in self.fleet.exited() {
            let text = format!("{name} exited with {status} at {:.1} s", log.now_s());
            if !self
                .crashes
                .iter()
                .any(|c| c.starts_with(&format!("{name} ")))
            {
                eprintln!("  crash: {text}");
                self.crashes.push(text);
            }
        }
    }
}

pub async fn run(args: &RunArgs, run_id: &str) -> anyhow::Result<(Observed, Schedule)> {
    let admin = &args.common.database_url;
    hookfleet_db::create_database(admin, run_id)
        .await
        .with_context(|| format!("create database {run_id}"))?;
    let database_url = hookfleet_db::with_database(admin, run_id);
    let log_dir = args.log_dir.join(run_id);
    std::fs::create_dir_all(&log_dir)?;
    let http = reqwest::Client::new();
    let (mut services, tenant) = start_fleet(args, run_id, &database_url, &log_dir, &http).await?;
    // The flapping schedule and the fault schedule count from the same
    // instant, when the load starts, a moment from now.
    let origin = Instant::now() + Duration::from_secs(2);
    let targets = register_targets(args, run_id, origin, &mut services, &tenant).await?;
    // The producers learn of new endpoints by NOTIFY, meanwhile.
    tokio::time::sleep_until(origin.into()).await;
    let schedule = schedule(args);
    eprintln!(
        "  {} workers, {} events/s, {} s of load; endpoints: {}",
        args.workers,
        args.rate,
        schedule.duration_s,
        targets
            .endpoints
            .iter()
            .map(|e| e.name)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut chaos = Chaos {
        args,
        run_id,
        http,
        database_url,
        log_dir: &log_dir,
        services,
        tenant,
        targets,
        log: FaultLog::new(origin),
        topology: Topology::new(run_id, DELAY_LEVELS),
        load: Arc::new(Load::default()),
        schedule,
    };
    let malformed = chaos.load_under_faults().await?;
    let settled = chaos.settle().await;
    let observed = chaos.observe(malformed, settled).await?;
    Ok((observed, chaos.schedule))
}

/// The tenant the run acts as: where the producer listens, and a client
/// with the tenant's token.
struct Tenant {
    producer: String,
    api: reqwest::Client,
}

/// Starts the services (the producer first: it migrates) and makes the
/// run's tenant.
async fn start_fleet<'a>(
    args: &'a RunArgs,
    run_id: &str,
    database_url: &str,
    log_dir: &'a Path,
    http: &reqwest::Client,
) -> anyhow::Result<(Services<'a>, Tenant)> {
    let admin_token = format!("admin-{}", uuid::Uuid::new_v4().simple());
    let mut services = Services {
        fleet: Fleet::default(),
        env: service_env(
            args,
            run_id,
            database_url,
            &admin_token,
            &Sealer::generate_key(),
        ),
        bin_dir: &args.bin_dir,
        log_dir,
        pid_file: args.pid_file.as_deref(),
        workers: Vec::new(),
        next_worker: 0,
        crashes: Vec::new(),
        receivers: None,
    };
    let producer_port = services.spawn("producer", "producer")?;
    services
        .fleet
        .wait_ready(http, Duration::from_secs(60))
        .await?;
    services.spawn("ledger", "ledger")?;
    for _ in 0..args.workers {
        services.add_worker()?;
    }
    services
        .fleet
        .wait_ready(http, Duration::from_secs(60))
        .await?;
    let producer = format!("http://127.0.0.1:{producer_port}");
    let token = hookfleet_tests::fleet::new_tenant(http, &producer, &admin_token, TENANT).await?;
    let api = hookfleet_tests::client_with_token(&token);
    Ok((services, Tenant { producer, api }))
}

/// Where the load goes: the receivers behind the HTTP endpoints, the
/// AMQP destination's consumer, every endpoint, and the inbound source.
struct Targets {
    receivers: Receivers,
    consumer: DestinationConsumer,
    endpoints: Vec<EndpointInfo>,
    source: crate::inbound::Source,
}

/// Starts the receivers and the destination's consumer, and registers
/// the endpoints, the AMQP destination and the inbound source.
async fn register_targets(
    args: &RunArgs,
    run_id: &str,
    origin: Instant,
    services: &mut Services<'_>,
    tenant: &Tenant,
) -> anyhow::Result<Targets> {
    let Tenant { producer, api } = tenant;
    let specs = endpoints();
    let receivers = Receivers::start(origin, specs.iter().map(|(_, b, _)| *b).collect()).await?;
    for name in &services.workers {
        if let Some(pid) = services.fleet.pid(name) {
            receivers.add_sender(pid);
        }
    }
    services.receivers = Some(receivers.clone());
    let mut endpoint_infos = Vec::new();
    for (index, (name, behaviour, types)) in specs.into_iter().enumerate() {
        let body = serde_json::json!({
            "url": receivers.url(index),
            "event_types": types,
            "ordered": name == ORDERED,
        });
        let id = fleet::create_endpoint_from(api, producer, &body).await?;
        endpoint_infos.push(EndpointInfo {
            id,
            name,
            behaviour_text: behaviour.describe(),
            event_types: types,
            amqp: false,
        });
    }
    // The inbound source, and the AMQP destination with its queue and
    // consumer (declared first: a publish needs a bound queue).
    let source = crate::inbound::create_source(api, producer, "chaos-github").await?;
    let consumer =
        DestinationConsumer::start(&args.common.amqp_url, run_id, origin, endpoint_infos.len())
            .await?;
    let exchange = crate::destination::name(run_id);
    endpoint_infos.push(EndpointInfo {
        id: create_destination(api, producer, &exchange, &DESTINATION_TYPES).await?,
        name: DESTINATION,
        behaviour_text: format!(
            "AMQP destination: exchange {exchange} (topic), routing key {{type}}, quorum queue {exchange} bound with #, consumed and acked by the chaos tool"
        ),
        event_types: DESTINATION_TYPES.to_vec(),
        amqp: true,
    });
    Ok(Targets {
        receivers,
        consumer,
        endpoints: endpoint_infos,
        source,
    })
}

/// The faults of the run: a cluster's node faults, or the single broker's
/// kills and outages.
fn schedule(args: &RunArgs) -> Schedule {
    if args.cluster_ctl.is_some() {
        Schedule::for_cluster(args.duration().as_secs())
    } else {
        Schedule::for_run(
            args.duration().as_secs(),
            args.kill_every().as_secs(),
            args.postgres_down.as_secs(),
        )
    }
}

/// A run from the start of the load: the fleet, its targets, the load and
/// the faults' log.
struct Chaos<'a> {
    args: &'a RunArgs,
    run_id: &'a str,
    http: reqwest::Client,
    database_url: String,
    log_dir: &'a Path,
    services: Services<'a>,
    tenant: Tenant,
    targets: Targets,
    log: FaultLog,
    topology: Topology,
    load: Arc<Load>,
    schedule: Schedule,
}

/// Whether every accepted delivery was decided in the ledger, and after
/// how long.
struct Settled {
    settled: bool,
    settle_s: f64,
}

impl Chaos<'_> {
    /// Sends the load for the schedule's duration while the faults happen
    /// on it, then waits for the faults to end and the ingest retries to
    /// finish; returns the malformed messages published.
    async fn load_under_faults(&mut self) -> anyhow::Result<Vec<Malformed>> {
        let args = self.args;
        let stop_load = CancellationToken::new();
        let load_task = tokio::spawn(load::run(
            self.load.clone(),
            self.log.origin(),
            load::Target {
                api: self.tenant.api.clone(),
                producer: self.tenant.producer.clone(),
                inbound: Some(self.targets.source.clone()),
                inbound_every: INBOUND_EVERY,
            },
            self.run_id.replace('_', "-"),
            args.rate,
            stop_load.clone(),
            Duration::from_secs(30),
        ));

        let mut background = Vec::new();
        // A cluster run's node faults run on their own and ask for the
        // worker kills they need.
        let (kill_requests, mut kill_requested) = tokio::sync::mpsc::unbounded_channel();
        if let (Some(ctl), Some(cluster_schedule)) = (&args.cluster_ctl, &self.schedule.cluster) {
            let cluster = Cluster::new(ctl.clone(), self.run_id);
            background.push(tokio::spawn(cluster.run_faults(
                self.log.clone(),
                cluster_schedule.clone(),
                kill_requests,
            )));
        } else {
            drop(kill_requests);
        }
        let mut malformed_tasks = Vec::new();
        let mut second = 0u64;
        let mut last_progress = Instant::now();
        while second < self.schedule.duration_s {
            // Wait for the next whole second of the run.
            let due = self.log.origin() + Duration::from_secs(second);
            while Instant::now() < due {
                self.services.watch(&self.log);
                while let Ok(why) = kill_requested.try_recv() {
                    kill_worker(&mut self.services, &self.log, &why)?;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            self.faults_of_second(second, &mut background, &mut malformed_tasks)
                .await?;
            if last_progress.elapsed() >= Duration::from_secs(10) {
                last_progress = Instant::now();
                self.print_progress(second);
            }
            second += 1;
        }
        stop_load.cancel();
        eprintln!("  load stopped; waiting for the faults to end and ingest retries to finish");
        for task in background {
            let _ = task.await;
        }
        // Kills asked for at the very end.
        while let Ok(why) = kill_requested.try_recv() {
            kill_worker(&mut self.services, &self.log, &why)?;
        }
        let mut malformed: Vec<Malformed> = Vec::new();
        for task in malformed_tasks {
            if let Ok(list) = task.await {
                malformed.extend(list);
            }
        }
        let _ = load_task.await;
        self.services.watch(&self.log);
        Ok(malformed)
    }

    /// Starts the faults the schedule has at `second` of the load: a
    /// worker killed, a broker or database outage (in the background), a
    /// round of malformed messages (in the background), a worker drained
    /// with SIGTERM.
    async fn faults_of_second(
        &mut self,
        second: u64,
        background: &mut Vec<tokio::task::JoinHandle<()>>,
        malformed_tasks: &mut Vec<tokio::task::JoinHandle<Vec<Malformed>>>,
    ) -> anyhow::Result<()> {
        let (args, schedule, log) = (self.args, &self.schedule, &self.log);
        if schedule.kills_at(second) {
            kill_worker(&mut self.services, log, "")?;
        }
        if schedule.single_broker() && second == schedule.rabbitmq_stop_s {
            background.push(tokio::spawn(faults::outage(
                log.clone(),
                args.infra_ctl.clone(),
                "rabbitmq",
                Duration::from_secs(schedule.rabbitmq_down_s),
            )));
        }
        if schedule.single_broker() && second == schedule.postgres_stop_s {
            background.push(tokio::spawn(faults::outage(
                log.clone(),
                args.infra_ctl.clone(),
                "postgres",
                Duration::from_secs(schedule.postgres_down_s),
            )));
        }
        if let Some(round) = schedule.malformed_s.iter().position(|s| *s == second) {
            malformed_tasks.push(tokio::spawn(faults::publish_malformed(
                log.clone(),
                args.common.amqp_url.clone(),
                self.topology.clone(),
                TENANT.to_owned(),
                MAX_PAYLOAD_BYTES,
                round + 1,
                Duration::from_secs(60),
            )));
        }
        if schedule.single_broker() && second == schedule.sigterm_s {
            self.drain_a_worker().await?;
        }
        Ok(())
    }

    /// Stops a ready worker with SIGTERM, waits for it to drain and exit,
    /// starts another, and logs what it held.
    async fn drain_a_worker(&mut self) -> anyhow::Result<()> {
        let Some(victim) = self.services.pick_ready_worker(&self.http).await else {
            return Ok(());
        };
        let log = &self.log;
        let at = log.now_s();
        let held = in_flight(&self.http, self.services.fleet.port(&victim)).await;
        let hanging = self.targets.receivers.hanging_now();
        let status = self
            .services
            .fleet
            .terminate(&victim, Duration::from_millis(DRAIN_MS + 10_000))
            .await;
        let replacement = self.services.add_worker()?;
        let ok = status.is_some_and(|s| s.success());
        log.push(faults::FaultRecord {
            at_s: faults::round1(at),
            until_s: Some(faults::round1(log.now_s())),
            fault: "worker SIGTERM".into(),
            detail: format!(
                "{victim}, holding {} HTTP call(s) in flight ({hanging} hanging at the receivers, all workers), drained and exited with {}; {replacement} started",
                held.map_or("?".into(), |n| n.to_string()),
                status.map_or("no exit within the drain time".into(), |s| s.to_string()),
            ),
            ok,
            pid: None,
        });
        Ok(())
    }

    fn print_progress(&self, second: u64) {
        eprintln!(
            "  {second:>4} s  accepted {}  arrivals {} + {} at the destination  hanging {}  retried ingest calls {}",
            self.load.accepted_count(),
            self.targets.receivers.arrival_count(),
            self.targets.consumer.arrival_count(),
            self.targets.receivers.hanging_now(),
            self.load.retries.load(std::sync::atomic::Ordering::Relaxed),
        );
    }

    /// The deliveries the accepted events make: one per endpoint
    /// subscribed to each event's type.
    fn expected_deliveries(&self, accepted: &BTreeMap<String, &'static str>) -> usize {
        accepted
            .values()
            .map(|t| {
                self.targets
                    .endpoints
                    .iter()
                    .filter(|e| e.event_types.contains(t))
                    .count()
            })
            .sum()
    }

    /// Waits until every accepted delivery is decided in the ledger and
    /// the ledger's counts have been still for a few seconds, or
    /// `--settle-max` has passed.
    async fn settle(&mut self) -> Settled {
        let settle_started = Instant::now();
        let settle_max = self.args.settle_max();
        let accepted = self
            .load
            .accepted
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        let expected = self.expected_deliveries(&accepted);
        eprintln!(
            "  {} events accepted ({expected} deliveries); settling (at most {} s)",
            accepted.len(),
            settle_max.as_secs()
        );
        let mut settled = false;
        let mut previous = (-1i64, -1i64);
        let mut stable_since = Instant::now();
        while settle_started.elapsed() < settle_max {
            self.services.watch(&self.log);
            if let Ok(db) = hookfleet_tests::fleet::connect_db(&self.database_url).await {
                let row = db
                    .query_one(
                        "SELECT (SELECT count(*) FROM deliveries WHERE state IN ('succeeded', 'exhausted')),
                                (SELECT count(*) FROM attempts)",
                        &[],
                    )
                    .await;
                if let Ok(row) = row {
                    let now: (i64, i64) = (row.get(0), row.get(1));
                    if now != previous {
                        previous = now;
                        stable_since = Instant::now();
                    }
                    if now.0 >= expected as i64 && stable_since.elapsed() >= Duration::from_secs(5)
                    {
                        settled = true;
                        break;
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let settle_s = settle_started.elapsed().as_secs_f64();
        eprintln!(
            "  {} after {settle_s:.0} s; collecting",
            if settled { "settled" } else { "NOT settled" }
        );
        self.services.watch(&self.log);
        Settled { settled, settle_s }
    }

    /// Reads what the receivers, the destination's queue, the ledger and
    /// the dead-letter queue hold, then stops the fleet.
    async fn observe(
        &mut self,
        malformed: Vec<Malformed>,
        Settled { settled, settle_s }: Settled,
    ) -> anyhow::Result<Observed> {
        let (load, log, schedule) = (&self.load, &self.log, &self.schedule);
        let (destination_arrivals, destination) =
            self.targets.consumer.finish(Duration::from_secs(30)).await;
        let db = hookfleet_tests::fleet::connect_db(&self.database_url).await?;
        let mut deliveries = HashMap::new();
        for row in db
            .query("SELECT event_id, endpoint_id, state FROM deliveries", &[])
            .await?
        {
            deliveries.insert((row.get(0), row.get(1)), row.get(2));
        }
        let attempts = db
            .query(
                "SELECT event_id, endpoint_id, status_code, error FROM attempts",
                &[],
            )
            .await?
            .into_iter()
            .map(|row| LedgerAttempt {
                event_id: row.get(0),
                endpoint_id: row.get(1),
                status_code: row.get(2),
                error: row.get(3),
            })
            .collect();
        let ledger_events = db
            .query("SELECT id FROM events", &[])
            .await?
            .into_iter()
            .map(|row| row.get(0))
            .collect();
        let dead = read_parked(&self.args.common.amqp_url, &self.topology, &db).await?;
        let crashes = self.services.crashes.clone();
        let final_exits = self
            .services
            .fleet
            .stop(Duration::from_secs(30))
            .await
            .into_iter()
            .map(|(name, status)| {
                (
                    name,
                    status.map_or("no status".to_owned(), |s| s.to_string()),
                )
            })
            .collect();
        let receivers = &self.targets.receivers;
        let endpoint_infos = std::mem::take(&mut self.targets.endpoints);
        let mut arrivals = receivers.arrivals();
        arrivals.extend(destination_arrivals);
        if let Err(error) = write_arrivals(
            &self.log_dir.join("arrivals.csv"),
            &arrivals,
            &endpoint_infos,
        ) {
            eprintln!("warning: could not write the arrivals: {error}");
        }
        let endpoint_infos_ordered = endpoint_infos.iter().position(|e| e.name == ORDERED);
        let accepted = load.accepted.lock().map(|a| a.clone()).unwrap_or_default();
        Ok(Observed {
            accepted_at: load
                .accepted_at
                .lock()
                .map(|a| a.clone())
                .unwrap_or_default(),
            seconds_with_503: load
                .seconds_with_503
                .lock()
                .map(|s| s.clone())
                .unwrap_or_default(),
            load_s: schedule.duration_s,
            max_duplicate_ratio: schedule.cluster.as_ref().map(|_| 0.005),
            accepted,
            sent: load.sent.load(std::sync::atomic::Ordering::Relaxed),
            given_up: load.given_up.load(std::sync::atomic::Ordering::Relaxed),
            ingest_refusals: load.refusals.lock().map(|r| r.clone()).unwrap_or_default(),
            arrivals,
            unreadable_requests: receivers.unreadable(),
            endpoints: endpoint_infos,
            deliveries,
            attempts,
            ledger_events,
            dead,
            malformed,
            faults: log.records(),
            crashes,
            final_exits,
            settled,
            settle_s,
            ordered_endpoint: endpoint_infos_ordered,
            ordered_sends: load
                .keyed
                .lock()
                .map(|keyed| {
                    keyed
                        .iter()
                        .map(|(id, (key, sent, accepted))| crate::order::OrderedSend {
                            event_id: id.clone(),
                            key: key.clone(),
                            sent_at: sent.saturating_duration_since(log.origin()),
                            accepted_at: accepted.saturating_duration_since(log.origin()),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            inbound_ids: load.inbound.ids(),
            inbound: load.inbound.summary(),
            destination: Some(destination),
        })
    }
}

/// A connection to the first node of `urls` (comma-separated) that
/// answers, like the services make.
pub async fn connect_any(urls: &str, name: &str) -> lapin::Result<lapin::Connection> {
    let nodes = Nodes::new(urls.split(',').map(|u| u.trim().to_owned()).collect());
    nodes
        .connect_first(name)
        .await
        .map(|(_, connection)| connection)
}

/// SIGKILLs a random worker and starts a new one; `why` goes in the log.
fn kill_worker(services: &mut Services<'_>, log: &FaultLog, why: &str) -> anyhow::Result<()> {
    let Some(victim) = services.pick_worker() else {
        return Ok(());
    };
    let pid = services.fleet.pid(&victim);
    let status = services.fleet.kill(&victim);
    let replacement = services.add_worker()?;
    log.now(
        "worker SIGKILL",
        format!(
            "{victim} killed ({}){}{why}, {replacement} started",
            status.map_or("?".into(), |s| s.to_string()),
            if why.is_empty() { "" } else { " " },
        ),
        true,
        pid,
    );
    Ok(())
}

/// An AMQP destination endpoint publishing to `exchange` with the event
/// type as the routing key, through the producer's API.
async fn create_destination(
    api: &reqwest::Client,
    producer: &str,
    exchange: &str,
    types: &[&str],
) -> anyhow::Result<String> {
    let body = serde_json::json!({
        "destination": { "type": "amqp", "exchange": exchange, "routing_key": "{type}" },
        "event_types": types,
    });
    fleet::create_endpoint_from(api, producer, &body).await
}

/// Every arrival, for a look at a failed run: seconds, event, endpoint,
/// answer, sending worker's pid.
fn write_arrivals(
    path: &Path,
    arrivals: &[crate::receiver::Arrival],
    endpoints: &[EndpointInfo],
) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "at_s,event_id,endpoint,answer,sender_pid")?;
    for a in arrivals {
        writeln!(
            out,
            "{:.3},{},{},{:?},{}",
            a.at.as_secs_f64(),
            a.event_id,
            endpoints[a.endpoint].name,
            a.answer,
            a.sender.map_or(String::new(), |p| p.to_string())
        )?;
    }
    out.flush()
}

/// The deliveries a worker has in flight, from its own metrics.
async fn in_flight(http: &reqwest::Client, port: Option<u16>) -> Option<u64> {
    let text = http
        .get(format!("http://127.0.0.1:{}/metrics", port?))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("hookfleet_deliveries_in_flight "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Every parked message: the ledger moves each one from the dead-letter
/// queue into its `parked` table, so they are read from there once the
/// queue is empty and the table stops growing (for up to a minute).
async fn read_parked(
    url: &str,
    topology: &Topology,
    db: &hookfleet_db::tokio_postgres::Client,
) -> anyhow::Result<Vec<DeadMessage>> {
    let connection = connect_any(url, "hookfleet-chaos dlq").await?;
    let channel = connection.create_channel().await?;
    let parked = hookfleet_tests::parked_when_settled(
        &channel,
        &topology.dead_queue(),
        db,
        Duration::from_secs(60),
    )
    .await;
    let _ = channel.close(200, "bye".into()).await;
    let _ = connection.close(200, "bye".into()).await;
    let dead = parked?
        .iter()
        .map(|message| {
            let properties = &message.properties;
            let task = header_str(properties, headers::META)
                .and_then(|meta| DeliveryTask::from_meta_json(meta).ok())
                .map(|t| {
                    (
                        t.event_id.as_str().to_owned(),
                        t.endpoint_id.as_str().to_owned(),
                    )
                });
            DeadMessage {
                message_id: properties.message_id().as_ref().map(|m| m.to_string()),
                reason: header_str(properties, headers::PARK_REASON).map(str::to_owned),
                parked_by: header_str(properties, headers::PARKED_BY).map(str::to_owned),
                task,
            }
        })
        .collect();
    Ok(dead)
}

/// Removes the run's queues, exchanges (the destination's too) and
/// database.
pub async fn cleanup(amqp_url: &str, database_url: &str, run_id: &str) {
    match connect_any(amqp_url, "hookfleet-chaos cleanup").await {
        Ok(connection) => {
            if let Ok(channel) = connection.create_channel().await
                && let Err(error) = Topology::new(run_id, DELAY_LEVELS).delete(&channel).await
            {
                eprintln!("warning: could not delete the topology {run_id}: {error}");
            }
            // A channel of its own: a failure above may have closed that one.
            if let Ok(channel) = connection.create_channel().await
                && let Err(error) = crate::destination::delete(&channel, run_id).await
            {
                eprintln!("warning: could not delete the destination of {run_id}: {error}");
            }
            let _ = connection.close(200, "bye".into()).await;
        }
        Err(error) => eprintln!("warning: cannot reach RabbitMQ to remove {run_id}: {error}"),
    }
    if let Err(error) = hookfleet_db::drop_database(database_url, run_id).await {
        eprintln!("warning: could not drop database {run_id}: {error}");
    }
}

#[cfg(test)]
mod service_env_tests {
    use clap::Parser;
    use hookfleet_tests::service_env::effective;

    use super::{DELAY_LEVELS, DELIVERY_TIMEOUT_MS, DRAIN_MS, MAX_PAYLOAD_BYTES, ServiceEnv};
    use super::{RunArgs, service_env};

    fn run_args(flags: &[&str]) -> RunArgs {
        let cli = crate::Cli::try_parse_from(
            ["hookfleet-chaos", "run", "--amqp-url", "amqp://c/%2f"]
                .iter()
                .chain(flags),
        )
        .expect("valid flags");
        match cli.command {
            crate::Command::Run(args) => *args,
            _ => unreachable!("a run"),
        }
    }

    /// The map the chaos run kept by hand before `service_env`, as it was
    /// (the key, made inside it then, is given).
    fn hand_kept(
        args: &RunArgs,
        name: &str,
        database_url: &str,
        admin_token: &str,
        key: String,
    ) -> ServiceEnv {
        let pairs = |pairs: &[(&str, String)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (format!("HOOKFLEET__{k}"), v.clone()))
                .collect()
        };
        let mut common = vec![
            // One URL, or a cluster's nodes: a list either way.
            ("AMQP__URLS", args.common.amqp_url.clone()),
            ("AMQP__PREFIX", name.to_owned()),
            ("AMQP__DELAY_LEVELS", DELAY_LEVELS.to_string()),
            ("LOG__LEVEL", "warn".to_owned()),
        ];
        if args.cluster_ctl.is_some() {
            // The broker's default on three nodes, said out loud.
            common.push(("AMQP__QUORUM_GROUP_SIZE", "3".to_owned()));
        }
        let mut producer = pairs(&common);
        producer.extend(pairs(&[
            ("DATABASE__URL", database_url.to_owned()),
            ("DATABASE__POOL_SIZE", "4".to_owned()),
            ("SECRETS__KEY", key.clone()),
            ("AUTH__ADMIN_TOKEN", admin_token.to_owned()),
            ("INGEST__ALLOW_HTTP_ENDPOINTS", "true".to_owned()),
            ("INGEST__MAX_PAYLOAD_BYTES", MAX_PAYLOAD_BYTES.to_string()),
            // The chaos run measures availability, not the per-tenant quotas.
            ("INGEST__RATE_PER_SECOND", "0".to_owned()),
            ("ENDPOINTS__MAX_PER_TENANT", "0".to_owned()),
            ("ENDPOINTS__SSRF_ALLOW", "127.0.0.0/8".to_owned()),
        ]));
        let mut ledger = pairs(&common);
        ledger.extend(pairs(&[
            ("DATABASE__URL", database_url.to_owned()),
            ("DATABASE__POOL_SIZE", "4".to_owned()),
            ("DATABASE__MIGRATE_ON_START", "false".to_owned()),
            ("SECRETS__KEY", key.clone()),
        ]));
        let mut worker = pairs(&common);
        if args.cluster_ctl.is_some() {
            // Every task taken and retry scheduled, to trace duplicates back.
            worker.extend(pairs(&[(
                "LOG__LEVEL",
                "warn,hookfleet_worker::delivery=debug,hookfleet_worker::retry_queue=debug"
                    .to_owned(),
            )]));
        }
        worker.extend(pairs(&[
            ("SECRETS__KEY", key),
            ("DELIVERY__SSRF_ALLOW", "127.0.0.0/8".to_owned()),
            ("DELIVERY__RETRY_SCHEDULE", "1s,2s,4s,8s".to_owned()),
            ("DELIVERY__TIMEOUT_MS", DELIVERY_TIMEOUT_MS.to_string()),
            (
                "DELIVERY__CONNECT_TIMEOUT_MS",
                DELIVERY_TIMEOUT_MS.to_string(),
            ),
            ("DELIVERY__OVERLOAD_MIN_DELAY", "1s".to_owned()),
            ("DELIVERY__RETRY_AFTER_MAX", "5s".to_owned()),
            ("DELIVERY__DRAIN_MS", DRAIN_MS.to_string()),
            // Containment is off: the breaker would hold the dead endpoint's
            // tasks in the delay levels for the whole run (one probe per
            // `open_for`), so they would never exhaust; and a worker killed
            // between deferring a task (the in-flight cap) and acking it leaves
            // two copies that no receiver can tell from a bug. The containment
            // tests cover both.
            ("DELIVERY__BREAKER_FAILURE_THRESHOLD", "1000000".to_owned()),
            ("DELIVERY__MAX_IN_FLIGHT_PER_ENDPOINT", "100000".to_owned()),
        ]));
        ServiceEnv {
            producer,
            ledger,
            worker,
        }
    }

    #[test]
    fn the_services_get_the_environment_the_hand_kept_map_gave() {
        for flags in [&[][..], &["--cluster-ctl", "scripts/lib/cluster-ctl"][..]] {
            let args = run_args(flags);
            let new = service_env(&args, "run_c", "postgres://db/run_c", "admin", "key");
            let old = hand_kept(&args, "run_c", "postgres://db/run_c", "admin", "key".into());
            assert_eq!(
                effective(&new.producer),
                effective(&old.producer),
                "{flags:?}"
            );
            assert_eq!(effective(&new.ledger), effective(&old.ledger), "{flags:?}");
            assert_eq!(effective(&new.worker), effective(&old.worker), "{flags:?}");
        }
    }
}
