//! The endpoint registry API: create, list, get, update, delete, disable,
//! enable, rotate the secret; custom headers.

use std::time::Duration;

use hookfleet_signing::{SigningSecret, verify};
use hookfleet_tests::{Options, Receiver, TestApp};
use serde_json::{Value, json};

async fn call(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = app
        .http
        .request(method.parse().unwrap(), app.producer_url(path));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_can_be_listed_page_by_page_updated_and_deleted() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let (id, _) = app
            .create_endpoint(&format!("http://127.0.0.1:9/h{n}"), &["a.*"])
            .await;
        ids.push(id);
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(cursor) => format!("/v1/endpoints?limit=2&after={cursor}"),
            None => "/v1/endpoints?limit=2".to_owned(),
        };
        let (status, page) = call(&app, "GET", &path, None).await;
        assert_eq!(status, 200);
        for endpoint in page["data"].as_array().unwrap() {
            assert!(endpoint.get("secret").is_none(), "a listing shows a secret");
            seen.push(endpoint["id"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every endpoint once, in creation order");

    let path = format!("/v1/endpoints/{}", ids[0]);
    let (status, updated) = call(
        &app,
        "PATCH",
        &path,
        Some(json!({"description": "orders", "event_types": ["order.created"]})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(updated["description"], "orders");
    assert_eq!(updated["event_types"], json!(["order.created"]));
    assert_eq!(
        updated["url"], "http://127.0.0.1:9/h0",
        "untouched fields keep"
    );

    let (status, body) = call(&app, "PATCH", &path, Some(json!({"url": "ftp://x"}))).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("url")
    );

    assert_eq!(call(&app, "DELETE", &path, None).await.0, 204);
    assert_eq!(call(&app, "GET", &path, None).await.0, 404);
    assert_eq!(call(&app, "DELETE", &path, None).await.0, 404);
    let (status, _) = call(&app, "GET", "/v1/endpoints?limit=0", None).await;
    assert_eq!(status, 400);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_endpoint_receives_nothing_until_enabled() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let (id, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let (status, disabled) = call(
        &app,
        "POST",
        &format!("/v1/endpoints/{id}/disable"),
        Some(json!({"reason": "maintenance"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(disabled["enabled"], false);
    assert_eq!(disabled["disabled_reason"], "maintenance");
    assert!(disabled["disabled_at"].is_string());

    let skipped = app.send_event("a.b", r#"{"n":1}"#).await;
    // The event is recorded with no deliveries; nothing arrives.
    let db = app.db().await;
    let fan_out = hookfleet_tests::eventually(Duration::from_secs(30), || async {
        db.query_opt("SELECT fan_out FROM events WHERE id = $1", &[&skipped])
            .await
            .ok()?
            .map(|r| r.get::<_, i32>(0))
    })
    .await;
    assert_eq!(fan_out, Some(0));
    assert!(receiver.received().is_empty());

    let (status, enabled) = call(&app, "POST", &format!("/v1/endpoints/{id}/enable"), None).await;
    assert_eq!(status, 200);
    assert_eq!(enabled["enabled"], true);
    assert!(enabled["disabled_reason"].is_null());
    let delivered = app.send_event("a.b", r#"{"n":2}"#).await;
    let arrived = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(arrived.len(), 1);
    assert_eq!(arrived[0].header("webhook-id"), Some(delivered.as_str()));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rotation_webhooks_carry_both_signatures() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let (id, old) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let (status, rotated) = call(
        &app,
        "POST",
        &format!("/v1/endpoints/{id}/secret/rotate"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let new = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new, old);

    let event_id = app.send_event("a.b", r#"{"n":1}"#).await;
    let arrived = receiver.wait_for(1, Duration::from_secs(30)).await;
    let webhook = &arrived[0];
    let signature = webhook.header("webhook-signature").unwrap();
    assert_eq!(signature.split(' ').count(), 2, "{signature}");
    let timestamp: i64 = webhook
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    for secret in [&old, &new] {
        let secret = SigningSecret::parse(secret).unwrap();
        assert!(verify(
            &secret,
            signature,
            &event_id,
            timestamp,
            &webhook.body
        ));
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_headers_are_sent_and_reserved_ones_refused() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let (status, _) = call(
        &app,
        "POST",
        "/v1/endpoints",
        Some(json!({"url": receiver.url("/h"), "event_types": ["*"],
                    "headers": {"webhook-id": "forged"}})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, created) = call(
        &app,
        "POST",
        "/v1/endpoints",
        Some(json!({"url": receiver.url("/h"), "event_types": ["*"],
                    "headers": {"X-Team": "payments", "Authorization": "Bearer receiver-key"}})),
    )
    .await;
    assert_eq!(status, 201);
    // Values are sealed at rest and never shown again.
    assert_eq!(created["headers"]["x-team"], "****");
    app.send_event("a.b", "{}").await;
    let arrived = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(arrived[0].header("x-team"), Some("payments"));
    assert_eq!(
        arrived[0].header("authorization"),
        Some("Bearer receiver-key")
    );
    assert!(
        arrived[0]
            .header("user-agent")
            .unwrap()
            .starts_with("hookfleet/")
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ed25519_endpoint_gets_a_v1a_signature_beside_v1() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let (status, created) = call(
        &app,
        "POST",
        "/v1/endpoints",
        Some(json!({"url": receiver.url("/h"), "event_types": ["*"], "ed25519": true})),
    )
    .await;
    assert_eq!(status, 201);
    let public_key = created["ed25519_public_key"].as_str().unwrap().to_owned();
    assert!(public_key.starts_with("whpk_"));
    let secret = SigningSecret::parse(created["secret"].as_str().unwrap()).unwrap();
    let event_id = app.send_event("a.b", r#"{"n":1}"#).await;
    let arrived = receiver.wait_for(1, Duration::from_secs(30)).await;
    let webhook = &arrived[0];
    let header = webhook.header("webhook-signature").unwrap();
    let timestamp: i64 = webhook
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        header.contains("v1,") && header.contains("v1a,"),
        "{header}"
    );
    assert!(verify(&secret, header, &event_id, timestamp, &webhook.body));
    assert!(hookfleet_signing::verify_v1a(
        &public_key,
        header,
        &event_id,
        timestamp,
        &webhook.body
    ));
    // The private key is stored sealed.
    let db = app.db().await;
    let stored: String = db
        .query_one(
            "SELECT ed25519_key FROM endpoints WHERE id = $1",
            &[&created["id"].as_str().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(stored.starts_with("v1.") && !stored.contains("whsk_"));
    app.shutdown().await;
}
