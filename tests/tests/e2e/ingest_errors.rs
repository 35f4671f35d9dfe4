//! Bad input on `POST /v1/events` gets a 4xx with a JSON error that names
//! the problem, and nothing is published.

use hookfleet_tests::{Options, TestApp};

async fn post(app: &TestApp, body: &str) -> (u16, serde_json::Value) {
    let response = app
        .http
        .post(app.producer_url("/v1/events"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let json = response.json().await.expect("errors are JSON");
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_refused_with_a_named_reason() {
    let app = TestApp::spawn_with(Options {
        max_payload_bytes: 1024,
        workers: 0,
        ..Options::default()
    })
    .await;

    let cases: &[(&str, u16, &str, &str)] = &[
        ("{not json", 400, "malformed_json", "not valid JSON"),
        (r#"{"payload": {"a": 1}}"#, 400, "missing_field", "type"),
        (
            r#"{"type": "order.created"}"#,
            400,
            "missing_field",
            "payload",
        ),
        (
            r#"{"type": "order.created", "payload": [1, 2]}"#,
            400,
            "invalid_field",
            "payload",
        ),
        (
            r#"{"type": "order.created", "payload": "text"}"#,
            400,
            "invalid_field",
            "payload",
        ),
        (
            r#"{"type": 42, "payload": {}}"#,
            400,
            "invalid_field",
            "type",
        ),
        (
            r#"{"type": "Order Created", "payload": {}}"#,
            400,
            "invalid_field",
            "type",
        ),
        (
            r#"{"type": "a", "payload": {}, "extra": 1}"#,
            400,
            "invalid_field",
            "extra",
        ),
        (r#"[1]"#, 400, "invalid_body", "JSON object"),
    ];
    for (body, status, code, mentions) in cases {
        let (got_status, json) = post(&app, body).await;
        assert_eq!(got_status, *status, "{body}: {json}");
        assert_eq!(json["error"]["code"], *code, "{body}: {json}");
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.contains(mentions), "{body}: {message}");
    }

    let big = format!(
        r#"{{"type": "a", "payload": {{"x": "{}"}}}}"#,
        "y".repeat(2000)
    );
    let (status, json) = post(&app, &big).await;
    assert_eq!(status, 413);
    assert_eq!(json["error"]["code"], "payload_too_large");

    // Nothing reached the ledger.
    let db = app.db().await;
    let count: i64 = db
        .query_one("SELECT count(*) FROM events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoints_are_refused_with_a_named_reason() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let cases = [
        (serde_json::json!({"event_types": ["a"]}), "url"),
        (
            serde_json::json!({"url": "not a url", "event_types": ["a"]}),
            "url",
        ),
        (
            serde_json::json!({"url": "ftp://x.example", "event_types": ["a"]}),
            "url",
        ),
        (
            serde_json::json!({"url": "http://x.example/h"}),
            "event_types",
        ),
        (
            serde_json::json!({"url": "http://x.example/h", "event_types": []}),
            "event_types",
        ),
        (
            serde_json::json!({"url": "http://x.example/h", "event_types": ["*.x"]}),
            "event_types",
        ),
    ];
    for (body, field) in cases {
        let response = app
            .http
            .post(app.producer_url("/v1/endpoints"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let json: serde_json::Value = response.json().await.unwrap();
        let message = json["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(field), "{body}: {message}");
    }
    app.shutdown().await;
}
