//! The faults: when each happens in a run, the ones done outside the fleet
//! (stopping and starting RabbitMQ and PostgreSQL through
//! `scripts/lib/infra-ctl`, publishing malformed messages), and the log of
//! every fault injected, for the report.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hookfleet_contract::headers;
use hookfleet_topology::{Publisher, Topology, headers_with};
use lapin::BasicProperties;
use serde::Serialize;

use crate::load::EVENT_TYPES;

/// One fault, as injected.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRecord {
    /// Seconds since the load started.
    pub at_s: f64,
    /// Until when it lasted (outages).
    pub until_s: Option<f64>,
    pub fault: String,
    pub detail: String,
    /// Whether injecting it worked (an infra command that failed, a
    /// drained worker that did not exit 0).
    pub ok: bool,
    /// The process the fault hit (a killed worker).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

/// Every fault of a run, shared by the tasks that inject them.
#[derive(Debug, Clone)]
pub struct FaultLog {
    origin: Instant,
    records: Arc<Mutex<Vec<FaultRecord>>>,
}

impl FaultLog {
    pub fn new(origin: Instant) -> Self {
        Self {
            origin,
            records: Arc::default(),
        }
    }

    pub fn now_s(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    pub fn origin(&self) -> Instant {
        self.origin
    }

    pub fn push(&self, record: FaultRecord) {
        if let Ok(mut records) = self.records.lock() {
            records.push(record);
        }
    }

    /// Records a fault that happened just now.
    pub fn now(&self, fault: &str, detail: String, ok: bool, pid: Option<u32>) {
        self.push(FaultRecord {
            at_s: round1(self.now_s()),
            until_s: None,
            fault: fault.to_owned(),
            detail,
            ok,
            pid,
        });
    }

    pub fn records(&self) -> Vec<FaultRecord> {
        let mut records = self.records.lock().map(|r| r.clone()).unwrap_or_default();
        records.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
        records
    }
}

pub fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

/// When each fault happens, in seconds since the load started.
#[derive(Debug, Clone, Serialize)]
pub struct Schedule {
    pub duration_s: u64,
    /// A worker is SIGKILLed (and replaced) every this many seconds.
    pub kill_every_s: u64,
    pub first_kill_s: u64,
    pub rabbitmq_stop_s: u64,
    /// How long the broker stays down.
    pub rabbitmq_down_s: u64,
    pub postgres_stop_s: u64,
    pub postgres_down_s: u64,
    pub sigterm_s: u64,
    pub malformed_s: Vec<u64>,
    /// A cluster run's node faults, which replace the broker restart, the
    /// PostgreSQL outage, the periodic worker kills and the drain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterSchedule>,
}

impl Schedule {
    pub fn for_run(duration_s: u64, kill_every_s: u64, postgres_down_s: u64) -> Self {
        let at = |fraction: f64, least: u64| ((duration_s as f64 * fraction) as u64).max(least);
        Self {
            duration_s,
            kill_every_s,
            first_kill_s: 8,
            rabbitmq_stop_s: at(0.15, 12),
            rabbitmq_down_s: 5,
            postgres_stop_s: at(0.45, 35),
            postgres_down_s,
            // In a hang period of flap-hang (seconds 14-19 of every 20),
            // after the broker is back (and the producer has reconnected:
            // its backoff reaches 10 s) and before the database goes, so
            // that the worker holds calls in flight when told to stop.
            sigterm_s: at(0.35, 28) / 20 * 20 + 17,
            malformed_s: vec![3, at(0.6, 50)],
            cluster: None,
        }
    }

    /// A cluster run: the node faults, and none of the single-broker ones
    /// but the malformed messages.
    pub fn for_cluster(duration_s: u64) -> Self {
        Self {
            cluster: Some(crate::cluster::ClusterSchedule::for_run(duration_s)),
            ..Self::for_run(duration_s, duration_s, 0)
        }
    }

    /// Whether the single-broker faults (broker restart, PostgreSQL
    /// outage, periodic worker kills, drain) are part of the run.
    pub fn single_broker(&self) -> bool {
        self.cluster.is_none()
    }

    /// Whether a worker is killed in second `s`.
    pub fn kills_at(&self, s: u64) -> bool {
        self.single_broker()
            && s >= self.first_kill_s
            && s + 5 <= self.duration_s
            && (s - self.first_kill_s).is_multiple_of(self.kill_every_s.max(1))
    }
}

/// Runs `scripts/lib/infra-ctl <action>`; its output goes to our stderr.
pub async fn infra(ctl: &Path, action: &str) -> Result<(), String> {
    let ctl = ctl.to_path_buf();
    let action = action.to_owned();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&ctl)
            .arg(&action)
            .stdin(std::process::Stdio::null())
            .status()
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("exited with {status}"))
    }
}

/// Stops a piece of infrastructure, waits `down`, starts it again, and
/// records the outage.
pub async fn outage(log: FaultLog, ctl: PathBuf, what: &'static str, down: Duration) {
    let started = log.now_s();
    let stopped = infra(&ctl, &format!("stop-{what}")).await;
    let stopped_at = log.now_s();
    tokio::time::sleep(down).await;
    let restarted = infra(&ctl, &format!("start-{what}")).await;
    let mut detail = format!(
        "stopped in {:.1} s, down {} s, started in {:.1} s",
        stopped_at - started,
        down.as_secs(),
        log.now_s() - stopped_at - down.as_secs_f64()
    );
    if let Err(error) = &stopped {
        detail.push_str(&format!("; stop failed: {error}"));
    }
    if let Err(error) = &restarted {
        detail.push_str(&format!("; start failed: {error}"));
    }
    log.push(FaultRecord {
        at_s: round1(started),
        until_s: Some(round1(log.now_s())),
        fault: format!("{what} restart"),
        detail,
        ok: stopped.is_ok() && restarted.is_ok(),
        pid: None,
    });
}

/// A message breaking the AMQP contract, published to the events exchange.
#[derive(Debug, Clone, Serialize)]
pub struct Malformed {
    pub kind: &'static str,
    pub message_id: String,
    pub published: bool,
}

/// Publishes one of each kind of malformed message (confirmed), retrying
/// for up to `limit` if the broker is unreachable.
pub async fn publish_malformed(
    log: FaultLog,
    amqp_url: String,
    topology: Topology,
    tenant: String,
    max_payload_bytes: usize,
    round: usize,
    limit: Duration,
) -> Vec<Malformed> {
    let json = br#"{"seq": -1, "note": "malformed on purpose"}"#.to_vec();
    let oversized = format!(r#"{{"pad": "{}"}}"#, "x".repeat(max_payload_bytes + 1024));
    let kinds: [(&'static str, &str, Option<&str>, Vec<u8>); 4] = [
        (
            "not JSON",
            tenant.as_str(),
            Some("application/json"),
            b"this is not JSON".to_vec(),
        ),
        (
            "unknown tenant",
            "no-such-tenant",
            Some("application/json"),
            json.clone(),
        ),
        (
            "oversized",
            tenant.as_str(),
            Some("application/json"),
            oversized.into_bytes(),
        ),
        (
            "wrong content type",
            tenant.as_str(),
            Some("text/plain"),
            json,
        ),
    ];
    let mut results: Vec<Malformed> = kinds
        .iter()
        .map(|(kind, ..)| Malformed {
            kind,
            message_id: format!(
                "malformed-{round}-{}",
                kind.replace(' ', "-").to_lowercase()
            ),
            published: false,
        })
        .collect();
    let deadline = Instant::now() + limit;
    let started = log.now_s();
    let mut last_error = String::new();
    while Instant::now() < deadline && results.iter().any(|m| !m.published) {
        match crate::run::connect_any(&amqp_url, "hookfleet-chaos malformed").await {
            Ok(connection) => {
                if let Ok(publisher) = Publisher::open(&connection).await {
                    for (message, (_, tenant, content_type, body)) in results.iter_mut().zip(&kinds)
                    {
                        if message.published {
                            continue;
                        }
                        let mut properties = BasicProperties::default()
                            .with_message_id(message.message_id.as_str().into())
                            .with_delivery_mode(2)
                            .with_headers(headers_with([(headers::TENANT, *tenant)]));
                        if let Some(content_type) = content_type {
                            properties = properties.with_content_type((*content_type).into());
                        }
                        match publisher
                            .publish(
                                &topology.events_exchange(),
                                EVENT_TYPES[0],
                                body,
                                properties,
                            )
                            .await
                        {
                            Ok(()) => message.published = true,
                            Err(error) => last_error = error.to_string(),
                        }
                    }
                    let _ = publisher.channel().close(200, "bye".into()).await;
                }
                let _ = connection.close(200, "bye".into()).await;
            }
            Err(error) => last_error = error.to_string(),
        }
        if results.iter().any(|m| !m.published) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let published = results.iter().filter(|m| m.published).count();
    let mut detail = format!(
        "{published} of {} to {}: not JSON, unknown tenant, oversized ({} B), wrong content type",
        results.len(),
        topology.events_exchange(),
        max_payload_bytes + 1024 + 11
    );
    if published < results.len() {
        detail.push_str(&format!("; last error: {last_error}"));
    }
    log.push(FaultRecord {
        at_s: round1(started),
        until_s: None,
        fault: "malformed messages".into(),
        detail,
        ok: published == results.len(),
        pid: None,
    });
    results
}
