//! A slow or dead endpoint is contained inside the workers: it never
//! delays the others (DESIGN.md invariant 5).

use std::time::Duration;

use hookfleet_tests::{Options, Receiver, Reply, TestApp, seconds};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_endpoints_are_served_while_others_hang_or_crawl() {
    let app = TestApp::spawn_with(Options {
        // Long enough that a black hole holding worker slots would block
        // the healthy deliveries for the whole wait below.
        delivery_timeout_ms: 60_000,
        max_in_flight_per_endpoint: 4,
        ..Options::default()
    })
    .await;
    let black_hole = Receiver::start().await;
    black_hole.set_default(Reply::Hang);
    let slow = Receiver::start().await;
    slow.set_default(Reply::Delayed(Duration::from_secs(2), 200));
    let healthy = [Receiver::start().await, Receiver::start().await];
    for receiver in [&black_hole, &slow, &healthy[0], &healthy[1]] {
        app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    }
    const EVENTS: usize = 40;
    for n in 0..EVENTS {
        app.send_event("load.test", &format!("{{\"n\":{n}}}")).await;
    }
    for receiver in &healthy {
        let arrived = receiver.wait_for(EVENTS, Duration::from_secs(20)).await;
        assert_eq!(arrived.len(), EVENTS, "healthy deliveries were held up");
    }
    // The black hole never holds more than its cap of the worker's slots.
    assert!(
        black_hole.received().len() <= 4,
        "{}",
        black_hole.received().len()
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_reschedules_without_calling_the_endpoint() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: seconds(&[1; 6]),
        breaker_failure_threshold: 3,
        breaker_open_for: Duration::from_secs(4),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.reply_next([Reply::Status(500); 4]);
    let (endpoint_id, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let event_id = app.send_event("a.b", "{}").await;
    let attempts = app
        .wait_for_delivery_state(
            &event_id,
            &endpoint_id,
            "succeeded",
            Duration::from_secs(40),
        )
        .await;
    let arrived = receiver.received();
    // 3 failures open the breaker; the next retry waits it out instead of
    // calling; the probe fails and reopens it; the one after succeeds.
    assert_eq!(arrived.len(), 5);
    assert_eq!(attempts, Some(5), "deferrals are not attempts");
    let gap = arrived[3].at - arrived[2].at;
    assert!(
        gap >= Duration::from_millis(3900),
        "the breaker did not hold: {gap:?}"
    );
    let gap = arrived[4].at - arrived[3].at;
    assert!(
        gap >= Duration::from_millis(3900),
        "the failed probe did not reopen it: {gap:?}"
    );
    app.shutdown().await;
}
