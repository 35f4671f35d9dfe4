//! The dead-letter queue through the API: each tenant sees its own parked
//! messages with the reason, and can requeue them.

use std::time::Duration;

use hookfleet_tests::{
    Durations, Options, Receiver, Reply, TestApp, client_with_token, eventually,
};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Value, json};

async fn parked(client: &reqwest::Client, app: &TestApp) -> Vec<Value> {
    let page: Value = client
        .get(app.ledger_url("/v1/dlq"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["data"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_messages_are_listed_per_tenant_and_can_be_requeued() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: Durations::default(),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(500));
    let (endpoint, _) = app.create_endpoint(&receiver.url("/acme"), &["*"]).await;
    let event = app.send_event("a.b", r#"{"n":1}"#).await;
    app.wait_for_delivery_state(&event, &endpoint, "exhausted", Duration::from_secs(30))
        .await
        .expect("exhausted");
    let mut headers = FieldTable::default();
    headers.insert(
        "x-tenant".into(),
        AMQPValue::LongString(LongString::from(app.tenant.as_str())),
    );
    app.publish_raw(
        "a.b",
        BasicProperties::default()
            .with_message_id("broken-1".into())
            .with_headers(headers),
        b"not json",
    )
    .await;
    // Another tenant's dead task.
    let other = client_with_token(&app.new_tenant("globex").await);
    let response = other
        .post(app.producer_url("/v1/endpoints"))
        .json(&json!({"url": receiver.url("/globex"), "event_types": ["*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    other
        .post(app.producer_url("/v1/events"))
        .json(&json!({"type": "a.b", "payload": {"n": 2}}))
        .send()
        .await
        .unwrap();

    let mine = eventually(Duration::from_secs(30), || async {
        let mine = parked(&app.http, &app).await;
        (mine.len() == 2).then_some(mine)
    })
    .await
    .expect("two parked messages for acme");
    let task = mine
        .iter()
        .find(|p| p["kind"] == "task")
        .expect("the dead task");
    assert_eq!(task["event_id"], event.as_str());
    assert_eq!(task["endpoint_id"], endpoint.as_str());
    assert!(
        task["reason"]
            .as_str()
            .unwrap()
            .contains("exhausted after 1 attempts")
    );
    assert_eq!(task["body"], r#"{"n":1}"#);
    let broken = mine
        .iter()
        .find(|p| p["kind"] == "event")
        .expect("the bad event");
    assert_eq!(broken["message_id"], "broken-1");
    assert!(
        broken["reason"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    // Listing does not consume; the other tenant sees only its own.
    assert_eq!(parked(&app.http, &app).await.len(), 2);
    let theirs = eventually(Duration::from_secs(30), || async {
        let theirs = parked(&other, &app).await;
        (!theirs.is_empty()).then_some(theirs)
    })
    .await
    .expect("globex's dead task");
    assert_eq!(theirs.len(), 1);
    assert_ne!(theirs[0]["event_id"], event.as_str());

    // The receiver is fixed: requeue the task alone.
    receiver.set_default(Reply::Status(200));
    let task_id = task["message_id"].as_str().unwrap();
    let requeued: Value = app
        .http
        .post(app.ledger_url("/v1/dlq/requeue"))
        .json(&json!({"message_ids": [task_id]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requeued["data"].as_array().unwrap().len(), 1);
    let attempts = app
        .wait_for_delivery_state(&event, &endpoint, "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(attempts, Some(2));
    let left = parked(&app.http, &app).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["message_id"], "broken-1");
    assert_eq!(
        parked(&other, &app).await.len(),
        1,
        "another tenant's message moved"
    );
    app.shutdown().await;
}

/// Publishes `count` events that are not JSON for `tenant` over AMQP, as an
/// application would; the router parks each ("not valid JSON"). Message
/// ids are `{prefix}-{n}`; the first body is 20 KiB, the rest small.
async fn park_malformed(app: &TestApp, tenant: &str, prefix: &str, count: usize) {
    let connection = hookfleet_topology::connect(&app.amqp.url, "hookfleet-test-noisy")
        .await
        .unwrap();
    let publisher = hookfleet_topology::Publisher::open(&connection)
        .await
        .unwrap();
    let exchange = app.topology().events_exchange();
    let mut sent = Vec::with_capacity(count);
    for n in 0..count {
        let body = if n == 0 {
            "x".repeat(20 * 1024)
        } else {
            format!("not json {n}")
        };
        let properties = BasicProperties::default()
            .with_message_id(format!("{prefix}-{n}").into())
            .with_headers(hookfleet_topology::headers_with([("x-tenant", tenant)]));
        sent.push(
            publisher
                .send(&exchange, "a.b", body.as_bytes(), properties)
                .await
                .unwrap(),
        );
    }
    for sent in sent {
        sent.confirmed().await.unwrap();
    }
    let _ = connection.close(200, "bye".into()).await;
}

/// How many parked messages the ledger holds for `tenant`.
async fn parked_rows(app: &TestApp, tenant: &str) -> i64 {
    app.db()
        .await
        .query_one("SELECT count(*) FROM parked WHERE tenant = $1", &[&tenant])
        .await
        .unwrap()
        .get(0)
}

/// A page of the tenant's parked messages through the API.
async fn page(client: &reqwest::Client, app: &TestApp, query: &str) -> Value {
    let response = client
        .get(app.ledger_url(&format!("/v1/dlq{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// Issue 16 item 5: tenant A's 1,200 parked messages sit ahead of tenant
/// B's one; B still lists it and requeues it, and A's are untouched. (When
/// parked messages were read off the shared queue, at most 1,000 from its
/// head, B saw nothing.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_noisy_tenants_parked_messages_do_not_hide_another_tenants() {
    let app = TestApp::spawn_with(Options {
        retry_schedule: Durations::default(),
        ..Options::default()
    })
    .await;
    const NOISY: usize = 1_200;
    park_malformed(&app, &app.tenant, "noisy", NOISY).await;
    eventually(Duration::from_secs(60), || async {
        (parked_rows(&app, &app.tenant).await == NOISY as i64).then_some(())
    })
    .await
    .expect("the noisy tenant's messages are parked");

    // Tenant B's delivery is exhausted and parked behind them.
    let b_tenant = "globex";
    let b = client_with_token(&app.new_tenant(b_tenant).await);
    let receiver = Receiver::start().await;
    receiver.set_default(Reply::Status(500));
    let created: Value = b
        .post(app.producer_url("/v1/endpoints"))
        .json(&json!({"url": receiver.url("/globex"), "event_types": ["*"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let endpoint = created["id"].as_str().unwrap().to_owned();
    let accepted: Value = b
        .post(app.producer_url("/v1/events"))
        .json(&json!({"type": "a.b", "payload": {"n": 1}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let event = accepted["id"].as_str().unwrap().to_owned();
    app.wait_for_delivery_state(&event, &endpoint, "exhausted", Duration::from_secs(30))
        .await
        .expect("exhausted");

    let theirs = eventually(Duration::from_secs(30), || async {
        let listed = page(&b, &app, "").await;
        let data = listed["data"].as_array().cloned().unwrap_or_default();
        (!data.is_empty()).then_some(data)
    })
    .await
    .expect("tenant B sees its parked message");
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0]["kind"], "task");
    assert_eq!(theirs[0]["event_id"], event.as_str());

    // Tenant A pages through its own, oldest first, each once.
    let mut seen = std::collections::BTreeSet::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let query = match &after {
            Some(after) => format!("?limit=500&after={after}"),
            None => "?limit=500".to_owned(),
        };
        let listed = page(&app.http, &app, &query).await;
        pages += 1;
        for message in listed["data"].as_array().unwrap() {
            let id = message["message_id"].as_str().unwrap().to_owned();
            assert!(id.starts_with("noisy-"), "{id}");
            assert!(
                message["reason"]
                    .as_str()
                    .unwrap()
                    .contains("not valid JSON")
            );
            if id == "noisy-0" {
                assert_eq!(message["body_truncated"], true);
                assert_eq!(message["body"].as_str().unwrap().len(), 16 * 1024);
            }
            assert!(seen.insert(id), "listed twice");
        }
        match listed["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (NOISY, 3));

    // B's requeue brings its message back, and it is delivered.
    receiver.set_default(Reply::Status(200));
    let requeued: Value = b
        .post(app.ledger_url("/v1/dlq/requeue"))
        .json(&json!({"all": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requeued["data"].as_array().unwrap().len(), 1, "{requeued}");
    assert_eq!(requeued["more"], false);
    let attempts = app
        .wait_for_delivery_state(&event, &endpoint, "succeeded", Duration::from_secs(30))
        .await;
    assert_eq!(attempts, Some(2));
    assert_eq!(receiver.wait_for(2, Duration::from_secs(5)).await.len(), 2);
    assert_eq!(page(&b, &app, "").await["data"], json!([]));
    assert_eq!(parked_rows(&app, &app.tenant).await, NOISY as i64);
    app.shutdown().await;
}

/// A listing's cursor and limits: bad ones are 400s; `endpoint_id` keeps
/// one endpoint's messages; a requeue stops at its limit and says `more`,
/// and sends each message to where it came from with its own headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_messages_page_and_requeue_in_bounded_calls() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    // Where the messages came from: an exchange with a queue of our own.
    let connection = hookfleet_topology::connect(&app.amqp.url, "hookfleet-test-sink")
        .await
        .unwrap();
    let channel = connection.create_channel().await.unwrap();
    let sink = format!("{}.sink", app.name);
    channel
        .exchange_declare(
            sink.as_str().into(),
            lapin::ExchangeKind::Direct,
            lapin::options::ExchangeDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_declare(
            sink.as_str().into(),
            lapin::options::QueueDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            sink.as_str().into(),
            sink.as_str().into(),
            "k".into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let publisher = hookfleet_topology::Publisher::open(&connection)
        .await
        .unwrap();
    for n in 0..5 {
        let headers = hookfleet_topology::headers_with([
            ("x-tenant", app.tenant.as_str()),
            ("x-app", "kept"),
            ("x-hookfleet-reason", "a test"),
            ("x-hookfleet-original-exchange", sink.as_str()),
            ("x-hookfleet-original-routing-key", "k"),
        ]);
        let properties = BasicProperties::default()
            .with_message_id(format!("m-{n}").into())
            .with_delivery_mode(2)
            .with_headers(headers);
        publisher
            .publish(&app.topology().dead_exchange(), "", b"{}", properties)
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(30), || async {
        (parked_rows(&app, &app.tenant).await == 5).then_some(())
    })
    .await
    .expect("parked");

    let first = page(&app.http, &app, "?limit=2").await;
    assert_eq!(first["data"][0]["message_id"], "m-0", "oldest first");
    assert_eq!(first["data"].as_array().unwrap().len(), 2);
    let next = first["next"].as_str().expect("a cursor").to_owned();
    let second = page(&app.http, &app, &format!("?limit=2&after={next}")).await;
    assert_eq!(second["data"][0]["message_id"], "m-2");
    let last = page(&app.http, &app, &format!("?limit=5&after={next}")).await;
    assert_eq!(last["data"].as_array().unwrap().len(), 3);
    assert_eq!(last["next"], Value::Null);
    // The old parameter still works, as the page size.
    let old = page(&app.http, &app, "?scan=3").await;
    assert_eq!(old["data"].as_array().unwrap().len(), 3);
    assert!(old["data"][0]["parked_at"].as_str().is_some());
    assert_eq!(old["data"][0]["original_exchange"], sink.as_str());
    // These have no endpoint.
    let none = page(&app.http, &app, "?endpoint_id=ep_nope").await;
    assert_eq!(none["data"], json!([]));
    assert_eq!(none["next"], Value::Null);
    for bad in [
        "?limit=0",
        "?limit=1001",
        "?after=-1",
        "?after=1x",
        "?scan=5000",
        "?endpoint_id=a%00b",
    ] {
        let response = app
            .http
            .get(app.ledger_url(&format!("/v1/dlq{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(body["error"]["code"].is_string(), "{bad}: {body}");
    }

    // Two per call: three calls requeue all five.
    let mut counts = Vec::new();
    loop {
        let answer: Value = app
            .http
            .post(app.ledger_url("/v1/dlq/requeue"))
            .json(&json!({"all": true, "limit": 2}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        counts.push(answer["data"].as_array().unwrap().len());
        if answer["more"] == false {
            break;
        }
        assert!(counts.len() < 10, "{counts:?}");
    }
    assert_eq!(counts, vec![2, 2, 1]);
    assert_eq!(parked_rows(&app, &app.tenant).await, 0);
    let back = app.drain_queue(&sink).await;
    assert_eq!(back.len(), 5);
    for message in &back {
        assert_eq!(message.routing_key, "k");
        assert_eq!(message.header("x-app"), Some("kept"));
        assert_eq!(message.header("x-hookfleet-reason"), None);
        assert_eq!(message.body, b"{}");
    }

    let too_many: Vec<String> = (0..1001).map(|n| n.to_string()).collect();
    let response = app
        .http
        .post(app.ledger_url("/v1/dlq/requeue"))
        .json(&json!({"message_ids": too_many}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = app
        .http
        .post(app.ledger_url("/v1/dlq/requeue"))
        .json(&json!({"message_ids": ["a\u{0}b"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let _ = channel
        .queue_delete(
            sink.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await;
    let _ = connection.close(200, "bye".into()).await;
    app.shutdown().await;
}

/// Parked messages wait in the dead-letter queue while the ledger's
/// database is away (nothing acked before it is stored), and a message the
/// queue hands over twice, as after a ledger stopped between commit and
/// ack, is one row; two parkings of one message are two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_messages_survive_a_database_outage_and_are_stored_once() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let admin_url = hookfleet_tests::admin_database_url();
    let (admin, connection) =
        hookfleet_db::tokio_postgres::connect(&admin_url, hookfleet_db::tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{name}\" CONNECTION LIMIT 0;
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = '{name}' AND pid <> pg_backend_pid();",
            name = app.name
        ))
        .await
        .unwrap();

    let connection = hookfleet_topology::connect(&app.amqp.url, "hookfleet-test-dead")
        .await
        .unwrap();
    let publisher = hookfleet_topology::Publisher::open(&connection)
        .await
        .unwrap();
    let dead = app.topology().dead_exchange();
    let parked = |parking: &str, count: Option<i64>| {
        let mut headers = hookfleet_topology::headers_with([
            ("x-tenant", app.tenant.as_str()),
            ("x-hookfleet-reason", "a test"),
            ("x-hookfleet-parking-id", parking),
        ]);
        if let Some(count) = count {
            headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(count));
        }
        BasicProperties::default()
            .with_message_id("twice".into())
            .with_delivery_mode(2)
            .with_headers(headers)
    };
    // One parking handed over twice (the second time with the queue's
    // redelivery count), and a second parking of the same message.
    for properties in [
        parked("p1", None),
        parked("p1", Some(1)),
        parked("p2", None),
    ] {
        publisher
            .publish(&dead, "", b"not json", properties)
            .await
            .unwrap();
    }
    let _ = connection.close(200, "bye".into()).await;
    // The ledger retries the write meanwhile; nothing is lost.
    tokio::time::sleep(Duration::from_secs(2)).await;
    admin
        .batch_execute(&format!(
            "ALTER DATABASE \"{}\" CONNECTION LIMIT -1",
            app.name
        ))
        .await
        .unwrap();

    let stored = eventually(Duration::from_secs(30), || async {
        let stored = app.parked().await;
        (stored.len() >= 2).then_some(stored)
    })
    .await
    .expect("the parked messages are stored once the database is back");
    let parkings: Vec<Option<&str>> = stored
        .iter()
        .map(|m| m.header("x-hookfleet-parking-id"))
        .collect();
    assert_eq!(parkings, vec![Some("p1"), Some("p2")]);
    assert!(stored[0].header("x-delivery-count").is_none());
    assert_eq!(stored[0].body, b"not json");
    app.shutdown().await;
}
