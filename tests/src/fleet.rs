//! Service processes run from their binaries (the benchmark's release
//! builds, the chaos run's debug builds): started with their environment,
//! probed until ready, measured from /proc, and stopped with SIGTERM
//! (SIGKILL only if they do not exit in time); and what the benchmark and
//! the chaos run share besides: run ids, signals, a tenant and its token.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;

/// One started service process.
#[derive(Debug)]
pub struct Service {
    pub name: String,
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

/// CPU and memory of one process, read from /proc.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessStats {
    pub name: String,
    pub pid: u32,
    /// Since the process started.
    pub cpu_s: f64,
    /// During the measurement only.
    pub cpu_s_measured: f64,
    pub peak_rss_mib: f64,
}

#[derive(Debug, Default)]
pub struct Fleet {
    pub services: Vec<Service>,
}

/// A port free on 127.0.0.1 at the time of asking.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

impl Fleet {
    /// Starts `binary` with `env` on top of the environment (minus every
    /// HOOKFLEET* and RUST_LOG variable, so nothing outside the benchmark
    /// configures it), its output going to `log`.
    pub fn spawn(
        &mut self,
        name: &str,
        binary: &Path,
        port: u16,
        env: &[(String, String)],
        log: PathBuf,
        pid_file: Option<&Path>,
    ) -> anyhow::Result<()> {
        let out = File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let mut command = Command::new(binary);
        for (key, _) in std::env::vars_os() {
            let text = key.to_string_lossy();
            if text.starts_with("HOOKFLEET") || text == "RUST_LOG" {
                command.env_remove(&key);
            }
        }
        command
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("HOOKFLEET__LISTEN__HOST", "127.0.0.1")
            .env("HOOKFLEET__LISTEN__PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        // Its own process group: a Ctrl-C at the terminal reaches the
        // benchmark, which stops the services in order, not the services.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        if let Some(pid_file) = pid_file {
            let mut file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(pid_file)
                .with_context(|| format!("open {}", pid_file.display()))?;
            writeln!(file, "{}", child.id())?;
        }
        self.services.push(Service {
            name: name.to_owned(),
            port,
            log,
            child,
        });
        Ok(())
    }

    /// Fails if a service has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for service in &mut self.services {
            if let Some(status) = service.child.try_wait()? {
                bail!(
                    "{} exited early ({status}); see {}",
                    service.name,
                    service.log.display()
                );
            }
        }
        Ok(())
    }

    /// The process id of service `name`.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.child.id())
    }

    /// The port service `name` listens on.
    pub fn port(&self, name: &str) -> Option<u16> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.port)
    }

    /// The services that have exited, with their status, without removing
    /// them.
    pub fn exited(&mut self) -> Vec<(String, ExitStatus)> {
        self.services
            .iter_mut()
            .filter_map(|s| Some((s.name.clone(), s.child.try_wait().ok()??)))
            .collect()
    }

    /// Kills service `name` with SIGKILL, as a crash would, and forgets it;
    /// its exit status (None if no such service runs).
    pub fn kill(&mut self, name: &str) -> Option<ExitStatus> {
        let index = self.services.iter().position(|s| s.name == name)?;
        let mut service = self.services.remove(index);
        let _ = service.child.kill();
        service.child.wait().ok()
    }

    /// Sends SIGTERM to service `name`, waits up to `limit` for it to exit
    /// and forgets it; its exit status, or None if it did not exit in time
    /// (it is then killed).
    pub async fn terminate(&mut self, name: &str, limit: Duration) -> Option<ExitStatus> {
        let index = self.services.iter().position(|s| s.name == name)?;
        let mut service = self.services.remove(index);
        terminate(service.child.id());
        let deadline = Instant::now() + limit;
        loop {
            match service.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                _ => {
                    let _ = service.child.kill();
                    let _ = service.child.wait();
                    return None;
                }
            }
        }
    }

    /// Waits until every service answers 200 on `/readyz`.
    pub async fn wait_ready(
        &mut self,
        http: &reqwest::Client,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let mut pending: Vec<usize> = (0..self.services.len()).collect();
        while !pending.is_empty() {
            self.check_alive()?;
            let mut still = Vec::new();
            for index in pending {
                let url = format!("http://127.0.0.1:{}/readyz", self.services[index].port);
                let ready = http
                    .get(&url)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                if !ready {
                    still.push(index);
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                let names: Vec<_> = pending
                    .iter()
                    .map(|i| self.services[*i].name.as_str())
                    .collect();
                bail!("not ready after {limit:?}: {}", names.join(", "));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// CPU seconds and peak RSS of every service, now.
    pub fn stats(&self) -> Vec<ProcessStats> {
        self.services
            .iter()
            .map(|s| {
                let pid = s.child.id();
                ProcessStats {
                    name: s.name.clone(),
                    pid,
                    cpu_s: cpu_seconds(pid).unwrap_or(f64::NAN),
                    cpu_s_measured: f64::NAN,
                    peak_rss_mib: peak_rss_kib(pid).map_or(f64::NAN, |k| round3(k as f64 / 1024.0)),
                }
            })
            .collect()
    }

    /// Sends SIGTERM to every service and waits for them to exit; SIGKILL
    /// after `limit`. Returns each service's exit status.
    pub async fn stop(&mut self, limit: Duration) -> Vec<(String, Option<ExitStatus>)> {
        for service in &mut self.services {
            if matches!(service.child.try_wait(), Ok(None)) {
                terminate(service.child.id());
            }
        }
        let deadline = Instant::now() + limit;
        let mut statuses = Vec::new();
        for mut service in self.services.drain(..) {
            let status = loop {
                match service.child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(None) => {
                        eprintln!(
                            "warning: {} did not stop within {limit:?} of SIGTERM; killing it",
                            service.name
                        );
                        let _ = service.child.kill();
                        break service.child.wait().ok();
                    }
                    Err(_) => break None,
                }
            };
            statuses.push((service.name, status));
        }
        statuses
    }
}

impl Drop for Fleet {
    /// A benchmark that failed or was interrupted still stops what it
    /// started.
    fn drop(&mut self) {
        if self.services.is_empty() {
            return;
        }
        for service in &mut self.services {
            if matches!(service.child.try_wait(), Ok(None)) {
                terminate(service.child.id());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        for service in &mut self.services {
            while matches!(service.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(service.child.try_wait(), Ok(None)) {
                let _ = service.child.kill();
                let _ = service.child.wait();
            }
        }
    }
}

/// SIGTERM, through kill(1) (the workspace forbids unsafe code, so no
/// libc::kill).
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The command name of `pid`, its utime + stime in clock ticks, and its
/// start time (which tells a reused pid apart).
fn stat_ticks(pid: &str) -> Option<(String, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_owned();
    // After the command name: state is field 3, utime 14, stime 15,
    // starttime 22.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let started: u64 = fields.get(19)?.parse().ok()?;
    Some((comm, utime + stime, started))
}

/// CPU seconds the whole machine spent busy so far (every core, every
/// process), from /proc/stat.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle, iowait.
    let busy: u64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 3 | 4) && *i < 8)
        .map(|(_, v)| v)
        .sum();
    Some(busy as f64 / clock_ticks())
}

/// `value` to the millisecond (or the KiB), for readable reports.
pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// CPU seconds (user + system) `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    stat_ticks(&pid.to_string()).map(|(_, t, _)| t as f64 / clock_ticks())
}

/// VmHWM of `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU ticks of every process on the machine, by pid, to tell how much
/// of the machine the broker (beam.smp), the database (postgres) and
/// anything else took during a scenario.
#[derive(Debug, Clone, Default)]
pub struct MachineTicks {
    processes: HashMap<u32, (String, u64, u64)>,
}

/// CPU seconds by consumer between two [`MachineTicks`].
#[derive(Debug, Clone, Default)]
pub struct CpuSplit {
    pub rabbitmq: f64,
    pub postgres: f64,
    /// Kernel threads (writeback, journal, softirq): mostly the disk and
    /// network work the above cause.
    pub kernel: f64,
    /// Other processes (not `ours`), by command name, largest first.
    pub others: Vec<(String, f64)>,
}

impl MachineTicks {
    pub fn now() -> Self {
        let mut ticks = Self::default();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return ticks;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(stat) = stat_ticks(&pid.to_string()) {
                ticks.processes.insert(pid, stat);
            }
        }
        ticks
    }

    /// What each consumer used between `earlier` and `self`; `ours` (the
    /// services and this process) are left out. Processes that ended in
    /// between are not seen.
    pub fn since(&self, earlier: &Self, ours: &[u32]) -> CpuSplit {
        let mut split = CpuSplit::default();
        let mut others: HashMap<&str, f64> = HashMap::new();
        for (pid, (comm, t, started)) in &self.processes {
            if ours.contains(pid) {
                continue;
            }
            // Kernel workers change their names with their work, so a
            // process is known by its pid and start time.
            let before = earlier
                .processes
                .get(pid)
                .filter(|(_, _, s)| s == started)
                .map_or(0, |(_, t, _)| *t);
            let seconds = t.saturating_sub(before) as f64 / clock_ticks();
            if seconds == 0.0 {
                continue;
            }
            if comm == "beam.smp" {
                split.rabbitmq += seconds;
            } else if comm.starts_with("postgres") {
                split.postgres += seconds;
            } else if ["kworker", "jbd2", "ksoftirqd", "kswapd", "kcompactd"]
                .iter()
                .any(|k| comm.starts_with(k))
            {
                split.kernel += seconds;
            } else {
                *others.entry(comm.as_str()).or_default() += seconds;
            }
        }
        split.others = others.into_iter().map(|(c, s)| (c.to_owned(), s)).collect();
        split
            .others
            .sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
        split
    }
}

/// Resolves on SIGINT or SIGTERM with the signal's name.
pub async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => "SIGINT",
        _ = term.recv() => "SIGTERM",
    }
}

/// A run id (it names databases, topology prefixes and log folders).
pub fn valid_run_id(raw: Option<&str>) -> anyhow::Result<String> {
    let raw = raw.ok_or_else(|| anyhow::anyhow!("--run-id is required"))?;
    let ok = !raw.is_empty()
        && raw.len() <= 40
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    anyhow::ensure!(
        ok,
        "--run-id {raw:?}: use up to 40 lowercase letters, digits and _"
    );
    Ok(raw.to_owned())
}

/// A Postgres connection whose driver runs in the background.
pub async fn connect_db(url: &str) -> anyhow::Result<hookfleet_db::tokio_postgres::Client> {
    let (client, connection) =
        hookfleet_db::tokio_postgres::connect(url, hookfleet_db::tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

/// `raw` checked as a run id, or a new one: `<prefix>_` and 8 hex digits.
pub fn run_id_or_new(raw: Option<&str>, prefix: &str) -> anyhow::Result<String> {
    match raw {
        Some(id) => valid_run_id(Some(id)),
        None => Ok(format!(
            "{prefix}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )),
    }
}

/// Writes a run's machine-readable report as pretty JSON and says where.
pub fn write_report(path: &Path, report: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(report)? + "\n")
        .with_context(|| format!("write {}", path.display()))?;
    eprintln!("report: {}", path.display());
    Ok(())
}

/// Creates `tenant` through the producer's admin API and returns an API
/// token of it.
pub async fn new_tenant(
    http: &reqwest::Client,
    producer: &str,
    admin_token: &str,
    tenant: &str,
) -> anyhow::Result<String> {
    let response = http
        .post(format!("{producer}/v1/tenants"))
        .bearer_auth(admin_token)
        .json(&serde_json::json!({ "id": tenant }))
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 201,
        "POST /v1/tenants answered {}",
        response.status()
    );
    let response = http
        .post(format!("{producer}/v1/tenants/{tenant}/tokens"))
        .bearer_auth(admin_token)
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 201,
        "POST /v1/tenants/{tenant}/tokens answered {}",
        response.status()
    );
    let body: serde_json::Value = response.json().await?;
    body["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no token in {body}"))
}

/// Registers an endpoint for `url` subscribed to `types` through the
/// producer's API (`api` carries the tenant's token); returns its id.
pub async fn create_endpoint(
    api: &reqwest::Client,
    producer: &str,
    url: &str,
    types: &[&str],
) -> anyhow::Result<String> {
    create_endpoint_from(
        api,
        producer,
        &serde_json::json!({ "url": url, "event_types": types }),
    )
    .await
}

/// Creates an endpoint from a whole `POST /v1/endpoints` body (`ordered`,
/// `rate_limit` and the rest); returns its id.
pub async fn create_endpoint_from(
    api: &reqwest::Client,
    producer: &str,
    body: &serde_json::Value,
) -> anyhow::Result<String> {
    let response = api
        .post(format!("{producer}/v1/endpoints"))
        .json(body)
        .send()
        .await?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    anyhow::ensure!(
        status == 201,
        "POST /v1/endpoints answered {status}: {body}"
    );
    body["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no id in {body}"))
}
