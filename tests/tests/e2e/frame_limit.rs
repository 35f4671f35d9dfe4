//! One tenant cannot cut the broker connection others share (issue 16
//! item 1): a message whose content header frame would exceed the
//! negotiated `frame_max` is parked with the reason instead of being sent.

use std::process::Command;
use std::time::Duration;

use hookfleet_tests::{Receiver, TestApp, client_with_token, eventually};
use hookfleet_topology::{Publisher, header_frame_len};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection};

/// Properties whose header frame is exactly `frame_len` bytes long.
fn properties_of_frame_len(frame_len: usize) -> BasicProperties {
    let with = |value_len: usize| {
        let mut table = FieldTable::default();
        table.insert(
            "x-big".into(),
            AMQPValue::LongString(LongString::from("a".repeat(value_len))),
        );
        BasicProperties::default().with_headers(table)
    };
    let overhead = header_frame_len(&with(0));
    let properties = with(frame_len - overhead);
    assert_eq!(header_frame_len(&properties), frame_len);
    properties
}

/// Publishes straight through lapin, past hookfleet's check; whether the
/// broker confirmed it.
async fn publish_raw(connection: &Connection, properties: BasicProperties) -> bool {
    let Ok(channel) = connection.create_channel().await else {
        return false;
    };
    let published = async {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        channel
            .basic_publish(
                "".into(),
                "hookfleet-test-nowhere".into(),
                BasicPublishOptions::default(),
                b"{}",
                properties,
            )
            .await?
            .await
    }
    .await;
    published.is_ok()
}

/// Where exactly the broker draws the line: RabbitMQ checks a frame's
/// payload (the frame less its 8 bytes of type, channel, size and end)
/// against `frame_max`, tolerating those 8 bytes for clients that do not
/// count them. hookfleet's publisher counts them (AMQP 0-9-1 4.2.3: the
/// limit is on the whole frame), so it refuses 8 bytes earlier than needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_closes_the_connection_for_a_header_frame_over_frame_max_plus_8() {
    let url = hookfleet_tests::amqp_url();
    let connection = hookfleet_topology::connect(&url, "hookfleet-test-frame")
        .await
        .unwrap();
    let frame_max = connection.configuration().frame_max() as usize;
    assert!(publish_raw(&connection, properties_of_frame_len(frame_max + 8)).await);
    assert!(
        connection.status().connected(),
        "a frame whose payload is frame_max is allowed"
    );
    assert!(!publish_raw(&connection, properties_of_frame_len(frame_max + 9)).await);
    let closed = eventually(Duration::from_secs(10), || async {
        (!connection.status().connected()).then_some(())
    })
    .await;
    assert!(
        closed.is_some(),
        "the broker kept a connection sending an oversized frame"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publisher_parks_what_would_not_fit_and_keeps_the_connection() {
    let app = TestApp::spawn_with(hookfleet_tests::Options {
        workers: 0,
        ..Default::default()
    })
    .await;
    let topology = app.topology();
    let connection = hookfleet_topology::connect(&app.amqp.url, "hookfleet-test-park")
        .await
        .unwrap();
    let publisher = Publisher::open(&connection)
        .await
        .unwrap()
        .parking_to(topology.dead_exchange());
    let frame_max = publisher.frame_max() as usize;
    let oversized = properties_of_frame_len(frame_max + 1).with_message_id("m-big".into());
    publisher
        .publish(&topology.deliver_exchange(), "task", b"{}", oversized)
        .await
        .expect("parked, not refused");
    // The same channel goes on publishing.
    publisher
        .publish(
            &topology.deliver_exchange(),
            "task",
            b"{}",
            BasicProperties::default().with_message_id("m-small".into()),
        )
        .await
        .unwrap();
    assert!(connection.status().connected());

    let parked = app.parked().await;
    assert_eq!(parked.len(), 1);
    assert_eq!(
        parked[0].properties.message_id().as_ref().unwrap().as_str(),
        "m-big"
    );
    assert_eq!(parked[0].header("x-hookfleet-parked-by"), Some("publisher"));
    assert!(
        parked[0]
            .header("x-hookfleet-reason")
            .unwrap()
            .contains("frame_max")
    );
    let delivered = app.drain_queue(&topology.deliver_queue()).await;
    assert_eq!(delivered.len(), 1);
    let _ = connection.close(200, "bye".into()).await;
    app.shutdown().await;
}

/// The broker's ids of the connections whose client properties mention
/// `needle`.
fn connections(needle: &str) -> Vec<String> {
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
    let mut pids: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|line| line.contains(needle))
        .filter_map(|line| line.split_whitespace().next().map(str::to_owned))
        .collect();
    pids.sort();
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_with_a_huge_header_is_parked_and_other_tenants_are_delivered() {
    let app = TestApp::spawn().await;
    let receiver_a = Receiver::start().await;
    let receiver_b = Receiver::start().await;
    let (endpoint_a, _) = app.create_endpoint(&receiver_a.url("/a"), &["*"]).await;
    // A header value no API would accept any more, written straight into
    // the registry as an older version could have.
    app.db()
        .await
        .execute(
            "UPDATE endpoints
             SET headers = jsonb_build_object('x-big', repeat('a', 200000)), updated_at = now()
             WHERE id = $1",
            &[&endpoint_a],
        )
        .await
        .unwrap();
    let producer_connection = format!("hookfleet-producer {}", app.amqp.prefix);
    let before = connections(&producer_connection);
    assert!(!before.is_empty());

    // Creating tenant beta's endpoint reloads the index before answering,
    // so the huge header is in force from here on.
    let beta = client_with_token(&app.new_tenant("beta").await);
    let created = beta
        .post(app.producer_url("/v1/endpoints"))
        .json(&serde_json::json!({ "url": receiver_b.url("/b"), "event_types": ["*"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    app.send_event("a.b", r#"{"tenant":"acme"}"#).await;
    let parked = eventually(Duration::from_secs(20), || async {
        let taken = app.parked().await;
        (!taken.is_empty()).then_some(taken)
    })
    .await
    .expect("the oversized task was parked");
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].header("x-hookfleet-parked-by"), Some("publisher"));
    assert!(
        parked[0]
            .header("x-hookfleet-reason")
            .unwrap()
            .contains("frame_max")
    );

    let accepted = beta
        .post(app.producer_url("/v1/events"))
        .json(&serde_json::json!({ "type": "a.b", "payload": { "tenant": "beta" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    let arrived = receiver_b.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(arrived.len(), 1, "the other tenant's delivery did not go");
    assert!(receiver_a.received().is_empty());
    assert_eq!(
        connections(&producer_connection),
        before,
        "the producer's broker connection was dropped"
    );
    app.shutdown().await;
}
