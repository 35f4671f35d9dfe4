//! The report: a table for people on stdout, JSON for machines.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::ceiling::Ceiling;
use crate::receiver::{Behaviour, Summary};
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
    /// The goals of this scenario (issue 14; h and i: issue 17), and
    /// whether they were met.
    pub goals: Vec<Goal>,
    /// Arrivals at an ordered endpoint that came after a later event of
    /// their key (scenario h; anything but 0 fails the scenario).
    pub out_of_order: Option<u64>,
    /// A rate-limited endpoint and its unlimited neighbour (scenario i).
    pub rate_limited: Option<RateLimited>,
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
            failing_endpoints: spec.count(Behaviour::Failing),
            hanging_endpoints: spec.count(Behaviour::Hanging),
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
            goals: Vec::new(),
            out_of_order: None,
            rate_limited: None,
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

/// Scenario i as the receiver saw it: a rate-limited endpoint and an
/// unlimited one, both sent every event.
#[derive(Debug, Clone, Serialize)]
pub struct RateLimited {
    /// The limited endpoint's `rate_limit` (attempts per second).
    pub limit: u32,
    /// Its arrivals per second over the steady part: from its arrival at
    /// the 10th percentile to the one at the 90th (the start's burst and
    /// the end's stragglers left out).
    pub steady_per_s: Option<f64>,
    /// How long that steady part lasted, seconds.
    pub steady_s: Option<f64>,
    /// The most arrivals at it within any 10 s (the README's promise:
    /// at most limit × 10 plus a tenth of a second's worth).
    pub most_in_10s: u64,
    /// The unlimited endpoint's deliveries per second, its first arrival
    /// to its last.
    pub unlimited_per_s: Option<f64>,
    /// Seconds from the first event sent to each endpoint's last arrival.
    pub unlimited_done_s: Option<f64>,
    pub limited_done_s: Option<f64>,
}

impl RateLimited {
    /// From the arrivals (nanoseconds since the origin) of the first
    /// limited and the first unlimited healthy endpoint of `spec`; None
    /// when it has no limited endpoint.
    pub fn of(spec: &Spec, summary: &Summary, first_sent_ns: Option<u64>) -> Option<Self> {
        let healthy = |e: &&crate::receiver::Endpoint| e.behaviour == Behaviour::Healthy;
        let limited_at = spec
            .endpoints
            .iter()
            .position(|e| healthy(&e) && e.rate_limit.is_some())?;
        let limit = spec.endpoints[limited_at].rate_limit?;
        let unlimited_at = spec
            .endpoints
            .iter()
            .position(|e| healthy(&e) && e.rate_limit.is_none());
        let none = Vec::new();
        let limited = summary.arrivals_ns.get(limited_at).unwrap_or(&none);
        let unlimited = unlimited_at
            .and_then(|i| summary.arrivals_ns.get(i))
            .unwrap_or(&none);
        let done = |times: &[u64]| {
            times
                .last()
                .zip(first_sent_ns)
                .map(|(last, first)| last.saturating_sub(first) as f64 / 1e9)
        };
        let steady = steady_rate(limited);
        Some(Self {
            limit,
            steady_per_s: steady.map(|(rate, _)| rate),
            steady_s: steady.map(|(_, seconds)| seconds),
            most_in_10s: most_within(limited, 10_000_000_000),
            unlimited_per_s: span_rate(unlimited),
            unlimited_done_s: done(unlimited),
            limited_done_s: done(limited),
        })
    }
}

/// Arrivals per second from the first of sorted `times_ns` to the last.
fn span_rate(times_ns: &[u64]) -> Option<f64> {
    let (first, last) = (times_ns.first()?, times_ns.last()?);
    let span = (last - first) as f64 / 1e9;
    (span > 0.0).then(|| (times_ns.len() - 1) as f64 / span)
}

/// Arrivals per second between the 10th and the 90th percentile of sorted
/// `times_ns`, and the seconds between them; None with fewer than 10.
fn steady_rate(times_ns: &[u64]) -> Option<(f64, f64)> {
    let n = times_ns.len();
    if n < 10 {
        return None;
    }
    let (from, to) = (n / 10, n - 1 - n / 10);
    let seconds = (times_ns[to] - times_ns[from]) as f64 / 1e9;
    (seconds > 0.0).then(|| ((to - from) as f64 / seconds, seconds))
}

/// The most of sorted `times_ns` within any window of `window_ns`.
fn most_within(times_ns: &[u64], window_ns: u64) -> u64 {
    let mut most = 0;
    let mut start = 0;
    for (end, t) in times_ns.iter().enumerate() {
        while t - times_ns[start] >= window_ns {
            start += 1;
        }
        most = most.max(end + 1 - start);
    }
    most as u64
}

/// A goal of issue 14 and whether it was met.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: String,
    /// The same, short, for the table.
    pub target: String,
    pub value: Option<f64>,
    pub met: Option<bool>,
    /// Why it could not be judged, when that is known (a scenario it
    /// compares with was not run).
    pub unjudged: Option<String>,
}

impl Goal {
    fn new(goal: &str, target: &str, value: Option<f64>, met: impl Fn(f64) -> bool) -> Self {
        Self {
            goal: goal.to_owned(),
            target: target.to_owned(),
            value,
            met: value.filter(|v| v.is_finite()).map(met),
            unjudged: None,
        }
    }

    /// A goal on a ratio to scenario `base`'s rate: it can't be judged
    /// when `base` did not run (or did not finish) in the same invocation.
    fn against(
        base: char,
        base_rate: Option<f64>,
        goal: &str,
        target: &str,
        value: Option<f64>,
        met: impl Fn(f64) -> bool,
    ) -> Self {
        let mut g = Self::new(goal, target, value, met);
        if base_rate.is_none() {
            g.unjudged = Some(format!(
                "can't be judged: {base} did not run to the end in this invocation"
            ));
        }
        g
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

/// Gives every scenario its goals from issue 14 (d has none): throughput
/// as a ratio to the broker ceiling, e against c, latency for f and g; and
/// from issue 17: h's rate against a and its order, i's limited rate and
/// its unlimited neighbour's rate against a. `batch` is the events per
/// call of a: single POSTs have a lower goal.
pub fn set_goals(scenarios: &mut [ScenarioReport], batch: u64) {
    // Only a scenario that delivered everything sets a bar for others.
    let rate = |key: char| {
        scenarios
            .iter()
            .find(|s| s.key == key && s.complete)
            .and_then(|s| s.deliveries_per_s)
    };
    let (a, c) = (rate('a'), rate('c'));
    for s in scenarios.iter_mut() {
        let ratio = s.ratio_to_ceiling;
        let p99 = s.latency_ms.as_ref().map(|l| l.p99);
        let to = |base: Option<f64>| s.deliveries_per_s.zip(base).map(|(x, b)| x / b);
        s.goals = match s.key {
            'a' if batch == 1 => vec![Goal::new(
                "a (single POSTs): deliveries/s >= 0.3 x broker ceiling",
                "/ceil >= 0.3",
                ratio,
                |v| v >= 0.3,
            )],
            'a' => vec![Goal::new(
                "a: deliveries/s >= 0.35 x broker ceiling",
                "/ceil >= 0.35",
                ratio,
                |v| v >= 0.35,
            )],
            'b' => vec![Goal::new(
                "b: deliveries/s >= 0.35 x broker ceiling",
                "/ceil >= 0.35",
                ratio,
                |v| v >= 0.35,
            )],
            'c' => vec![Goal::new(
                "c: deliveries/s >= 0.5 x broker ceiling",
                "/ceil >= 0.5",
                ratio,
                |v| v >= 0.5,
            )],
            'e' => vec![Goal::against(
                'c',
                c,
                "e: deliveries/s within 10% of c (e / c >= 0.9)",
                "e/c >= 0.9",
                to(c),
                |v| v >= 0.9,
            )],
            'f' => vec![Goal::new(
                "f: p99 latency <= 20 ms",
                "p99 <= 20 ms",
                p99,
                |v| v <= 20.0,
            )],
            'g' => vec![Goal::new(
                "g: p99 latency <= 10 ms",
                "p99 <= 10 ms",
                p99,
                |v| v <= 10.0,
            )],
            'h' => vec![
                Goal::against(
                    'a',
                    a,
                    "h: ordered, 1,000 keys: deliveries/s >= 0.7 x a",
                    "h/a >= 0.7",
                    to(a),
                    |v| v >= 0.7,
                ),
                Goal::new(
                    "h: arrivals out of order per key = 0",
                    "out of order 0",
                    s.out_of_order.map(|n| n as f64),
                    |v| v == 0.0,
                ),
            ],
            'i' => {
                let limited = s.rate_limited.as_ref();
                let limit = limited.map_or(0.0, |l| f64::from(l.limit));
                vec![
                    Goal::new(
                        &format!("i: limited endpoint's steady rate / {limit:.0}/s in 0.9..1.1"),
                        "lim/s ±10%",
                        limited.and_then(|l| l.steady_per_s).map(|r| r / limit),
                        |v| (0.9..=1.1).contains(&v),
                    ),
                    Goal::against(
                        'a',
                        a,
                        "i: unlimited endpoint's deliveries/s >= 0.7 x a",
                        "unl/a >= 0.7",
                        limited
                            .and_then(|l| l.unlimited_per_s)
                            .zip(a)
                            .map(|(u, a)| u / a),
                        |v| v >= 0.7,
                    ),
                ]
            }
            'j' => vec![Goal::against(
                'a',
                a,
                "j: deliveries/s with a schema >= 0.9 x a (issue 19)",
                "j/a >= 0.9",
                to(a),
                |v| v >= 0.9,
            )],
            _ => Vec::new(),
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
        .flat_map(|s| s.goals.iter().cloned())
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
    println!("goals (issues 14, 17 and 19):");
    for g in &report.goals {
        println!(
            "  {:<56} {:>9}  {}",
            g.goal,
            num(g.value, 3),
            match (g.met, &g.unjudged) {
                (Some(true), _) => "met",
                (Some(false), _) => "MISSED",
                (None, Some(why)) => why.as_str(),
                (None, None) => "not measured",
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
            .goals
            .iter()
            .map(|g| format!("{} {}", g.target, g.verdict()))
            .collect::<Vec<_>>()
            .join(", ");
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
        if let Some(n) = s.out_of_order {
            extra.push(format!(
                "{n} arrivals out of order per key at the ordered endpoint"
            ));
        }
        if let Some(l) = &s.rate_limited {
            extra.push(format!(
                "limited ({}/s): steady {}/s over {} s (10th to 90th percentile arrival), \
                 at most {} in any 10 s, done {} s after the first send; \
                 unlimited: {} deliveries/s, done after {} s",
                l.limit,
                num(l.steady_per_s, 1),
                num(l.steady_s, 1),
                l.most_in_10s,
                num(l.limited_done_s, 1),
                num(l.unlimited_per_s, 0),
                num(l.unlimited_done_s, 1),
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
    use crate::receiver::Endpoint;
    use crate::scenario::{Ingest, Spec};

    fn scenario(key: char, deliveries_per_s: f64, ratio: f64) -> ScenarioReport {
        let spec = Spec {
            key,
            title: String::new(),
            ingest: Ingest::HttpBatch,
            ingest_detail: String::new(),
            batch: 100,
            endpoints: vec![Endpoint::healthy()],
            filler: 0,
            events: 10,
            rate: None,
            delivery: Default::default(),
            schema: None,
        };
        let mut report = ScenarioReport::new(&spec);
        report.deliveries_per_s = Some(deliveries_per_s);
        report.ratio_to_ceiling = Some(ratio);
        report.complete = true;
        report
    }

    /// The first goal's verdict of each scenario.
    fn verdicts(scenarios: &[ScenarioReport]) -> Vec<(char, Option<bool>)> {
        scenarios
            .iter()
            .map(|s| (s.key, s.goals.first().and_then(|g| g.met)))
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
        assert!(alone[0].goals[0].unjudged.is_some());
    }

    #[test]
    fn h_is_held_to_a_and_to_order() {
        let mut h = scenario('h', 700.0, 0.1);
        h.out_of_order = Some(0);
        let mut run = vec![scenario('a', 1000.0, 0.3), h.clone()];
        set_goals(&mut run, 100);
        let h_goals: Vec<_> = run[1].goals.iter().map(|g| g.met).collect();
        assert_eq!(h_goals, vec![Some(true), Some(true)]);
        // Without a, the rate can't be judged; the order still can.
        h.out_of_order = Some(3);
        let mut alone = vec![h];
        set_goals(&mut alone, 100);
        let goals = &alone[0].goals;
        assert_eq!((goals[0].met, goals[1].met), (None, Some(false)));
        assert!(
            goals[0]
                .unjudged
                .as_deref()
                .unwrap()
                .contains("a did not run")
        );
    }

    #[test]
    fn i_is_held_to_its_limit_and_its_neighbour_to_a() {
        let mut i = scenario('i', 400.0, 0.02);
        i.rate_limited = Some(RateLimited {
            limit: 200,
            steady_per_s: Some(212.0),
            steady_s: Some(16.0),
            most_in_10s: 2_100,
            unlimited_per_s: Some(650.0),
            unlimited_done_s: Some(6.0),
            limited_done_s: Some(20.0),
        });
        let mut run = vec![scenario('a', 1000.0, 0.3), i];
        set_goals(&mut run, 100);
        let met: Vec<_> = run[1].goals.iter().map(|g| g.met).collect();
        // 212/s is within 10% of 200; 650/s is under 0.7 x 1000.
        assert_eq!(met, vec![Some(true), Some(false)]);
    }

    #[test]
    fn the_limited_rate_is_taken_over_the_steady_part() {
        // A burst of 20 at once, then one every 5 ms (200/s) for 10 s.
        let mut times: Vec<u64> = vec![0; 20];
        times.extend((1..=2000).map(|n| n * 5_000_000));
        let (rate, seconds) = steady_rate(&times).unwrap();
        assert!((rate - 200.0).abs() < 1.0, "{rate}");
        assert!(seconds > 7.0 && seconds < 9.0, "{seconds}");
        assert_eq!(most_within(&times, 10_000_000_000), 2019);
        assert_eq!(most_within(&times, 1_000_000_000), 219);
        assert!((span_rate(&times).unwrap() - 201.9).abs() < 0.1);
        assert_eq!(steady_rate(&times[..5]), None);
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
