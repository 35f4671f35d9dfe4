//! Connecting to the broker.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

/// One connection attempt. `name` shows in the broker's connection list.
pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    Connection::connect(
        url,
        ConnectionProperties::default().with_connection_name(name.into()),
    )
    .await
}

/// Connects, retrying with capped exponential backoff until it succeeds or
/// `cancel` fires (then `None`).
pub async fn connect_with_retry(
    url: &str,
    name: &str,
    cancel: &CancellationToken,
) -> Option<Connection> {
    let mut backoff = Duration::from_millis(200);
    loop {
        match connect(url, name).await {
            Ok(connection) => return Some(connection),
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "broker unreachable");
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}
