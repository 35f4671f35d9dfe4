//! The dead-letter queue through the API: each tenant sees its own parked
//! messages with the reason, and can requeue them.

use std::time::Duration;

use hookfleet_tests::{
    Durations, Options, Receiver, Reply, TestApp, client_with_token, eventually,
};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Value, json};

async fn parked(client: &reqwest::Client, app: &TestApp) -> Vec<Value> {
    let page: Value = client
        .get(app.ledger_url("/v1/dlq"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_messages_are_listed_per_tenant_and_can_be_requeued() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: Durations::default(),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(500));
    let (endpoint, _) = app.create_endpoint(&receiver.url("/acme"), &["*"]).await;
    let event = app.send_event("a.b", r#"{"n":1}"#).await;
    app.wait_for_delivery_state(&event, &endpoint, "exhausted", Duration::from_secs(30))
        .await
        .expect("exhausted");
    let mut headers = FieldTable::default();
    headers.insert(
        "x-tenant".into(),
        AMQPValue::LongString(LongString::from(app.tenant.as_str())),
    );
    app.publish_raw(
        "a.b",
        BasicProperties::default()
            .with_message_id("broken-1".into())
            .with_headers(headers),
        b"not json",
    )
    .await;
    // Another tenant's dead task.
    let other = client_with_token(&app.new_tenant("globex").await);
    let response = other
        .post(app.producer_url("/v1/endpoints"))
        .json(&json!({"url": receiver.url("/globex"), "event_types": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    other
        .post(app.producer_url("/v1/events"))
        .json(&json!({"type": "a.b", "payload": {"n": 2}}))
        .send()
        .await
        .unwrap();

    let mine = eventually(Duration::from_secs(30), || async {
        let mine = parked(&app.http, &app).await;
        (mine.len() == 2).then_some(mine)
    })
    .await
    .expect("two parked messages for acme");
    let task = mine
        .iter()
        .find(|p| p["kind"] == "task")
        .expect("the dead task");
    assert_eq!(task["event_id"], event.as_str());
    assert_eq!(task["endpoint_id"], endpoint.as_str());
    assert!(
        task["reason"]
            .as_str()
            .unwrap()
            .contains("exhausted after 1 attempts")
    );
    assert_eq!(task["body"], r#"{"n":1}"#);
    let broken = mine
        .iter()
        .find(|p| p["kind"] == "event")
        .expect("the bad event");
    assert_eq!(broken["message_id"], "broken-1");
    assert!(
        broken["reason"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    // Listing does not consume; the other tenant sees only its own.
    assert_eq!(parked(&app.http, &app).await.len(), 2);
    let theirs = eventually(Duration::from_secs(30), || async {
        let theirs = parked(&other, &app).await;
        (!theirs.is_empty()).then_some(theirs)
    })
    .await
    .expect("globex's dead task");
    assert_eq!(theirs.len(), 1);
    assert_ne!(theirs[0]["event_id"], event.as_str());

    // The receiver is fixed: requeue the task alone.
    receiver.set_default(Reply::Status(200));
    let task_id = task["message_id"].as_str().unwrap();
    let requeued: Value = app
        .http
        .post(app.ledger_url("/v1/dlq/requeue"))
        .json(&json!({"message_ids": [task_id]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requeued["data"].as_array().unwrap().len(), 1);
    let attempts = app
        .wait_for_delivery_state(&event, &endpoint, "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(attempts, Some(2));
    let left = parked(&app.http, &app).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["message_id"], "broken-1");
    assert_eq!(
        parked(&other, &app).await.len(),
        1,
        "another tenant's message moved"
    );
    app.shutdown().await;
}
