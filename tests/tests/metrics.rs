//! `/metrics` on every service, and the counters move by what happened.
//! (One test in its own binary: the metrics recorder is per process.)

use std::time::Duration;

use hookfleet_tests::{Receiver, Reply, TestApp, eventually};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

/// The value of the sample `series` (a name with its labels, as printed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
}

async fn scrape(app: &TestApp, addr: std::net::SocketAddr) -> String {
    let response = app
        .http
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_count_what_happened() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    receiver.reply_next([Reply::Status(500)]);
    let (endpoint_id, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let first = app.send_event("a.b", r#"{"n":1}"#).await;
    let second = app.send_event("a.b", r#"{"n":2}"#).await;
    let mut headers = FieldTable::default();
    headers.insert(
        "x-tenant".into(),
        AMQPValue::LongString(LongString::from(app.tenant.as_str())),
    );
    app.publish_raw(
        "a.b",
        BasicProperties::default()
            .with_message_id("broken".into())
            .with_headers(headers),
        b"not json",
    )
    .await;
    // An inbound webhook whose signature does not verify: refused,
    // counted by source and reason, and nothing published.
    let source: serde_json::Value = app
        .http
        .post(app.producer_url("/v1/sources"))
        .json(&serde_json::json!({"name": "repo", "kind": "github", "secret": "right"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let source_id = source["id"].as_str().unwrap().to_owned();
    let refused = reqwest::Client::new()
        .post(app.producer_url(&format!("/v1/inbound/{source_id}")))
        .header("x-github-event", "ping")
        .header("x-github-delivery", "d-1")
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .body(r#"{"zen": "x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    for event in [&first, &second] {
        app.wait_for_delivery_state(event, &endpoint_id, "succeeded", Duration::from_secs(30))
            .await
            .expect("delivered");
    }

    let producer = scrape(&app, app.producer).await;
    assert_eq!(
        sample(&producer, r#"hookfleet_events_ingested_total{via="http"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&producer, "hookfleet_events_routed_total"),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &producer,
            r#"hookfleet_events_parked_total{reason="not_json"}"#
        ),
        Some(1.0)
    );
    assert_eq!(sample(&producer, "hookfleet_fanout_size_count"), Some(2.0));
    let rejected = producer
        .lines()
        .find(|l| l.starts_with("hookfleet_inbound_rejected_total{"))
        .expect("inbound rejections are counted");
    assert!(
        rejected.contains(&format!("source=\"{source_id}\""))
            && rejected.contains(r#"reason="bad_signature""#)
            && rejected.ends_with(" 1"),
        "{rejected}"
    );

    let worker = scrape(&app, app.workers[0].addr).await;
    assert_eq!(
        sample(&worker, r#"hookfleet_attempts_total{result="retrying"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&worker, r#"hookfleet_attempts_total{result="succeeded"}"#),
        Some(2.0)
    );
    assert_eq!(
        sample(&worker, "hookfleet_retries_scheduled_total"),
        Some(1.0)
    );
    assert_eq!(
        sample(&worker, "hookfleet_attempt_duration_seconds_count"),
        Some(3.0)
    );
    assert_eq!(sample(&worker, "hookfleet_deliveries_in_flight"), Some(0.0));

    // The ledger may still be writing the last outcome.
    let recorded = eventually(Duration::from_secs(30), || async {
        let ledger = scrape(&app, app.ledger).await;
        let attempts = sample(&ledger, r#"hookfleet_ledger_records_total{kind="attempt"}"#)?;
        (attempts >= 3.0).then_some(ledger)
    })
    .await
    .expect("the ledger counted its records");
    assert_eq!(
        sample(
            &recorded,
            r#"hookfleet_ledger_records_total{kind="attempt"}"#
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(&recorded, r#"hookfleet_ledger_records_total{kind="event"}"#),
        Some(2.0)
    );
    assert!(sample(&recorded, "hookfleet_publish_confirm_seconds_count").unwrap() >= 7.0);
    app.shutdown().await;
}
