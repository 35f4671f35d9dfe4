//! Portal sessions (`POST /v1/portal/sessions`): a session token calls
//! only the portal's operations, on its tenant, on its endpoints when it
//! names some, and only reads when read-only; everything else is 403, and
//! an expired or forged session is refused. Checked on the one base URL
//! and on the ledger directly (both check sessions).

use std::time::Duration;

use hookfleet_contract::portal::{PortalKey, PortalSession, now_secs};
use hookfleet_tests::{Options, Receiver, TestApp, client_with_token};
use serde_json::{Value, json};

async fn open_session(app: &TestApp, body: Value) -> (u16, Value) {
    let response = app
        .http
        .post(app.producer_url("/v1/portal/sessions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn session_client(app: &TestApp, body: Value) -> reqwest::Client {
    let (status, session) = open_session(app, body).await;
    assert_eq!(status, 201, "{session}");
    let token = session["token"].as_str().unwrap();
    assert_eq!(
        session["url"].as_str().unwrap(),
        format!("/portal/#session={token}")
    );
    client_with_token(token)
}

async fn status(request: reqwest::RequestBuilder) -> u16 {
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_calls_only_the_portals_operations() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let (endpoint, _) = app
        .create_endpoint("http://127.0.0.1:9/hook", &["order.paid"])
        .await;
    let portal = session_client(&app, json!({ "expires_in": "1h" })).await;
    let url = |path: &str| app.producer_url(path);
    assert_eq!(status(portal.get(url("/v1/endpoints"))).await, 200);
    assert_eq!(status(portal.get(url("/v1/attempts"))).await, 200);
    let stats = format!("/v1/endpoints/{endpoint}/stats");
    assert_eq!(status(portal.get(url(&stats))).await, 200);
    assert_eq!(status(portal.get(app.ledger_url(&stats))).await, 200);
    // Not the portal's: 403 with the error shape.
    for (method, path) in [
        ("GET", "/v1/sources"),
        ("POST", "/v1/portal/sessions"),
        ("POST", "/v1/tenants"),
        ("PUT", "/v1/event-types/order.paid"),
        ("POST", "/v1/events/batch"),
    ] {
        let response = portal
            .request(method.parse().unwrap(), url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{method} {path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{method} {path}");
    }
    // Another tenant's endpoints stay out of reach.
    let other = client_with_token(&app.new_tenant("other").await);
    let theirs: Value = other
        .post(url("/v1/endpoints"))
        .json(&json!({"url": "http://127.0.0.1:9/theirs", "event_types": ["a.b"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let theirs = theirs["id"].as_str().unwrap();
    assert_eq!(
        status(portal.get(url(&format!("/v1/endpoints/{theirs}")))).await,
        404
    );
    let listed: Value = portal
        .get(url("/v1/endpoints"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_session_reads_and_gets_403_for_every_change() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let (endpoint, _) = app
        .create_endpoint("http://127.0.0.1:9/hook", &["order.paid"])
        .await;
    let portal = session_client(&app, json!({ "read_only": true })).await;
    let url = |path: String| app.producer_url(&path);
    assert_eq!(
        status(portal.get(url(format!("/v1/endpoints/{endpoint}")))).await,
        200
    );
    for (method, path) in [
        ("POST", format!("/v1/endpoints/{endpoint}/disable")),
        ("POST", format!("/v1/endpoints/{endpoint}/secret/rotate")),
        ("PATCH", format!("/v1/endpoints/{endpoint}")),
        ("DELETE", format!("/v1/endpoints/{endpoint}")),
        ("POST", format!("/v1/endpoints/{endpoint}/recover")),
        ("POST", "/v1/endpoints".to_owned()),
        ("POST", "/v1/events".to_owned()),
        ("POST", "/v1/events/evt_1/replay".to_owned()),
        ("POST", "/v1/dlq/requeue".to_owned()),
    ] {
        let response = portal
            .request(method.parse().unwrap(), url(path.clone()))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{method} {path}");
    }
    // On the ledger directly too.
    assert_eq!(
        status(
            portal
                .post(app.ledger_url(&format!("/v1/endpoints/{endpoint}/recover")))
                .json(&json!({"since": "2026-01-01T00:00:00Z"}))
        )
        .await,
        403
    );
    // Nothing changed.
    let still: Value = app
        .http
        .get(url(format!("/v1/endpoints/{endpoint}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(still["enabled"], true);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_limited_to_endpoints_sees_and_changes_only_those() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let (mine, _) = app
        .create_endpoint(&receiver.url("/mine"), &["order.paid"])
        .await;
    let (other, _) = app
        .create_endpoint(&receiver.url("/other"), &["order.paid"])
        .await;
    let event = app.send_event("order.paid", r#"{"n": 1}"#).await;
    for endpoint in [&mine, &other] {
        app.wait_for_delivery_state(&event, endpoint, "succeeded", Duration::from_secs(20))
            .await
            .expect("delivered");
    }
    let portal = session_client(&app, json!({ "endpoint_ids": [mine] })).await;
    let get = |path: String| {
        let portal = portal.clone();
        async move {
            let response = portal.get(path).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let ids = |list: &Value, key: &str| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|item| item[key].as_str().unwrap().to_owned())
            .collect()
    };
    let listed = get(app.producer_url("/v1/endpoints")).await;
    assert_eq!(ids(&listed["data"], "id"), vec![mine.clone()]);
    for base in [app.producer_url(""), app.ledger_url("")] {
        let seen = get(format!("{base}/v1/events/{event}")).await;
        assert_eq!(ids(&seen["deliveries"], "endpoint_id"), vec![mine.clone()]);
        assert_eq!(ids(&seen["attempts"], "endpoint_id"), vec![mine.clone()]);
        let attempts = get(format!("{base}/v1/attempts")).await;
        assert_eq!(ids(&attempts["data"], "endpoint_id"), vec![mine.clone()]);
        let attempts = get(format!("{base}/v1/events/{event}/attempts")).await;
        assert_eq!(ids(&attempts["data"], "endpoint_id"), vec![mine.clone()]);
    }
    let url = |path: String| app.producer_url(&path);
    assert_eq!(
        status(portal.get(url(format!("/v1/endpoints/{other}")))).await,
        403
    );
    assert_eq!(
        status(portal.post(url(format!("/v1/endpoints/{other}/disable")))).await,
        403
    );
    assert_eq!(
        status(portal.get(app.ledger_url(&format!("/v1/endpoints/{other}/stats")))).await,
        403
    );
    // Creating endpoints or sending events would reach beyond its own.
    assert_eq!(
        status(
            portal
                .post(url("/v1/endpoints".into()))
                .json(&json!({"url": receiver.url("/new"), "event_types": ["a.b"]}))
        )
        .await,
        403
    );
    assert_eq!(
        status(
            portal
                .post(url("/v1/events".into()))
                .json(&json!({"type": "order.paid", "payload": {}}))
        )
        .await,
        403
    );
    // A replay names its own endpoint, or is refused.
    let replay = url(format!("/v1/events/{event}/replay"));
    assert_eq!(status(portal.post(&replay)).await, 403);
    assert_eq!(
        status(portal.post(&replay).json(&json!({"endpoint_id": other}))).await,
        403
    );
    assert_eq!(
        status(portal.post(&replay).json(&json!({"endpoint_id": mine}))).await,
        202
    );
    assert_eq!(
        status(portal.post(url(format!("/v1/endpoints/{mine}/disable")))).await,
        200
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_short_lived_and_an_expired_or_forged_one_is_refused() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    for (body, field, expected) in [
        (json!({"expires_in": "25h"}), "expires_in", 400),
        (json!({"expires_in": "later"}), "expires_in", 400),
        (json!({"endpoint_ids": []}), "endpoint_ids", 400),
        // Naming an endpoint that is not there is asking for a resource
        // that does not exist.
        (json!({"endpoint_ids": ["ep_nope"]}), "endpoint_ids", 404),
    ] {
        let (status, answer) = open_session(&app, body.clone()).await;
        assert_eq!(status, expected, "{body}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(field),
            "{answer}"
        );
    }
    let (status_code, session) = open_session(&app, json!({"expires_in": "24h"})).await;
    assert_eq!(status_code, 201);
    let expires = humantime::parse_rfc3339(session["expires_at"].as_str().unwrap()).unwrap();
    let left = expires
        .duration_since(std::time::SystemTime::now())
        .unwrap()
        .as_secs();
    assert!((86_000..=86_400).contains(&left), "{left}");

    // Expired: signed with the services' key, a second in the past.
    let key = PortalKey::derive(&app.secrets.key);
    let expired = key.issue(&PortalSession {
        id: "ps_test".into(),
        tenant: app.tenant.clone(),
        endpoint_ids: None,
        read_only: false,
        expires_at: now_secs() - 1,
    });
    for base in [app.producer_url(""), app.ledger_url("")] {
        let response = client_with_token(&expired)
            .get(format!("{base}/v1/attempts"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "session_expired");
    }
    // Forged: a wider session signed with another key.
    let forged = PortalKey::derive("not the services' key").issue(&PortalSession {
        id: "ps_forged".into(),
        tenant: app.tenant.clone(),
        endpoint_ids: None,
        read_only: false,
        expires_at: now_secs() + 600,
    });
    assert_eq!(
        status(client_with_token(&forged).get(app.producer_url("/v1/endpoints"))).await,
        401
    );
    app.shutdown().await;
}
