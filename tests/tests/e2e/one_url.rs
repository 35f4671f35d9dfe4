//! One base URL (DESIGN.md, "One API to users"): every operation of
//! `/openapi.json` answers on the producer's address, the ledger's
//! forwarded as they are, and a ledger that cannot be reached is a 503
//! in the API's error shape.

use std::time::Duration;

use hookfleet_config::{DatabaseSettings, ListenSettings};
use hookfleet_tests::{Options, Receiver, TestApp, client_with_token};
use tokio_util::sync::CancellationToken;

/// The fallback's message for a path the API does not have.
const NO_SUCH_PATH: &str = "no such path in hookfleet's API";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_of_the_document_answers_on_the_producers_base_url() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let document: serde_json::Value = reqwest::get(app.producer_url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(document["servers"][0]["url"], "/");
    let admin = client_with_token(&app.admin_token);
    let mut checked = 0;
    for (path, item) in document["paths"].as_object().unwrap() {
        let concrete = path
            .split('/')
            .map(|part| {
                if part.starts_with('{') {
                    "nothing_here"
                } else {
                    part
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        for method in item.as_object().unwrap().keys() {
            let client = if path.starts_with("/v1/tenants") {
                &admin
            } else {
                &app.http
            };
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = client
                .request(method.clone(), app.producer_url(&concrete))
                .header("content-type", "application/json")
                .body("{}")
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(
                status != 405 && !body.contains(NO_SUCH_PATH),
                "{method} {concrete} is not served on the base URL: {status} {body}"
            );
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} operations in the document");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledgers_answers_come_through_the_producer_as_they_are() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = app
        .create_endpoint(&receiver.url("/hook"), &["order.paid"])
        .await;
    let event = app.send_event("order.paid", r#"{"n": 1}"#).await;
    app.wait_for_delivery_state(&event, &endpoint, "succeeded", Duration::from_secs(20))
        .await
        .expect("delivered");
    for path in [
        format!("/v1/events/{event}"),
        format!("/v1/endpoints/{endpoint}/attempts?limit=5"),
        "/v1/attempts?result=succeeded".to_owned(),
        "/v1/events/evt_unknown".to_owned(),
        "/v1/attempts?limit=0".to_owned(),
    ] {
        let direct = app.http.get(app.ledger_url(&path)).send().await.unwrap();
        let through = app.http.get(app.producer_url(&path)).send().await.unwrap();
        assert_eq!(direct.status(), through.status(), "{path}");
        assert_eq!(
            through.headers()["content-type"],
            direct.headers()["content-type"]
        );
        let direct: serde_json::Value = direct.json().await.unwrap();
        let through: serde_json::Value = through.json().await.unwrap();
        assert_eq!(direct, through, "{path}");
    }
    // A write too: the replay's body reaches the ledger.
    let replayed = app
        .http
        .post(app.producer_url(&format!("/v1/events/{event}/replay")))
        .json(&serde_json::json!({ "endpoint_id": endpoint }))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 202);
    receiver.wait_for(2, Duration::from_secs(20)).await;
    // Without a token the ledger says so, through the producer.
    let anonymous = reqwest::get(app.producer_url("/v1/attempts"))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_ledger_is_a_503_in_the_apis_error_shape() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = closed.local_addr().unwrap();
    drop(closed);
    let cancel = CancellationToken::new();
    let producer = hookfleet_producer::start(
        hookfleet_producer::Settings {
            amqp: app.amqp.clone(),
            database: DatabaseSettings {
                url: app.database_url.clone(),
                pool_size: 2,
                migrate_on_start: false,
                ..Default::default()
            },
            listen: ListenSettings::on_port(0),
            secrets: app.secrets.clone(),
            ledger: hookfleet_producer::settings::LedgerSettings {
                url: format!("http://{nowhere}"),
                ..Default::default()
            },
            ..Default::default()
        },
        cancel.clone(),
    )
    .await
    .unwrap();
    let response = app
        .http
        .get(format!("http://{}/v1/attempts", producer.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "ledger_unavailable");
    // The producer's own paths still answer.
    let endpoints = app
        .http
        .get(format!("http://{}/v1/endpoints", producer.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(endpoints.status(), 200);
    cancel.cancel();
    let _ = producer.task.await;
    app.shutdown().await;
}
