//! Telemetry and the operational HTTP surface, in one place for every
//! service: a `tracing` subscriber that writes readable text for people or
//! JSON for log pipelines, and the `/healthz` and `/readyz` probes.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use hookfleet_config::{LogFormat, LogSettings};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the
/// configured level so an operator can turn up one module without a
/// config change. Calling it twice is harmless (tests do).
pub fn init(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _already_set = match settings.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// `/healthz` answers 200 while the process runs; `/readyz` answers 200
/// only while `ready()` holds (for the services: broker connected and
/// topology declared), 503 otherwise.
pub fn probes<S: Clone + Send + Sync + 'static>(
    ready: impl Fn() -> bool + Send + Sync + 'static,
) -> Router<S> {
    let ready = Arc::new(ready);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready() {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
}

/// Resolves on SIGTERM (what Kubernetes and `scripts/down` send) or Ctrl-C.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
