//! Retries through the binary delay levels: on time, counted, and ending in
//! the dead-letter queue when attempts run out.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookfleet_tests::{Options, Receiver, Reply, TestApp, seconds};

fn unix_millis(at: std::time::Instant) -> i64 {
    // Map a receiver's Instant onto the wall clock the ledger uses.
    let now_instant = std::time::Instant::now();
    let now_wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    (now_wall - (now_instant - at)).as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_attempts_are_retried_on_schedule_until_success() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: seconds(&[1, 2, 3]),
        jitter_percent: 0,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.reply_next([Reply::Status(500), Reply::Status(503), Reply::Status(500)]);
    let (endpoint_id, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let event_id = app.send_event("order.created", r#"{"n":1}"#).await;

    let arrived = receiver.wait_for(4, Duration::from_secs(40)).await;
    assert_eq!(arrived.len(), 4, "expected 3 failures and a success");
    // Every attempt carries the same webhook-id and the same body.
    for webhook in &arrived {
        assert_eq!(webhook.header("webhook-id"), Some(event_id.as_str()));
        assert_eq!(&webhook.body[..], br#"{"n":1}"#);
    }
    let attempts = app
        .wait_for_delivery_state(
            &event_id,
            &endpoint_id,
            "succeeded",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(attempts, Some(4));

    // Each retry arrived within a second after the due time the worker
    // scheduled (and recorded in the ledger).
    let db = app.db().await;
    let rows = db
        .query(
            "SELECT attempt, result, status_code,
                    (extract(epoch from next_attempt_at) * 1000)::int8
             FROM attempts WHERE event_id = $1 ORDER BY attempt",
            &[&event_id],
        )
        .await
        .unwrap();
    let results: Vec<(i32, String, Option<i32>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        results,
        vec![
            (1, "retrying".into(), Some(500)),
            (2, "retrying".into(), Some(503)),
            (3, "retrying".into(), Some(500)),
            (4, "succeeded".into(), Some(200)),
        ]
    );
    for (n, row) in rows.iter().take(3).enumerate() {
        let due: i64 = row.get(3);
        let arrived_at = unix_millis(arrived[n + 1].at);
        let late = arrived_at - due;
        assert!(
            (-50..=1000).contains(&late),
            "retry {} arrived {late} ms after its due time",
            n + 1
        );
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_never_succeeds_ends_in_the_dead_letter_queue() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: seconds(&[1]),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(500));
    let (endpoint_id, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let event_id = app.send_event("order.created", r#"{"n":2}"#).await;

    let attempts = app
        .wait_for_delivery_state(
            &event_id,
            &endpoint_id,
            "exhausted",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(attempts, Some(2));
    assert_eq!(receiver.received().len(), 2);

    let dead = app.parked().await;
    assert_eq!(
        dead.len(),
        1,
        "the exhausted task is in the dead-letter queue"
    );
    assert_eq!(dead[0].body, br#"{"n":2}"#);
    let reason = dead[0].header("x-hookfleet-reason").unwrap();
    assert!(reason.contains("exhausted after 2 attempts"), "{reason}");
    assert!(reason.contains("HTTP 500"), "{reason}");
    app.shutdown().await;
}
