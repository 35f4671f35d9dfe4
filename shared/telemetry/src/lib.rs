//! Telemetry and the operational HTTP surface, in one place for every
//! service: a `tracing` subscriber that writes readable text for people or
//! JSON for log pipelines, Prometheus metrics, and the `/healthz`,
//! `/readyz` and `/metrics` endpoints.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
mod edge;
mod service;
mod tracing_otel;

pub use edge::api_edge;
pub use service::{Running, bind, run_until_signal, serve_http};
pub use tracing_otel::{TRACEPARENT, TRACESTATE, continue_trace, trace_headers, traceparent};

use hookfleet_config::{LogFormat, LogSettings, TracingSettings};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Keeps the trace exporter alive; dropping it flushes what is left.
#[derive(Debug, Default)]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global subscriber: logs (text or JSON, each line with its
/// span's `trace_id`) and, when `tracing.otlp_endpoint` is set, spans
/// exported over OTLP. `RUST_LOG`, when set, wins over the configured
/// level so an operator can turn up one module without a config change.
/// Calling it twice is harmless (tests do); the first call wins.
pub fn init(log: &LogSettings, tracing: &TracingSettings, service: &str) -> TelemetryGuard {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = match tracing_otel::provider(tracing, service) {
        Ok(provider) => provider,
        Err(error) => {
            eprintln!("tracing.otlp_endpoint: {error}; traces are not exported");
            None
        }
    };
    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    // Spans are exported whatever the log level: the filter applies to
    // the log lines only.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(tracing_otel::tracer(p))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO)
    });
    let logs = match log.format {
        // Colours only for a person at a terminal: in a file or a log
        // collector they are noise, and formatting them cost about 3% of
        // a worker's CPU (every span's fields are formatted when it opens).
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_target(true)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
    };
    let _already_set = tracing_subscriber::registry()
        .with(otel)
        .with(logs)
        .try_init();
    TelemetryGuard { provider }
}

/// The process's Prometheus recorder, installed on first use. Every
/// `metrics::counter!` and friends in the process lands in it.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0, 300.0, 3600.0, 36000.0,
                ],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Suffix("_size".into()),
                    &[
                        1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 10000.0,
                    ],
                )
            });
        match builder.and_then(|b| b.install_recorder()) {
            Ok(handle) => handle,
            Err(error) => {
                tracing::warn!(%error, "metrics recorder not installed; /metrics stays empty");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

/// `/healthz` answers 200 while the process runs; `/readyz` answers 200
/// only while `ready()` holds (for the services: broker connected and
/// topology declared), 503 otherwise; `/metrics` is the Prometheus text.
pub fn probes<S: Clone + Send + Sync + 'static>(
    ready: impl Fn() -> bool + Send + Sync + 'static,
) -> Router<S> {
    let ready = Arc::new(ready);
    let handle = metrics();
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(move || async move { handle.render() }))
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
