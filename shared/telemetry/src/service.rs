//! What every service does the same way: bind its HTTP listener, serve
//! until cancelled, and run until SIGTERM, then drain.

use std::net::SocketAddr;

use axum::Router;
use hookfleet_config::ListenSettings;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A started service.
#[derive(Debug)]
pub struct Running {
    /// Where its HTTP server listens.
    pub addr: SocketAddr,
    /// Ends when the service has drained and stopped.
    pub task: JoinHandle<()>,
}

/// Binds the listener; done before anything else starts, so a taken port
/// stops the service at once.
pub async fn bind(listen: &ListenSettings) -> std::io::Result<TcpListener> {
    TcpListener::bind((listen.host.as_str(), listen.port)).await
}

/// Serves `app` until `cancel` fires, then lets open requests finish.
pub fn serve_http(listener: TcpListener, app: Router, cancel: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { cancel.cancelled().await });
        if let Err(error) = server.await {
            tracing::error!(%error, "HTTP server failed");
        }
    })
}

/// Runs a started service until SIGTERM or Ctrl-C, then cancels it and
/// waits until it has drained.
pub async fn run_until_signal(
    service: &str,
    running: Running,
    cancel: CancellationToken,
) -> Result<(), tokio::task::JoinError> {
    tracing::info!(service, addr = %running.addr, "listening");
    crate::shutdown_signal().await;
    tracing::info!(service, "shutting down");
    cancel.cancel();
    running.task.await
}
