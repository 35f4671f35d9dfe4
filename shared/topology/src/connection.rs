//! Connecting to the broker: to one node, or to the first reachable node
//! of a cluster.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

/// How long one connection attempt may take. A cluster node whose machine
/// is gone does not refuse the connection, it just never answers; without
/// a limit the attempt would wait for the kernel's TCP timeout (minutes)
/// before the next node is tried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection attempt. `name` shows in the broker's connection list.
pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    connect_trusting(url, name, None).await
}

/// One connection attempt; an `amqps://` broker's certificate may also
/// chain to the CA certificates in the PEM file `ca_file`
/// (`amqp.tls_ca_file`), read at every attempt so that a renewed file is
/// taken up at the next reconnect.
pub async fn connect_trusting(
    url: &str,
    name: &str,
    ca_file: Option<&str>,
) -> lapin::Result<Connection> {
    let cert_chain = match ca_file {
        Some(path) => Some(std::fs::read_to_string(path).map_err(|error| {
            lapin::Error::from(std::io::Error::new(
                error.kind(),
                format!("amqp.tls_ca_file {path}: {error}"),
            ))
        })?),
        None => None,
    };
    let builder = lapin::DefaultConnectionBuilder::new()?
        .with_uri_str(url.to_owned())
        .with_properties(ConnectionProperties::default().with_connection_name(name.into()))
        .with_tls_config(lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain,
        });
    let attempt = builder.connect();
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Ok(result) => result,
        Err(_) => Err(lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "no answer from {} within {CONNECT_TIMEOUT:?}",
                node_label(url)
            ),
        ))),
    }
}

/// The broker nodes a service may connect to, in the order of the
/// settings, and which one to try first: the first node at start, and
/// after a connection is lost, the node after the one that was lost, so
/// that a node that just died is the last one tried again.
#[derive(Debug, Clone)]
pub struct Nodes {
    urls: Vec<String>,
    next: usize,
    /// `amqp.tls_ca_file`, when set.
    ca_file: Option<String>,
}

impl Nodes {
    /// `urls` must not be empty ([`hookfleet_config::AmqpSettings::nodes`]
    /// never is).
    pub fn new(urls: Vec<String>) -> Self {
        assert!(!urls.is_empty(), "at least one broker node");
        Self {
            urls,
            next: 0,
            ca_file: None,
        }
    }

    pub fn from_settings(settings: &hookfleet_config::AmqpSettings) -> Self {
        let ca_file = settings.tls_ca_file.trim();
        Self {
            ca_file: (!ca_file.is_empty()).then(|| ca_file.to_owned()),
            ..Self::new(settings.nodes())
        }
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    pub fn url(&self, index: usize) -> &str {
        &self.urls[index]
    }

    /// Node `index` as `host:port`, for logs (no credentials).
    pub fn label(&self, index: usize) -> &str {
        node_label(&self.urls[index])
    }

    /// One round of attempts: every node once, starting with the next.
    pub fn round(&self) -> impl Iterator<Item = usize> + use<> {
        let (next, len) = (self.next, self.urls.len());
        (next..len).chain(0..next)
    }

    /// The connection to node `index` was lost (or never became a
    /// session): the next round starts with the node after it.
    pub fn lost(&mut self, index: usize) {
        self.next = (index + 1) % self.urls.len();
    }

    /// One round: the first node of [`Nodes::round`] that accepts a
    /// connection, with its index; else the last error.
    pub async fn connect_first(&self, name: &str) -> lapin::Result<(usize, Connection)> {
        let mut last_error = None;
        for index in self.round() {
            match connect_trusting(self.url(index), name, self.ca_file.as_deref()).await {
                Ok(connection) => return Ok((index, connection)),
                Err(error) => {
                    if self.len() > 1 {
                        tracing::warn!(node = self.label(index), %error, "broker node unreachable");
                    }
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.expect("at least one node was tried"))
    }
}

/// `amqp://user:password@host:port/vhost` → `host:port`.
fn node_label(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, rest)| rest);
    rest.split(['/', '?']).next().unwrap_or(rest)
}

/// Connects to the first reachable node, round after round with capped
/// exponential backoff between rounds, until it succeeds (the node's index
/// and the connection) or `cancel` fires (then `None`).
pub async fn connect_with_retry(
    nodes: &Nodes,
    name: &str,
    cancel: &CancellationToken,
) -> Option<(usize, Connection)> {
    let mut backoff = Duration::from_millis(200);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return None,
            result = nodes.connect_first(name) => match result {
                Ok(connected) => return Some(connected),
                Err(error) => tracing::warn!(%error, retry_in = ?backoff, "broker unreachable"),
            },
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Nodes {
        Nodes::new(
            (0..n)
                .map(|i| format!("amqp://guest:secret@rabbit-{i}:5672/%2f"))
                .collect(),
        )
    }

    #[test]
    fn the_first_round_tries_the_nodes_in_the_order_given() {
        assert_eq!(nodes(3).round().collect::<Vec<_>>(), [0, 1, 2]);
    }

    #[test]
    fn after_a_loss_the_next_node_comes_first_and_the_lost_one_last() {
        let mut nodes = nodes(3);
        nodes.lost(0);
        assert_eq!(nodes.round().collect::<Vec<_>>(), [1, 2, 0]);
        nodes.lost(2);
        assert_eq!(nodes.round().collect::<Vec<_>>(), [0, 1, 2]);
        nodes.lost(1);
        assert_eq!(nodes.round().collect::<Vec<_>>(), [2, 0, 1]);
    }

    #[test]
    fn one_node_is_tried_again_after_its_loss() {
        let mut nodes = nodes(1);
        nodes.lost(0);
        assert_eq!(nodes.round().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn labels_carry_no_credentials() {
        let nodes = nodes(2);
        assert_eq!(nodes.label(1), "rabbit-1:5672");
        assert_eq!(node_label("amqp://127.0.0.1:5681"), "127.0.0.1:5681");
        assert_eq!(node_label("amqps://u:p@h:5671?heartbeat=10"), "h:5671");
    }
}
