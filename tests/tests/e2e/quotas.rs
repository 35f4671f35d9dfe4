//! Per-tenant quotas (issue 16 item 5): over one, a tenant gets 429 with
//! `Retry-After` and the JSON error shape; other tenants are untouched.

use hookfleet_tests::{Durations, Options, TestApp, client_with_token};

async fn post(client: &reqwest::Client, url: String, body: serde_json::Value) -> reqwest::Response {
    client.post(url).json(&body).send().await.unwrap()
}

async fn assert_quota_exceeded(response: reqwest::Response) {
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "quota_exceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_ingest_rate_gets_429_and_others_go_on() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ingest_rate_per_second: 1,
        ingest_burst: 3,
        ..Options::default()
    })
    .await;
    let event = serde_json::json!({ "type": "a.b", "payload": {} });
    let url = app.producer_url("/v1/events");
    for _ in 0..3 {
        assert_eq!(
            post(&app.http, url.clone(), event.clone()).await.status(),
            202
        );
    }
    assert_quota_exceeded(post(&app.http, url.clone(), event.clone()).await).await;
    let batch = serde_json::json!({ "events": [event.clone(), event.clone()] });
    assert_quota_exceeded(post(&app.http, app.producer_url("/v1/events/batch"), batch).await).await;

    let other = client_with_token(&app.new_tenant("beta").await);
    assert_eq!(post(&other, url, event).await.status(), 202);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_its_quota_of_endpoints_gets_429() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        max_endpoints: 2,
        ..Options::default()
    })
    .await;
    let url = app.producer_url("/v1/endpoints");
    let endpoint = serde_json::json!({ "url": "http://127.0.0.1:9/h", "event_types": ["*"] });
    for _ in 0..2 {
        assert_eq!(
            post(&app.http, url.clone(), endpoint.clone())
                .await
                .status(),
            201
        );
    }
    assert_quota_exceeded(post(&app.http, url.clone(), endpoint.clone()).await).await;
    let other = client_with_token(&app.new_tenant("beta").await);
    assert_eq!(post(&other, url, endpoint).await.status(), 201);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_its_quota_of_recoveries_running_gets_429() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: Durations::default(),
        recover_rate_per_second: 1,
        max_recoveries_per_tenant: 1,
        ..Options::default()
    })
    .await;
    let receiver = hookfleet_tests::Receiver::start().await;
    receiver.set_default(hookfleet_tests::Reply::Status(500));
    let (endpoint, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    for n in 0..3 {
        let event = app.send_event("a.b", &format!(r#"{{"n":{n}}}"#)).await;
        app.wait_for_delivery_state(
            &event,
            &endpoint,
            "exhausted",
            std::time::Duration::from_secs(30),
        )
        .await
        .expect("exhausted");
    }
    // One recovery resends three events at one a second: still running
    // when the second is asked for.
    let recover = app.ledger_url(&format!("/v1/endpoints/{endpoint}/recover"));
    let since = serde_json::json!({ "since": "2000-01-01T00:00:00Z" });
    assert_eq!(
        post(&app.http, recover.clone(), since.clone())
            .await
            .status(),
        202
    );
    assert_quota_exceeded(post(&app.http, recover, since).await).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_its_quota_of_replays_in_flight_gets_429() {
    let app = TestApp::spawn_with(Options {
        max_replays_per_tenant: 1,
        ..Options::default()
    })
    .await;
    let receiver = hookfleet_tests::Receiver::start().await;
    // An event at many endpoints: each replay of it resends to all of
    // them (a row and a confirmed publish each), so replays sent at once
    // overlap.
    let mut endpoints = Vec::new();
    for _ in 0..20 {
        endpoints.push(app.create_endpoint(&receiver.url("/h"), &["*"]).await.0);
    }
    let event = app.send_event("a.b", "{}").await;
    for endpoint in &endpoints {
        app.wait_for_delivery_state(
            &event,
            endpoint,
            "succeeded",
            std::time::Duration::from_secs(30),
        )
        .await
        .expect("delivered");
    }
    let replay = app.ledger_url(&format!("/v1/events/{event}/replay"));
    let mut refused = None;
    for _ in 0..10 {
        let answers =
            futures_util::future::join_all((0..8).map(|_| app.http.post(replay.clone()).send()))
                .await;
        let mut accepted = 0;
        for answer in answers {
            let answer = answer.unwrap();
            match answer.status().as_u16() {
                202 => accepted += 1,
                429 => refused = Some(answer),
                other => panic!("a replay answered {other}"),
            }
        }
        // One at a time gets through: never none.
        assert!(accepted >= 1);
        if refused.is_some() {
            break;
        }
    }
    assert_quota_exceeded(refused.expect("a replay over the quota")).await;

    // The place comes back when the replay is done.
    assert_eq!(app.http.post(replay).send().await.unwrap().status(), 202);
    app.shutdown().await;
}
