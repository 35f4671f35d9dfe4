//! How the worker treats what receivers answer: redirects, 410, overload
//! and `Retry-After`, timeouts, large bodies, and the SSRF guard.

use std::time::Duration;

use hookfleet_tests::{Durations, Options, Receiver, Reply, TestApp, seconds};

async fn attempts(
    app: &TestApp,
    event_id: &str,
) -> Vec<(i32, String, Option<i32>, Option<String>)> {
    let db = app.db().await;
    db.query(
        "SELECT attempt, result, status_code, error FROM attempts
         WHERE event_id = $1 ORDER BY attempt",
        &[&event_id],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_failures_and_are_not_followed() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: seconds(&[1]),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.reply_next([Reply::Redirect(302, "/elsewhere")]);
    let (endpoint_id, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let event_id = app.send_event("a.b", "{}").await;
    let count = app
        .wait_for_delivery_state(
            &event_id,
            &endpoint_id,
            "succeeded",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(count, Some(2));
    let paths: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, vec!["/h", "/h"], "the redirect was followed");
    let recorded = attempts(&app, &event_id).await;
    assert_eq!(recorded[0].2, Some(302));
    assert_eq!(recorded[0].1, "retrying");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_stops_retrying_and_says_why() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(410));
    let (endpoint_id, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let event_id = app.send_event("a.b", "{}").await;
    let count = app
        .wait_for_delivery_state(
            &event_id,
            &endpoint_id,
            "exhausted",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(count, Some(1), "410 must not be retried");
    let dead = app.parked().await;
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .header("x-hookfleet-reason")
            .unwrap()
            .contains("410 Gone")
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: seconds(&[1]),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.reply_next([Reply::RetryAfter(429, 3)]);
    let (endpoint_id, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let event_id = app.send_event("a.b", "{}").await;
    let arrived = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(arrived.len(), 2);
    let gap = arrived[1].at - arrived[0].at;
    // The schedule says 1 s; the receiver asked for 3 s.
    assert!(gap >= Duration::from_millis(2900), "retried after {gap:?}");
    let count = app
        .wait_for_delivery_state(
            &event_id,
            &endpoint_id,
            "succeeded",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(count, Some(2));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_hangs_times_out_and_is_retried() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: seconds(&[1]),
        delivery_timeout_ms: 1_000,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.reply_next([Reply::Hang]);
    let (endpoint_id, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let event_id = app.send_event("a.b", "{}").await;
    let count = app
        .wait_for_delivery_state(
            &event_id,
            &endpoint_id,
            "succeeded",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(count, Some(2));
    let recorded = attempts(&app, &event_id).await;
    assert_eq!(recorded[0].2, None);
    assert_eq!(recorded[0].3.as_deref(), Some("timeout"));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_start_of_a_large_response_is_kept() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    receiver.reply_next([Reply::Body(200, 1_000_000)]);
    let (endpoint_id, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let event_id = app.send_event("a.b", "{}").await;
    app.wait_for_delivery_state(
        &event_id,
        &endpoint_id,
        "succeeded",
        Duration::from_secs(20),
    )
    .await
    .expect("delivered");
    let db = app.db().await;
    let kept: i32 = db
        .query_one(
            "SELECT length(response_excerpt) FROM attempts WHERE event_id = $1",
            &[&event_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(kept, 64 * 1024);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_are_refused_unless_allowed() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: Durations::default(),
        ssrf_allow: String::new(),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let (literal, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let by_name = format!("http://localhost:{}/h", receiver.addr.port());
    let (named, _) = app.create_endpoint(&by_name, &["*"]).await;
    let event_id = app.send_event("a.b", "{}").await;
    for endpoint in [&literal, &named] {
        app.wait_for_delivery_state(&event_id, endpoint, "exhausted", Duration::from_secs(20))
            .await
            .expect("the refused delivery is recorded");
    }
    assert!(
        receiver.received().is_empty(),
        "an internal address was reached"
    );
    for (_, result, status, error) in attempts(&app, &event_id).await {
        assert_eq!(result, "exhausted");
        assert_eq!(status, None);
        let error = error.unwrap();
        assert!(error.contains("SSRF guard"), "{error}");
        assert!(error.contains("loopback"), "{error}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_is_a_failure_that_is_retried() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: seconds(&[1]),
        ..Options::default()
    })
    .await;
    // A server that accepts and resets every connection at once.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // A zero linger makes the close a reset, which is the point;
            // with zero it does not block on drop as the deprecation warns.
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
        }
    });
    let (endpoint_id, _) = app
        .create_endpoint(&format!("http://{addr}/h"), &["*"])
        .await;
    let event_id = app.send_event("a.b", "{}").await;
    let count = app
        .wait_for_delivery_state(
            &event_id,
            &endpoint_id,
            "exhausted",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(count, Some(2), "the reset was not retried");
    for (_, _, status, error) in attempts(&app, &event_id).await {
        assert_eq!(status, None);
        let error = error.unwrap();
        assert!(
            error.contains("reset") || error.contains("closed") || error.contains("connection"),
            "{error}"
        );
    }
    app.shutdown().await;
}
