//! Tenants and tokens: no token, no access; a tenant sees only its own
//! endpoints and events.

use std::time::Duration;

use hookfleet_tests::{Options, Receiver, TestApp, client_with_token};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_valid_token_get_401_with_a_json_error() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let anonymous = reqwest::Client::new();
    let bad = client_with_token("hf_not_a_real_token");
    for client in [&anonymous, &bad] {
        for (method, url) in [
            ("POST", app.producer_url("/v1/events")),
            ("GET", app.producer_url("/v1/endpoints")),
            ("GET", app.ledger_url("/v1/events/evt_1")),
        ] {
            let response = client
                .request(method.parse().unwrap(), &url)
                .body(r#"{"type":"a","payload":{}}"#)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 401, "{method} {url}");
            let body: serde_json::Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    // The admin API wants the admin token, not a tenant's.
    let response = app
        .http
        .post(app.producer_url("/v1/tenants"))
        .json(&serde_json::json!({"id": "sneaky"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // Tokens are stored hashed.
    let db = app.db().await;
    let stored: Vec<String> = db
        .query("SELECT hash FROM api_tokens", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!stored.is_empty());
    assert!(stored.iter().all(|h| h.len() == 64 && *h != app.token));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_cannot_see_or_change_anothers_endpoints_or_events() {
    let app = TestApp::spawn().await;
    let other = client_with_token(&app.new_tenant("globex").await);
    let receiver = Receiver::start().await;
    let (endpoint_id, _) = app.create_endpoint(&receiver.url("/acme"), &["*"]).await;
    let event_id = app.send_event("order.created", r#"{"n":1}"#).await;
    receiver.wait_for(1, Duration::from_secs(30)).await;

    let endpoint_url = app.producer_url(&format!("/v1/endpoints/{endpoint_id}"));
    let attempts = [
        other.get(&endpoint_url).send().await.unwrap(),
        other
            .patch(&endpoint_url)
            .json(&serde_json::json!({"url": "http://127.0.0.1:1/stolen"}))
            .send()
            .await
            .unwrap(),
        other.delete(&endpoint_url).send().await.unwrap(),
        other
            .post(format!("{endpoint_url}/disable"))
            .send()
            .await
            .unwrap(),
        other
            .get(app.ledger_url(&format!("/v1/events/{event_id}")))
            .send()
            .await
            .unwrap(),
    ];
    for response in attempts {
        assert_eq!(response.status(), 404);
    }
    let list: serde_json::Value = other
        .get(app.producer_url("/v1/endpoints"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"], serde_json::json!([]));

    // The other tenant's events do not reach this tenant's endpoint.
    let response = other
        .post(app.producer_url("/v1/events"))
        .json(&serde_json::json!({"type": "order.created", "payload": {"n": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    // The owner still has its endpoint, unchanged, and still receives.
    let mine: serde_json::Value = app
        .http
        .get(&endpoint_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["url"], receiver.url("/acme"));
    assert_eq!(mine["enabled"], true);
    app.send_event("order.created", r#"{"n":3}"#).await;
    let arrived = receiver.wait_for(2, Duration::from_secs(30)).await;
    let bodies: Vec<&[u8]> = arrived.iter().map(|r| &r.body[..]).collect();
    assert_eq!(bodies, vec![&br#"{"n":1}"#[..], &br#"{"n":3}"#[..]]);
    app.shutdown().await;
}
