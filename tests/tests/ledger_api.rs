//! The ledger's read API: an endpoint's attempts, filtered and paged, and
//! its health over a window.

use std::time::Duration;

use hookfleet_tests::{Options, Receiver, Reply, TestApp, client_with_token, eventually};
use serde_json::Value;

async fn get(client: &reqwest::Client, url: String) -> (u16, Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoints_attempts_and_stats_tell_what_happened() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: "1s,1s".into(),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.reply_next([Reply::Status(500), Reply::Status(503)]);
    let (endpoint, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let first = app.send_event("a.b", r#"{"n":1}"#).await;
    app.wait_for_delivery_state(&first, &endpoint, "succeeded", Duration::from_secs(30))
        .await
        .expect("delivered on the third attempt");
    let second = app.send_event("a.b", r#"{"n":2}"#).await;
    app.wait_for_delivery_state(&second, &endpoint, "succeeded", Duration::from_secs(30))
        .await
        .expect("delivered");
    let base = app.ledger_url(&format!("/v1/endpoints/{endpoint}"));
    // The ledger has all four attempts once both deliveries show succeeded.
    eventually(Duration::from_secs(10), || async {
        let (_, page) = get(&app.http, format!("{base}/attempts")).await;
        (page["data"].as_array()?.len() == 4).then_some(())
    })
    .await
    .expect("four attempts recorded");

    // Paged, newest first, each attempt once.
    let (status, page) = get(&app.http, format!("{base}/attempts?limit=3")).await;
    assert_eq!(status, 200);
    let mut ids: Vec<String> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(page["data"][0]["event_id"], second.as_str());
    let next = page["next"].as_str().expect("a second page").to_owned();
    let (_, rest) = get(&app.http, format!("{base}/attempts?limit=3&after={next}")).await;
    ids.extend(
        rest["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_owned()),
    );
    assert!(rest["next"].is_null());
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4);

    let (_, failed) = get(&app.http, format!("{base}/attempts?result=retrying")).await;
    let codes: Vec<i64> = failed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, vec![503, 500]);
    let (_, none) = get(
        &app.http,
        format!("{base}/attempts?since=2999-01-01T00:00:00Z"),
    )
    .await;
    assert_eq!(none["data"], serde_json::json!([]));

    let (status, stats) = get(&app.http, format!("{base}/stats")).await;
    assert_eq!(status, 200);
    assert_eq!(stats["attempts"], 4);
    assert_eq!(stats["succeeded"], 2);
    assert_eq!(stats["failed"], 2);
    assert_eq!(stats["success_rate"], 0.5);
    assert_eq!(stats["last_error"]["status_code"], 503);
    assert!(stats["latency_p95_ms"].is_number());

    let (status, body) = get(&app.http, format!("{base}/attempts?since=yesterday")).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("since")
    );
    let other = client_with_token(&app.new_tenant("globex").await);
    assert_eq!(get(&other, format!("{base}/attempts")).await.0, 404);
    assert_eq!(get(&other, format!("{base}/stats")).await.0, 404);
    app.shutdown().await;
}
