//! The worker as a process: killed, signalled, cut off from the broker. Its
//! tasks are acked only once their outcome is confirmed, so whatever
//! happens to it, every task is delivered by some worker and recorded.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hookfleet_tests::{Options, Receiver, Reply, TestApp, eventually};

fn spawn_worker_process(app: &TestApp) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hookfleet-test-worker"))
        .env_clear()
        .envs(app.worker_env())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a worker process")
}

async fn succeeded_deliveries(app: &TestApp) -> i64 {
    app.db()
        .await
        .query_one(
            "SELECT count(*) FROM deliveries WHERE state = 'succeeded'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn wait_for_succeeded(app: &TestApp, count: i64, limit: Duration) -> i64 {
    eventually(limit, || async {
        let now = succeeded_deliveries(app).await;
        (now >= count).then_some(now)
    })
    .await
    .unwrap_or(succeeded_deliveries(app).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_delivery_loses_nothing() {
    let mut app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Delayed(Duration::from_millis(500), 200));
    app.create_endpoint(&receiver.url("/h"), &["*"]).await;

    let mut worker = spawn_worker_process(&app);
    const EVENTS: usize = 30;
    let mut ids = HashSet::new();
    for n in 0..EVENTS {
        ids.insert(app.send_event("a.b", &format!("{{\"n\":{n}}}")).await);
    }
    // Let it take some in hand, then kill it without warning.
    let started = receiver.wait_for(3, Duration::from_secs(30)).await;
    assert!(started.len() >= 3, "the worker process never delivered");
    worker.kill().expect("SIGKILL");
    worker.wait().expect("reap");
    let before = receiver.received().len();
    assert!(before < EVENTS, "the worker finished before it was killed");

    app.add_worker().await;
    let done = wait_for_succeeded(&app, EVENTS as i64, Duration::from_secs(60)).await;
    assert_eq!(
        done, EVENTS as i64,
        "deliveries lost with the killed worker"
    );
    let arrived: HashSet<String> = receiver
        .received()
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_owned))
        .collect();
    assert_eq!(arrived, ids, "an event never reached the receiver");
    // Redelivered tasks keep their attempt id: one ledger row each.
    let rows: i64 = app
        .db()
        .await
        .query_one("SELECT count(*) FROM attempts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, EVENTS as i64);
    eprintln!(
        "killed with {before} arrivals; {} arrivals in all for {EVENTS} events",
        receiver.received().len()
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_deliveries_finish_and_exits_zero() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Delayed(Duration::from_secs(2), 200));
    app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let mut worker = spawn_worker_process(&app);
    for n in 0..3 {
        app.send_event("a.b", &format!("{{\"n\":{n}}}")).await;
    }
    let in_flight = receiver.wait_for(3, Duration::from_secs(30)).await;
    assert_eq!(in_flight.len(), 3);

    let status = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let exit = worker.wait().expect("the worker exits");
    assert!(exit.success(), "the worker exited with {exit}");

    // It finished and recorded all three before exiting; nobody else could.
    let done = wait_for_succeeded(&app, 3, Duration::from_secs(20)).await;
    assert_eq!(done, 3);
    assert_eq!(receiver.received().len(), 3, "a delivery was repeated");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_worker_drains_and_the_next_one_takes_over() {
    let mut app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Delayed(Duration::from_secs(1), 200));
    app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    app.send_event("a.b", r#"{"n":0}"#).await;
    receiver.wait_for(1, Duration::from_secs(30)).await;
    app.stop_worker(0).await;
    assert_eq!(
        wait_for_succeeded(&app, 1, Duration::from_secs(10)).await,
        1
    );

    // While no worker runs, tasks wait in the queue for the next one.
    app.send_event("a.b", r#"{"n":1}"#).await;
    app.add_worker().await;
    assert_eq!(
        wait_for_succeeded(&app, 2, Duration::from_secs(30)).await,
        2
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_queue_vanishes_redeclares_it_and_resumes() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/h"), &["*"]).await;

    let connection = hookfleet_topology::connect(&app.amqp.url, "test-saboteur")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let queue = app.topology().deliver_queue();
    channel
        .queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    // The worker's consumer is cancelled by the broker; it reconnects and
    // declares the queue again.
    let back = eventually(Duration::from_secs(30), || async {
        let probe = connection.create_channel().await.ok()?;
        let declared = probe
            .queue_declare(
                queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .ok()?;
        let _ = probe.close(200, "bye".into()).await;
        (declared.consumer_count() > 0).then_some(())
    })
    .await;
    assert!(
        back.is_some(),
        "the worker did not redeclare and consume its queue"
    );
    let _ = channel.close(200, "bye".into()).await;
    let _ = connection.close(200, "bye".into()).await;

    let event_id = app.send_event("a.b", "{}").await;
    let arrived = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(arrived.len(), 1);
    assert_eq!(arrived[0].header("webhook-id"), Some(event_id.as_str()));
    app.shutdown().await;
}

/// Closes every broker connection whose name contains `needle`, as a broker
/// restart or a network cut would. Needs `rabbitmqctl` (root).
fn close_connections(needle: &str) -> usize {
    let listing = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .expect("rabbitmqctl list_connections (the test needs rabbitmqctl, as root)");
    let text = String::from_utf8_lossy(&listing.stdout);
    let pids: Vec<String> = text
        .lines()
        .filter(|line| line.contains(needle))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    for pid in &pids {
        let _ = Command::new("rabbitmqctl")
            .args(["close_connection", pid, "test: simulated broker failure"])
            .output();
    }
    pids.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reconnect_after_the_broker_drops_them() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    app.send_event("a.b", r#"{"n":1}"#).await;
    receiver.wait_for(1, Duration::from_secs(30)).await;

    let closed = tokio::task::spawn_blocking({
        let prefix = app.amqp.prefix.clone();
        move || close_connections(&prefix)
    })
    .await
    .unwrap();
    assert!(
        closed >= 3,
        "expected the producer, ledger and worker connections, closed {closed}"
    );

    // Everything comes back by itself; an event sent now is delivered and
    // recorded (the API answers 503 until the producer has reconnected).
    let event_id = eventually(Duration::from_secs(60), || async {
        let response = app
            .http
            .post(app.producer_url("/v1/events"))
            .header("content-type", "application/json")
            .body(r#"{"type": "a.b", "payload": {"n": 2}}"#)
            .send()
            .await
            .ok()?;
        if response.status() != 202 {
            return None;
        }
        let body: serde_json::Value = response.json().await.ok()?;
        body["id"].as_str().map(str::to_owned)
    })
    .await
    .expect("the producer never accepted an event again");
    let arrived = receiver.wait_for(2, Duration::from_secs(60)).await;
    assert!(
        arrived
            .iter()
            .any(|r| r.header("webhook-id") == Some(event_id.as_str()))
    );
    assert_eq!(
        wait_for_succeeded(&app, 2, Duration::from_secs(60)).await,
        2
    );
    app.shutdown().await;
}
