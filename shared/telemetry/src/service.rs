//! What every service does the same way: bind its HTTP listener, serve
//! until cancelled, and run until SIGTERM, then drain.

use std::net::SocketAddr;
use std::time::Duration;

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
///
/// hyper directly rather than `axum::serve`, for what the latter cannot
/// set: a deadline on reading a request's headers (a client trickling
/// bytes would otherwise hold a socket and a task for ever) and one on
/// reading its body.
pub fn serve_http(
    listener: TcpListener,
    app: Router,
    listen: &ListenSettings,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let app = app.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        Duration::from_millis(listen.body_read_timeout_ms),
    ));
    let header_timeout = Duration::from_millis(listen.header_read_timeout_ms);
    tokio::spawn(async move {
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Some(header_timeout));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let (stream, _) = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: pause
                        // rather than spin.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let service = TowerToHyperService::new(app.clone());
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::debug!(%error, "connection ended with an error");
                }
            });
        }
        drop(listener);
        graceful.shutdown().await;
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
