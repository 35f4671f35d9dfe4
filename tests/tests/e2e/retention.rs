//! The ledger keeps its history for the retention period, by day of the
//! event's creation: an event, its deliveries and its attempts (replays
//! included) share a day partition and leave together when the day expires.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hookfleet_ledger::retention::{Maintenance, Retention};
use hookfleet_tests::{Receiver, TestApp, eventually};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::Value;

const DAY: u64 = 24 * 3600;

/// An event published over AMQP with `timestamp` (seconds) as its creation
/// time, as a producer stamping its own messages would.
async fn publish_dated(app: &TestApp, id: &str, timestamp: u64) {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-tenant".into(),
        AMQPValue::LongString(LongString::from(app.tenant.as_str())),
    );
    let properties = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
        .with_message_id(id.into())
        .with_timestamp(timestamp)
        .with_headers(headers);
    app.publish_raw("order.created", properties, br#"{"dated":true}"#)
        .await;
}

async fn status_of(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app.http.get(app.ledger_url(path)).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The UTC day `seconds` falls on, as the partitions name it.
async fn day_of(db: &hookfleet_db::tokio_postgres::Client, seconds: u64) -> String {
    db.query_one(
        "SELECT to_char((to_timestamp($1::int8) AT TIME ZONE 'UTC')::date, 'YYYYMMDD')",
        &[&(seconds as i64)],
    )
    .await
    .unwrap()
    .get(0)
}

async fn maintain(app: &TestApp, period: Duration) -> Maintenance {
    let pool = hookfleet_db::pool(&hookfleet_config::DatabaseSettings {
        url: app.database_url.clone(),
        pool_size: 1,
        migrate_on_start: false,
        ..Default::default()
    })
    .unwrap();
    Retention {
        pool,
        period,
        check_every: Duration::from_secs(3600),
    }
    .maintain()
    .await
    .expect("maintenance runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_kept_for_the_period_and_dropped_by_whole_days() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = app.create_endpoint(&receiver.url("/h"), &["order.*"]).await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    publish_dated(&app, "ancient", now - 40 * DAY).await;
    publish_dated(&app, "older", now - 10 * DAY).await;
    let fresh = app.send_event("order.created", r#"{"fresh":true}"#).await;
    for id in ["ancient", "older", fresh.as_str()] {
        app.wait_for_delivery_state(id, &endpoint, "succeeded", Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("{id} delivered and recorded"));
    }
    // Events from days without a partition wait in the default partitions,
    // readable like any other.
    assert_eq!(status_of(&app, "/v1/events/ancient").await.0, 200);

    let db = app.db().await;
    let older_day = day_of(&db, now - 10 * DAY).await;
    let today = day_of(&db, now).await;

    // Kept for 30 days: the 10-day-old event moves into a day partition of
    // its own; the 40-day-old one is deleted.
    let done = maintain(&app, Duration::from_secs(30 * DAY)).await;
    for table in ["events", "deliveries", "attempts"] {
        assert!(
            done.made.contains(&format!("{table}_p{older_day}")),
            "{done:?}"
        );
    }
    assert_eq!(
        done.expired_outliers, 3,
        "the ancient event, delivery, attempt"
    );
    assert_eq!(status_of(&app, "/v1/events/ancient").await.0, 404);
    let (status, older) = status_of(&app, "/v1/events/older").await;
    assert_eq!(status, 200);
    assert_eq!(older["deliveries"][0]["state"], "succeeded");

    // A replay of the old event is recorded in the old event's day.
    let replayed = app
        .http
        .post(app.ledger_url("/v1/events/older/replay"))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status().as_u16(), 202);
    let page = eventually(Duration::from_secs(30), || async {
        let (_, page) = status_of(&app, "/v1/events/older/attempts").await;
        (page["data"].as_array()?.len() == 2).then_some(page)
    })
    .await
    .expect("the replay's attempt is recorded");
    assert_eq!(page["data"][0]["attempt"], 1);
    assert_eq!(page["data"][1]["attempt"], 2);
    let homes: Vec<String> = db
        .query(
            "SELECT DISTINCT tableoid::regclass::text FROM attempts WHERE event_id = 'older'
             UNION SELECT DISTINCT tableoid::regclass::text FROM deliveries WHERE event_id = 'older'
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        homes,
        [
            format!("attempts_p{older_day}"),
            format!("deliveries_p{older_day}")
        ]
    );

    // Kept for 5 days: the old day goes whole; today stays.
    let done = maintain(&app, Duration::from_secs(5 * DAY)).await;
    for table in ["events", "deliveries", "attempts"] {
        assert!(
            done.dropped.contains(&format!("{table}_p{older_day}")),
            "{done:?}"
        );
        assert!(!done.dropped.contains(&format!("{table}_p{today}")));
    }
    assert_eq!(status_of(&app, "/v1/events/older").await.0, 404);
    let gone: i64 = db
        .query_one(
            "SELECT count(*) FROM attempts WHERE event_id IN ('older', 'ancient')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gone, 0);
    let (status, kept) = status_of(&app, &format!("/v1/events/{fresh}")).await;
    assert_eq!(status, 200);
    assert_eq!(kept["deliveries"][0]["state"], "succeeded");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_makes_the_coming_days_when_it_starts() {
    let app = TestApp::spawn().await;
    let db = app.db().await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut expected = Vec::new();
    for ahead in 0..=2 {
        let day = day_of(&db, now + ahead * DAY).await;
        for table in ["events", "deliveries", "attempts"] {
            expected.push(format!("{table}_p{day}"));
        }
    }
    let missing = eventually(Duration::from_secs(10), || async {
        let mut missing = Vec::new();
        for name in &expected {
            let found: bool = db
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[name])
                .await
                .unwrap()
                .get(0);
            if !found {
                missing.push(name.clone());
            }
        }
        missing.is_empty().then_some(())
    })
    .await;
    assert!(
        missing.is_some(),
        "partitions {expected:?} are made at start"
    );
    app.shutdown().await;
}
