//! Ingest beyond the single HTTP call: straight over AMQP, in batches, and
//! idempotently.

use std::time::Duration;

use hookfleet_tests::{Options, Receiver, TestApp};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};

fn contract_properties(id: Option<&str>, tenant: Option<&str>) -> BasicProperties {
    let mut headers = FieldTable::default();
    if let Some(tenant) = tenant {
        headers.insert(
            "x-tenant".into(),
            AMQPValue::LongString(LongString::from(tenant)),
        );
    }
    let mut properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(id) = id {
        properties = properties.with_message_id(id.into());
    }
    properties
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_straight_to_the_exchange_are_delivered() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/h"), &["order.*"]).await;
    let body = br#"{"from": "amqp",  "n": 1}"#;
    app.publish_raw(
        "order.created",
        contract_properties(Some("order-1001"), Some(&app.tenant)),
        body,
    )
    .await;
    let arrived = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(arrived.len(), 1);
    assert_eq!(&arrived[0].body[..], body);
    assert_eq!(arrived[0].header("webhook-id"), Some("order-1001"));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_break_the_contract_are_parked_with_a_reason() {
    let app = TestApp::spawn_with(Options {
        max_payload_bytes: 1024,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let tenant = app.tenant.clone();
    let big = format!("{{\"x\":\"{}\"}}", "y".repeat(2000));
    let cases: Vec<(&str, BasicProperties, Vec<u8>, &str)> = vec![
        (
            "a.b",
            contract_properties(Some("m1"), Some(&tenant)),
            b"not json".to_vec(),
            "not valid JSON",
        ),
        (
            "a.b",
            contract_properties(Some("m2"), Some(&tenant)),
            b"[1]".to_vec(),
            "JSON object",
        ),
        (
            "a.b",
            contract_properties(Some("m3"), None),
            b"{}".to_vec(),
            "x-tenant",
        ),
        (
            "a.b",
            contract_properties(Some("m4"), Some("nobody")),
            b"{}".to_vec(),
            "does not exist",
        ),
        (
            "a.b",
            contract_properties(Some("m5"), Some(&tenant)),
            big.into_bytes(),
            "at most 1024",
        ),
        (
            "Bad.Type",
            contract_properties(Some("m6"), Some(&tenant)),
            b"{}".to_vec(),
            "routing key",
        ),
        (
            "a.b",
            contract_properties(None, Some(&tenant)),
            b"{}".to_vec(),
            "message_id",
        ),
        (
            "a.b",
            contract_properties(Some("m8"), Some(&tenant)).with_content_type("text/plain".into()),
            b"{}".to_vec(),
            "content_type",
        ),
    ];
    let expected = cases.len();
    for (key, properties, body, _) in &cases {
        app.publish_raw(key, properties.clone(), body).await;
    }
    // The router keeps going: a good event after the bad ones arrives.
    app.publish_raw(
        "a.b",
        contract_properties(Some("good"), Some(&tenant)),
        b"{}",
    )
    .await;
    let arrived = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(arrived.len(), 1);
    assert_eq!(arrived[0].header("webhook-id"), Some("good"));

    let parked = hookfleet_tests::eventually(Duration::from_secs(30), || async {
        let parked = app.parked().await;
        (!parked.is_empty()).then_some(parked)
    })
    .await
    .unwrap_or_default();
    let mut parked = parked;
    if parked.len() < expected {
        tokio::time::sleep(Duration::from_secs(1)).await;
        parked = app.parked().await;
    }
    assert_eq!(
        parked.len(),
        expected,
        "every malformed message is parked once"
    );
    for (_, properties, body, reason) in &cases {
        let id = properties.message_id().as_ref().map(|s| s.to_string());
        let found = parked
            .iter()
            .find(|p| {
                p.properties.message_id().as_ref().map(|s| s.to_string()) == id && &p.body == body
            })
            .unwrap_or_else(|| panic!("{id:?} was not parked"));
        let why = found.header("x-hookfleet-reason").unwrap();
        assert!(why.contains(reason), "{id:?}: {why}");
        assert_eq!(found.header("x-hookfleet-parked-by"), Some("router"));
    }
    assert_eq!(
        receiver.received().len(),
        1,
        "a malformed message was delivered"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_event_id_is_delivered_once() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let send = |id: Option<&'static str>, key: Option<&'static str>| {
        let mut body = serde_json::json!({"type": "a.b", "payload": {"n": 1}});
        if let Some(id) = id {
            body["id"] = id.into();
        }
        let mut request = app.http.post(app.producer_url("/v1/events")).json(&body);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 202);
            let body: serde_json::Value = response.json().await.unwrap();
            body["id"].as_str().unwrap().to_owned()
        }
    };
    assert_eq!(send(Some("order-7"), None).await, "order-7");
    receiver.wait_for(1, Duration::from_secs(30)).await;
    // The same id again, and again through the header: same answer.
    assert_eq!(send(Some("order-7"), None).await, "order-7");
    assert_eq!(send(None, Some("order-7")).await, "order-7");
    // A marker event sent afterwards shows the repeats had their chance.
    assert_eq!(send(Some("marker"), None).await, "marker");
    let arrived = receiver.wait_for(2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ids: Vec<String> = receiver
        .received()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    assert_eq!(arrived.len(), 2);
    assert_eq!(ids, vec!["order-7", "marker"]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_accepted_whole_or_not_at_all() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let response = app
        .http
        .post(app.producer_url("/v1/events/batch"))
        .json(&serde_json::json!({"events": [
            {"type": "a.b", "payload": {"n": 1}},
            {"type": "Not Valid", "payload": {"n": 2}},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("events[1].type")
    );

    let events: Vec<serde_json::Value> = (0..3)
        .map(|n| serde_json::json!({"type": "a.b", "payload": {"n": n}}))
        .collect();
    let response = app
        .http
        .post(app.producer_url("/v1/events/batch"))
        .json(&serde_json::json!({ "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 3);
    let arrived = receiver.wait_for(3, Duration::from_secs(30)).await;
    assert_eq!(arrived.len(), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        receiver.received().len(),
        3,
        "the refused batch leaked an event"
    );

    let too_many: Vec<serde_json::Value> = (0..101)
        .map(|_| serde_json::json!({"type": "a.b", "payload": {}}))
        .collect();
    let response = app
        .http
        .post(app.producer_url("/v1/events/batch"))
        .json(&serde_json::json!({ "events": too_many }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_fans_out_to_a_thousand_endpoints() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    const ENDPOINTS: usize = 1000;
    for n in 0..ENDPOINTS {
        app.create_endpoint(&receiver.url(&format!("/e{n}")), &["fan.*"])
            .await;
    }
    let event_id = app.send_event("fan.out", r#"{"big": true}"#).await;
    let arrived = receiver.wait_for(ENDPOINTS, Duration::from_secs(120)).await;
    let mut paths: Vec<String> = arrived.iter().map(|r| r.path.clone()).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), ENDPOINTS, "every endpoint got the event");
    assert!(
        arrived
            .iter()
            .all(|r| r.header("webhook-id") == Some(event_id.as_str()))
    );
    let db = app.db().await;
    let fan_out: i32 = hookfleet_tests::eventually(Duration::from_secs(30), || async {
        db.query_opt("SELECT fan_out FROM events WHERE id = $1", &[&event_id])
            .await
            .ok()?
            .map(|r| r.get(0))
    })
    .await
    .unwrap();
    assert_eq!(fan_out, ENDPOINTS as i32);
    app.shutdown().await;
}
