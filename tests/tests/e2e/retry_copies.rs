//! Two copies of one retry (a fork: the broker delivered or dead-lettered
//! it twice, or a worker died between scheduling it and acking) reach the
//! same retry queue, and its holder sends one of them (issue 21).

use std::time::Duration;

use hookfleet_contract::DeliveryTask;
use hookfleet_tests::{Options, Receiver, TestApp, eventually};
use hookfleet_topology::{Publisher, task_properties};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_copies_of_a_retry_are_sent_once() {
    let mut app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let endpoint = Receiver::start().await;
    app.create_endpoint(&endpoint.url("/h"), &["*"]).await;
    app.send_event("a.b", r#"{"n":1}"#).await;
    let queue = app.topology().deliver_queue();
    let taken = eventually(Duration::from_secs(20), || async {
        let taken = app.drain_queue(&queue).await;
        (!taken.is_empty()).then_some(taken)
    })
    .await
    .expect("a delivery task");
    let original = &taken[0];
    let mut task =
        DeliveryTask::from_meta_json(original.header("x-hookfleet-meta").unwrap()).unwrap();
    // Its second attempt, as a worker schedules it (no delay left), twice.
    task.attempt = 2;
    let connection = hookfleet_topology::connect(&app.amqp.url, "hookfleet-test-fork")
        .await
        .unwrap();
    let publisher = Publisher::open(&connection).await.unwrap();
    for _ in 0..2 {
        publisher
            .publish(
                &app.topology().deliver_exchange(),
                &task.retry_routing_key(),
                &original.body,
                task_properties(&task),
            )
            .await
            .unwrap();
    }
    let _ = connection.close(200, "bye".into()).await;
    app.add_worker().await;

    eventually(Duration::from_secs(20), || async {
        (!endpoint.received().is_empty()).then_some(())
    })
    .await
    .expect("the retry was sent");
    // The second copy has had time to come and go.
    let retry_queue = app
        .topology()
        .retry_queue(hookfleet_contract::retry_queue_of(&task.delivery_id));
    eventually(Duration::from_secs(20), || async {
        let connection = hookfleet_topology::connect(&app.amqp.url, "hookfleet-test-probe")
            .await
            .ok()?;
        let channel = connection.create_channel().await.ok()?;
        let declared = channel
            .queue_declare(
                retry_queue.as_str().into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                Default::default(),
            )
            .await
            .ok()?;
        let _ = connection.close(200, "bye".into()).await;
        (declared.message_count() == 0).then_some(())
    })
    .await
    .expect("both copies were handed to the worker");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(endpoint.received().len(), 1, "the copy was sent too");
    app.shutdown().await;
}
