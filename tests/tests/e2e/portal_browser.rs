//! The web portal in a real browser: Debian's chromium, driven by
//! playwright-core (tests/portal/portal.test.mjs) against a fleet this
//! test starts. The script opens session links, creates an endpoint
//! through the form, follows an event into the delivery log, replays it,
//! rotates a secret, runs a recovery to done, reads the chart, checks that
//! a read-only session has no write buttons and gets 403, that an expired
//! one is refused, that an exhausted delivery's parked message is
//! requeued from its endpoint's page and then delivered, that the log's
//! filters (endpoint, result, type, time range, event id) and the success
//! badges say what they should, and that a payload and a description holding
//! `<script>` and `<img onerror>` run nothing. It takes a screenshot of
//! each page into docs/portal/.
//!
//! `scripts/test` installs chromium and the npm package and names the
//! browser in `HOOKFLEET_PORTAL_CHROMIUM`; without it the test says it
//! was skipped and passes, so a bare `cargo test` needs no browser.

use std::process::Command;
use std::time::Duration;

use hookfleet_contract::portal::{PortalKey, PortalSession, now_secs};
use hookfleet_tests::{Receiver, TestApp};
use serde_json::{Value, json};
use std::time::Instant;

const XSS: &str = r#"<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">"#;

async fn session_url(app: &TestApp, body: Value) -> String {
    let session: Value = app
        .http
        .post(app.producer_url("/v1/portal/sessions"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    app.producer_url(session["url"].as_str().expect("a session url"))
}

async fn call(app: &TestApp, method: &str, path: &str, body: Value) -> Value {
    let response = app
        .http
        .request(method.parse().unwrap(), app.producer_url(path))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{method} {path}");
    response.json().await.unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_works_in_a_real_browser() {
    let Ok(chromium) = std::env::var("HOOKFLEET_PORTAL_CHROMIUM") else {
        eprintln!("skipped: HOOKFLEET_PORTAL_CHROMIUM is not set (scripts/test sets it)");
        return;
    };
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    call(
        &app,
        "PUT",
        "/v1/event-types/order.paid",
        json!({"description": "An order was paid", "examples": [{"order": "ord_1", "total": 42}]}),
    )
    .await;
    // A: healthy, with a description that tries to run a script.
    let a = call(
        &app,
        "POST",
        "/v1/endpoints",
        json!({"url": receiver.url("/a"), "event_types": ["order.paid"], "description": XSS}),
    )
    .await;
    let (a, a_secret) = (a["id"].as_str().unwrap(), a["secret"].as_str().unwrap());
    // B: missed three events while disabled, for the recovery.
    let (b, _) = app
        .create_endpoint(&receiver.url("/b"), &["order.paid"])
        .await;
    call(
        &app,
        "POST",
        &format!("/v1/endpoints/{b}/disable"),
        json!({}),
    )
    .await;
    let mut last = String::new();
    for n in 0..3 {
        last = app
            .send_event(
                "order.paid",
                &format!(r#"{{"order": "ord_{n}", "total": {n}}}"#),
            )
            .await;
    }
    app.wait_for_delivery_state(&last, a, "succeeded", Duration::from_secs(20))
        .await
        .expect("delivered to A");
    call(
        &app,
        "POST",
        &format!("/v1/endpoints/{b}/enable"),
        json!({}),
    )
    .await;
    // C: its one delivery exhausted (answered 500 on every attempt), its
    // task parked; the receiver answers 200 by the time it is requeued.
    let (c, _) = app
        .create_endpoint(&receiver.url("/c"), &["parcel.lost"])
        .await;
    receiver.fail_matching("parcel_9", 500, Instant::now() + Duration::from_secs(300));
    let parked = app
        .send_event("parcel.lost", r#"{"parcel": "parcel_9"}"#)
        .await;
    app.wait_for_delivery_state(&parked, &c, "exhausted", Duration::from_secs(60))
        .await
        .expect("C's delivery exhausted");
    receiver.stop_failing();

    let full = session_url(&app, json!({"expires_in": "1h"})).await;
    let read_only = session_url(&app, json!({"read_only": true})).await;
    let expired = PortalKey::derive(&app.secrets.key).issue(&PortalSession {
        id: "ps_expired".into(),
        tenant: app.tenant.clone(),
        endpoint_ids: None,
        read_only: false,
        expires_at: now_secs() - 60,
    });
    let expired = app.producer_url(&format!("/portal/#session={expired}"));

    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let script = format!("{root}/tests/portal/portal.test.mjs");
    let env = [
        ("CHROMIUM", chromium),
        ("BASE_URL", app.producer_url("")),
        ("SESSION_URL", full),
        ("READ_ONLY_URL", read_only),
        ("EXPIRED_URL", expired),
        ("TENANT_TOKEN", app.token.clone()),
        ("RECEIVER_URL", receiver.url("/form")),
        ("ENDPOINT_A", a.to_owned()),
        ("ENDPOINT_A_SECRET", a_secret.to_owned()),
        ("ENDPOINT_B", b.clone()),
        ("ENDPOINT_C", c.clone()),
        ("PARKED_EVENT", parked.clone()),
        ("XSS", XSS.to_owned()),
        ("SCREENSHOTS", format!("{root}/docs/portal")),
    ];
    let output = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .envs(env)
            .output()
            .expect("run node (scripts/test installs it)")
    })
    .await
    .unwrap();
    println!(
        "--- portal browser test ---\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let requeued = receiver
        .received()
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains("parcel_9"))
        .count();
    app.shutdown().await;
    assert!(output.status.success(), "the browser test failed (above)");
    assert_eq!(requeued, 4, "three failed attempts, then the requeued one");
}
