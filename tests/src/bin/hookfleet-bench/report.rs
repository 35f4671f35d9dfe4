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
            s.usage
                .machine_cpu_s
                .map(|m| m / (s.usage.measured_s * report.cores as f64))
        })
    };
    [
        ("b / a deliveries/s (AMQP vs HTTP ingest)", ratio('b', 'a')),
        ("c / a deliveries/s (fan-out 10 vs 1)", ratio('c', 'a')),
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
        ("machine busy share during g", busy('g')),
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
    /// The goal of issue 14 for this scenario, and whether it was met.
    pub goal: Option<Goal>,
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
    #[serde(flatten)]
    pub usage: UsageFigures,
    /// CPU seconds per healthy delivery, by process.
    pub cpu_s_per_delivery: Option<CpuPerDelivery>,
    /// Transactions the services committed in the scenario's database
    /// (set-up included).
    pub postgres_transactions: Option<i64>,
    /// Worker settings particular to this scenario.
    pub worker_settings: BTreeMap<String, String>,
    pub error: Option<String>,
}

/// What the processes used during a scenario's measurement.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UsageFigures {
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
}

/// CPU seconds per healthy delivery of each process (the workers summed;
/// `load` is this process: load generator and receiver), and of them all.
#[derive(Debug, Clone, Serialize)]
pub struct CpuPerDelivery {
    pub producer: f64,
    pub workers: f64,
    pub ledger: f64,
    pub rabbitmq: f64,
    pub postgres: f64,
    pub load: f64,
    /// Kernel threads (writeback, journal, softirq), mostly on behalf of
    /// the above; in `total`.
    pub kernel_threads: f64,
    pub total: f64,
}

impl CpuPerDelivery {
    /// From a scenario's measured CPU seconds; None when nothing arrived.
    pub fn of(s: &ScenarioReport) -> Option<Self> {
        if s.delivered == 0 {
            return None;
        }
        let delivered = s.delivered as f64;
        let per = |seconds: f64| (seconds / delivered * 1e9).round() / 1e9;
        let of = |prefix: &str| {
            s.usage
                .processes
                .iter()
                .filter(|p| p.name.starts_with(prefix))
                .map(|p| p.cpu_s_measured)
                .filter(|c| c.is_finite())
                .sum::<f64>()
        };
        let u = &s.usage;
        let parts = [
            of("producer"),
            of("worker"),
            of("ledger"),
            u.rabbitmq_cpu_s,
            u.postgres_cpu_s,
            u.bench_cpu_s,
            u.kernel_threads_cpu_s,
        ];
        Some(Self {
            producer: per(parts[0]),
            workers: per(parts[1]),
            ledger: per(parts[2]),
            rabbitmq: per(parts[3]),
            postgres: per(parts[4]),
            load: per(parts[5]),
            kernel_threads: per(parts[6]),
            total: per(parts.iter().sum()),
        })
    }
}

impl ScenarioReport {
    /// The report of `spec` before anything was measured.
    pub fn new(spec: &Spec) -> Self {
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
            goal: None,
            ingest_events_per_s: None,
            latency_ms: None,
            ledger_lag_ms: None,
            attempts_recorded: 0,
            attempts_total: 0,
            failing_hits: 0,
            hanging_hits: 0,
            usage: UsageFigures::default(),
            cpu_s_per_delivery: None,
            postgres_transactions: None,
            worker_settings: BTreeMap::new(),
            error: None,
        }
    }

    pub fn failed(spec: &Spec, error: String) -> Self {
        Self {
            error: Some(error),
            ..Self::new(spec)
        }
    }
}

/// A goal of issue 14 and whether it was met.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: String,
    /// The same, short, for the table.
    pub target: String,
    pub value: Option<f64>,
    pub met: Option<bool>,
}

impl Goal {
    fn new(goal: &str, target: &str, value: Option<f64>, met: impl Fn(f64) -> bool) -> Self {
        Self {
            goal: goal.to_owned(),
            target: target.to_owned(),
            value,
            met: value.filter(|v| v.is_finite()).map(met),
        }
    }

    /// "met", "MISSED" or "-".
    fn verdict(&self) -> &'static str {
        match self.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "-",
        }
    }
}

/// Gives every scenario its goal from issue 14 (d has none): throughput
/// as a ratio to the broker ceiling, e against c, latency for f and g.
/// `batch` is the events per call of a: single POSTs have a lower goal.
pub fn set_goals(scenarios: &mut [ScenarioReport], batch: u64) {
    let rate = |key: char| {
        scenarios
            .iter()
            .find(|s| s.key == key)
            .and_then(|s| s.deliveries_per_s)
    };
    let e_to_c = rate('e').zip(rate('c')).map(|(e, c)| e / c);
    let j_to_a = rate('j').zip(rate('a')).map(|(j, a)| j / a);
    for s in scenarios.iter_mut() {
        let ratio = s.ratio_to_ceiling;
        let p99 = s.latency_ms.as_ref().map(|l| l.p99);
        s.goal = match s.key {
            'a' if batch == 1 => Some(Goal::new(
                "a (single POSTs): deliveries/s >= 0.3 x broker ceiling",
                "/ceil >= 0.3",
                ratio,
                |v| v >= 0.3,
            )),
            'a' => Some(Goal::new(
                "a: deliveries/s >= 0.35 x broker ceiling",
                "/ceil >= 0.35",
                ratio,
                |v| v >= 0.35,
            )),
            'b' => Some(Goal::new(
                "b: deliveries/s >= 0.35 x broker ceiling",
                "/ceil >= 0.35",
                ratio,
                |v| v >= 0.35,
            )),
            'c' => Some(Goal::new(
                "c: deliveries/s >= 0.5 x broker ceiling",
                "/ceil >= 0.5",
                ratio,
                |v| v >= 0.5,
            )),
            'e' => Some(Goal::new(
                "e: deliveries/s within 10% of c (e / c >= 0.9)",
                "e/c >= 0.9",
                e_to_c,
                |v| v >= 0.9,
            )),
            'f' => Some(Goal::new(
                "f: p99 latency <= 20 ms",
                "p99 <= 20 ms",
                p99,
                |v| v <= 20.0,
            )),
            'g' => Some(Goal::new(
                "g: p99 latency <= 10 ms",
                "p99 <= 10 ms",
                p99,
                |v| v <= 10.0,
            )),
            'j' => Some(Goal::new(
                "j: deliveries/s with a schema >= 0.9 x a (issue 19)",
                "j/a >= 0.9",
                j_to_a,
                |v| v >= 0.9,
            )),
            _ => None,
        };
    }
}

/// Every scenario's goal, and the worker's peak RSS over all scenarios.
pub fn goals(report: &Report) -> Vec<Goal> {
    let worker_rss = report
        .scenarios
        .iter()
        .flat_map(|s| &s.usage.processes)
        .filter(|p| p.name.starts_with("worker"))
        .map(|p| p.peak_rss_mib)
        .filter(|m| m.is_finite())
        .reduce(f64::max);
    let mut goals: Vec<Goal> = report
        .scenarios
        .iter()
        .filter_map(|s| s.goal.clone())
        .collect();
    goals.push(Goal::new(
        "worker peak RSS <= 64 MiB",
        "<= 64 MiB",
        worker_rss,
        |v| v <= 64.0,
    ));
    goals
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
            "broker ceiling: {:.0} msg/s (publish {:.0}/s, consume {:.0}/s): {}; \
             RabbitMQ {:.1} CPU s, bench {:.1} CPU s over {:.1} s",
            c.msgs_per_s,
            c.publish_msgs_per_s,
            c.consume_msgs_per_s,
            c.method,
            c.rabbitmq_cpu_s,
            c.bench_cpu_s,
            c.elapsed_s
        ),
        (None, Some(error)) => println!("broker ceiling: FAILED: {error}"),
        (None, None) => println!("broker ceiling: not measured"),
    }
    println!();
    print_results(report);
    println!();
    print_extras(report);
    println!();
    print_cpu_per_delivery(report);
    println!();
    print_cpu(report);
    println!();
    println!("goals (issue 14):");
    for g in &report.goals {
        println!(
            "  {:<56} {:>9}  {}",
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

/// The main table: rates, latencies, and each scenario's goal.
fn print_results(report: &Report) {
    println!(
        "{:<3} {:<36} {:>7} {:>8} {:>8} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7}  {:<22}",
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
        "lag ms",
        "goal"
    );
    for s in &report.scenarios {
        let latency = s.latency_ms.as_ref();
        let goal = s
            .goal
            .as_ref()
            .map_or_else(String::new, |g| format!("{} {}", g.target, g.verdict()));
        println!(
            "{:<3} {:<36} {:>7} {:>8} {:>8} {:>6} {:>7} {:>7} {:>7} {:>7} {:>7}  {:<22}{}",
            s.key,
            truncate(&s.title, 36),
            s.events,
            s.delivered,
            num(s.deliveries_per_s, 0),
            num(s.ratio_to_ceiling, 3),
            num(latency.map(|l| l.p50), 1),
            num(latency.map(|l| l.p95), 1),
            num(latency.map(|l| l.p99), 1),
            num(latency.map(|l| l.max), 1),
            num(s.ledger_lag_ms, 0),
            goal,
            match (&s.error, s.complete) {
                (Some(_), _) => "  FAILED",
                (None, false) => "  INCOMPLETE",
                _ => "",
            }
        );
    }
}

/// Per scenario: how the load was sent, and whatever else stood out.
fn print_extras(report: &Report) {
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
}

/// CPU milliseconds per healthy delivery, by process.
fn print_cpu_per_delivery(report: &Report) {
    println!(
        "CPU ms per delivery (workers summed; load: this process, load generator and receiver)"
    );
    println!(
        "{:<3} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "", "producer", "workers", "ledger", "rabbitmq", "postgres", "load", "kernel", "total"
    );
    for s in &report.scenarios {
        let Some(c) = &s.cpu_s_per_delivery else {
            continue;
        };
        let ms = |seconds: f64| format!("{:.3}", seconds * 1000.0);
        println!(
            "{:<3} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            s.key,
            ms(c.producer),
            ms(c.workers),
            ms(c.ledger),
            ms(c.rabbitmq),
            ms(c.postgres),
            ms(c.load),
            ms(c.kernel_threads),
            ms(c.total)
        );
    }
}

/// CPU seconds and peak RSS of every process, and of the machine.
fn print_cpu(report: &Report) {
    println!(
        "CPU seconds during the measurement / peak RSS MiB, per process; machine: busy CPU seconds \
         of all {} cores, other: used by anything else",
        report.cores
    );
    for s in &report.scenarios {
        if s.error.is_some() {
            continue;
        }
        let u = &s.usage;
        let mut cells: Vec<String> = u
            .processes
            .iter()
            .map(|p| format!("{} {:.1}s/{:.0}M", p.name, p.cpu_s_measured, p.peak_rss_mib))
            .collect();
        cells.push(format!("rabbitmq {:.1}s", u.rabbitmq_cpu_s));
        cells.push(format!("postgres {:.1}s", u.postgres_cpu_s));
        cells.push(format!("bench {:.1}s", u.bench_cpu_s));
        cells.push(format!("kernel threads {:.1}s", u.kernel_threads_cpu_s));
        cells.push(format!("over {:.1}s", u.measured_s));
        cells.push(format!(
            "machine {}s, other {}s",
            num(u.machine_cpu_s, 1),
            num(u.other_cpu_s, 1)
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
                s.usage
                    .other_processes
                    .iter()
                    .map(|(c, t)| format!("{c} {t:.1}s"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
}

/// The share of the machine other processes took during the measurement.
pub fn other_share(s: &ScenarioReport, cores: usize) -> Option<f64> {
    let capacity = s.usage.measured_s * cores.max(1) as f64;
    s.usage
        .other_cpu_s
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receiver::Behaviour;
    use crate::scenario::{Ingest, Spec};

    fn scenario(key: char, deliveries_per_s: f64, ratio: f64) -> ScenarioReport {
        let spec = Spec {
            key,
            title: String::new(),
            ingest: Ingest::HttpBatch,
            ingest_detail: String::new(),
            batch: 100,
            endpoints: vec![Behaviour::Healthy],
            filler: 0,
            events: 10,
            rate: None,
            worker_env: Vec::new(),
            schema: None,
        };
        let mut report = ScenarioReport::new(&spec);
        report.deliveries_per_s = Some(deliveries_per_s);
        report.ratio_to_ceiling = Some(ratio);
        report
    }

    fn verdicts(scenarios: &[ScenarioReport]) -> Vec<(char, Option<bool>)> {
        scenarios
            .iter()
            .map(|s| (s.key, s.goal.as_ref().and_then(|g| g.met)))
            .collect()
    }

    #[test]
    fn single_posts_have_the_lower_goal() {
        let mut batches = vec![scenario('a', 100.0, 0.32)];
        set_goals(&mut batches, 100);
        assert_eq!(verdicts(&batches), vec![('a', Some(false))]);
        let mut singles = vec![scenario('a', 100.0, 0.32)];
        set_goals(&mut singles, 1);
        assert_eq!(verdicts(&singles), vec![('a', Some(true))]);
    }

    #[test]
    fn e_is_held_to_c_and_d_has_no_goal() {
        let mut run = vec![
            scenario('c', 1000.0, 0.6),
            scenario('d', 500.0, 0.3),
            scenario('e', 850.0, 0.51),
        ];
        set_goals(&mut run, 100);
        assert_eq!(
            verdicts(&run),
            vec![('c', Some(true)), ('d', None), ('e', Some(false))]
        );
        let mut alone = vec![scenario('e', 850.0, 0.51)];
        set_goals(&mut alone, 100);
        assert_eq!(verdicts(&alone), vec![('e', None)]);
    }

    #[test]
    fn cpu_per_delivery_sums_the_workers() {
        let mut s = scenario('a', 100.0, 0.5);
        s.delivered = 1000;
        let process = |name: &str, cpu: f64| ProcessStats {
            name: name.to_owned(),
            pid: 1,
            cpu_s: cpu,
            cpu_s_measured: cpu,
            peak_rss_mib: 10.0,
        };
        s.usage.processes = vec![
            process("producer", 1.0),
            process("ledger", 0.5),
            process("worker-1", 2.0),
            process("worker-2", 1.0),
        ];
        s.usage.postgres_cpu_s = 0.25;
        let c = CpuPerDelivery::of(&s).expect("deliveries arrived");
        assert_eq!((c.producer, c.workers, c.ledger), (0.001, 0.003, 0.0005));
        assert_eq!((c.postgres, c.total), (0.00025, 0.00475));
    }
}
