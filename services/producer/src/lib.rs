//! The producer: the front door of hookfleet. It serves the ingest API and
//! the endpoint registry over HTTP and runs the fan-out router.

pub mod api;
pub mod cli;
pub mod ingest;
pub mod registry;
pub mod router;
pub mod settings;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hookfleet_topology::{Link, Topology, consume, supervise};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use settings::Settings;

use crate::api::ApiState;
use crate::registry::EndpointRegistry;
use crate::router::Router;

/// How long in-flight routings get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// A started producer.
#[derive(Debug)]
pub struct Running {
    /// Where the HTTP API listens.
    pub addr: SocketAddr,
    /// Ends when the producer has shut down.
    pub task: JoinHandle<()>,
}

/// Migrates (if configured), binds the HTTP listener and starts the API and
/// the router. Runs until `cancel` fires.
pub async fn start(settings: Settings, cancel: CancellationToken) -> anyhow::Result<Running> {
    if settings.database.migrate_on_start {
        hookfleet_db::migrate(&settings.database.url).await?;
    }
    let pool = hookfleet_db::pool(&settings.database)?;
    let sealer = hookfleet_signing::Sealer::from_base64(&settings.secrets.key)?;
    let registry = EndpointRegistry::new(pool, sealer);
    let topology = Topology::from_settings(&settings.amqp);
    let link = Link::default();

    let listener =
        tokio::net::TcpListener::bind((settings.listen.host.as_str(), settings.listen.port))
            .await?;
    let addr = listener.local_addr()?;
    let app = api::router(ApiState {
        link: link.clone(),
        topology: topology.clone(),
        registry: registry.clone(),
        ingest: settings.ingest.clone(),
    });
    let http_cancel = cancel.clone();
    let http = tokio::spawn(async move {
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_cancel.cancelled().await });
        if let Err(error) = server.await {
            tracing::error!(%error, "HTTP server failed");
        }
    });

    let router = Arc::new(Router {
        topology: topology.clone(),
        registry,
        max_payload_bytes: settings.ingest.max_payload_bytes,
        cancel: cancel.clone(),
    });
    let amqp = settings.amqp.clone();
    let task = tokio::spawn(async move {
        let route_queue = topology.route_queue();
        let session_cancel = cancel.clone();
        supervise(
            &amqp,
            "hookfleet-producer",
            link,
            cancel.clone(),
            |connection: Arc<lapin::Connection>, publisher: hookfleet_topology::Publisher| {
                let router = router.clone();
                let queue = route_queue.clone();
                let cancel = session_cancel.clone();
                let prefetch = amqp.prefetch;
                async move {
                    consume(
                        &connection,
                        &queue,
                        prefetch,
                        &cancel,
                        DRAIN,
                        move |delivery| router.clone().route(publisher.clone(), delivery),
                    )
                    .await
                }
            },
        )
        .await;
        let _ = http.await;
        tracing::info!("producer stopped");
    });
    Ok(Running { addr, task })
}
