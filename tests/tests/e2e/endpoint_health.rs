//! Endpoint health: 410 Gone or failing for too long disables the
//! endpoint, with the reason, and announces it as an `endpoint.disabled`
//! event.

use std::time::Duration;

use hookfleet_tests::{Options, Receiver, Reply, TestApp, eventually, seconds};
use serde_json::Value;

async fn endpoint(app: &TestApp, id: &str) -> Value {
    app.http
        .get(app.producer_url(&format!("/v1/endpoints/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_disabled(app: &TestApp, id: &str) -> Value {
    eventually(Duration::from_secs(30), || async {
        let view = endpoint(app, id).await;
        (view["enabled"] == false).then_some(view)
    })
    .await
    .unwrap_or_else(|| panic!("endpoint {id} was not disabled"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_answers_gone_is_disabled_and_announced() {
    let app = TestApp::spawn().await;
    let gone = Receiver::start().await;
    gone.set_default(Reply::Status(410));
    let watcher = Receiver::start().await;
    let (gone_id, _) = app.create_endpoint(&gone.url("/h"), &["order.*"]).await;
    app.create_endpoint(&watcher.url("/ops"), &["endpoint.disabled"])
        .await;
    app.send_event("order.created", r#"{"n":1}"#).await;

    let view = wait_disabled(&app, &gone_id).await;
    assert_eq!(view["disabled_reason"], "the endpoint answered 410 Gone");
    assert!(view["disabled_at"].is_string());
    let announced = watcher.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(announced.len(), 1);
    let body: Value = serde_json::from_slice(&announced[0].body).unwrap();
    assert_eq!(body["endpoint_id"], gone_id.as_str());
    assert_eq!(body["reason"], "the endpoint answered 410 Gone");

    // Nothing more goes to it; enabling it again is an API call.
    app.send_event("order.created", r#"{"n":2}"#).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(gone.received().len(), 1);
    let response = app
        .http
        .post(app.producer_url(&format!("/v1/endpoints/{gone_id}/enable")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    gone.set_default(Reply::Status(200));
    app.send_event("order.created", r#"{"n":3}"#).await;
    assert_eq!(gone.wait_for(2, Duration::from_secs(30)).await.len(), 2);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_too_long_is_disabled() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: seconds(&[1; 6]),
        health_disable_after: Duration::from_secs(2),
        health_sweep_every: Duration::from_millis(500),
        ..Options::default()
    })
    .await;
    let failing = Receiver::start().await;
    failing.set_default(Reply::Status(500));
    let (id, _) = app.create_endpoint(&failing.url("/h"), &["*"]).await;
    app.send_event("a.b", "{}").await;
    let view = wait_disabled(&app, &id).await;
    let reason = view["disabled_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("every delivery has failed since"),
        "{reason}"
    );
    app.shutdown().await;
}
