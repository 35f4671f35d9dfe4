//! The ledger's read API: an endpoint's attempts, filtered and paged, and
//! its health over a window.

use std::time::Duration;

use hookfleet_tests::{
    Durations, Options, Receiver, Reply, TestApp, client_with_token, eventually, seconds,
};
use serde_json::Value;

async fn get(client: &reqwest::Client, url: String) -> (u16, Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoints_attempts_and_stats_tell_what_happened() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: seconds(&[1, 1]),
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
    // A window whose whole hours hold the attempts reads them from the
    // hourly rollups: the same figures.
    let hours = |h: i64| {
        let (now, span) = (
            std::time::SystemTime::now(),
            Duration::from_secs(h.unsigned_abs() * 3600),
        );
        let at = if h >= 0 { now + span } else { now - span };
        humantime::format_rfc3339_seconds(at).to_string()
    };
    let (status, rolled) = get(
        &app.http,
        format!("{base}/stats?since={}&until={}", hours(-3), hours(2)),
    )
    .await;
    assert_eq!(status, 200, "{rolled}");
    for key in ["attempts", "succeeded", "failed", "success_rate"] {
        assert_eq!(rolled[key], stats[key], "{key}");
    }
    assert_eq!(rolled["latency_p50_ms"], stats["latency_p50_ms"]);
    assert_eq!(rolled["last_error"]["status_code"], 503);

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
    // The tenant-wide feed holds the same four; another tenant's is empty.
    let feed = app.ledger_url("/v1/attempts");
    let (_, mine) = get(&app.http, format!("{feed}?limit=10")).await;
    assert_eq!(mine["data"].as_array().unwrap().len(), 4);
    let (_, failed) = get(&app.http, format!("{feed}?result=retrying")).await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 2);
    let (status, theirs) = get(&other, feed).await;
    assert_eq!(status, 200);
    assert_eq!(theirs["data"], serde_json::json!([]));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_event_can_be_replayed_to_one_or_all_endpoints() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: Durations::default(),
        ..Options::default()
    })
    .await;
    let failing = Receiver::start().await;
    failing.set_default(Reply::Status(500));
    let healthy = Receiver::start().await;
    let (broken, _) = app.create_endpoint(&failing.url("/h"), &["*"]).await;
    let (fine, _) = app.create_endpoint(&healthy.url("/h"), &["*"]).await;
    let event = app.send_event("a.b", r#"{"n":1}"#).await;
    app.wait_for_delivery_state(&event, &broken, "exhausted", Duration::from_secs(30))
        .await
        .expect("exhausted after its only attempt");
    app.wait_for_delivery_state(&event, &fine, "succeeded", Duration::from_secs(30))
        .await
        .expect("delivered");

    // The receiver is fixed; resend to it alone.
    failing.set_default(Reply::Status(200));
    let replay = app.ledger_url(&format!("/v1/events/{event}/replay"));
    let response = app
        .http
        .post(&replay)
        .json(&serde_json::json!({"endpoint_id": broken}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"][0]["endpoint_id"], broken.as_str());
    assert_eq!(body["data"][0]["attempt"], 2);
    let attempts = app
        .wait_for_delivery_state(&event, &broken, "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(attempts, Some(2));
    let arrived = failing.received();
    assert_eq!(arrived.len(), 2);
    assert_eq!(
        &arrived[1].body[..],
        br#"{"n":1}"#,
        "the payload is resent unchanged"
    );
    assert_eq!(arrived[1].header("webhook-id"), Some(event.as_str()));
    let db = app.db().await;
    let triggers: Vec<(i32, String, String)> = db
        .query(
            "SELECT attempt, result, trigger FROM attempts
             WHERE event_id = $1 AND endpoint_id = $2 ORDER BY attempt",
            &[&event, &broken],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        triggers,
        vec![
            (1, "exhausted".into(), "scheduled".into()),
            (2, "succeeded".into(), "manual".into()),
        ]
    );

    // Without an endpoint: every endpoint the event went to.
    let response = app.http.post(&replay).send().await.unwrap();
    assert_eq!(response.status(), 202);
    assert_eq!(healthy.wait_for(2, Duration::from_secs(30)).await.len(), 2);
    assert_eq!(failing.wait_for(3, Duration::from_secs(30)).await.len(), 3);

    let other = client_with_token(&app.new_tenant("globex").await);
    assert_eq!(other.post(&replay).send().await.unwrap().status(), 404);
    let response = app
        .http
        .post(&replay)
        .json(&serde_json::json!({"endpoint_id": "ep_nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    app.shutdown().await;
}

/// A replay that Postgres aborts as a deadlock is run again, not answered
/// 503: the recorder's batches update the same delivery rows in their own
/// order, so such deadlocks happen (seen in `quotas`). Here another
/// transaction holds the replay's second row and then asks for its first,
/// so the replay, which waited first, is the one Postgres aborts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_aborted_by_a_deadlock_is_run_again() {
    let app = TestApp::spawn().await;
    let receiver = hookfleet_tests::Receiver::start().await;
    let mut endpoints = Vec::new();
    for _ in 0..2 {
        endpoints.push(app.create_endpoint(&receiver.url("/h"), &["*"]).await.0);
    }
    // The replay reserves its rows in endpoint id order.
    endpoints.sort();
    let event = app.send_event("a.b", "{}").await;
    for endpoint in &endpoints {
        app.wait_for_delivery_state(&event, endpoint, "succeeded", Duration::from_secs(30))
            .await
            .expect("delivered");
    }
    let (mut db, connection) = hookfleet_db::tokio_postgres::connect(
        &app.database_url,
        hookfleet_db::tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let lock = |endpoint: &str| {
        format!(
            "UPDATE deliveries SET updated_at = now() WHERE event_id = '{event}' AND endpoint_id = '{endpoint}'"
        )
    };
    let other = db.transaction().await.unwrap();
    other.batch_execute(&lock(&endpoints[1])).await.unwrap();
    let replay = tokio::spawn({
        let http = app.http.clone();
        let url = app.ledger_url(&format!("/v1/events/{event}/replay"));
        async move { http.post(url).send().await.unwrap().status().as_u16() }
    });
    // The replay now holds the first row and waits for the second.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let closed_the_cycle = other.batch_execute(&lock(&endpoints[0])).await;
    assert!(
        closed_the_cycle.is_ok(),
        "Postgres aborted the other transaction, not the replay: {closed_the_cycle:?}"
    );
    other.rollback().await.unwrap();
    assert_eq!(replay.await.unwrap(), 202, "the replay was not run again");
    app.shutdown().await;
}
