//! One trace per event (DESIGN.md invariant 9): OpenTelemetry spans
//! exported over OTLP, and W3C trace context carried in AMQP headers and
//! outgoing webhooks.

use std::collections::HashMap;
use std::time::Duration;

use hookfleet_config::TracingSettings;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header names.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Builds the tracer provider when an endpoint is configured.
pub(crate) fn provider(
    settings: &TracingSettings,
    default_service: &str,
) -> Result<Option<SdkTracerProvider>, opentelemetry_otlp::ExporterBuildError> {
    let base = settings.otlp_endpoint.trim().trim_end_matches('/');
    if base.is_empty() {
        return Ok(None);
    }
    let endpoint = if base.ends_with("/v1/traces") {
        base.to_owned()
    } else {
        format!("{base}/v1/traces")
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(settings.export_interval_ms.max(10)))
                .build(),
        )
        .build();
    let service = if settings.service_name.is_empty() {
        default_service
    } else {
        &settings.service_name
    };
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            settings.sampling_ratio.clamp(0.0, 1.0),
        ))))
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build();
    Ok(Some(provider))
}

/// The tracer the `tracing` layer hands spans to.
pub(crate) fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::Tracer {
    provider.tracer("hookfleet")
}

/// The trace-context headers of the current span, to put on a message or
/// request so that what it causes joins the trace. Empty when tracing is
/// off.
pub fn trace_headers() -> Vec<(String, String)> {
    let context = tracing::Span::current().context();
    let mut headers = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut headers);
    headers.into_iter().collect()
}

/// The current span's W3C `traceparent`, for a record that travels inside
/// a batch rather than with headers of its own.
pub fn traceparent() -> Option<String> {
    let context = tracing::Span::current().context();
    let mut only = Traceparent(None);
    TraceContextPropagator::new().inject_context(&context, &mut only);
    only.0
}

/// Keeps the `traceparent` a propagator injects and nothing else (one
/// string per record instead of a map of headers).
struct Traceparent(Option<String>);

impl Injector for Traceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT {
            self.0 = Some(value);
        }
    }
}

struct Headers<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent,
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// Makes `span` continue the trace in these headers (when there is one)
/// and records its trace id in the span's `trace_id` field, so every log
/// line within it names the trace.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if traceparent.is_some() {
        let parent = TraceContextPropagator::new().extract(&Headers {
            traceparent,
            tracestate,
        });
        let _ = span.set_parent(parent);
    }
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", span_context.trace_id().to_string());
    }
}
