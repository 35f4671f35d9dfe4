//! One trace per event: the HTTP ingest, the routing, every attempt
//! (including a retry that fires later through the delay levels) and the
//! ledger's records share one trace id, and webhooks carry `traceparent`.
//! (One test in its own binary: the span exporter is per process.)

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use hookfleet_tests::{Options, Receiver, Reply, TestApp, eventually, seconds};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

type Spans = Arc<Mutex<Vec<(String, String)>>>;

/// A minimal OTLP/HTTP collector: records (trace id, span name).
async fn collector() -> (String, Spans) {
    let spans: Spans = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            post(|State(spans): State<Spans>, body: Bytes| async move {
                if let Ok(request) = ExportTraceServiceRequest::decode(body) {
                    let mut spans = spans.lock().unwrap();
                    for resource in request.resource_spans {
                        for scope in resource.scope_spans {
                            for span in scope.spans {
                                let id: String =
                                    span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                                spans.push((id, span.name));
                            }
                        }
                    }
                }
                ""
            }),
        )
        .with_state(spans.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_and_everything_it_causes_share_one_trace() {
    let (endpoint, spans) = collector().await;
    let app = TestApp::spawn_with(Options {
        retry_schedule: seconds(&[1]),
        otlp_endpoint: Some(endpoint),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.reply_next([Reply::Status(500)]);
    let (endpoint_id, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let event_id = app.send_event("order.created", r#"{"n":1}"#).await;
    app.wait_for_delivery_state(
        &event_id,
        &endpoint_id,
        "succeeded",
        Duration::from_secs(30),
    )
    .await
    .expect("delivered on the second attempt");

    // Both webhooks carried a traceparent of the same trace.
    let arrived = receiver.received();
    assert_eq!(arrived.len(), 2);
    let trace_ids: HashSet<String> = arrived
        .iter()
        .map(|r| {
            let parent = r.header("traceparent").expect("a traceparent header");
            parent
                .split('-')
                .nth(1)
                .expect("version-trace-span-flags")
                .to_owned()
        })
        .collect();
    assert_eq!(trace_ids.len(), 1, "the attempts are in different traces");
    let trace_id = trace_ids.into_iter().next().unwrap();

    // The collector has every stage of that trace.
    let names = eventually(Duration::from_secs(30), || async {
        let mut count: HashMap<String, usize> = HashMap::new();
        for (id, name) in spans.lock().unwrap().iter() {
            if *id == trace_id {
                *count.entry(name.clone()).or_default() += 1;
            }
        }
        let complete = count.get("ingest_event") == Some(&1)
            && count.get("route_event") == Some(&1)
            && count.get("deliver") == Some(&2)
            && count.get("ledger_record").copied().unwrap_or(0) >= 3;
        complete.then_some(count)
    })
    .await;
    assert!(
        names.is_some(),
        "incomplete trace {trace_id}: {:?}",
        spans
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _)| *id == trace_id)
            .map(|(_, name)| name.clone())
            .collect::<Vec<_>>()
    );
    app.shutdown().await;
}
