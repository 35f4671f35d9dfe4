//! Change notifications between producers. Each producer keeps in-memory
//! copies of what the routers and the ingest path read on every event (the
//! subscription index, the event-type catalogue). A change through any
//! producer's API is announced with a Postgres `NOTIFY` on the copy's
//! channel, and every producer listening reloads its copy. A periodic
//! reload is the safety net for a missed notification.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use hookfleet_db::deadpool_postgres::Pool;
use hookfleet_db::tokio_postgres::AsyncMessage;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

const RELOAD_EVERY: Duration = Duration::from_secs(60);

/// Tells the other producers that what `channel` stands for changed.
pub async fn announce(pool: &Pool, channel: &str) {
    match pool.get().await {
        Ok(client) => {
            if let Err(error) = client.execute(&format!("NOTIFY {channel}"), &[]).await {
                tracing::warn!(%error, channel, "could not notify the other producers");
            }
        }
        Err(error) => tracing::warn!(%error, channel, "could not notify the other producers"),
    }
}

/// Keeps a copy fresh until `cancel` fires: calls `reload` at once, on every
/// notification on `channel`, on every `changed.notify_one()` from this
/// process, and every minute regardless.
pub async fn keep_fresh<F, Fut, E>(
    what: &str,
    database: &hookfleet_config::DatabaseSettings,
    channel: &str,
    changed: &Notify,
    cancel: &CancellationToken,
    reload: F,
) where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    let reloading = async {
        loop {
            if let Err(error) = reload().await {
                tracing::warn!(%error, "{what} reload failed; retrying");
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = changed.notified() => {}
                _ = tokio::time::sleep(RELOAD_EVERY) => {}
            }
        }
    };
    tokio::join!(listen(database, channel, changed, cancel), reloading);
}

/// Listens on `channel` on a dedicated connection, reconnecting when it
/// drops, and wakes `changed` on each notification.
async fn listen(
    database: &hookfleet_config::DatabaseSettings,
    channel: &str,
    changed: &Notify,
    cancel: &CancellationToken,
) {
    loop {
        match hookfleet_db::connect_with(database).await {
            Ok((client, mut messages)) => {
                // The connection task delivers notifications; the client
                // must stay alive for the connection to.
                let (tx, mut notifications) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    while let Some(Ok(message)) = messages.next().await {
                        if let AsyncMessage::Notification(_) = message
                            && tx.send(()).is_err()
                        {
                            break;
                        }
                    }
                });
                match client.batch_execute(&format!("LISTEN {channel}")).await {
                    Ok(()) => {
                        // A reload covers what changed while disconnected.
                        changed.notify_one();
                        loop {
                            tokio::select! {
                                _ = cancel.cancelled() => {
                                    driver.abort();
                                    return;
                                }
                                note = notifications.recv() => match note {
                                    Some(()) => changed.notify_one(),
                                    None => break,
                                },
                            }
                        }
                    }
                    Err(error) => tracing::warn!(%error, channel, "LISTEN failed"),
                }
                driver.abort();
            }
            Err(error) => tracing::debug!(%error, channel, "change listener cannot connect"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
