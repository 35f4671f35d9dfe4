//! API tokens: listed, expiring and revocable through the admin API, and
//! cached for a bounded time so that ingest stays open while Postgres is
//! down.

use std::time::Duration;

use hookfleet_tests::{Options, TestApp, client_with_token, eventually};
use serde_json::{Value, json};

async fn admin(app: &TestApp, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method.parse().unwrap(), app.producer_url(path))
        .bearer_auth(&app.admin_token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The status a call with `token` gets from `url`.
async fn status_with(token: &str, url: String) -> u16 {
    client_with_token(token)
        .get(url)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_listed_expire_and_can_be_revoked() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        token_cache_ttl_ms: 500,
        ..Options::default()
    })
    .await;
    let path = format!("/v1/tenants/{}/tokens", app.tenant);
    let (status, spare) = admin(&app, "POST", &path, None).await;
    assert_eq!(status, 201, "{spare}");
    let (status, brief) = admin(&app, "POST", &path, Some(json!({"expires_in": 2}))).await;
    assert_eq!(status, 201, "{brief}");
    assert!(brief["expires_at"].is_string(), "{brief}");
    let (status, body) = admin(&app, "POST", &path, Some(json!({"expires_in": 0}))).await;
    assert_eq!(status, 400, "no time at all: {body}");

    // The list shows all three, never the tokens themselves.
    let (status, list) = admin(&app, "GET", &path, None).await;
    assert_eq!(status, 200, "{list}");
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 3, "{list}");
    assert!(!list.to_string().contains(spare["token"].as_str().unwrap()));
    assert!(data.iter().any(|t| t["id"] == spare["id"]));

    let spare_token = spare["token"].as_str().unwrap();
    let brief_token = brief["token"].as_str().unwrap();
    assert_eq!(
        status_with(spare_token, app.producer_url("/v1/endpoints")).await,
        200
    );
    assert_eq!(
        status_with(spare_token, app.ledger_url("/v1/attempts")).await,
        200
    );
    assert_eq!(
        status_with(brief_token, app.producer_url("/v1/endpoints")).await,
        200
    );

    // Revoked: refused at once by the producer that revoked it, and by the
    // ledger within its cache time.
    let (status, body) = admin(
        &app,
        "DELETE",
        &format!("{path}/{}", spare["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(
        status_with(spare_token, app.producer_url("/v1/endpoints")).await,
        401
    );
    let refused = eventually(Duration::from_secs(5), || async {
        (status_with(spare_token, app.ledger_url("/v1/attempts")).await == 401).then_some(())
    })
    .await;
    assert!(refused.is_some(), "the ledger still takes a revoked token");
    let (_, list) = admin(&app, "GET", &path, None).await;
    let revoked = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == spare["id"])
        .unwrap()
        .clone();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let (status, _) = admin(
        &app,
        "DELETE",
        &format!("{path}/tok_0000000000000000"),
        None,
    )
    .await;
    assert_eq!(status, 404);

    // Expired: refused once its time has passed.
    let expired = eventually(Duration::from_secs(10), || async {
        (status_with(brief_token, app.producer_url("/v1/endpoints")).await == 401).then_some(())
    })
    .await;
    assert!(expired.is_some(), "an expired token still works");
    // The test's own token is untouched.
    assert_eq!(
        status_with(&app.token, app.producer_url("/v1/endpoints")).await,
        200
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_stays_open_for_known_tokens_while_postgres_is_unreachable() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        // Short, so the outage outlasts it: the outage grace is what
        // keeps the token working.
        token_cache_ttl_ms: 200,
        ..Options::default()
    })
    .await;
    let stranger = app.new_tenant("stranger").await;
    // Known: used once before the outage.
    app.send_event("a.b", "{}").await;
    // This test's database refuses connections, and the open ones are cut.
    let admin = hookfleet_tests::admin_database_url();
    let (db, connection) =
        hookfleet_db::tokio_postgres::connect(&admin, hookfleet_db::tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    db.batch_execute(&format!(
        "ALTER DATABASE {0} ALLOW_CONNECTIONS false;
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}';",
        app.name
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        let response = app
            .http
            .post(app.producer_url("/v1/events"))
            .json(&json!({"type": "a.b", "payload": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202, "ingest closed during the outage");
    }
    // A token never seen before cannot be checked: 503, not a guess.
    let response = client_with_token(&stranger)
        .post(app.producer_url("/v1/events"))
        .json(&json!({"type": "a.b", "payload": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    db.batch_execute(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
        app.name
    ))
    .await
    .unwrap();
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_can_be_served_on_a_listener_of_its_own() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let admin_port = hookfleet_tests::fleet::free_port().unwrap();
    let cancel = tokio_util::sync::CancellationToken::new();
    let producer = hookfleet_producer::start(
        hookfleet_producer::Settings {
            amqp: app.amqp.clone(),
            database: hookfleet_config::DatabaseSettings {
                url: app.database_url.clone(),
                pool_size: 2,
                migrate_on_start: false,
                ..Default::default()
            },
            listen: hookfleet_config::ListenSettings::on_port(0),
            secrets: app.secrets.clone(),
            auth: hookfleet_config::AuthSettings {
                admin_token: app.admin_token.clone(),
                admin_listen: format!("127.0.0.1:{admin_port}"),
                ..Default::default()
            },
            ..Default::default()
        },
        cancel.clone(),
    )
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let create = |base: String| {
        client
            .post(format!("{base}/v1/tenants"))
            .bearer_auth(&app.admin_token)
            .json(&json!({"id": "apart"}))
            .send()
    };
    let main = create(format!("http://{}", producer.addr)).await.unwrap();
    assert_eq!(
        main.status(),
        404,
        "the admin API is still on the main listener"
    );
    let apart = create(format!("http://127.0.0.1:{admin_port}"))
        .await
        .unwrap();
    assert_eq!(apart.status(), 201);
    // The tenant API stays on the main listener.
    let endpoints = client_with_token(&app.token)
        .get(format!("http://{}/v1/endpoints", producer.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(endpoints.status(), 200);
    cancel.cancel();
    let _ = producer.task.await;
    app.shutdown().await;
}
