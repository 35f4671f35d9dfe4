//! The faults of a cluster run (`scripts/chaos --cluster`): three RabbitMQ
//! nodes on this machine, controlled through `scripts/lib/cluster-ctl`.
//! One node is SIGKILLed and restarted after 30 s; later the node holding
//! most queue leaders is SIGKILLed; then a node is stopped and started
//! gracefully. While a killed node is down, a worker is SIGKILLed too. Each
//! fault records where the run's queue leaders were before, while the node
//! was down, and after it came back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::faults::{FaultLog, FaultRecord, round1};

/// When each node fault starts (seconds since the load started) and how
/// long the node stays down. A fault starts no earlier than 5 s after the
/// previous node is back, so that two nodes are never down at once (the
/// quorum queues need two of three).
#[derive(Debug, Clone, Serialize)]
pub struct ClusterSchedule {
    pub node_kill_s: u64,
    pub node_kill_down_s: u64,
    pub leader_kill_s: u64,
    pub leader_kill_down_s: u64,
    pub graceful_stop_s: u64,
    pub graceful_down_s: u64,
    /// How long into a SIGKILLed node's outage a worker is SIGKILLed.
    pub worker_kill_after_s: u64,
}

impl ClusterSchedule {
    pub fn for_run(duration_s: u64) -> Self {
        let at = |fraction: f64, least: u64| ((duration_s as f64 * fraction) as u64).max(least);
        Self {
            node_kill_s: at(0.05, 8),
            node_kill_down_s: 30,
            leader_kill_s: at(0.45, 60),
            leader_kill_down_s: 15,
            graceful_stop_s: at(0.75, 100),
            graceful_down_s: 10,
            worker_kill_after_s: 8,
        }
    }
}

/// The three nodes and the script that runs them.
#[derive(Debug, Clone)]
pub struct Cluster {
    ctl: PathBuf,
    /// The run's queues start with this.
    prefix: String,
}

/// Asks the main loop to SIGKILL a worker now; the text says why.
pub type KillRequest = String;

impl Cluster {
    pub fn new(ctl: PathBuf, prefix: &str) -> Self {
        Self {
            ctl,
            prefix: format!("{prefix}."),
        }
    }

    /// Runs `cluster-ctl args`; its stdout, or what went wrong.
    async fn ctl(&self, args: &[&str]) -> Result<String, String> {
        let ctl = self.ctl.clone();
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let output = tokio::task::spawn_blocking(move || {
            std::process::Command::new(&ctl)
                .args(&args)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .output()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(format!("cluster-ctl exited with {}", output.status))
        }
    }

    /// How many of the run's quorum queues each node leads.
    pub async fn leaders(&self) -> Result<BTreeMap<String, usize>, String> {
        let text = self.ctl(&["leaders", &self.prefix]).await?;
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            if let Some((_, leader)) = line.split_once('\t') {
                let node = leader.trim().trim_end_matches("@localhost").to_owned();
                *counts.entry(node).or_default() += 1;
            }
        }
        Ok(counts)
    }

    async fn leaders_text(&self) -> String {
        match self.leaders().await {
            Ok(counts) if counts.is_empty() => "none".into(),
            Ok(counts) => counts
                .iter()
                .map(|(node, n)| format!("{node} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            Err(error) => format!("? ({error})"),
        }
    }

    /// Every node fault of the run, one after the other.
    pub async fn run_faults(
        self,
        log: FaultLog,
        schedule: ClusterSchedule,
        kill_worker: mpsc::UnboundedSender<KillRequest>,
    ) {
        let origin = log.origin();
        let wait_until =
            |s: u64| tokio::time::sleep_until((origin + Duration::from_secs(s)).into());
        let mut ready_at = Instant::now();

        // 1. The first node (every service's first URL) dies.
        wait_until(schedule.node_kill_s).await;
        self.outage(
            &log,
            "rabbitmq node SIGKILL",
            1,
            "kill",
            schedule.node_kill_down_s,
            Some((schedule.worker_kill_after_s, &kill_worker)),
        )
        .await;
        ready_at = ready_at.max(Instant::now() + Duration::from_secs(5));

        // 2. The node with most leaders dies.
        wait_until(schedule.leader_kill_s).await;
        tokio::time::sleep_until(ready_at.into()).await;
        let leader = match self.leaders().await {
            Ok(counts) => counts
                .iter()
                .max_by_key(|(_, n)| **n)
                .and_then(|(node, _)| node.trim_start_matches("hfc").parse::<u8>().ok())
                .unwrap_or(2),
            Err(_) => 2,
        };
        self.outage(
            &log,
            "rabbitmq leader-node SIGKILL",
            leader,
            "kill",
            schedule.leader_kill_down_s,
            Some((schedule.worker_kill_after_s.min(5), &kill_worker)),
        )
        .await;
        ready_at = Instant::now() + Duration::from_secs(5);

        // 3. Another node is stopped and started, the polite way.
        wait_until(schedule.graceful_stop_s).await;
        tokio::time::sleep_until(ready_at.into()).await;
        self.outage(
            &log,
            "rabbitmq node stop/start",
            leader % 3 + 1,
            "stop",
            schedule.graceful_down_s,
            None,
        )
        .await;
    }

    /// Takes node `n` down (`kill` or `stop`) for `down_s`, starts it again
    /// and waits for it to boot; records it all with the leaders.
    async fn outage(
        &self,
        log: &FaultLog,
        what: &str,
        n: u8,
        action: &str,
        down_s: u64,
        worker_kill: Option<(u64, &mpsc::UnboundedSender<KillRequest>)>,
    ) {
        let node = format!("hfc{n}");
        let before = self.leaders_text().await;
        let started = log.now_s();
        let taken_down = self.ctl(&[action, &n.to_string()]).await;
        let down_at = log.now_s();
        let mut slept = 0;
        if let Some((after, requests)) = worker_kill {
            let after = after.min(down_s);
            tokio::time::sleep(Duration::from_secs(after)).await;
            slept = after;
            let _ = requests.send(format!("while {node} is down"));
        }
        tokio::time::sleep(Duration::from_secs(down_s - slept)).await;
        let during = self.leaders_text().await;
        let restart_from = log.now_s();
        let restarted = self.ctl(&["start", &n.to_string()]).await;
        let booted_in = log.now_s() - restart_from;
        let after = self.leaders_text().await;
        let mut detail = format!(
            "{node}: {action} took {:.1} s, down {down_s} s, booted in {booted_in:.1} s; queue leaders before: {before}; while down: {during}; after: {after}",
            down_at - started
        );
        if let Err(error) = &taken_down {
            detail.push_str(&format!("; {action} failed: {error}"));
        }
        if let Err(error) = &restarted {
            detail.push_str(&format!("; start failed: {error}"));
        }
        log.push(FaultRecord {
            at_s: round1(started),
            until_s: Some(round1(log.now_s())),
            fault: what.into(),
            detail,
            ok: taken_down.is_ok() && restarted.is_ok(),
            pid: None,
        });
    }
}
