//! The report: a table for people on stdout, JSON for machines.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ceiling::Ceiling;
use crate::receiver::Summary;
use crate::scenario::Spec;
use hookfleet_tests::fleet::ProcessStats;

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub commit: String,
    pub cores: usize,
    pub run_id: String,
    pub started_unix_s: u64,
    pub quick: bool,
    pub workers: usize,
    /// Settings that apply to every scenario.
    pub settings: BTreeMap<String, String>,
    pub broker_ceiling: Option<Ceiling>,
    pub broker_ceiling_error: Option<String>,
    pub scenarios: Vec<ScenarioReport>,
    pub goals: Vec<Goal>,
    /// Further ratios that help read the goals.
    pub relative: Vec<Relative>,
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Relative {
    pub name: String,
    pub value: Option<f64>,
}

pub fn relative(report: &Report) -> Vec<Relative> {
    let scenario = |key: char| report.scenarios.iter().find(|s| s.key == key);
    let rate = |key: char| scenario(key).and_then(|s| s.deliveries_per_s);
    let ratio = |x: char, y: char| rate(x).zip(rate(y)).map(|(x, y)| x / y);
    let busy = |key: char| {
        scenario(key).and_then(|s| {
            s.machine_cpu_s
                .map(|m| m / (s.measured_s * report.cores as f64))
        })
    };
    [
        ("b / a deliveries/s (AMQP vs HTTP ingest)", ratio('b', 'a')),
        ("c / a deliveries/s (fan-out 10 vs 1)", ratio('c', 'a')),
        (
            "j / a deliveries/s (payloads checked against a schema)",
            ratio('j', 'a'),
        ),
        (
            "d / c healthy deliveries/s (same fan-out, 2 bad endpoints)",
            ratio('d', 'c'),
        ),
        (
            "e / c deliveries/s (100k registered vs 10)",
            ratio('e', 'c'),
        ),
        ("machine busy share during a", busy('a')),
        ("machine busy share during f", busy('f')),
    ]
    .into_iter()
    .map(|(name, value)| Relative {
        name: name.to_owned(),
        value,
    })
    .collect()
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    pub fn from(summary: &Summary) -> Option<Self> {
        Some(Self {
            p50: summary.quantile_ms(0.50)?,
            p95: summary.quantile_ms(0.95)?,
            p99: summary.quantile_ms(0.99)?,
            max: summary.quantile_ms(1.0)?,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub key: char,
    pub title: String,
    pub ingest: String,
    pub events: u64,
    pub fan_out: u64,
    pub healthy_endpoints: u64,
    pub failing_endpoints: u64,
    pub hanging_endpoints: u64,
    pub registered_endpoints: u64,
    /// Seconds per endpoint created through the API (each reloads the
    /// producer's whole index), when filler endpoints were registered.
    pub index_reload_s: Option<f64>,
    /// Events per second sent (paced scenario).
    pub paced_rate: Option<f64>,
    /// Deliveries to healthy endpoints the events should cause.
    pub expected_deliveries: u64,
    /// Distinct deliveries that arrived at healthy endpoints.
    pub delivered: u64,
    /// Repeated arrivals (at-least-once delivery), not counted above.
    pub duplicates: u64,
    pub unreadable: u64,
    /// Events the load generator gave up on after repeated errors.
    pub failed_events: u64,
    /// Every expected delivery arrived.
    pub complete: bool,
    /// Healthy deliveries per second, first to last arrival.
    pub deliveries_per_s: Option<f64>,
    /// deliveries_per_s / the broker ceiling.
    pub ratio_to_ceiling: Option<f64>,
    /// Events handed to the producer (or broker) per second.
    pub ingest_events_per_s: Option<f64>,
    /// From the ingest call to the arrival at the receiver.
    pub latency_ms: Option<Latency>,
    /// From the last arrival until the ledger held an attempt for every
    /// arrived delivery.
    pub ledger_lag_ms: Option<f64>,
    /// Attempts the lag was measured on (succeeded ones when some
    /// endpoints fail).
    pub attempts_recorded: i64,
    /// Every attempt in the ledger at the end, failed ones included.
    pub attempts_total: i64,
    /// Requests that reached the failing and the hanging endpoints.
    pub failing_hits: u64,
    pub hanging_hits: u64,
    /// Seconds from the first send to the ledger catching up.
    pub measured_s: f64,
    /// CPU seconds (since start) and peak RSS of each service process,
    /// read just before it was stopped.
    pub processes: Vec<ProcessStats>,
    /// CPU seconds of RabbitMQ, PostgreSQL and the benchmark process itself
    /// (load generator and receiver) during the measurement.
    pub rabbitmq_cpu_s: f64,
    pub postgres_cpu_s: f64,
    pub bench_cpu_s: f64,
    /// Kernel threads (writeback, journal, softirq), mostly on behalf of
    /// the above.
    pub kernel_threads_cpu_s: f64,
    /// CPU seconds the whole machine was busy during the measurement, and
    /// the part not used by the fleet, RabbitMQ, PostgreSQL, kernel threads
    /// or the benchmark: other work on the machine, which skews the figures.
    pub machine_cpu_s: Option<f64>,
    pub other_cpu_s: Option<f64>,
    /// The busiest other processes during the measurement (command name,
    /// CPU seconds); short-lived ones are missing.
    pub other_processes: Vec<(String, f64)>,
    /// Transactions the services committed in the scenario's database
    /// (set-up included).
    pub postgres_transactions: Option<i64>,
    /// Worker settings particular to this scenario.
    pub worker_settings: BTreeMap<String, String>,
    pub error: Option<String>,
}

impl ScenarioReport {
    pub fn failed(spec: &Spec, error: String) -> Self {
        Self {
            key: spec.key,
            title: spec.title.clone(),
            ingest: spec.ingest_detail.clone(),
            events: spec.events,
            fan_out: spec.endpoints.len() as u64,
            healthy_endpoints: spec.healthy(),
            failing_endpoints: spec.count(crate::receiver::Behaviour::Failing),
            hanging_endpoints: spec.count(crate::receiver::Behaviour::Hanging),
            registered_endpoints: spec.filler + spec.endpoints.len() as u64,
            index_reload_s: None,
            paced_rate: spec.rate,
            expected_deliveries: spec.events * spec.healthy(),
            delivered: 0,
            duplicates: 0,
            unreadable: 0,
            failed_events: 0,
            complete: false,
            deliveries_per_s: None,
            ratio_to_ceiling: None,
            ingest_events_per_s: None,
            latency_ms: None,
            ledger_lag_ms: None,
            attempts_recorded: 0,
            attempts_total: 0,
            failing_hits: 0,
            hanging_hits: 0,
            measured_s: 0.0,
            processes: Vec::new(),
            rabbitmq_cpu_s: 0.0,
            postgres_cpu_s: 0.0,
            bench_cpu_s: 0.0,
            kernel_threads_cpu_s: 0.0,
            machine_cpu_s: None,
            other_cpu_s: None,
            postgres_transactions: None,
            other_processes: Vec::new(),
            worker_settings: BTreeMap::new(),
            error: Some(error),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: String,
    pub value: Option<f64>,
    pub met: Option<bool>,
}

pub fn goals(report: &Report) -> Vec<Goal> {
    let scenario = |key: char| report.scenarios.iter().find(|s| s.key == key);
    let rate = |key: char| scenario(key).and_then(|s| s.deliveries_per_s);
    let relative = |key: char| rate(key).zip(rate('a')).map(|(x, a)| x / a);
    let goal = |goal: &str, value: Option<f64>, met: fn(f64) -> bool| Goal {
        goal: goal.to_owned(),
        value,
        met: value.map(met),
    };
    let worker_rss = report
        .scenarios
        .iter()
        .flat_map(|s| &s.processes)
        .filter(|p| p.name.starts_with("worker"))
        .map(|p| p.peak_rss_mib)
        .filter(|m| m.is_finite())
        .reduce(f64::max);
    vec![
        goal(
            "a: deliveries/s >= 0.35 x broker ceiling",
            scenario('a').and_then(|s| s.ratio_to_ceiling),
            |v| v >= 0.35,
        ),
        goal(
            "c: deliveries/s >= 0.5 x broker ceiling",
            scenario('c').and_then(|s| s.ratio_to_ceiling),
            |v| v >= 0.5,
        ),
        goal("d: healthy deliveries/s >= 0.9 x a", relative('d'), |v| {
            v >= 0.9
        }),
        goal("e: deliveries/s >= 0.9 x a", relative('e'), |v| v >= 0.9),
        goal("j: deliveries/s >= 0.9 x a", relative('j'), |v| v >= 0.9),
        goal(
            "f: p99 latency <= 20 ms",
            scenario('f').and_then(|s| s.latency_ms.as_ref().map(|l| l.p99)),
            |v| v <= 20.0,
        ),
        goal("worker peak RSS <= 64 MiB", worker_rss, |v| v <= 64.0),
    ]
}

fn num(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "-".to_owned(),
    }
}

/// A short line for the progress log.
pub fn one_line(s: &ScenarioReport) -> String {
    if let Some(error) = &s.error {
        return format!("FAILED: {error}");
    }
    format!(
        "{} deliveries/s ({}/{} arrived{}), p50 {} ms, p99 {} ms, ledger lag {} ms",
        num(s.deliveries_per_s, 0),
        s.delivered,
        s.expected_deliveries,
        if s.complete { "" } else { ", INCOMPLETE" },
        num(s.latency_ms.as_ref().map(|l| l.p50), 1),
        num(s.latency_ms.as_ref().map(|l| l.p99), 1),
        num(s.ledger_lag_ms, 0),
    )
}

pub fn print(report: &Report) {
    println!();
    println!(
        "hookfleet bench  commit {}  cores {}  workers {}  run {}{}",
        report.commit,
        report.cores,
        report.workers,
        report.run_id,
        if report.quick { "  (--quick)" } else { "" }
    );
    println!(
        "settings: {}",
        report
            .settings
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    match (&report.broker_ceiling, &report.broker_ceiling_error) {
        (Some(c), _) => println!(
            "broker ceiling: {:.0} msg/s (publish {:.0}/s, consume {:.0}/s): {} persistent {} B msgs, \
             quorum queue, 1 publisher (confirms, window {}), 1 consumer (manual acks, prefetch {}); \
             RabbitMQ {:.1} CPU s, bench {:.1} CPU s over {:.1} s",
            c.msgs_per_s,
            c.publish_msgs_per_s,
            c.consume_msgs_per_s,
            c.messages,
            c.message_bytes,
            c.confirm_window,
            c.prefetch,
            c.rabbitmq_cpu_s,
            c.bench_cpu_s,
            c.elapsed_s
        ),
        (None, Some(error)) => println!("broker ceiling: FAILED: {error}"),
        (None, None) => println!("broker ceiling: not measured"),
    }
    println!();
    println!(
        "{:<3} {:<40} {:>7} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "",
        "scenario",
        "events",
        "deliv",
        "deliv/s",
        "/ceil",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "lag ms"
    );
    for s in &report.scenarios {
        let latency = s.latency_ms.as_ref();
        println!(
            "{:<3} {:<40} {:>7} {:>8} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}{}",
            s.key,
            truncate(&s.title, 40),
            s.events,
            s.delivered,
            num(s.deliveries_per_s, 0),
            num(s.ratio_to_ceiling, 3),
            num(latency.map(|l| l.p50), 1),
            num(latency.map(|l| l.p95), 1),
            num(latency.map(|l| l.p99), 1),
            num(latency.map(|l| l.max), 1),
            num(s.ledger_lag_ms, 0),
            match (&s.error, s.complete) {
                (Some(_), _) => "  FAILED",
                (None, false) => "  INCOMPLETE",
                _ => "",
            }
        );
    }
    println!();
    println!("ingest, and extra figures:");
    for s in &report.scenarios {
        if let Some(error) = &s.error {
            println!("{:<3} FAILED: {error}", s.key);
            continue;
        }
        let mut extra = vec![
            s.ingest.clone(),
            format!("ingest {} ev/s", num(s.ingest_events_per_s, 0)),
        ];
        if let Some(tx) = s.postgres_transactions.filter(|_| s.delivered > 0) {
            extra.push(format!(
                "{:.2} Postgres transactions per delivery",
                tx as f64 / s.delivered as f64
            ));
        }
        if s.duplicates > 0 {
            extra.push(format!("{} duplicate arrivals", s.duplicates));
        }
        if s.failed_events > 0 {
            extra.push(format!("{} events given up", s.failed_events));
        }
        if s.failing_endpoints + s.hanging_endpoints > 0 {
            extra.push(format!(
                "{} requests to the failing endpoint, {} to the hanging one, {} attempts in all",
                s.failing_hits, s.hanging_hits, s.attempts_total
            ));
        }
        if let Some(reload) = s.index_reload_s {
            extra.push(format!(
                "{} endpoints registered, index reload {reload:.2} s",
                s.registered_endpoints
            ));
        }
        if !s.worker_settings.is_empty() {
            extra.push(
                s.worker_settings
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        println!("{:<3} {}", s.key, extra.join("; "));
    }
    println!();
    println!(
        "CPU seconds during the measurement / peak RSS MiB, per process; machine: busy CPU seconds \
         of all {} cores, other: used by anything else",
        report.cores
    );
    for s in &report.scenarios {
        if s.error.is_some() {
            continue;
        }
        let mut cells: Vec<String> = s
            .processes
            .iter()
            .map(|p| format!("{} {:.1}s/{:.0}M", p.name, p.cpu_s_measured, p.peak_rss_mib))
            .collect();
        cells.push(format!("rabbitmq {:.1}s", s.rabbitmq_cpu_s));
        cells.push(format!("postgres {:.1}s", s.postgres_cpu_s));
        cells.push(format!("bench {:.1}s", s.bench_cpu_s));
        cells.push(format!("kernel threads {:.1}s", s.kernel_threads_cpu_s));
        cells.push(format!("over {:.1}s", s.measured_s));
        cells.push(format!(
            "machine {}s, other {}s",
            num(s.machine_cpu_s, 1),
            num(s.other_cpu_s, 1)
        ));
        println!("{:<3} {}", s.key, cells.join("  "));
    }
    for s in &report.scenarios {
        if let Some(share) = other_share(s, report.cores)
            && share > 0.1
        {
            println!(
                "warning: other processes took {:.0}% of the machine during {} (busiest: {}): \
                 its figures are skewed",
                share * 100.0,
                s.key,
                s.other_processes
                    .iter()
                    .map(|(c, t)| format!("{c} {t:.1}s"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    println!();
    println!("goals:");
    for g in &report.goals {
        println!(
            "  {:<45} {:>9}  {}",
            g.goal,
            num(g.value, 3),
            match g.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            }
        );
    }
    println!("relative:");
    for r in &report.relative {
        println!("  {:<60} {:>9}", r.name, num(r.value, 3));
    }
    println!("total {:.0} s", report.elapsed_s);
}

/// The share of the machine other processes took during the measurement.
pub fn other_share(s: &ScenarioReport, cores: usize) -> Option<f64> {
    let capacity = s.measured_s * cores.max(1) as f64;
    s.other_cpu_s
        .filter(|_| capacity > 0.0)
        .map(|o| o / capacity)
}

fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        text.chars().take(width - 1).collect::<String>() + "~"
    }
}
