//! AMQP destinations on another broker (`destination.url`): the "other
//! broker" is a vhost of its own on the test broker, made by the test, a
//! different connection, login and namespace for the worker. The URL's
//! credentials are never shown; a broker that refuses the login is a failed
//! attempt, retried and dead-lettered; an internal broker address is
//! refused as an internal endpoint URL is.

use std::time::Duration;

use hookfleet_signing::{SigningSecret, verify};
use hookfleet_tests::{DestinationQueue, Durations, Options, ScratchVhost, TestApp, seconds};
use serde_json::{Value, json};

/// The test broker's URL with `user:password` and the vhost replaced.
fn broker_url(app: &TestApp, vhost: &ScratchVhost, user: &str, password: &str) -> String {
    let mut url = reqwest::Url::parse(&vhost.url(&app.amqp.url)).unwrap();
    url.set_username(user).unwrap();
    url.set_password(Some(password)).unwrap();
    url.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_on_another_broker_gets_the_payload_and_its_password_is_never_shown() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: seconds(&[1, 2, 2, 2]),
        ..Options::default()
    })
    .await;
    let vhost = ScratchVhost::create(&app.name, "guest");
    let url = broker_url(&app, &vhost, "guest", "guest");
    let queue = DestinationQueue::declare_at(&url, "billing", "#").await;
    let response = app
        .http
        .post(app.producer_url("/v1/endpoints"))
        .json(&json!({
            "destination": {"type": "amqp", "exchange": "billing", "routing_key": "hooks.{type}", "url": url},
            "event_types": ["invoice.*"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let created = response.text().await.unwrap();
    assert!(!created.contains("guest@"), "{created}");
    let endpoint: Value = serde_json::from_str(&created).unwrap();
    let masked = format!("amqp://guest:***@127.0.0.1:5672/{}", vhost.name);
    assert_eq!(endpoint["destination"]["url"], masked.as_str());
    let secret = SigningSecret::parse(endpoint["secret"].as_str().unwrap()).unwrap();
    let endpoint_id = endpoint["id"].as_str().unwrap();

    // GET and list show it masked; the password is nowhere, nor in the
    // registry's row.
    for path in [
        format!("/v1/endpoints/{endpoint_id}"),
        "/v1/endpoints".into(),
    ] {
        let shown = app
            .http
            .get(app.producer_url(&path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(shown.contains(&masked), "{path}: {shown}");
        assert!(!shown.contains("guest@"), "{path}: {shown}");
    }
    let stored: Value = app
        .db()
        .await
        .query_one(
            "SELECT destination FROM endpoints WHERE id = $1",
            &[&endpoint_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!stored.to_string().contains(&vhost.name), "{stored}");
    assert!(stored["sealed_url"].is_string(), "{stored}");

    let payload = r#"{ "invoice" : 7,"total":"1.50" }"#;
    let event_id = app.send_event("invoice.paid", payload).await;
    let taken = queue.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(taken.len(), 1, "nothing reached the other broker's queue");
    let message = &taken[0];
    assert_eq!(message.body, payload.as_bytes());
    assert_eq!(message.routing_key, "hooks.invoice.paid");
    assert_eq!(message.properties.delivery_mode(), &Some(2));
    assert_eq!(message.header("webhook-id"), Some(event_id.as_str()));
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
    assert_eq!(
        app.wait_for_delivery_state(&event_id, endpoint_id, "succeeded", Duration::from_secs(30))
            .await,
        Some(1)
    );

    // The connection is reused: a second event goes the same way.
    let second = app.send_event("invoice.paid", r#"{"invoice":8}"#).await;
    let taken = queue.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(taken.len(), 2);
    assert_eq!(taken[1].header("webhook-id"), Some(second.as_str()));
    queue.close().await;

    // The broker drops every connection, and the exchange is gone with
    // the consumer's queue: the next attempt fails (404, which also
    // closes the channel); once the exchange is back, the retry gets
    // through on a connection and channel opened again.
    vhost.close_connections();
    let third = app.send_event("invoice.paid", r#"{"invoice":9}"#).await;
    app.wait_for_delivery_state(&third, endpoint_id, "failed", Duration::from_secs(30))
        .await
        .expect("the publish to the missing exchange failed");
    let queue = DestinationQueue::declare_at(&url, "billing", "#").await;
    let taken = queue.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(taken.len(), 1, "the retry did not reach the other broker");
    assert_eq!(taken[0].header("webhook-id"), Some(third.as_str()));
    let error: Option<String> = app
        .db()
        .await
        .query_one(
            "SELECT error FROM attempts WHERE event_id = $1 AND attempt = 1",
            &[&third],
        )
        .await
        .unwrap()
        .get(0);
    let error = error.unwrap_or_default();
    assert!(error.contains("NOT_FOUND"), "{error}");
    queue.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_refuses_the_login_is_retried_then_dead_lettered() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: seconds(&[1]),
        ..Options::default()
    })
    .await;
    let vhost = ScratchVhost::create(&app.name, "guest");
    let url = broker_url(&app, &vhost, "guest", "not-the-password");
    let response = app
        .http
        .post(app.producer_url("/v1/endpoints"))
        .json(&json!({
            "destination": {"type": "amqp", "exchange": "billing", "url": url},
            "event_types": ["*"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let endpoint: Value = response.json().await.unwrap();
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let event_id = app.send_event("order.created", r#"{"n":1}"#).await;

    let attempts = app
        .wait_for_delivery_state(&event_id, endpoint_id, "exhausted", Duration::from_secs(30))
        .await;
    assert_eq!(attempts, Some(2), "one try and one retry, then exhausted");
    let errors: Vec<String> = app
        .db()
        .await
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
        assert!(error.contains("guest:***@"), "{error}");
        assert!(!error.contains("not-the-password"), "{error}");
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
    assert!(!reason.contains("not-the-password"), "{reason}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_broker_is_refused_at_creation_and_by_the_worker() {
    // The producer allows nothing internal; the worker allows loopback.
    let app = TestApp::spawn_with(Options {
        workers: 0,
        endpoint_ssrf_allow: String::new(),
        ..Options::default()
    })
    .await;
    for (url, says) in [
        (
            "amqp://app:pw@127.0.0.1:5672/billing",
            "127.0.0.1 is a loopback address",
        ),
        ("amqp://app:pw@10.1.2.3/", "10.1.2.3 is a private address"),
        ("http://mq.example.com/", "must be amqp:// or amqps://"),
        ("amqp://h/?heartbeat=soon", "not an AMQP URI"),
    ] {
        let response = app
            .http
            .post(app.producer_url("/v1/endpoints"))
            .json(&json!({
                "destination": {"type": "amqp", "exchange": "billing", "url": url},
                "event_types": ["*"],
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{url}");
        let body: Value = response.json().await.unwrap();
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with("destination.url: "), "{message}");
        assert!(message.contains(says), "{url}: {message}");
        assert!(!message.contains("pw@"), "{message}");
    }
    app.shutdown().await;

    // A producer that allows loopback, and a worker that does not.
    let app = TestApp::spawn_with(Options {
        retry_schedule: Durations::default(),
        ssrf_allow: String::new(),
        ..Options::default()
    })
    .await;
    let response = app
        .http
        .post(app.producer_url("/v1/endpoints"))
        .json(&json!({
            "destination": {"type": "amqp", "exchange": "billing", "url": app.amqp.url},
            "event_types": ["*"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let endpoint: Value = response.json().await.unwrap();
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let event_id = app.send_event("order.created", r#"{"n":2}"#).await;
    app.wait_for_delivery_state(&event_id, endpoint_id, "exhausted", Duration::from_secs(30))
        .await
        .expect("the worker refused the internal broker");
    let error: Option<String> = app
        .db()
        .await
        .query_one(
            "SELECT error FROM attempts WHERE endpoint_id = $1",
            &[&endpoint_id],
        )
        .await
        .unwrap()
        .get(0);
    let error = error.unwrap_or_default();
    assert!(error.contains("refused by the SSRF guard"), "{error}");
    app.shutdown().await;
}
