//! `hookfleet-bench`: the measuring half of `scripts/bench`.
//!
//! It measures the broker's raw ceiling, then for each scenario starts the
//! whole fleet (producer, N workers, ledger) as separate processes from the
//! release binaries with a database and a topology prefix of its own,
//! drives load into it, measures deliveries per second, latency, ledger lag
//! and each process's CPU and peak RSS, and removes everything it created.
//! It only measures and prints; it asserts nothing.

#[path = "hookfleet-bench/ceiling.rs"]
mod ceiling;
#[path = "hookfleet-bench/ledger.rs"]
mod ledger;
#[path = "hookfleet-bench/load.rs"]
mod load;
#[path = "hookfleet-bench/receiver.rs"]
mod receiver;
#[path = "hookfleet-bench/report.rs"]
mod report;
#[path = "hookfleet-bench/scenario.rs"]
mod scenario;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(about = "Benchmarks the hookfleet fleet against the local RabbitMQ and PostgreSQL")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure the broker ceiling and run the scenarios.
    Run(Box<RunArgs>),
    /// Seed the ledger with millions of attempts and time its read queries.
    Ledger(Box<ledger::LedgerArgs>),
    /// Measure the broker ceiling under several settings, to choose its
    /// defaults.
    Ceiling(Box<ceiling::GridArgs>),
    /// Remove the databases, queues and exchanges of a run (idempotent).
    Cleanup(Common),
}

/// Where the infrastructure is, and the run's name.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Names this run's databases (`<run-id>_<scenario>`), topology
    /// prefixes (the same) and the ceiling queue (`<run-id>_ceiling`).
    /// Lowercase letters, digits and `_`.
    #[arg(long, env = "HOOKFLEET_BENCH_RUN_ID")]
    run_id: Option<String>,
    #[arg(
        long,
        env = "HOOKFLEET_BENCH_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// A database URL of a role allowed to create databases; the run's
    /// databases are made next to it.
    #[arg(
        long,
        env = "HOOKFLEET_BENCH_DATABASE_URL",
        default_value = "postgres://hookfleet:hookfleet@127.0.0.1:5432/hookfleet"
    )]
    database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Where hookfleet-producer, -worker and -ledger are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Worker processes.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Events per scenario (default: sized per scenario so the whole run
    /// takes about six minutes on two idle cores: a, b, h, j 40000; c, d, e
    /// 8000; f, g 30 s worth at their rates; i 20 s worth at its limit.
    /// --quick: 1000, 100, 3 s, 3 s).
    /// Given, it applies to every scenario: i then lasts events / limit s.
    #[arg(long)]
    events: Option<u64>,
    /// Scenarios to run, comma-separated: a,b,c,d,e,f,g,h,i,j (h: a to an
    /// ordered endpoint, events with ordering keys from 1,000; i: fan-out
    /// 2 to an endpoint with a rate limit and one without; j: a with a
    /// 20-property JSON Schema on the event type).
    #[arg(long, default_value = "a,b,c,d,e,f,g,h,i,j")]
    scenarios: String,
    /// Small counts, for a smoke run.
    #[arg(long)]
    quick: bool,
    /// The machine-readable report.
    #[arg(long, default_value = "target/bench/report.json")]
    out: PathBuf,
    /// Service logs go to <log-dir>/<run-id>/.
    #[arg(long, default_value = "target/bench/logs")]
    log_dir: PathBuf,
    /// Appends the pid of every process started, for the script's trap.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// The commit benchmarked, for the report.
    #[arg(long, default_value = "unknown")]
    commit: String,
    /// The machine's core count, for the report (default: what this
    /// process may use).
    #[arg(long)]
    cores: Option<usize>,
    /// amqp.prefetch of every service (default: the services' own, so the
    /// headline figures are what a new user gets).
    #[arg(long)]
    prefetch: Option<u16>,
    /// delivery.max_in_flight_per_endpoint of the workers (default: the
    /// service's own).
    #[arg(long)]
    max_in_flight: Option<u32>,
    /// Most healthy deliveries outstanding (sent, not yet arrived) at once
    /// in the unpaced scenarios.
    #[arg(long, default_value_t = 4000)]
    window: u64,
    /// Events per call in scenarios a, c, d, e (1 to 100): 1 uses
    /// `POST /v1/events`, more `POST /v1/events/batch`. The goal of a is
    /// 0.3 x ceiling with 1 (single POSTs), 0.35 with batches.
    #[arg(long, default_value_t = 100)]
    batch: u64,
    /// Concurrent HTTP calls of the unpaced load (a, c, d, e).
    #[arg(long, default_value_t = 8)]
    http_concurrency: usize,
    /// Unconfirmed AMQP publishes allowed at once in scenario b.
    #[arg(long, default_value_t = 256)]
    confirm_window: usize,
    /// Events per second for scenario f (default: half of what scenario a
    /// achieved in this run, or 250 without a).
    #[arg(long)]
    paced_rate: Option<f64>,
    /// Events per call in scenario f: 1 uses `POST /v1/events`, more the
    /// batch endpoint.
    #[arg(long, default_value_t = 1)]
    paced_batch: u64,
    /// Events per second for scenario g (single `POST /v1/events`).
    #[arg(long, default_value_t = 400.0)]
    g_rate: f64,
    /// The `rate_limit` (attempts per second) of scenario i's limited
    /// endpoint; its goal is an arrival rate within 10% of it.
    #[arg(long, default_value_t = 200)]
    i_rate_limit: u32,
    /// Endpoints registered besides the 10 subscribed ones in scenario e
    /// (default 99990; --quick 9990).
    #[arg(long)]
    filler: Option<u64>,
    #[command(flatten)]
    ceiling: ceiling::CeilingArgs,
    /// Skip the broker ceiling.
    #[arg(long)]
    skip_ceiling: bool,
    /// Extra service settings, SECTION__KEY=VALUE (HOOKFLEET__ is added),
    /// given to every service; repeatable. Example: --set RECORDER__BATCH_SIZE=512.
    #[arg(long = "set", value_name = "SECTION__KEY=VALUE")]
    set: Vec<String>,
    /// Extra environment variables for every service process, KEY=VALUE;
    /// repeatable. Example: --env TOKIO_WORKER_THREADS=1.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Give up waiting when no delivery arrived for this many seconds.
    #[arg(long, default_value_t = 60)]
    stall_secs: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Cleanup(common) => {
                let run_id = hookfleet_tests::fleet::valid_run_id(common.run_id.as_deref())?;
                scenario::cleanup_run(&common, &run_id).await;
                Ok(())
            }
            Command::Run(args) => run(*args).await,
            Command::Ceiling(args) => ceiling::grid(*args).await,
            Command::Ledger(args) => ledger::run(*args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            match error.downcast_ref::<Interrupted>() {
                Some(_) => ExitCode::from(130),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// The run was stopped by a signal.
#[derive(Debug)]
struct Interrupted(&'static str);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted by {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

async fn run(mut args: RunArgs) -> anyhow::Result<()> {
    let run_id = hookfleet_tests::fleet::run_id_or_new(args.common.run_id.as_deref(), "hfbench")?;
    args.common.run_id = Some(run_id.clone());
    let common = args.common.clone();
    let outcome = tokio::select! {
        result = scenario::run_all(args, run_id.clone()) => result,
        signal = hookfleet_tests::fleet::interrupted() => Err(Interrupted(signal).into()),
    };
    // Whatever happened, nothing of this run stays behind. (An interrupted
    // run's fleet was stopped when its future was dropped.)
    if outcome.is_err() {
        eprintln!("removing the run's databases, queues and exchanges");
    }
    scenario::cleanup_run(&common, &run_id).await;
    outcome
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
