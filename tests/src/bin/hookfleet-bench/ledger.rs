//! The ledger at volume: seeds a database with millions of attempts spread
//! over the retention period (events with fan-out 2, one endpoint in ten
//! deliveries a hot one, some deliveries retried, some exhausted), starts
//! the ledger on it, and times each read query of the API over HTTP.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use hookfleet_contract::TenantId;
use hookfleet_db::TokenStore;
use hookfleet_ledger::retention::Retention;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::Common;

#[derive(Debug, Clone, Args)]
pub struct LedgerArgs {
    #[command(flatten)]
    common: Common,
    /// Attempts to seed (about 1.55 per delivery, 2 deliveries per event).
    #[arg(long, default_value_t = 10_000_000)]
    attempts: u64,
    /// Registered endpoints; the first gets one delivery in ten.
    #[arg(long, default_value_t = 1000)]
    endpoints: u64,
    /// Days of history, ending now.
    #[arg(long, default_value_t = 30)]
    days: u64,
    /// Timed calls of each query (after two untimed ones).
    #[arg(long, default_value_t = 30)]
    samples: usize,
    /// Keep the seeded database (`hfbench_ledger_<attempts>`) and reuse it
    /// on the next run with the same --attempts, --endpoints and --days.
    #[arg(long)]
    keep: bool,
    /// The machine-readable report.
    #[arg(long, default_value = "target/bench/ledger.json")]
    out: std::path::PathBuf,
}

/// The seeded history's shape, checked before a kept database is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    attempts: u64,
    endpoints: u64,
    days: u64,
}

impl Shape {
    /// Deliveries giving about `attempts` attempts (see [`ATTEMPT_COUNT`]).
    fn deliveries(&self) -> u64 {
        (self.attempts as f64 / 1.55).ceil() as u64 / 2 * 2
    }
}

/// Attempts of delivery `i`: 3% exhausted after 8, 17% succeeded on the
/// third, the rest on the first (1.55 on average).
const ATTEMPT_COUNT: &str = "CASE WHEN abs(hashint8(i)) % 100 < 3 THEN 8
                                  WHEN abs(hashint8(i)) % 100 < 20 THEN 3 ELSE 1 END";
/// The endpoint of delivery `i` (two per event, never the same one twice).
const ENDPOINT: &str =
    "'ep_bench_' || CASE WHEN i % 10 = 0 THEN 0 ELSE 1 + (i * 7919) % ($6::int8 - 1) END";
/// The creation time of event `i / 2` of $5 / 2: spread evenly from $3 over
/// $4 seconds.
const CREATED: &str = "to_timestamp($3::float8 + (i / 2)::float8 / ($5::int8 / 2) * $4::float8)";

#[derive(Debug, Serialize)]
struct QueryReport {
    name: &'static str,
    call: String,
    rows: usize,
    p50_ms: f64,
    p95_ms: f64,
    max_ms: f64,
}

#[derive(Debug, Serialize)]
struct LedgerReport {
    attempts: i64,
    deliveries: i64,
    events: i64,
    partitions: i64,
    database_mib: i64,
    seed_seconds: Option<f64>,
    queries: Vec<QueryReport>,
    /// Three runs of the endpoint health sweep, over every endpoint.
    health_sweep_ms: Vec<f64>,
}

pub async fn run(args: LedgerArgs) -> anyhow::Result<()> {
    let shape = Shape {
        attempts: args.attempts,
        endpoints: args.endpoints.max(2),
        days: args.days.max(1),
    };
    let name = format!("hfbench_ledger_{}", shape.attempts);
    let admin = &args.common.database_url;
    let url = hookfleet_db::with_database(admin, &name);
    let work = async {
        let mut seed_seconds = None;
        if args.keep && seeded_shape(&url).await == Some(shape) {
            println!("reusing the seeded database {name}");
            let started = Instant::now();
            hookfleet_db::migrate(&hookfleet_config::DatabaseSettings {
                url: url.clone(),
                ..Default::default()
            })
            .await?;
            println!("migrated in {:.1} s", started.elapsed().as_secs_f64());
        } else {
            hookfleet_db::drop_database(admin, &name).await?;
            hookfleet_db::create_database(admin, &name).await?;
            hookfleet_db::migrate(&hookfleet_config::DatabaseSettings {
                url: url.clone(),
                ..Default::default()
            })
            .await?;
            let started = Instant::now();
            seed(&url, shape).await.context("seeding")?;
            seed_seconds = Some(started.elapsed().as_secs_f64());
        }
        measure(&args, &url, seed_seconds).await
    };
    // A kept database whose seeding was interrupted is seeded again next
    // time (its `bench_seed` row is not marked done).
    let result = tokio::select! {
        result = work => result,
        signal = hookfleet_tests::fleet::interrupted() => Err(crate::Interrupted(signal).into()),
    };
    if !args.keep {
        hookfleet_db::drop_database(admin, &name).await?;
    }
    result
}

async fn seeded_shape(url: &str) -> Option<Shape> {
    let client = hookfleet_tests::fleet::connect_db(url).await.ok()?;
    let row = client
        .query_opt(
            "SELECT attempts, endpoints, days FROM bench_seed WHERE done",
            &[],
        )
        .await
        .ok()??;
    Some(Shape {
        attempts: row.get::<_, i64>(0) as u64,
        endpoints: row.get::<_, i64>(1) as u64,
        days: row.get::<_, i64>(2) as u64,
    })
}

async fn seed(url: &str, shape: Shape) -> anyhow::Result<()> {
    let client = hookfleet_tests::fleet::connect_db(url).await?;
    client
        .batch_execute(
            "SET synchronous_commit = off;
             CREATE TABLE bench_seed (attempts int8, endpoints int8, days int8,
                                      done boolean NOT NULL DEFAULT false);",
        )
        .await?;
    client
        .execute(
            "INSERT INTO bench_seed VALUES ($1, $2, $3)",
            &[
                &(shape.attempts as i64),
                &(shape.endpoints as i64),
                &(shape.days as i64),
            ],
        )
        .await?;
    let pool = hookfleet_db::pool(&hookfleet_config::DatabaseSettings {
        url: url.to_owned(),
        pool_size: 1,
        migrate_on_start: false,
        ..Default::default()
    })?;
    let first_day: String = client
        .query_one(
            "SELECT to_char(((now() AT TIME ZONE 'UTC') - make_interval(days => $1))::date,
                            'YYYY-MM-DD')",
            &[&(shape.days as i32)],
        )
        .await?
        .get(0);
    let last_day: String = client
        .query_one(
            "SELECT to_char((now() AT TIME ZONE 'UTC')::date + 2, 'YYYY-MM-DD')",
            &[],
        )
        .await?
        .get(0);
    Retention {
        pool,
        period: Duration::from_secs((shape.days + 1) * 86_400),
        check_every: Duration::from_secs(3600),
    }
    .make_days(&first_day, &last_day)
    .await?;
    client
        .execute(
            "INSERT INTO endpoints (id, tenant, url, event_types, secret)
             SELECT 'ep_bench_' || n, 'bench', 'https://bench.invalid/' || n, '{*}', 'sealed'
             FROM generate_series(0, $1::int8 - 1) n",
            &[&(shape.endpoints as i64)],
        )
        .await?;

    let deliveries = shape.deliveries() as i64;
    let span = (shape.days * 86_400) as f64;
    let start: f64 = client
        .query_one("SELECT extract(epoch FROM now())::float8 - $1", &[&span])
        .await?
        .get(0);
    let endpoints = shape.endpoints as i64;
    let chunks = 100_i64;
    let per_chunk = (deliveries / chunks + 1) / 2 * 2;
    println!(
        "seeding {} attempts ({} deliveries, {} events, {} endpoints, {} days)",
        shape.attempts,
        deliveries,
        deliveries / 2,
        shape.endpoints,
        shape.days
    );
    let started = Instant::now();
    let events_sql = format!(
        "INSERT INTO events (tenant, id, event_type, payload, created_at, routed_at, fan_out)
         SELECT 'bench', 'evt_' || md5((i / 2)::text), 'order.created',
                '{{\"order_id\": ' || i / 2 || ', \"customer\": \"cus_' || md5(i::text)
                    || '\", \"amount\": 4200, \"currency\": \"eur\", \"items\": [1, 2, 3]}}',
                {CREATED}, {CREATED}, 2
         FROM generate_series($1::int8, $2::int8, 2) i"
    );
    let deliveries_sql = format!(
        "INSERT INTO deliveries (id, tenant, event_id, endpoint_id, state, attempts,
                                 last_status_code, last_error, updated_at, event_created_at)
         SELECT 'dlv_' || md5(i::text), 'bench', 'evt_' || md5((i / 2)::text), {ENDPOINT},
                CASE WHEN n = 8 THEN 'exhausted' ELSE 'succeeded' END, n,
                CASE WHEN n = 8 THEN 503 ELSE 200 END,
                CASE WHEN n = 8 THEN 'HTTP 503' END,
                {CREATED} + make_interval(mins => (n - 1) * (n - 1)), {CREATED}
         FROM (SELECT i, {ATTEMPT_COUNT} AS n FROM generate_series($1::int8, $2::int8) i) d"
    );
    let attempts_sql = format!(
        "INSERT INTO attempts (id, delivery_id, tenant, event_id, endpoint_id, attempt, result,
                               status_code, error, started_at, duration_ms, trigger,
                               event_created_at)
         SELECT 'att_' || md5(i || '.' || a), 'dlv_' || md5(i::text), 'bench',
                'evt_' || md5((i / 2)::text), {ENDPOINT}, a,
                CASE WHEN a < n THEN 'retrying' WHEN n = 8 THEN 'exhausted' ELSE 'succeeded' END,
                CASE WHEN a < n THEN 500 WHEN n = 8 THEN 503 ELSE 200 END,
                CASE WHEN a < n THEN 'HTTP 500' WHEN n = 8 THEN 'HTTP 503' END,
                {CREATED} + make_interval(mins => (a - 1) * (a - 1)),
                20 + abs(hashint8(i * 8 + a)) % 300, 'scheduled', {CREATED}
         FROM (SELECT i, {ATTEMPT_COUNT} AS n FROM generate_series($1::int8, $2::int8) i) d,
              generate_series(1, d.n) a"
    );
    let events = client.prepare(&events_sql).await?;
    let deliveries_insert = client.prepare(&deliveries_sql).await?;
    let attempts_insert = client.prepare(&attempts_sql).await?;
    let mut low = 0_i64;
    let mut written = 0_u64;
    let mut chunk = 0;
    while low < deliveries {
        let high = (low + per_chunk).min(deliveries) - 1;
        let params: [&(dyn hookfleet_db::tokio_postgres::types::ToSql + Sync); 6] =
            [&low, &high, &start, &span, &deliveries, &endpoints];
        client.execute(&events, &params[..5]).await?;
        client.execute(&deliveries_insert, &params).await?;
        written += client.execute(&attempts_insert, &params).await?;
        low = high + 1;
        chunk += 1;
        if chunk % 10 == 0 || low >= deliveries {
            let elapsed = started.elapsed().as_secs_f64();
            println!(
                "  {written} attempts written in {elapsed:.0} s ({:.0}/s)",
                written as f64 / elapsed
            );
        }
    }
    // The attempts bypassed the recorder: roll them up as it would have.
    let started = Instant::now();
    client
        .batch_execute("SELECT hookfleet_rebuild_endpoint_stats()")
        .await?;
    println!(
        "  hourly endpoint stats rolled up in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    client
        .batch_execute("ANALYZE; UPDATE bench_seed SET done = true;")
        .await?;
    Ok(())
}

/// Times the ledger's read queries and its health sweep on the seeded
/// database, then prints and writes the report.
async fn measure(args: &LedgerArgs, url: &str, seed_seconds: Option<f64>) -> anyhow::Result<()> {
    let client = hookfleet_tests::fleet::connect_db(url).await?;
    let counts = table_counts(&client).await?;
    let token = tenant_token(url).await?;
    let ledger = start_ledger(args, url, &token).await?;
    let queries = time_queries(args, &client, &ledger).await?;
    let sweeps = time_health_sweeps(&ledger.settings).await?;
    ledger.cancel.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), ledger.running.task).await;
    crate::scenario::delete_topology(&ledger.settings.amqp.url, &ledger.settings.amqp.prefix).await;

    let report = LedgerReport {
        attempts: counts.0,
        deliveries: counts.1,
        events: counts.2,
        partitions: counts.3,
        database_mib: counts.4,
        seed_seconds,
        queries,
        health_sweep_ms: sweeps,
    };
    print_report(&report, args.samples);
    hookfleet_tests::fleet::write_report(&args.out, &report)?;
    Ok(())
}

/// Rows of attempts, deliveries and events, their partitions, and the
/// database's size in MiB.
async fn table_counts(
    client: &hookfleet_db::tokio_postgres::Client,
) -> anyhow::Result<(i64, i64, i64, i64, i64)> {
    let count = |sql: &'static str| {
        let client = &client;
        async move { anyhow::Ok(client.query_one(sql, &[]).await?.get::<_, i64>(0)) }
    };
    Ok((
        count("SELECT count(*) FROM attempts").await?,
        count("SELECT count(*) FROM deliveries").await?,
        count("SELECT count(*) FROM events").await?,
        count(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
             WHERE p.relname IN ('events', 'deliveries', 'attempts')",
        )
        .await?,
        count("SELECT (pg_database_size(current_database()) / 1048576)::int8").await?,
    ))
}

/// A token for the seeded tenant, made straight in the database.
async fn tenant_token(url: &str) -> anyhow::Result<String> {
    let pool = hookfleet_db::pool(&hookfleet_config::DatabaseSettings {
        url: url.to_owned(),
        pool_size: 2,
        migrate_on_start: false,
        ..Default::default()
    })?;
    let tokens = TokenStore::new(pool, "");
    let tenant = TenantId::parse("bench").map_err(|e| anyhow::anyhow!("{e}"))?;
    tokens.create_tenant(&tenant, "benchmark").await?;
    Ok(tokens
        .issue_token(&tenant, None)
        .await?
        .context("a token for the bench tenant")?
        .0
        .token)
}

/// The ledger running in-process against the seeded database (its broker
/// side idle), and a client with the tenant's token.
struct RunningLedger {
    settings: hookfleet_ledger::Settings,
    cancel: CancellationToken,
    running: hookfleet_ledger::Running,
    base: String,
    http: reqwest::Client,
}

async fn start_ledger(args: &LedgerArgs, url: &str, token: &str) -> anyhow::Result<RunningLedger> {
    let mut settings = hookfleet_ledger::Settings::default();
    settings.database.url = url.to_owned();
    settings.database.migrate_on_start = false;
    settings.listen.host = "127.0.0.1".into();
    settings.listen.port = 0;
    settings.amqp.url = args.common.amqp_url.clone();
    settings.amqp.prefix = format!("hfbench_ledger_{}", std::process::id());
    settings.retention.period = std::time::Duration::from_secs(86_400 * (args.days + 1));
    settings.secrets.key = hookfleet_signing::Sealer::generate_key();
    let cancel = CancellationToken::new();
    let running = hookfleet_ledger::start(settings.clone(), cancel.clone()).await?;
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse()?,
            )]
            .into_iter()
            .collect(),
        )
        .build()?;
    Ok(RunningLedger {
        settings,
        cancel,
        running,
        base,
        http,
    })
}

/// Each read query of the ledger's API, called `--samples` times (after
/// two warm-up calls) with ids sampled from across the period: its rows
/// and latency percentiles.
async fn time_queries(
    args: &LedgerArgs,
    client: &hookfleet_db::tokio_postgres::Client,
    ledger: &RunningLedger,
) -> anyhow::Result<Vec<QueryReport>> {
    let (base, http) = (&ledger.base, &ledger.http);
    // Sample ids: events from across the period, a hot and a usual endpoint.
    let sample_events: Vec<String> = client
        .query(
            // One page in a thousand, or (a small history) any page.
            "(SELECT id FROM events TABLESAMPLE SYSTEM (0.1) LIMIT $1)
             UNION ALL
             (SELECT id FROM events TABLESAMPLE SYSTEM (100) LIMIT $1)
             LIMIT $1",
            &[&(args.samples as i64 + 2)],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    anyhow::ensure!(!sample_events.is_empty(), "no events to sample");
    let (hot, usual) = ("ep_bench_0", "ep_bench_17");
    let day = |days_ago: u64| {
        humantime::format_rfc3339_seconds(
            std::time::SystemTime::now() - Duration::from_secs(days_ago * 86_400),
        )
        .to_string()
    };
    let older_page = {
        let page: serde_json::Value = http
            .get(format!("{base}/v1/endpoints/{hot}/attempts?limit=100"))
            .send()
            .await?
            .json()
            .await?;
        page["next"].as_str().unwrap_or_default().to_owned()
    };
    let (since_1d, since_7d, since_10d, until_9d) = (day(1), day(7), day(10), day(9));
    let event = |n: usize| &sample_events[n % sample_events.len()];
    // Each query with its path (the report's `call`) and its URL per call.
    type Urls<'a> = Box<dyn Fn(usize) -> String + 'a>;
    let calls: Vec<(&'static str, &'static str, Urls)> = vec![
        (
            "event with its deliveries and attempts",
            "/v1/events/{id}",
            Box::new(|n| format!("/v1/events/{}", event(n))),
        ),
        (
            "attempts of an event",
            "/v1/events/{id}/attempts",
            Box::new(|n| format!("/v1/events/{}/attempts", event(n))),
        ),
        (
            "tenant's attempts at every endpoint, newest page of 50",
            "/v1/attempts",
            Box::new(|_| "/v1/attempts".to_owned()),
        ),
        (
            "tenant's exhausted attempts, last 24 hours",
            "/v1/attempts",
            Box::new(|_| format!("/v1/attempts?result=exhausted&since={since_1d}")),
        ),
        (
            "hot endpoint's attempts, newest page of 50",
            "/v1/endpoints/{id}/attempts",
            Box::new(|_| format!("/v1/endpoints/{hot}/attempts")),
        ),
        (
            "hot endpoint's attempts, second page of 100 (cursor)",
            "/v1/endpoints/{id}/attempts",
            Box::new(|_| format!("/v1/endpoints/{hot}/attempts?limit=100&after={older_page}")),
        ),
        (
            "hot endpoint's exhausted attempts, last 7 days",
            "/v1/endpoints/{id}/attempts",
            Box::new(|_| format!("/v1/endpoints/{hot}/attempts?result=exhausted&since={since_7d}")),
        ),
        (
            "usual endpoint's retrying attempts, one day 10 days ago",
            "/v1/endpoints/{id}/attempts",
            Box::new(|_| {
                format!(
                    "/v1/endpoints/{usual}/attempts?result=retrying&since={since_10d}&until={until_9d}"
                )
            }),
        ),
        (
            "hot endpoint's stats, last 24 hours",
            "/v1/endpoints/{id}/stats",
            Box::new(|_| format!("/v1/endpoints/{hot}/stats")),
        ),
        (
            "usual endpoint's stats, last 7 days",
            "/v1/endpoints/{id}/stats",
            Box::new(|_| format!("/v1/endpoints/{usual}/stats?since={since_7d}")),
        ),
        (
            "hot endpoint's stats, last 7 days",
            "/v1/endpoints/{id}/stats",
            Box::new(|_| format!("/v1/endpoints/{hot}/stats?since={since_7d}")),
        ),
    ];
    let mut queries = Vec::new();
    for (name, path, call) in &calls {
        let mut times = Vec::new();
        let mut rows = 0;
        for n in 0..args.samples + 2 {
            let url = format!("{base}{}", call(n));
            let started = Instant::now();
            let response = http.get(&url).send().await?;
            let status = response.status();
            let body: serde_json::Value = response.json().await?;
            let took = started.elapsed();
            anyhow::ensure!(status.is_success(), "{url}: {status} {body}");
            rows = body["data"]
                .as_array()
                .map(|d| d.len())
                .or_else(|| body["attempts"].as_i64().map(|n| n as usize))
                .unwrap_or(1);
            if n >= 2 {
                times.push(took.as_secs_f64() * 1000.0);
            }
        }
        times.sort_by(f64::total_cmp);
        let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
        queries.push(QueryReport {
            name,
            call: (*path).to_owned(),
            rows,
            p50_ms: round2(at(0.5)),
            p95_ms: round2(at(0.95)),
            max_ms: round2(at(1.0)),
        });
    }
    Ok(queries)
}

/// The endpoint health sweep (every minute in the ledger) over every
/// registered endpoint, three times; none of the seeded ones is to be
/// disabled.
async fn time_health_sweeps(settings: &hookfleet_ledger::Settings) -> anyhow::Result<Vec<f64>> {
    let health = hookfleet_ledger::health::EndpointHealth {
        pool: hookfleet_db::pool(&settings.database)?,
        link: hookfleet_topology::Link::default(),
        topology: hookfleet_topology::Topology::from_settings(&settings.amqp),
        stamper: hookfleet_signing::Stamper::from_base64(&settings.secrets.key)?,
        disable_after: Duration::from_secs(5 * 86_400),
        sweep_every: Duration::from_secs(60),
    };
    let mut sweeps = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        health.sweep(None).await;
        sweeps.push(round2(started.elapsed().as_secs_f64() * 1000.0));
    }
    Ok(sweeps)
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn print_report(report: &LedgerReport, samples: usize) {
    println!();
    println!(
        "ledger: {} attempts, {} deliveries, {} events in {} partitions, database {} MiB{}",
        report.attempts,
        report.deliveries,
        report.events,
        report.partitions,
        report.database_mib,
        report
            .seed_seconds
            .map(|s| format!(", seeded in {s:.0} s"))
            .unwrap_or_default()
    );
    println!("each query {samples} times over HTTP, after 2 warm-up calls; milliseconds:");
    println!(
        "{:<58} {:>6} {:>8} {:>8} {:>8}",
        "query", "rows", "p50", "p95", "max"
    );
    for q in &report.queries {
        println!(
            "{:<58} {:>6} {:>8.2} {:>8.2} {:>8.2}",
            q.name, q.rows, q.p50_ms, q.p95_ms, q.max_ms
        );
    }
    println!(
        "endpoint health sweep over every endpoint (each minute): {:?} ms",
        report.health_sweep_ms
    );
}
