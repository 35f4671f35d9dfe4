//! Signing secrets never sit in plaintext: not in Postgres, not in the
//! delivery tasks in the broker (DESIGN.md invariant 8).

use std::time::Duration;

use hookfleet_tests::{Options, TestApp, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_in_the_database_and_in_tasks() {
    // No workers: the task stays in the deliver queue for us to read.
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let (endpoint_id, secret) = app
        .create_endpoint("http://127.0.0.1:9/unused", &["*"])
        .await;
    let key_part = secret.trim_start_matches("whsec_").to_owned();
    app.send_event("a.b", r#"{"x":1}"#).await;

    let db = app.db().await;
    let stored: String = db
        .query_one(
            "SELECT secret FROM endpoints WHERE id = $1",
            &[&endpoint_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !stored.contains(&key_part),
        "the secret is stored in plaintext"
    );
    assert!(stored.starts_with("v1."));

    let queue = app.topology().deliver_queue();
    let tasks = eventually(Duration::from_secs(20), || async {
        let taken = app.drain_queue(&queue).await;
        (!taken.is_empty()).then_some(taken)
    })
    .await
    .expect("a delivery task");
    assert_eq!(tasks.len(), 1);
    let meta = tasks[0].header("x-hookfleet-meta").unwrap();
    assert!(
        !meta.contains(&key_part),
        "the task carries the secret in plaintext"
    );
    assert!(meta.contains("sealed_secrets"));
    app.shutdown().await;
}
