//! AMQP destinations: an endpoint that is an exchange on hookfleet's
//! broker gets the payload with the Standard Webhooks headers, and a
//! publish that fails is retried, recorded and dead-lettered like HTTP.

use std::time::Duration;

use hookfleet_signing::{SigningSecret, verify};
use hookfleet_tests::{DestinationQueue, Durations, Options, Receiver, TestApp, seconds};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_gets_the_payload_signed_persistent_and_routed_by_type() {
    let app = TestApp::spawn().await;
    let queue = DestinationQueue::declare(&app, "billing").await;
    let response = app
        .http
        .post(app.producer_url("/v1/endpoints"))
        .json(&json!({
            "destination": {"type": "amqp", "exchange": queue.exchange, "routing_key": "hooks.{type}"},
            "event_types": ["invoice.*"],
            "headers": {"x-team": "billing"},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let endpoint: Value = response.json().await.unwrap();
    assert_eq!(endpoint["url"], Value::Null);
    assert_eq!(endpoint["destination"]["exchange"], queue.exchange.as_str());
    let secret = SigningSecret::parse(endpoint["secret"].as_str().unwrap()).unwrap();
    let endpoint_id = endpoint["id"].as_str().unwrap();

    let payload = r#"{ "invoice" : 42,"total":"19.99" }"#;
    let event_id = app.send_event("invoice.paid", payload).await;
    let taken = queue.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(taken.len(), 1, "nothing reached the destination");
    let message = &taken[0];
    assert_eq!(message.body, payload.as_bytes());
    assert_eq!(message.routing_key, "hooks.invoice.paid");
    assert_eq!(message.properties.delivery_mode(), &Some(2));
    assert_eq!(message.header("webhook-id"), Some(event_id.as_str()));
    assert_eq!(message.header("x-team"), Some("billing"));
    let timestamp: i64 = message
        .header("webhook-timestamp")
        .and_then(|t| t.parse().ok())
        .expect("webhook-timestamp");
    let signature = message.header("webhook-signature").expect("signature");
    assert!(verify(
        &secret,
        signature,
        &event_id,
        timestamp,
        &message.body
    ));

    let attempts = app
        .wait_for_delivery_state(&event_id, endpoint_id, "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(attempts, Some(1));
    queue.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_exchange_is_retried_then_dead_lettered_and_http_is_unaffected() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: seconds(&[1]),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let missing = format!("missing-{}", app.name);
    let endpoint_id = app.create_destination(&missing, "{type}", &["*"]).await;
    let (http_endpoint, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let event_id = app.send_event("order.created", r#"{"n":1}"#).await;

    let attempts = app
        .wait_for_delivery_state(
            &event_id,
            &endpoint_id,
            "exhausted",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(attempts, Some(2), "one try and one retry, then exhausted");
    let db = app.db().await;
    let errors: Vec<String> = db
        .query(
            "SELECT error FROM attempts WHERE endpoint_id = $1 ORDER BY attempt",
            &[&endpoint_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, Option<String>>(0).unwrap_or_default())
        .collect();
    assert_eq!(errors.len(), 2);
    for error in &errors {
        assert!(error.contains("NOT_FOUND"), "{error}");
    }
    let dead = app.parked().await;
    assert_eq!(
        dead.len(),
        1,
        "the exhausted task is in the dead-letter queue"
    );
    assert_eq!(dead[0].body, br#"{"n":1}"#);
    let reason = dead[0].header("x-hookfleet-reason").unwrap();
    assert!(reason.contains("exhausted after 2 attempts"), "{reason}");

    // The worker's own channel survived the broker closing the destination
    // channel: HTTP delivery, retries and the ledger carry on.
    app.wait_for_delivery_state(
        &event_id,
        &http_endpoint,
        "succeeded",
        Duration::from_secs(30),
    )
    .await
    .expect("the HTTP endpoint got the same event");
    let later = app.send_event("order.created", r#"{"n":2}"#).await;
    app.wait_for_delivery_state(&later, &http_endpoint, "succeeded", Duration::from_secs(30))
        .await
        .expect("a later event is delivered over HTTP");

    // Once the exchange exists, a replay from the ledger gets through.
    let queue = DestinationQueue::declare(&app, "missing").await;
    assert_eq!(queue.exchange, missing);
    let response = app
        .http
        .post(app.ledger_url(&format!("/v1/events/{event_id}/replay")))
        .json(&json!({ "endpoint_id": endpoint_id }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let taken = queue.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(taken.len(), 1, "the replay reached the destination");
    assert_eq!(taken[0].body, br#"{"n":1}"#);
    assert_eq!(taken[0].header("webhook-id"), Some(event_id.as_str()));
    queue.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_no_queue_is_bound_for_fails_as_unroutable() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: Durations::default(),
        ..Options::default()
    })
    .await;
    // The exchange exists, but its one queue takes other routing keys.
    let queue = DestinationQueue::declare_bound(&app, "orders", "invoice.#").await;
    let endpoint_id = app
        .create_destination(&queue.exchange, "{type}", &["*"])
        .await;
    let event_id = app.send_event("order.created", r#"{"n":3}"#).await;

    app.wait_for_delivery_state(
        &event_id,
        &endpoint_id,
        "exhausted",
        Duration::from_secs(30),
    )
    .await
    .expect("the unroutable publish failed and was dead-lettered");
    let db = app.db().await;
    let error: Option<String> = db
        .query_one(
            "SELECT error FROM attempts WHERE endpoint_id = $1",
            &[&endpoint_id],
        )
        .await
        .unwrap()
        .get(0);
    let error = error.unwrap_or_default();
    assert!(error.contains("unroutable"), "{error}");
    assert!(
        queue
            .wait_for(1, Duration::from_millis(200))
            .await
            .is_empty()
    );
    queue.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_are_checked_at_registration() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let reserved = format!("{}.deliver", app.name);
    for body in [
        json!({"destination": {"type": "amqp", "exchange": reserved}, "event_types": ["*"]}),
        json!({"destination": {"type": "amqp", "exchange": "amq.topic"}, "event_types": ["*"]}),
        json!({"destination": {"type": "amqp", "exchange": ""}, "event_types": ["*"]}),
        json!({"destination": {"type": "amqp", "exchange": "b", "routing_key": "{tenant}"}, "event_types": ["*"]}),
        json!({"destination": {"type": "sqs", "queue": "q"}, "event_types": ["*"]}),
        json!({"url": "http://127.0.0.1:1/h", "destination": {"type": "amqp", "exchange": "b"}, "event_types": ["*"]}),
    ] {
        let response = app
            .http
            .post(app.producer_url("/v1/endpoints"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
    }
    // A URL endpoint can become a destination, and back.
    let (id, _) = app.create_endpoint("http://127.0.0.1:1/h", &["*"]).await;
    let changed: Value = app
        .http
        .patch(app.producer_url(&format!("/v1/endpoints/{id}")))
        .json(&json!({"destination": {"type": "amqp", "exchange": "billing"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(changed["url"], Value::Null);
    assert_eq!(changed["destination"]["routing_key"], "{type}");
    let back: Value = app
        .http
        .patch(app.producer_url(&format!("/v1/endpoints/{id}")))
        .json(&json!({"url": "http://127.0.0.1:2/h"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(back["url"], "http://127.0.0.1:2/h");
    assert_eq!(back["destination"], Value::Null);
    app.shutdown().await;
}
