//! A broker session supervisor: connect, declare the topology, run the
//! service's work on the connection, and when the connection fails, do it
//! all again with backoff, starting with the next node of a cluster.
//! Services hold a [`Link`] to publish through the current session and to
//! report readiness.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hookfleet_config::AmqpSettings;
use lapin::Connection;
use tokio_util::sync::CancellationToken;

use crate::{Nodes, Publisher, Topology, connect_with_retry};

/// The current session's publisher, if the broker is connected and the
/// topology declared. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Link {
    current: Arc<RwLock<Option<Publisher>>>,
    connection: Arc<RwLock<Option<Arc<Connection>>>>,
}

impl Link {
    /// The publisher of the live session, or `None` while disconnected.
    pub fn publisher(&self) -> Option<Publisher> {
        self.current.read().ok().and_then(|p| p.clone())
    }

    /// The live connection, to open channels of one's own.
    pub fn connection(&self) -> Option<Arc<Connection>> {
        self.connection.read().ok().and_then(|c| c.clone())
    }

    /// Ready means connected with the topology declared.
    pub fn is_ready(&self) -> bool {
        self.publisher().is_some()
    }

    fn set(&self, session: Option<(Publisher, Arc<Connection>)>) {
        let (publisher, connection) = session.unzip();
        if let Ok(mut current) = self.connection.write() {
            *current = connection;
        }
        if let Ok(mut current) = self.current.write() {
            *current = publisher;
        }
    }
}

/// What a service runs on each live connection. It returns `Ok` when
/// `cancel` fired and its work drained, `Err` when the connection failed.
pub trait SessionWork {
    fn run(
        &mut self,
        connection: Arc<Connection>,
        publisher: Publisher,
    ) -> impl Future<Output = lapin::Result<()>> + Send;
}

impl<F, Fut> SessionWork for F
where
    F: FnMut(Arc<Connection>, Publisher) -> Fut,
    Fut: Future<Output = lapin::Result<()>> + Send,
{
    fn run(
        &mut self,
        connection: Arc<Connection>,
        publisher: Publisher,
    ) -> impl Future<Output = lapin::Result<()>> + Send {
        self(connection, publisher)
    }
}

/// Runs `work` on a connection until `cancel` fires, reconnecting and
/// redeclaring the topology after every failure. With several nodes
/// (`amqp.urls`), each new session starts with the node after the one
/// whose session failed.
pub async fn supervise(
    settings: &AmqpSettings,
    name: &str,
    link: Link,
    cancel: CancellationToken,
    mut work: impl SessionWork,
) {
    let topology = Topology::from_settings(settings);
    let mut nodes = Nodes::from_settings(settings);
    let mut backoff = Duration::from_millis(200);
    loop {
        // The broker shows this name; the prefix tells installations apart.
        let connection_name = format!("{name} {}", settings.prefix);
        let Some((node, connection)) = connect_with_retry(&nodes, &connection_name, &cancel).await
        else {
            return;
        };
        let connection = Arc::new(connection);
        let started = async {
            let publisher = Publisher::open(&connection)
                .await?
                .parking_to(topology.dead_exchange());
            topology.declare(publisher.channel()).await?;
            Ok::<_, lapin::Error>(publisher)
        }
        .await;
        let result = match started {
            Ok(publisher) => {
                tracing::info!(
                    service = name,
                    node = nodes.label(node),
                    "broker session started"
                );
                backoff = Duration::from_millis(200);
                link.set(Some((publisher.clone(), connection.clone())));
                let result = work.run(connection.clone(), publisher.clone()).await;
                link.set(None);
                // lapin reports an error when a connection closes with
                // channels still open, so close ours first.
                let _ = publisher.channel().close(200, "bye".into()).await;
                result
            }
            Err(error) => Err(error),
        };
        let _ = connection.close(200, "bye".into()).await;
        match result {
            Ok(()) if cancel.is_cancelled() => return,
            Ok(()) => tracing::warn!(
                service = name,
                node = nodes.label(node),
                "broker session ended"
            ),
            Err(error) => {
                tracing::warn!(service = name, node = nodes.label(node), %error, "broker session failed")
            }
        }
        nodes.lost(node);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Consumes `queue` in supervised sessions: each delivery runs `handler`
/// (with the session's publisher and the delivery's [`crate::Settle`]) as
/// its own task, bounded by the prefetch; on shutdown, running handlers get
/// `drain` to finish.
pub async fn consume_supervised<H, Fut>(
    settings: &AmqpSettings,
    name: &str,
    link: Link,
    cancel: CancellationToken,
    queue: String,
    drain: Duration,
    handler: H,
) where
    H: Fn(Publisher, lapin::message::Delivery, crate::Settle) -> Fut
        + Clone
        + Send
        + Sync
        + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let session_cancel = cancel.clone();
    let prefetch = settings.prefetch;
    supervise(
        settings,
        name,
        link,
        cancel,
        |connection: Arc<Connection>, publisher: Publisher| {
            let handler = handler.clone();
            let queue = queue.clone();
            let cancel = session_cancel.clone();
            async move {
                crate::consume(
                    &connection,
                    &queue,
                    prefetch,
                    &cancel,
                    drain,
                    move |delivery, settle| handler(publisher.clone(), delivery, settle),
                )
                .await
            }
        },
    )
    .await
}
