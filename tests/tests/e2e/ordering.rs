//! Ordered delivery per key and fleet-wide rate limits (issue 17), against
//! real receivers: what arrives, in what order, at what pace.

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hookfleet_tests::{Durations, Options, Received, Receiver, TestApp, eventually, seconds};
use serde_json::{Value, json};

/// A retry schedule long enough that no delivery is exhausted in a test
/// with random failures, with retries a second apart.
fn patient_schedule(retries: usize) -> Durations {
    Durations(vec![Duration::from_secs(1); retries])
}

async fn create_endpoint(app: &TestApp, body: Value) -> String {
    let response = app
        .http
        .post(app.producer_url("/v1/endpoints"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// Sends event `n` of `key`; returns its id once it is accepted (202).
async fn send_keyed(app: &TestApp, key: &str, n: usize) -> String {
    let response = app
        .http
        .post(app.producer_url("/v1/events"))
        .json(&json!({
            "type": "order.updated",
            "ordering_key": key,
            "payload": {"key": key, "n": n},
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202, "{:?}", response.text().await);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().unwrap().to_owned()
}

/// Sends `per_key` events for each key, each key's one after another
/// (each after the previous one's 202), the keys side by side.
async fn send_all(app: &TestApp, keys: &[String], per_key: usize) {
    join_all(keys.iter().map(|key| async move {
        for n in 0..per_key {
            send_keyed(app, key, n).await;
        }
    }))
    .await;
}

/// (key, n) of a webhook.
fn key_and_n(received: &Received) -> (String, u64) {
    let body: Value = serde_json::from_slice(&received.body).unwrap();
    (
        body["key"].as_str().unwrap().to_owned(),
        body["n"].as_u64().unwrap(),
    )
}

/// The events of each key answered 2xx, once each.
fn delivered(arrivals: &[Received]) -> BTreeMap<String, Vec<u64>> {
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for received in arrivals.iter().filter(|r| (200..300).contains(&r.status)) {
        let (key, n) = key_and_n(received);
        let got = by_key.entry(key).or_default();
        if !got.contains(&n) {
            got.push(n);
        }
    }
    by_key
}

/// The order check: no request for event n of a key arrives before every
/// earlier event of the key was answered 2xx (or, when `ended_early`
/// names it, given up on). Returns the violations.
fn out_of_order(arrivals: &[Received], ended_early: &[(String, u64)]) -> Vec<String> {
    let mut done: HashMap<String, Vec<u64>> = HashMap::new();
    for (key, n) in ended_early {
        done.entry(key.clone()).or_default().push(*n);
    }
    let mut violations = Vec::new();
    let mut sorted: Vec<&Received> = arrivals.iter().collect();
    sorted.sort_by_key(|r| r.at);
    for received in sorted {
        let (key, n) = key_and_n(received);
        let finished = done.entry(key.clone()).or_default();
        if let Some(missing) = (0..n).find(|earlier| !finished.contains(earlier)) {
            violations.push(format!(
                "{key}: event {n} arrived before event {missing} ended"
            ));
        }
        if (200..300).contains(&received.status) && !finished.contains(&n) {
            finished.push(n);
        }
    }
    violations
}

fn keys(count: usize) -> Vec<String> {
    (0..count).map(|k| format!("customer:{k}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_keys_events_arrive_in_order_through_random_failures_and_retries() {
    let app = TestApp::spawn_with(Options {
        workers: 2,
        retry_schedule: patient_schedule(12),
        max_in_flight_per_endpoint: 64,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.fail_randomly(30);
    create_endpoint(
        &app,
        json!({"url": receiver.url("/h"), "event_types": ["order.*"], "ordered": true}),
    )
    .await;
    let keys = keys(20);
    send_all(&app, &keys, 25).await;

    let all = eventually(Duration::from_secs(180), || async {
        let arrivals = receiver.received();
        let done = delivered(&arrivals);
        (done.values().map(Vec::len).sum::<usize>() == 20 * 25).then_some(arrivals)
    })
    .await
    .unwrap_or_else(|| panic!("not all delivered: {:?}", delivered(&receiver.received())));
    let failures = all.iter().filter(|r| r.status == 500).count();
    assert!(
        failures > 50,
        "the receiver failed only {failures} requests"
    );
    let violations = out_of_order(&all, &[]);
    assert!(violations.is_empty(), "{violations:#?}");
    for (key, got) in delivered(&all) {
        assert_eq!(got, (0..25).collect::<Vec<u64>>(), "{key}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_blocked_by_its_endpoint_holds_back_only_itself() {
    let app = TestApp::spawn_with(Options {
        workers: 1,
        retry_schedule: patient_schedule(60),
        max_in_flight_per_endpoint: 64,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let blocked_for = Duration::from_secs(30);
    let unblocked_at = Instant::now() + blocked_for;
    receiver.fail_matching("\"key\":\"stuck\"", 500, unblocked_at);
    create_endpoint(
        &app,
        json!({"url": receiver.url("/h"), "event_types": ["order.*"], "ordered": true}),
    )
    .await;
    let mut all_keys = keys(5);
    all_keys.push("stuck".to_owned());
    send_all(&app, &all_keys, 10).await;

    // The other keys flow while the stuck one is refused.
    let others = eventually(Duration::from_secs(25), || async {
        let done = delivered(&receiver.received());
        let others: usize = done
            .iter()
            .filter(|(key, _)| key.as_str() != "stuck")
            .map(|(_, got)| got.len())
            .sum();
        (others == 50).then_some(())
    })
    .await;
    assert!(
        others.is_some() && Instant::now() < unblocked_at,
        "the other keys did not all arrive while one was blocked: {:?}",
        delivered(&receiver.received())
    );
    let stuck = || -> Vec<u64> {
        receiver
            .received()
            .iter()
            .map(key_and_n)
            .filter(|(key, _)| key == "stuck")
            .map(|(_, n)| n)
            .collect()
    };
    // Its head is retried meanwhile (a second apart), and nothing else of
    // the key is sent.
    let stuck = eventually(Duration::from_secs(15), || async {
        let stuck = stuck();
        (stuck.len() >= 4).then_some(stuck)
    })
    .await
    .unwrap_or_else(|| panic!("the stuck key's head was not retried: {:?}", stuck()));
    assert!(Instant::now() < unblocked_at);
    assert!(
        stuck.iter().all(|n| *n == 0),
        "a later event of the blocked key was sent: {stuck:?}"
    );

    // Once the endpoint takes it, the key's events follow in order.
    let all = eventually(blocked_for + Duration::from_secs(60), || async {
        let arrivals = receiver.received();
        (delivered(&arrivals).values().map(Vec::len).sum::<usize>() == 60).then_some(arrivals)
    })
    .await
    .expect("the blocked key's events arrived once it was unblocked");
    let violations = out_of_order(&all, &[]);
    assert!(violations.is_empty(), "{violations:#?}");
    app.shutdown().await;
}

/// A fleet of one worker whose lane holder keeps at most 20 tasks of a
/// blocked key in memory (40 in hand), with a patient retry schedule, and
/// a receiver: what the overflow tests share.
async fn overflowing_lane_app() -> (TestApp, Receiver) {
    let app = TestApp::spawn_with(Options {
        workers: 1,
        retry_schedule: patient_schedule(90),
        max_in_flight_per_endpoint: 64,
        lane_prefetch: 40,
        lane_hold_limit: 20,
        ..Options::default()
    })
    .await;
    (app, Receiver::start().await)
}

/// A key blocked with more tasks than its lane holder keeps in memory: the
/// holder sets them aside through the delay levels instead of filling its
/// prefetch, so the other keys of the same lane flow on (without it they
/// stall behind the held tasks, and the head's retries with them), and
/// once the endpoint takes the key again its events all arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_blocked_past_the_hold_limit_overflows_and_its_lane_flows_on() {
    let (app, receiver) = overflowing_lane_app().await;
    let blocked_for = Duration::from_secs(30);
    let unblocked_at = Instant::now() + blocked_for;
    receiver.fail_matching("\"key\":\"stuck\"", 500, unblocked_at);
    let endpoint = create_endpoint(
        &app,
        json!({"url": receiver.url("/h"), "event_types": ["order.*"], "ordered": true}),
    )
    .await;
    // Keys that share the stuck key's lane.
    let lane_of = |key: &str| {
        let key = hookfleet_contract::OrderingKey::parse(key).unwrap();
        hookfleet_contract::LaneTask::assign(&endpoint, true, None, Some(&key))
            .unwrap()
            .lane
    };
    let lane = lane_of("stuck");
    let neighbours: Vec<String> = (0..)
        .map(|k| format!("customer:{k}"))
        .filter(|key| lane_of(key) == lane)
        .take(4)
        .collect();
    const STUCK: usize = 100;
    send_all(&app, &["stuck".to_owned()], STUCK).await;
    send_all(&app, &neighbours, 20).await;

    let others = eventually(blocked_for, || async {
        let done = delivered(&receiver.received());
        let others: usize = neighbours
            .iter()
            .map(|key| done.get(key).map_or(0, Vec::len))
            .sum();
        (others == 80).then_some(())
    })
    .await;
    assert!(
        others.is_some() && Instant::now() < unblocked_at,
        "the stuck key's lane neighbours did not all arrive while it was blocked: {:?}",
        delivered(&receiver.received())
    );
    let sent_of_stuck = receiver
        .received()
        .iter()
        .map(key_and_n)
        .filter(|(key, n)| key == "stuck" && *n > 0)
        .count();
    assert_eq!(
        sent_of_stuck, 0,
        "a later event of the blocked key was sent"
    );

    let all = eventually(blocked_for + Duration::from_secs(120), || async {
        let arrivals = receiver.received();
        (delivered(&arrivals).values().map(Vec::len).sum::<usize>() == STUCK + 80)
            .then_some(arrivals)
    })
    .await
    .unwrap_or_else(|| panic!("not all delivered: {:?}", delivered(&receiver.received())));
    let violations = out_of_order(&all, &[]);
    assert!(violations.is_empty(), "{violations:#?}");
    assert_eq!(
        delivered(&all)["stuck"],
        (0..STUCK as u64).collect::<Vec<u64>>()
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_keys_overflow_at_once_and_all_arrive_in_order() {
    let (app, receiver) = overflowing_lane_app().await;
    let blocked_for = Duration::from_secs(20);
    let unblocked_at = Instant::now() + blocked_for;
    receiver.fail_matching("\"key\":", 500, unblocked_at);
    create_endpoint(
        &app,
        json!({"url": receiver.url("/h"), "event_types": ["order.*"], "ordered": true}),
    )
    .await;
    let keys = keys(40);
    send_all(&app, &keys, 25).await;
    let all = eventually(blocked_for + Duration::from_secs(240), || async {
        let arrivals = receiver.received();
        (delivered(&arrivals).values().map(Vec::len).sum::<usize>() == 40 * 25).then_some(arrivals)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "not all delivered: {:?}",
            delivered(&receiver.received())
                .iter()
                .map(|(k, v)| (k.clone(), v.len()))
                .collect::<Vec<_>>()
        )
    });
    let violations = out_of_order(&all, &[]);
    assert!(violations.is_empty(), "{violations:#?}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_delivery_lets_its_keys_next_event_go() {
    let app = TestApp::spawn_with(Options {
        workers: 1,
        retry_schedule: seconds(&[1, 1]),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.fail_matching("\"n\":0", 500, Instant::now() + Duration::from_secs(3600));
    let endpoint = create_endpoint(
        &app,
        json!({"url": receiver.url("/h"), "event_types": ["order.*"], "ordered": true}),
    )
    .await;
    let first = send_keyed(&app, "k", 0).await;
    send_keyed(&app, "k", 1).await;
    send_keyed(&app, "k", 2).await;

    let all = eventually(Duration::from_secs(60), || async {
        let arrivals = receiver.received();
        (delivered(&arrivals).get("k").map(Vec::len) == Some(2)).then_some(arrivals)
    })
    .await
    .unwrap_or_else(|| {
        let seen: Vec<(u64, u16)> = receiver
            .received()
            .iter()
            .map(|r| (key_and_n(r).1, r.status))
            .collect();
        panic!("the key's next events were not delivered after the first was exhausted: {seen:?}")
    });
    let sequence: Vec<(u64, u16)> = all.iter().map(|r| (key_and_n(r).1, r.status)).collect();
    assert_eq!(
        sequence,
        vec![(0, 500), (0, 500), (0, 500), (1, 200), (2, 200)],
        "three attempts of the first, then the next two in order"
    );
    // The ledger shows the exhausted delivery, and it is in the DLQ.
    let attempts = app
        .wait_for_delivery_state(&first, &endpoint, "exhausted", Duration::from_secs(20))
        .await;
    assert_eq!(attempts, Some(3));
    let parked = app.parked().await;
    assert!(
        parked.iter().any(|p| p
            .header("x-hookfleet-reason")
            .is_some_and(|r| r.contains("exhausted"))),
        "the exhausted delivery is parked"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_holds_across_three_workers() {
    let app = TestApp::spawn_with(Options {
        workers: 3,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    create_endpoint(
        &app,
        json!({"url": receiver.url("/h"), "event_types": ["order.*"], "rate_limit": 50}),
    )
    .await;
    const EVENTS: usize = 800;
    for batch in 0..EVENTS / 100 {
        let events: Vec<Value> = (0..100)
            .map(|n| json!({"type": "order.updated", "payload": {"key": "any", "n": batch * 100 + n}}))
            .collect();
        let response = app
            .http
            .post(app.producer_url("/v1/events/batch"))
            .json(&json!({ "events": events }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let all = receiver.wait_for(EVENTS, Duration::from_secs(60)).await;
    assert_eq!(all.len(), EVENTS, "every event arrived (and only once)");
    let mut times: Vec<Instant> = all.iter().map(|r| r.at).collect();
    times.sort();
    let most_in_ten = (0..times.len())
        .map(|i| {
            times[i..]
                .iter()
                .take_while(|t| t.duration_since(times[i]) < Duration::from_secs(10))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most_in_ten <= 550,
        "{most_in_ten} attempts in a 10 s window, at most 550 allowed"
    );
    let span = times[times.len() - 1]
        .duration_since(times[0])
        .as_secs_f64();
    let rate = (EVENTS - 1) as f64 / span;
    assert!(
        rate > 40.0 && rate <= 55.0,
        "{rate:.1}/s over {span:.1} s; the limit is 50/s"
    );
    app.shutdown().await;
}

fn spawn_worker_process(app: &TestApp) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hookfleet-test-worker"))
        .env_clear()
        .envs(app.worker_env())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a worker process")
}

/// Events that go through the router: published back to back over AMQP on
/// one channel (the accepted order is the order of publishing), and sent
/// in batches, each after the previous one's 202. The router handles many
/// messages at once and sends a key's next event before the previous one
/// is confirmed; the receiver still sees each key in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_holds_for_events_published_back_to_back_and_in_batches() {
    let app = TestApp::spawn_with(Options {
        workers: 2,
        retry_schedule: patient_schedule(12),
        max_in_flight_per_endpoint: 64,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.fail_randomly(20);
    create_endpoint(
        &app,
        json!({"url": receiver.url("/h"), "event_types": ["order.*"], "ordered": true}),
    )
    .await;
    const PER_KEY: usize = 20;
    let amqp_keys: Vec<String> = (0..10).map(|k| format!("amqp:{k}")).collect();
    let batch_keys: Vec<String> = (0..10).map(|k| format!("batch:{k}")).collect();

    let over_amqp = async {
        let connection = hookfleet_topology::connect(&app.amqp.url, "hookfleet-test-app")
            .await
            .expect("connect to the broker");
        let publisher = hookfleet_topology::Publisher::open(&connection)
            .await
            .expect("a confirming channel");
        let exchange = app.topology().events_exchange();
        let mut sent = Vec::new();
        for n in 0..PER_KEY {
            for key in &amqp_keys {
                let properties = lapin::BasicProperties::default()
                    .with_message_id(format!("evt_{}_{n}", key.replace(':', "_")).into())
                    .with_content_type("application/json".into())
                    .with_headers(hookfleet_topology::headers_with([
                        ("x-tenant", app.tenant.as_str()),
                        ("x-ordering-key", key.as_str()),
                    ]));
                let body = json!({"key": key, "n": n}).to_string();
                sent.push(
                    publisher
                        .send(&exchange, "order.updated", body.as_bytes(), properties)
                        .await
                        .expect("handed to the channel"),
                );
            }
        }
        for sent in sent {
            sent.confirmed()
                .await
                .expect("the broker confirmed the event");
        }
        let _ = connection.close(200, "bye".into()).await;
    };
    let in_batches = async {
        for n in 0..PER_KEY {
            let events: Vec<Value> = batch_keys
                .iter()
                .map(|key| {
                    json!({"type": "order.updated", "ordering_key": key,
                           "payload": {"key": key, "n": n}})
                })
                .collect();
            let response = app
                .http
                .post(app.producer_url("/v1/events/batch"))
                .json(&json!({ "events": events }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202, "{:?}", response.text().await);
        }
    };
    tokio::join!(over_amqp, in_batches);

    let all = eventually(Duration::from_secs(180), || async {
        let arrivals = receiver.received();
        (delivered(&arrivals).values().map(Vec::len).sum::<usize>() == 20 * PER_KEY)
            .then_some(arrivals)
    })
    .await
    .unwrap_or_else(|| panic!("not all delivered: {:?}", delivered(&receiver.received())));
    let violations = out_of_order(&all, &[]);
    assert!(violations.is_empty(), "{violations:#?}");
    for (key, got) in delivered(&all) {
        assert_eq!(got, (0..PER_KEY as u64).collect::<Vec<u64>>(), "{key}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_holds_when_the_lane_holder_is_killed() {
    let mut app = TestApp::spawn_with(Options {
        workers: 0,
        retry_schedule: patient_schedule(12),
        max_in_flight_per_endpoint: 64,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.fail_randomly(25);
    create_endpoint(
        &app,
        json!({"url": receiver.url("/h"), "event_types": ["order.*"], "ordered": true}),
    )
    .await;
    // The process subscribes first, so it holds every lane; the in-process
    // worker waits behind it.
    let mut holder = spawn_worker_process(&app);
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.add_worker().await;

    let keys = keys(10);
    let sending = send_all(&app, &keys, 20);
    let killing = async {
        receiver.wait_for(60, Duration::from_secs(60)).await;
        holder.kill().expect("SIGKILL the lane holder");
        let _ = holder.wait();
    };
    tokio::join!(sending, killing);

    let all = eventually(Duration::from_secs(180), || async {
        let arrivals = receiver.received();
        (delivered(&arrivals).values().map(Vec::len).sum::<usize>() == 200).then_some(arrivals)
    })
    .await
    .unwrap_or_else(|| panic!("not all delivered: {:?}", delivered(&receiver.received())));
    let violations = out_of_order(&all, &[]);
    assert!(violations.is_empty(), "{violations:#?}");
    app.shutdown().await;
}

/// A rolling update: the worker holding every lane gets SIGTERM mid-stream.
/// It finishes the attempts it has started, hands back what it holds, and
/// exits 0; the next worker takes the lanes over with each key's blocked
/// head known, and every key still arrives in order, each event answered
/// 2xx once (the 20 s drain is far longer than an attempt here).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn order_holds_when_the_lane_holder_is_stopped_with_sigterm() {
    let mut app = TestApp::spawn_with(Options {
        workers: 0,
        retry_schedule: patient_schedule(12),
        max_in_flight_per_endpoint: 64,
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.fail_randomly(25);
    create_endpoint(
        &app,
        json!({"url": receiver.url("/h"), "event_types": ["order.*"], "ordered": true}),
    )
    .await;
    let mut holder = spawn_worker_process(&app);
    tokio::time::sleep(Duration::from_secs(3)).await;
    app.add_worker().await;

    let keys = keys(10);
    let sending = send_all(&app, &keys, 20);
    let stopping = async {
        receiver.wait_for(60, Duration::from_secs(60)).await;
        let status = Command::new("kill")
            .args(["-TERM", &holder.id().to_string()])
            .status()
            .expect("send SIGTERM");
        assert!(status.success());
        tokio::task::block_in_place(|| holder.wait().expect("the holder exits"))
    };
    let ((), exit) = tokio::join!(sending, stopping);
    assert!(exit.success(), "the lane holder exited with {exit}");

    let all = eventually(Duration::from_secs(180), || async {
        let arrivals = receiver.received();
        (delivered(&arrivals).values().map(Vec::len).sum::<usize>() == 200).then_some(arrivals)
    })
    .await
    .unwrap_or_else(|| panic!("not all delivered: {:?}", delivered(&receiver.received())));
    let violations = out_of_order(&all, &[]);
    assert!(violations.is_empty(), "{violations:#?}");
    let repeated = all
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .count()
        - 200;
    assert_eq!(
        repeated, 0,
        "deliveries answered 2xx were sent again after a graceful handover"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordering_fields_are_checked() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    for (body, field) in [
        (
            json!({"url": "http://127.0.0.1:9/h", "event_types": ["*"], "rate_limit": 0}),
            "rate_limit",
        ),
        (
            json!({"url": "http://127.0.0.1:9/h", "event_types": ["*"], "rate_limit": 10001}),
            "rate_limit",
        ),
    ] {
        let response = app
            .http
            .post(app.producer_url("/v1/endpoints"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]["message"].as_str().unwrap().contains(field),
            "{error}"
        );
    }
    let id = create_endpoint(
        &app,
        json!({"url": "http://127.0.0.1:9/h", "event_types": ["*"], "ordered": true, "rate_limit": 10000}),
    )
    .await;
    let shown: Value = app
        .http
        .get(app.producer_url(&format!("/v1/endpoints/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (shown["ordered"].clone(), shown["rate_limit"].clone()),
        (json!(true), json!(10000))
    );
    let changed: Value = app
        .http
        .patch(app.producer_url(&format!("/v1/endpoints/{id}")))
        .json(&json!({"rate_limit": null}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(changed["rate_limit"], Value::Null);
    assert_eq!(changed["ordered"], true, "what was not given stays");

    for key in ["", "has space", &"k".repeat(129)] {
        let response = app
            .http
            .post(app.producer_url("/v1/events"))
            .json(&json!({"type": "a.b", "payload": {}, "ordering_key": key}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{key:?}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("ordering_key:")
        );
    }
    let batch = app
        .http
        .post(app.producer_url("/v1/events/batch"))
        .json(
            &json!({"events": [{"type": "a.b", "payload": {}, "ordering_key": "ok"},
                                 {"type": "a.b", "payload": {}, "ordering_key": "not ok"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(batch.status(), 400);
    let error: Value = batch.json().await.unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("events[1].ordering_key:")
    );

    // Over AMQP, a bad header parks the event with the reason.
    let properties = lapin::BasicProperties::default()
        .with_message_id("evt_badkey".into())
        .with_content_type("application/json".into())
        .with_headers(hookfleet_topology::headers_with([
            ("x-tenant", app.tenant.as_str()),
            ("x-ordering-key", "no spaces allowed"),
        ]));
    app.publish_raw("a.b", properties, b"{}").await;
    let parked = eventually(Duration::from_secs(20), || async {
        let parked = app.parked().await;
        (!parked.is_empty()).then_some(parked)
    })
    .await
    .expect("the event was parked");
    assert!(
        parked[0]
            .header("x-hookfleet-reason")
            .is_some_and(|r| r.contains("x-ordering-key")),
        "{:?}",
        parked[0].header("x-hookfleet-reason")
    );
    app.shutdown().await;
}
