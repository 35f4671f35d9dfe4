//! Recovery: after an outage, resend to an endpoint everything since a time
//! that it did not get, in the background, with progress in the API.

use std::time::Duration;

use hookfleet_tests::{Durations, Options, Receiver, Reply, TestApp, eventually};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovering_an_endpoint_delivers_what_it_missed() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: Durations::default(),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(500));
    let (endpoint, _) = app.create_endpoint(&receiver.url("/h"), &["order.*"]).await;
    let since = "2000-01-01T00:00:00Z";

    // Exhausted while the receiver was down...
    let exhausted = app.send_event("order.created", r#"{"n":1}"#).await;
    app.wait_for_delivery_state(&exhausted, &endpoint, "exhausted", Duration::from_secs(30))
        .await
        .expect("exhausted");
    // ...and missed while the endpoint was disabled.
    let response = app
        .http
        .post(app.producer_url(&format!("/v1/endpoints/{endpoint}/disable")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let missed = app.send_event("order.paid", r#"{"n":2}"#).await;
    // Not for this endpoint's types: never resent.
    app.send_event("invoice.paid", r#"{"n":3}"#).await;
    let db = app.db().await;
    eventually(Duration::from_secs(30), || async {
        let n: i64 = db
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .ok()?
            .get(0);
        (n == 3).then_some(())
    })
    .await
    .expect("the ledger has the three events");

    app.http
        .post(app.producer_url(&format!("/v1/endpoints/{endpoint}/enable")))
        .send()
        .await
        .unwrap();
    receiver.set_default(Reply::Status(200));
    let response = app
        .http
        .post(app.ledger_url(&format!("/v1/endpoints/{endpoint}/recover")))
        .json(&json!({ "since": since }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let started: Value = response.json().await.unwrap();
    let id = started["id"].as_str().unwrap().to_owned();

    let done = eventually(Duration::from_secs(30), || async {
        let progress: Value = app
            .http
            .get(app.ledger_url(&format!("/v1/recoveries/{id}")))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (progress["state"] == "done").then_some(progress)
    })
    .await
    .expect("the recovery finished");
    assert_eq!(done["total"], 2);
    assert_eq!(done["sent"], 2);
    for event in [&exhausted, &missed] {
        app.wait_for_delivery_state(event, &endpoint, "succeeded", Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{event} was not recovered"));
    }
    let delivered: Vec<String> = receiver
        .received()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    // The exhausted try, then the two resends; never the invoice.
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    assert!(delivered.contains(&missed));

    // A second recovery finds nothing left to send.
    let again: Value = app
        .http
        .post(app.ledger_url(&format!("/v1/endpoints/{endpoint}/recover")))
        .json(&json!({ "since": since }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let again_id = again["id"].as_str().unwrap().to_owned();
    let finished = eventually(Duration::from_secs(30), || async {
        let progress: Value = app
            .http
            .get(app.ledger_url(&format!("/v1/recoveries/{again_id}")))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (progress["state"] == "done").then_some(progress)
    })
    .await
    .expect("the second recovery finished");
    assert_eq!(finished["total"], 0);

    let response = app
        .http
        .post(app.ledger_url("/v1/endpoints/ep_nope/recover"))
        .json(&json!({ "since": since }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let response = app
        .http
        .post(app.ledger_url(&format!("/v1/endpoints/{endpoint}/recover")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    app.shutdown().await;
}
