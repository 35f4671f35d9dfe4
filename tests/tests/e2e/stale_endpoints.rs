//! A deleted or disabled endpoint receives nothing more, even from retries
//! already scheduled, and the ledger says why; a moved endpoint gets its
//! pending retries at its new URL (issue 16 item 2). Workers learn the
//! registry from the producers' broadcast, never from Postgres.

use std::time::Duration;

use hookfleet_signing::{SigningSecret, verify};
use hookfleet_tests::{Options, Receiver, Reply, TestApp, eventually, seconds};

/// A fleet whose first retry comes 3 s after a failure.
async fn spawn() -> TestApp {
    TestApp::spawn_with(Options {
        retry_schedule: seconds(&[3]),
        ..Options::default()
    })
    .await
}

/// Sends an event that fails once at `receiver`, and waits until the
/// ledger shows the retry scheduled.
async fn fail_once(app: &TestApp, receiver: &Receiver, endpoint_id: &str) -> String {
    receiver.reply_next([Reply::Status(500)]);
    let event_id = app.send_event("a.b", r#"{"n":1}"#).await;
    app.wait_for_delivery_state(&event_id, endpoint_id, "failed", Duration::from_secs(20))
        .await
        .expect("the first attempt failed and a retry is scheduled");
    event_id
}

/// The ledger's last attempt of the event: (attempt, result, error).
async fn last_attempt(app: &TestApp, event_id: &str) -> (i32, String, Option<String>) {
    let db = app.db().await;
    let row = db
        .query_one(
            "SELECT attempt, result, error FROM attempts WHERE event_id = $1
             ORDER BY attempt DESC LIMIT 1",
            &[&event_id],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

async fn call(app: &TestApp, method: &str, path: &str, body: Option<serde_json::Value>) -> u16 {
    let mut request = app
        .http
        .request(method.parse().unwrap(), app.producer_url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_endpoint_gets_no_scheduled_retry_and_the_ledger_says_why() {
    let app = spawn().await;
    let receiver = Receiver::start().await;
    let (endpoint_id, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let event_id = fail_once(&app, &receiver, &endpoint_id).await;

    assert_eq!(
        call(
            &app,
            "DELETE",
            &format!("/v1/endpoints/{endpoint_id}"),
            None
        )
        .await,
        204
    );
    let attempts = app
        .wait_for_delivery_state(
            &event_id,
            &endpoint_id,
            "cancelled",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(attempts, Some(2), "the retry was not cancelled");
    let (attempt, result, error) = last_attempt(&app, &event_id).await;
    assert_eq!((attempt, result.as_str()), (2, "cancelled"));
    assert!(error.unwrap().contains("deleted"));
    assert_eq!(receiver.received().len(), 1, "the retry was sent");
    // Cancelled tasks are dropped, not parked.
    assert!(app.parked().await.is_empty());
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_endpoint_gets_no_scheduled_retry_and_the_ledger_says_why() {
    let app = spawn().await;
    let receiver = Receiver::start().await;
    let (endpoint_id, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let event_id = fail_once(&app, &receiver, &endpoint_id).await;

    let path = format!("/v1/endpoints/{endpoint_id}/disable");
    let reason = serde_json::json!({ "reason": "maintenance" });
    assert_eq!(call(&app, "POST", &path, Some(reason)).await, 200);
    app.wait_for_delivery_state(
        &event_id,
        &endpoint_id,
        "cancelled",
        Duration::from_secs(20),
    )
    .await
    .expect("the retry was not cancelled");
    let (_, result, error) = last_attempt(&app, &event_id).await;
    assert_eq!(result, "cancelled");
    assert!(error.unwrap().contains("disabled: maintenance"));
    assert_eq!(receiver.received().len(), 1, "the retry was sent");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_endpoint_gets_its_pending_retry_at_the_new_url() {
    let app = spawn().await;
    let old = Receiver::start().await;
    let new = Receiver::start().await;
    let (endpoint_id, secret) = app.create_endpoint(&old.url("/h"), &["*"]).await;
    let event_id = fail_once(&app, &old, &endpoint_id).await;

    let moved = serde_json::json!({ "url": new.url("/moved") });
    let path = format!("/v1/endpoints/{endpoint_id}");
    assert_eq!(call(&app, "PATCH", &path, Some(moved)).await, 200);
    let arrived = new.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(arrived.len(), 1, "the retry did not reach the new URL");
    assert_eq!(arrived[0].path, "/moved");
    let webhook = &arrived[0];
    let timestamp: i64 = webhook
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert!(verify(
        &SigningSecret::parse(&secret).unwrap(),
        webhook.header("webhook-signature").unwrap(),
        &event_id,
        timestamp,
        &webhook.body
    ));
    assert_eq!(old.received().len(), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_after_a_deletion_learns_it_from_the_broadcast() {
    // No worker yet: the task waits in the queue while the endpoint goes.
    let mut app = TestApp::spawn_with(Options {
        workers: 0,
        broadcast_every: Duration::from_secs(1),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let (endpoint_id, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let event_id = app.send_event("a.b", r#"{"n":1}"#).await;
    let queue = app.topology().deliver_queue();
    let db = app.db().await;
    eventually(Duration::from_secs(20), || async {
        let row = db
            .query_opt("SELECT 1 FROM deliveries WHERE event_id = $1", &[&event_id])
            .await
            .ok()?;
        row.map(|_| ())
    })
    .await
    .expect("the event was routed");
    assert_eq!(
        call(
            &app,
            "DELETE",
            &format!("/v1/endpoints/{endpoint_id}"),
            None
        )
        .await,
        204
    );
    // The deletion's broadcast reached no worker. A new worker sends what
    // tasks say until its first snapshot (the documented window), so the
    // test holds the task until the periodic snapshot, which carries the
    // tombstone, has had time to arrive.
    let tasks = app.drain_queue(&queue).await;
    assert_eq!(tasks.len(), 1);
    app.add_worker().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let task = &tasks[0];
    let connection = hookfleet_topology::connect(&app.amqp.url, "hookfleet-test-requeue")
        .await
        .unwrap();
    let publisher = hookfleet_topology::Publisher::open(&connection)
        .await
        .unwrap();
    publisher
        .publish(
            &app.topology().deliver_exchange(),
            &task.routing_key,
            &task.body,
            task.properties.clone(),
        )
        .await
        .unwrap();
    let _ = connection.close(200, "bye".into()).await;
    app.wait_for_delivery_state(
        &event_id,
        &endpoint_id,
        "cancelled",
        Duration::from_secs(20),
    )
    .await
    .expect("the task of the deleted endpoint was not cancelled");
    assert!(receiver.received().is_empty());
    app.shutdown().await;
}
