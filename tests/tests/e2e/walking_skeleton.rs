//! One event end to end: HTTP ingest, routing, a signed delivery to a real
//! receiver, and the ledger's record of it.

use std::time::Duration;

use hookfleet_signing::{SigningSecret, verify};
use hookfleet_tests::{Receiver, TestApp, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_reaches_its_endpoint_signed_and_is_recorded() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let (endpoint_id, secret) = app
        .create_endpoint(&receiver.url("/hook"), &["order.*"])
        .await;
    assert!(secret.starts_with("whsec_"));

    // Odd spacing and key order: the bytes must arrive exactly as sent.
    let payload = r#"{ "b" :1,"a":  [true, null, "ü"] , "n": 1.50 }"#;
    let event_id = app.send_event("order.created", payload).await;

    let arrived = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(arrived.len(), 1, "the webhook did not arrive");
    let webhook = &arrived[0];
    assert_eq!(webhook.path, "/hook");
    assert_eq!(&webhook.body[..], payload.as_bytes());
    assert_eq!(webhook.header("webhook-id"), Some(event_id.as_str()));
    assert_eq!(webhook.header("content-type"), Some("application/json"));
    let timestamp: i64 = webhook
        .header("webhook-timestamp")
        .and_then(|t| t.parse().ok())
        .expect("webhook-timestamp");
    let signature = webhook.header("webhook-signature").expect("signature");
    let secret = SigningSecret::parse(&secret).unwrap();
    assert!(verify(
        &secret,
        signature,
        &event_id,
        timestamp,
        &webhook.body
    ));

    // The ledger holds the event and one successful attempt.
    let db = app.db().await;
    let recorded = eventually(Duration::from_secs(30), || async {
        let row = db
            .query_opt(
                "SELECT d.state, d.attempts FROM deliveries d
                 WHERE d.event_id = $1 AND d.endpoint_id = $2 AND d.state = 'succeeded'",
                &[&event_id, &endpoint_id],
            )
            .await
            .ok()??;
        Some(row.get::<_, i32>(1))
    })
    .await;
    assert_eq!(recorded, Some(1), "the ledger has no successful delivery");
    let event = db
        .query_one(
            "SELECT event_type, payload, fan_out FROM events WHERE id = $1",
            &[&event_id],
        )
        .await
        .unwrap();
    assert_eq!(event.get::<_, String>(0), "order.created");
    assert_eq!(event.get::<_, String>(1), payload);
    assert_eq!(event.get::<_, i32>(2), 1);
    let attempts = db
        .query(
            "SELECT result, status_code FROM attempts WHERE event_id = $1",
            &[&event_id],
        )
        .await
        .unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].get::<_, String>(0), "succeeded");
    assert_eq!(attempts[0].get::<_, Option<i32>>(1), Some(200));

    // The ledger's API tells the same story.
    let view: serde_json::Value = app
        .http
        .get(app.ledger_url(&format!("/v1/events/{event_id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["deliveries"][0]["state"], "succeeded");
    assert_eq!(view["payload"]["a"][2], "ü");

    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_nobody_subscribed_to_is_recorded_with_no_deliveries() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/hook"), &["invoice.paid"])
        .await;
    let event_id = app.send_event("order.created", r#"{"x":1}"#).await;

    let db = app.db().await;
    let fan_out = eventually(Duration::from_secs(30), || async {
        let row = db
            .query_opt("SELECT fan_out FROM events WHERE id = $1", &[&event_id])
            .await
            .ok()??;
        Some(row.get::<_, i32>(0))
    })
    .await;
    assert_eq!(fan_out, Some(0));
    assert!(receiver.received().is_empty());
    app.shutdown().await;
}
