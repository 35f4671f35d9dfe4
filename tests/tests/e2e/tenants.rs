//! Tenants and tokens: no token, no access; a tenant sees only its own
//! endpoints and events.

use std::time::Duration;

use hookfleet_tests::{Options, Receiver, TestApp, client_with_token, eventually};

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

/// Runs `rabbitmqctl` (the test runs as root, beside the broker).
fn rabbitmqctl(args: &[&str]) {
    let out = std::process::Command::new("rabbitmqctl")
        .args(args)
        .output()
        .expect("rabbitmqctl (the test needs it, as root)");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn publish_as(url: &str, tenant: &str, id: &str, user_id: Option<&str>, app: &TestApp) {
    use lapin::BasicProperties;
    use lapin::types::{AMQPValue, FieldTable, LongString};
    let connection = hookfleet_topology::connect(url, "hookfleet-test-tenant-app")
        .await
        .expect("connect to the broker");
    let publisher = hookfleet_topology::Publisher::open(&connection)
        .await
        .expect("a confirming channel");
    let mut headers = FieldTable::default();
    headers.insert(
        "x-tenant".into(),
        AMQPValue::LongString(LongString::from(tenant)),
    );
    let mut properties = BasicProperties::default()
        .with_message_id(id.into())
        .with_headers(headers);
    if let Some(user) = user_id {
        properties = properties.with_user_id(user.into());
    }
    publisher
        .publish(
            &app.topology().events_exchange(),
            "order.created",
            br#"{"n":1}"#,
            properties,
        )
        .await
        .expect("the broker confirmed the event");
    let _ = connection.close(200, "bye".into()).await;
}

/// With `ingest.amqp_tenant_is_user`, an application can publish over AMQP
/// only as the tenant its broker user is named after: RabbitMQ checks
/// `user_id` against the connection's user, hookfleet checks `user_id`
/// against `x-tenant`. HTTP ingest and the services' own events go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_tenants_can_be_bound_to_broker_users() {
    let app = TestApp::spawn_with(Options {
        amqp_tenant_is_user: true,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/hook"), &["*"]).await;
    let password = "hft-tenant-user";
    rabbitmqctl(&["add_user", &app.tenant, password]);
    rabbitmqctl(&["set_permissions", "-p", "/", &app.tenant, "", "^hft_.*", ""]);
    assert!(app.amqp.url.contains("//guest:guest@"), "{}", app.amqp.url);
    let as_tenant = app
        .amqp
        .url
        .replace("//guest:guest@", &format!("//{}:{password}@", app.tenant));

    // guest claiming the tenant, with no user_id and with its own.
    publish_as(&app.amqp.url, &app.tenant, "as-guest", None, &app).await;
    publish_as(
        &app.amqp.url,
        &app.tenant,
        "as-guest-2",
        Some("guest"),
        &app,
    )
    .await;
    // The tenant's own broker user.
    publish_as(
        &as_tenant,
        &app.tenant,
        "as-tenant",
        Some(&app.tenant),
        &app,
    )
    .await;
    // HTTP ingest is stamped by the producer: not affected.
    app.send_event("order.created", r#"{"n":2}"#).await;

    let received = receiver.wait_for(2, Duration::from_secs(30)).await;
    let mut ids: Vec<&str> = received
        .iter()
        .filter_map(|r| r.header("webhook-id"))
        .collect();
    ids.retain(|id| id.starts_with("as-"));
    assert_eq!(ids, vec!["as-tenant"]);
    let parked = eventually(Duration::from_secs(30), || async {
        let parked = app.parked().await;
        (parked.len() >= 2).then_some(parked)
    })
    .await
    .expect("both events claiming the tenant are parked");
    let mut reasons: Vec<(String, String)> = parked
        .iter()
        .map(|m| {
            (
                m.properties
                    .message_id()
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                m.header("x-hookfleet-reason")
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, "as-guest");
    assert!(reasons[0].1.contains("user_id is None"), "{reasons:?}");
    assert_eq!(reasons[1].0, "as-guest-2");
    assert!(
        reasons[1].1.contains("user_id is Some(\"guest\")"),
        "{reasons:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 2, "a refused event went out");
    rabbitmqctl(&["delete_user", &app.tenant]);
    app.shutdown().await;
}
