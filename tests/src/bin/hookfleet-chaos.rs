//! `hookfleet-chaos`: the orchestrating half of `scripts/chaos`.
//!
//! It runs the whole fleet (producer, workers, ledger) as processes with a
//! short retry schedule, in a database and topology prefix of its own,
//! sends a steady stream of events (most over `POST /v1/events`, a fifth
//! signed as GitHub signs them through an inbound source) to local
//! receivers that record every arrival and to an AMQP destination whose
//! queue it consumes, and meanwhile kills workers, restarts RabbitMQ, stops
//! PostgreSQL, makes endpoints flap, publishes malformed messages and
//! drains a worker with SIGTERM. With `--cluster-ctl`, it runs against a
//! three-node RabbitMQ cluster instead and the faults are node losses
//! (`cluster.rs`). Then it lets the system settle and checks
//! from the outside (receivers, ledger tables, dead-letter queue) that
//! nothing was lost and the ledger matches what the receivers saw. Exit 1
//! on any loss, mismatch or crash.

#[path = "hookfleet-chaos/check.rs"]
mod check;
#[path = "hookfleet-chaos/cluster.rs"]
mod cluster;
#[path = "hookfleet-chaos/destination.rs"]
mod destination;
#[path = "hookfleet-chaos/faults.rs"]
mod faults;
#[path = "hookfleet-chaos/inbound.rs"]
mod inbound;
#[path = "hookfleet-chaos/load.rs"]
mod load;
#[path = "hookfleet-chaos/order.rs"]
mod order;
#[path = "hookfleet-chaos/receiver.rs"]
mod receiver;
#[path = "hookfleet-chaos/run.rs"]
mod run;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(about = "Fault injection under load against the local RabbitMQ and PostgreSQL")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the fleet under load and faults, then check.
    Run(Box<RunArgs>),
    /// Remove the database, queues and exchanges of a run (idempotent).
    Cleanup(Common),
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Names the run's database and topology prefix. Lowercase letters,
    /// digits and `_`.
    #[arg(long, env = "HOOKFLEET_CHAOS_RUN_ID")]
    run_id: Option<String>,
    /// The broker; for a cluster, its nodes' URLs separated by commas.
    #[arg(
        long,
        env = "HOOKFLEET_CHAOS_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// A database URL of a role allowed to create databases.
    #[arg(
        long,
        env = "HOOKFLEET_CHAOS_DATABASE_URL",
        default_value = "postgres://hookfleet:hookfleet@127.0.0.1:5432/hookfleet"
    )]
    database_url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Profile {
    /// About 3 minutes; what scripts/test runs.
    Short,
    /// 10 minutes of load by default, a kill every 5 s.
    Long,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, value_enum, default_value = "short")]
    profile: Profile,
    /// Load (and fault) time, like 90s or 10m; default by profile (short
    /// 90s, long 10m).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Where hookfleet-producer, -worker and -ledger are.
    #[arg(long, default_value = "target/debug")]
    bin_dir: PathBuf,
    /// The script that stops and starts RabbitMQ and PostgreSQL.
    #[arg(long, default_value = "scripts/lib/infra-ctl")]
    infra_ctl: PathBuf,
    /// Run against the three-node cluster this script controls
    /// (scripts/lib/cluster-ctl, already up; --amqp-url lists its nodes):
    /// node losses instead of the broker restart, the PostgreSQL outage,
    /// the periodic worker kills and the worker drain.
    #[arg(long)]
    cluster_ctl: Option<PathBuf>,
    /// Worker processes at any time.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Events per second.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Seconds between worker kills (default: short 10, long 5).
    #[arg(long, value_parser = parse_duration)]
    kill_every: Option<Duration>,
    /// How long PostgreSQL stays down.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    postgres_down: Duration,
    /// Most time to wait for the system to settle after the load.
    #[arg(long, value_parser = parse_duration)]
    settle_max: Option<Duration>,
    #[arg(long, default_value = "target/chaos/report.json")]
    out: PathBuf,
    /// Service logs go to <log-dir>/<run-id>/.
    #[arg(long, default_value = "target/chaos/logs")]
    log_dir: PathBuf,
    /// Appends the pid of every process started, for the script's trap.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    #[arg(long, default_value = "unknown")]
    commit: String,
}

impl RunArgs {
    /// `long` for the long profile, else `short`.
    fn by_profile(&self, short: u64, long: u64) -> Duration {
        Duration::from_secs(match self.profile {
            Profile::Long => long,
            Profile::Short => short,
        })
    }

    pub fn duration(&self) -> Duration {
        match (self.duration, &self.cluster_ctl) {
            (Some(duration), _) => duration,
            // Three node faults, each node down 10-30 s and booting again.
            (None, Some(_)) => self.by_profile(150, 600),
            (None, None) => self.by_profile(90, 600),
        }
    }

    pub fn kill_every(&self) -> Duration {
        self.kill_every.unwrap_or(self.by_profile(10, 5))
    }

    pub fn settle_max(&self) -> Duration {
        self.settle_max.unwrap_or(self.by_profile(90, 180))
    }
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?}: use a number and s, m or h"))?;
    match unit {
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("{raw:?}: use a number and s, m or h")),
    }
}

/// The machine-readable report.
#[derive(Debug, Serialize)]
struct Report {
    tool: &'static str,
    commit: String,
    run_id: String,
    profile: Profile,
    workers: usize,
    rate: f64,
    schedule: faults::Schedule,
    endpoints: Vec<check::EndpointInfo>,
    verdict: check::Verdict,
    faults: Vec<faults::FaultRecord>,
    malformed: Vec<faults::Malformed>,
    final_exits: Vec<(String, String)>,
    elapsed_s: f64,
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
                run::cleanup(&common.amqp_url, &common.database_url, &run_id).await;
                Ok(true)
            }
            Command::Run(args) => main_run(*args).await,
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn main_run(args: RunArgs) -> anyhow::Result<bool> {
    let run_id = hookfleet_tests::fleet::run_id_or_new(args.common.run_id.as_deref(), "hfchaos")?;
    for name in ["producer", "worker", "ledger"] {
        let path = args.bin_dir.join(format!("hookfleet-{name}"));
        anyhow::ensure!(path.is_file(), "{} is missing: build first", path.display());
    }
    anyhow::ensure!(
        args.infra_ctl.is_file(),
        "{} is missing",
        args.infra_ctl.display()
    );
    let started = std::time::Instant::now();
    eprintln!(
        "hookfleet chaos {run_id}: profile {:?}, commit {}; logs in {}",
        args.profile,
        args.commit,
        args.log_dir.join(&run_id).display()
    );
    let outcome = tokio::select! {
        result = run::run(&args, &run_id) => result,
        signal = hookfleet_tests::fleet::interrupted() => Err(anyhow::anyhow!("interrupted by {signal}")),
    };
    run::cleanup(&args.common.amqp_url, &args.common.database_url, &run_id).await;
    let (observed, schedule) = outcome?;
    let verdict = observed.verdict();
    let header = format!(
        "hookfleet chaos {run_id} ({:?} profile{}, {} s of load at {} events/s, {} workers, commit {})",
        args.profile,
        if args.cluster_ctl.is_some() {
            ", three-node RabbitMQ cluster"
        } else {
            ""
        },
        schedule.duration_s,
        args.rate,
        args.workers,
        args.commit
    );
    check::print(&verdict, &observed.faults, &header);
    let passed = verdict.failures.is_empty();
    let report = Report {
        tool: "hookfleet-chaos",
        commit: args.commit.clone(),
        run_id,
        profile: args.profile,
        workers: args.workers,
        rate: args.rate,
        schedule,
        endpoints: observed.endpoints.clone(),
        verdict,
        faults: observed.faults.clone(),
        malformed: observed.malformed.clone(),
        final_exits: observed.final_exits.clone(),
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    hookfleet_tests::fleet::write_report(&args.out, &report)?;
    Ok(passed)
}
