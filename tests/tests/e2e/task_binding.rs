//! A task's sealed secrets are bound to its tenant, endpoint and URL
//! (issue 16 item 4): a task copied with another URL is parked with the
//! reason, and nothing is signed for that URL.

use std::time::Duration;

use hookfleet_contract::DeliveryTask;
use hookfleet_tests::{Options, Receiver, TestApp, eventually};
use hookfleet_topology::{Publisher, task_properties};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_copied_with_another_url_is_parked_not_signed() {
    let mut app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let endpoint = Receiver::start().await;
    let attacker = Receiver::start().await;
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
    task.url = attacker.url("/steal");

    let connection = hookfleet_topology::connect(&app.amqp.url, "hookfleet-test-forger")
        .await
        .unwrap();
    let publisher = Publisher::open(&connection).await.unwrap();
    publisher
        .publish(
            &app.topology().deliver_exchange(),
            "task",
            &original.body,
            task_properties(&task),
        )
        .await
        .unwrap();
    let _ = connection.close(200, "bye".into()).await;
    app.add_worker().await;

    let parked = eventually(Duration::from_secs(20), || async {
        let taken = app.parked().await;
        (!taken.is_empty()).then_some(taken)
    })
    .await
    .expect("the copied task was parked");
    assert_eq!(parked.len(), 1);
    let reason = parked[0].header("x-hookfleet-reason").unwrap();
    assert!(
        reason.contains("another tenant, endpoint or URL"),
        "{reason}"
    );
    assert!(attacker.received().is_empty(), "signed for the copied URL");
    assert!(endpoint.received().is_empty());
    app.shutdown().await;
}
