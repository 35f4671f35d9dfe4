//! Delivery does not depend on Postgres (DESIGN.md invariant 3): while the
//! ledger's database refuses connections, workers keep delivering; when it
//! is back, the ledger catches up and records every attempt once.

use std::time::Duration;

use hookfleet_tests::{Receiver, TestApp, eventually};

/// Cuts this test's database off: no new connections, existing ones ended.
async fn cut(app: &TestApp, db: &hookfleet_db::tokio_postgres::Client) {
    db.batch_execute(&format!(
        "ALTER DATABASE \"{name}\" CONNECTION LIMIT 0;
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = '{name}' AND pid <> pg_backend_pid();",
        name = app.name
    ))
    .await
    .expect("cut the database off");
}

async fn restore(app: &TestApp, db: &hookfleet_db::tokio_postgres::Client) {
    db.batch_execute(&format!(
        "ALTER DATABASE \"{}\" CONNECTION LIMIT -1",
        app.name
    ))
    .await
    .expect("restore the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_go_on_while_the_ledger_database_is_away() {
    let mut app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    // A connection to another database of the server, to flip the switch.
    let admin_url = hookfleet_tests::admin_database_url();
    let (admin, connection) =
        hookfleet_db::tokio_postgres::connect(&admin_url, hookfleet_db::tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);

    // Stop the workers so tasks pile up, routed, in the deliver queue.
    app.stop_worker(0).await;
    const EVENTS: usize = 20;
    for n in 0..EVENTS {
        app.send_event("a.b", &format!("{{\"n\":{n}}}")).await;
    }
    let queue = app.topology().deliver_queue();
    eventually(Duration::from_secs(30), || async {
        let connection = hookfleet_topology::connect(&app.amqp.url, "test-probe")
            .await
            .ok()?;
        let channel = connection.create_channel().await.ok()?;
        let declared = channel
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
        let _ = channel.close(200, "bye".into()).await;
        let _ = connection.close(200, "bye".into()).await;
        (declared.message_count() as usize == EVENTS).then_some(())
    })
    .await
    .expect("every event routed into a task");

    cut(&app, &admin).await;
    // A worker starts while the database is away, and delivers everything.
    app.add_worker().await;
    let arrived = receiver.wait_for(EVENTS, Duration::from_secs(60)).await;
    assert_eq!(arrived.len(), EVENTS, "deliveries stalled without Postgres");
    // The ledger cannot have recorded them yet; give it a moment to try.
    tokio::time::sleep(Duration::from_secs(2)).await;
    restore(&app, &admin).await;

    // It catches up from its queue: every attempt once.
    let db = app.db().await;
    let recorded = eventually(Duration::from_secs(60), || async {
        let n: i64 = db
            .query_one(
                "SELECT count(*) FROM attempts WHERE result = 'succeeded'",
                &[],
            )
            .await
            .ok()?
            .get(0);
        (n as usize >= EVENTS).then_some(n)
    })
    .await;
    assert_eq!(recorded, Some(EVENTS as i64));
    let per_delivery: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT delivery_id FROM attempts GROUP BY delivery_id
                                   HAVING count(*) > 1) repeated",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(per_delivery, 0, "an attempt was recorded twice");
    let succeeded: i64 = db
        .query_one(
            "SELECT count(*) FROM deliveries WHERE state = 'succeeded'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(succeeded, EVENTS as i64);
    app.shutdown().await;
}
