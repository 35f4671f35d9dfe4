//! The event-type catalogue: payloads checked against their type's JSON
//! Schema at ingest (refused over HTTP with the paths at fault, parked over
//! AMQP with the reason), changes reaching every producer without a
//! restart, caps on schemas, strict types, and the catalogue published as
//! an OpenAPI 3.1 document that a real validator accepts and a real code
//! generator turns into models.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hookfleet_tests::{Options, Receiver, TestApp, eventually};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde_json::{Value, json};

fn order_schema() -> Value {
    json!({
        "type": "object",
        "required": ["order_id", "total"],
        "properties": {
            "order_id": {"type": "integer"},
            "total": {"type": "number", "minimum": 0},
            "email": {"type": "string"},
            "lines": {"type": "array", "items": {"$ref": "#/$defs/line"}}
        },
        "$defs": {"line": {"type": "object", "required": ["sku"], "properties": {"sku": {"type": "string"}}}}
    })
}

async fn put_type(app: &TestApp, at: SocketAddr, name: &str, body: &Value) -> (u16, Value) {
    let response = app
        .http
        .put(format!("http://{at}/v1/event-types/{name}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn post_event(app: &TestApp, at: SocketAddr, body: &Value) -> (u16, Value) {
    let response = app
        .http
        .post(format!("http://{at}/v1/events"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

fn paths(error: &Value) -> Vec<String> {
    let mut paths: Vec<String> = error["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details in {error}"))
        .iter()
        .map(|d| d["path"].as_str().unwrap().to_owned())
        .collect();
    paths.sort();
    paths
}

fn tenant_headers(tenant: &str) -> FieldTable {
    let mut headers = FieldTable::default();
    headers.insert(
        "x-tenant".into(),
        AMQPValue::LongString(LongString::from(tenant)),
    );
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_events_are_delivered_and_invalid_ones_refused_with_their_paths() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/hook"), &["*"]).await;
    let (status, created) = put_type(
        &app,
        app.producer,
        "order.created",
        &json!({"description": "An order was placed.", "schema": order_schema()}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["version"], 1);

    // Valid: accepted and delivered byte for byte.
    let valid = r#"{"order_id": 42, "total": 19.99, "lines": [{"sku": "a"}]}"#;
    let id = app.send_event("order.created", valid).await;

    // Invalid: every problem at its path, in the error shape.
    let (status, error) = post_event(
        &app,
        app.producer,
        &json!({"type": "order.created", "payload": {"total": "19.99", "lines": [{}]}}),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "invalid_payload");
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("order.created"), "{message}");
    assert_eq!(paths(&error), ["", "/lines/0", "/total"], "{error}");
    let total = error["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["path"] == "/total")
        .unwrap();
    assert!(
        total["message"].as_str().unwrap().contains("number"),
        "{total}"
    );

    // A batch is all or nothing: one bad event refuses the lot.
    let response = app
        .http
        .post(app.producer_url("/v1/events/batch"))
        .json(&json!({"events": [
            {"type": "order.created", "payload": {"order_id": 1, "total": 1}, "id": "batch-ok"},
            {"type": "order.created", "payload": {"order_id": 2, "total": -1}, "id": "batch-bad"},
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "invalid_payload");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("events[1].payload"),
        "{error}"
    );
    assert_eq!(paths(&error), ["/total"]);

    // Types without a schema are accepted as before.
    let untyped = app.send_event("order.noted", r#"{"anything": true}"#).await;

    let received = receiver.wait_for(2, Duration::from_secs(30)).await;
    let ids: Vec<&str> = received
        .iter()
        .filter_map(|r| r.header("webhook-id"))
        .collect();
    assert!(ids.contains(&id.as_str()) && ids.contains(&untyped.as_str()));
    let delivered = received
        .iter()
        .find(|r| r.header("webhook-id") == Some(id.as_str()))
        .unwrap();
    assert_eq!(&delivered.body[..], valid.as_bytes());
    // Nothing of the refused batch went out.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        receiver
            .received()
            .iter()
            .all(|r| r.header("webhook-id") != Some("batch-ok"))
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_published_over_amqp_are_parked_with_the_reason() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/hook"), &["*"]).await;
    let (status, _) = put_type(
        &app,
        app.producer,
        "order.created",
        &json!({"schema": order_schema()}),
    )
    .await;
    assert_eq!(status, 201);
    app.publish_raw(
        "order.created",
        BasicProperties::default()
            .with_message_id("amqp-bad".into())
            .with_headers(tenant_headers(&app.tenant)),
        br#"{"order_id": 7, "total": "19.99"}"#,
    )
    .await;
    app.publish_raw(
        "order.created",
        BasicProperties::default()
            .with_message_id("amqp-good".into())
            .with_headers(tenant_headers(&app.tenant)),
        br#"{"order_id": 8, "total": 19.99}"#,
    )
    .await;
    let parked = eventually(Duration::from_secs(30), || async {
        let parked = app.parked().await;
        parked
            .into_iter()
            .find(|m| m.properties.message_id().as_ref().map(|s| s.as_str()) == Some("amqp-bad"))
    })
    .await
    .expect("the invalid event is parked");
    let reason = parked.header("x-hookfleet-reason").unwrap();
    assert!(reason.starts_with("schema: /total: "), "{reason}");
    assert!(reason.contains("number"), "{reason}");
    assert_eq!(parked.header("x-hookfleet-parked-by"), Some("router"));
    assert_eq!(&parked.body[..], br#"{"order_id": 7, "total": "19.99"}"#);

    let received = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(received[0].header("webhook-id"), Some("amqp-good"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1, "the invalid event went out");
    app.shutdown().await;
}

/// The ingest API marks what it checked so the router does not check it
/// again; a broker client copying the mark must not skip the catalogue,
/// neither on a single event nor on a message shaped like an API batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_checked_mark_does_not_skip_the_catalogue() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/hook"), &["*"]).await;
    let (status, _) = put_type(
        &app,
        app.producer,
        "order.created",
        &json!({"schema": order_schema()}),
    )
    .await;
    assert_eq!(status, 201);
    let mut marked = tenant_headers(&app.tenant);
    marked.insert(
        "x-hookfleet-checked".into(),
        AMQPValue::LongString(LongString::from("ingest")),
    );
    app.publish_raw(
        "order.created",
        BasicProperties::default()
            .with_message_id("forged-single".into())
            .with_headers(marked.clone()),
        br#"{"order_id": 7, "total": "19.99"}"#,
    )
    .await;
    // A batch straight onto the route queue, as only the API should send.
    let batch = json!([{
        "id": "forged-batch",
        "type": "order.created",
        "created_at": 1,
        "claim": true,
        "payload": {"order_id": 9, "total": "0.99"}
    }]);
    let connection = hookfleet_topology::connect(&app.amqp.url, "hookfleet-test-forger")
        .await
        .expect("connect to the broker");
    let publisher = hookfleet_topology::Publisher::open(&connection)
        .await
        .expect("a confirming channel");
    publisher
        .publish(
            "",
            &app.topology().route_queue(),
            &serde_json::to_vec(&batch).unwrap(),
            BasicProperties::default()
                .with_type("event.batch".into())
                .with_headers(marked),
        )
        .await
        .expect("the broker confirmed the batch");
    let _ = connection.close(200, "bye".into()).await;

    let parked = eventually(Duration::from_secs(30), || async {
        let parked = app.parked().await;
        (parked.len() >= 2).then_some(parked)
    })
    .await
    .expect("both forged messages are parked");
    for message in &parked {
        let reason = message.header("x-hookfleet-reason").unwrap();
        assert!(reason.starts_with("schema: /total: "), "{reason}");
    }
    // The API's own events still go through unchecked by the router.
    let (status, _) = post_event(
        &app,
        app.producer,
        &json!({"type": "order.created", "payload": {"order_id": 1, "total": 1.5}}),
    )
    .await;
    assert_eq!(status, 202);
    let received = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(received.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1, "a forged event went out");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_change_reaches_every_producer_without_a_restart() {
    let mut app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let second = app.add_producer().await;
    let event = json!({"type": "order.created", "payload": {"order_id": 1, "total": "12.50"}});
    // No schema yet: the second producer accepts it.
    assert_eq!(post_event(&app, second, &event).await.0, 202);

    // A schema PUT through the first producer reaches the second.
    let (status, _) = put_type(
        &app,
        app.producer,
        "order.created",
        &json!({"schema": order_schema()}),
    )
    .await;
    assert_eq!(status, 201);
    let refused = eventually(Duration::from_secs(10), || async {
        let (status, error) = post_event(&app, second, &event).await;
        (status == 400).then_some(error)
    })
    .await
    .expect("the second producer checks against the new schema");
    assert_eq!(paths(&refused), ["/total"]);

    // A new version, with total as a string, is accepted there too.
    let mut relaxed = order_schema();
    relaxed["properties"]["total"] = json!({"type": "string"});
    let (status, changed) = put_type(
        &app,
        app.producer,
        "order.created",
        &json!({"schema": relaxed}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(changed["version"], 2);
    eventually(Duration::from_secs(10), || async {
        (post_event(&app, second, &event).await.0 == 202).then_some(())
    })
    .await
    .expect("the second producer uses version 2");

    // Deleting the type stops the checks everywhere.
    let bad = json!({"type": "order.created", "payload": {"nothing": "required"}});
    assert_eq!(post_event(&app, second, &bad).await.0, 400);
    let response = app
        .http
        .delete(app.producer_url("/v1/event-types/order.created"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    eventually(Duration::from_secs(10), || async {
        (post_event(&app, second, &bad).await.0 == 202).then_some(())
    })
    .await
    .expect("the second producer forgot the schema");
    // Every event answered 202 was routed, none parked: an event is checked
    // once, against the catalogue as it was when it was accepted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let parked = app.parked().await;
    assert!(
        parked.is_empty(),
        "{:?}",
        parked.first().map(|m| m.header("x-hookfleet-reason"))
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_huge_and_deep_schemas_are_refused_without_hanging() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let huge = json!({"schema": {"type": "object", "description": "x".repeat(1_000_000)}});
    let depth = 5_000;
    let deep = format!(
        r#"{{"schema": {}{{"type": "object"}}{}}}"#,
        r#"{"items": "#.repeat(depth),
        "}".repeat(depth)
    );
    let deep: Value = {
        // serde_json refuses to build a Value this deep; send the text.
        let response = app
            .http
            .put(app.producer_url("/v1/event-types/deep.one"))
            .header("content-type", "application/json")
            .body(deep)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        response.json().await.unwrap()
    };
    assert_eq!(deep["error"]["code"], "invalid_schema");
    assert!(
        deep["error"]["message"]
            .as_str()
            .unwrap()
            .contains("levels deep"),
        "{deep}"
    );
    let cases = [
        ("huge.one", huge, "bytes"),
        (
            "remote.one",
            json!({"schema": {"$ref": "https://example.com/order.json"}}),
            "refused",
        ),
        ("typo.one", json!({"schema": {"type": "strnig"}}), "strnig"),
        ("list.one", json!({"schema": [1]}), "JSON object"),
    ];
    for (name, body, mentions) in cases {
        let started = Instant::now();
        let (status, error) = put_type(&app, app.producer, name, &body).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{name} was slow"
        );
        assert_eq!(status, 400, "{name}: {error}");
        assert_eq!(error["error"]["code"], "invalid_schema", "{name}: {error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with("schema: ") && message.contains(mentions),
            "{name}: {message}"
        );
    }
    // An example that breaks the schema is refused, naming the path.
    let (status, error) = put_type(
        &app,
        app.producer,
        "order.created",
        &json!({"schema": order_schema(), "examples": [{"order_id": 1}]}),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("examples[0]")
    );
    // The document's path is not a type name: PUT there is not allowed.
    let (status, error) = put_type(&app, app.producer, "openapi.json", &json!({})).await;
    assert_eq!(status, 405, "{error}");
    assert_eq!(error["error"]["code"], "method_not_allowed");
    // None was stored, and the producer still answers.
    let list: Value = app
        .http
        .get(app.producer_url("/v1/event-types"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"], json!([]));

    // A catalogue is capped at 1,000 types (filled by SQL for speed); new
    // versions of existing types are still accepted.
    app.db()
        .await
        .execute(
            "INSERT INTO event_types (tenant, name, version)
             SELECT $1, 'filler.t' || n, 1 FROM generate_series(1, 1000) AS n",
            &[&app.tenant],
        )
        .await
        .unwrap();
    let (status, error) = put_type(&app, app.producer, "one.more", &json!({})).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1000 types"),
        "{error}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_types_refuse_types_the_catalogue_does_not_know() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    // Without a catalogue, no warnings.
    let response = app
        .http
        .post(app.producer_url("/v1/endpoints"))
        .json(&json!({"url": receiver.url("/hook"), "event_types": ["order.created"]}))
        .send()
        .await
        .unwrap();
    let body: Value = response.json().await.unwrap();
    assert!(body.get("warnings").is_none(), "{body}");

    let (status, _) = put_type(
        &app,
        app.producer,
        "order.created",
        &json!({"schema": order_schema()}),
    )
    .await;
    assert_eq!(status, 201);
    // Subscribing to a type the catalogue lacks warns but succeeds.
    let response = app
        .http
        .post(app.producer_url("/v1/endpoints"))
        .json(&json!({"url": receiver.url("/other"), "event_types": ["order.craeted", "order.*", "invoice.*"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    let warnings = body["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 2, "{body}");
    assert!(warnings[0].as_str().unwrap().contains("order.craeted"));
    assert!(warnings[1].as_str().unwrap().contains("invoice.*"));

    // Not strict yet: an unknown type is accepted.
    let unknown = json!({"type": "order.deleted", "payload": {"order_id": 1}});
    assert_eq!(post_event(&app, app.producer, &unknown).await.0, 202);

    let admin = reqwest::Client::new();
    let response = admin
        .patch(app.producer_url(&format!("/v1/tenants/{}", app.tenant)))
        .bearer_auth(&app.admin_token)
        .json(&json!({"strict_types": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let tenant: Value = response.json().await.unwrap();
    assert_eq!(tenant["strict_types"], true);
    // Only the admin sets it.
    let response = app
        .http
        .patch(app.producer_url(&format!("/v1/tenants/{}", app.tenant)))
        .json(&json!({"strict_types": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let (status, error) = post_event(&app, app.producer, &unknown).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["code"], "unknown_event_type");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("order.deleted")
    );
    let known = json!({"type": "order.created", "payload": {"order_id": 1, "total": 2}});
    assert_eq!(post_event(&app, app.producer, &known).await.0, 202);
    // Another tenant is not strict.
    let other = hookfleet_tests::client_with_token(&app.new_tenant("globex").await);
    let response = other
        .post(app.producer_url("/v1/events"))
        .json(&unknown)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    // Over AMQP, an unknown type is parked.
    app.publish_raw(
        "order.deleted",
        BasicProperties::default()
            .with_message_id("strict-1".into())
            .with_headers(tenant_headers(&app.tenant)),
        br#"{"order_id": 1}"#,
    )
    .await;
    let parked = eventually(Duration::from_secs(30), || async {
        app.parked()
            .await
            .into_iter()
            .find(|m| m.properties.message_id().as_ref().map(|s| s.as_str()) == Some("strict-1"))
    })
    .await
    .expect("parked");
    let reason = parked.header("x-hookfleet-reason").unwrap();
    assert!(reason.contains("strict_types"), "{reason}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_keeps_versions_pages_and_is_per_tenant() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let body = json!({"description": "v1", "schema": order_schema()});
    assert_eq!(
        put_type(&app, app.producer, "order.created", &body).await.0,
        201
    );
    // The same PUT again changes nothing.
    let (status, same) = put_type(&app, app.producer, "order.created", &body).await;
    assert_eq!((status, same["version"].clone()), (200, json!(1)));
    let v2 = json!({"description": "v2", "schema": null, "deprecated": true});
    let (status, changed) = put_type(&app, app.producer, "order.created", &v2).await;
    assert_eq!((status, changed["version"].clone()), (200, json!(2)));
    assert_eq!(changed["schema"], Value::Null);
    assert_eq!(
        put_type(&app, app.producer, "order.paid", &json!({}))
            .await
            .0,
        201
    );

    let shown: Value = app
        .http
        .get(app.producer_url("/v1/event-types/order.created"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["deprecated"], true);
    let versions = shown["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert_eq!(versions[0]["description"], "v1");
    assert_eq!(versions[0]["schema"], order_schema());

    let page: Value = app
        .http
        .get(app.producer_url("/v1/event-types?limit=1"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"][0]["name"], "order.created");
    assert_eq!(page["next"], "order.created");
    let page: Value = app
        .http
        .get(app.producer_url("/v1/event-types?limit=1&after=order.created"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"][0]["name"], "order.paid");

    // Another tenant sees none of it.
    let other = hookfleet_tests::client_with_token(&app.new_tenant("globex").await);
    let response = other
        .get(app.producer_url("/v1/event-types/order.created"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "not_found");

    let response = app
        .http
        .delete(app.producer_url("/v1/event-types/order.created"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = app
        .http
        .get(app.producer_url("/v1/event-types/order.created"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    app.shutdown().await;
}

/// The venv `scripts/test` installs the Python tools into.
fn py_tools() -> Option<PathBuf> {
    let bin = std::env::var_os("HOOKFLEET_PY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/py-tools/venv/bin")
        });
    bin.join("datamodel-codegen").exists().then_some(bin)
}

fn run(program: &std::path::Path, args: &[&str]) -> String {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "{}: {text}", program.display());
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_catalogue_is_an_openapi_3_1_document_receivers_generate_models_from() {
    let Some(tools) = py_tools() else {
        eprintln!(
            "SKIPPED: the Python tools are not installed \
             (scripts/test installs them: . scripts/lib/py_tools.sh; ensure_py_tools)"
        );
        return;
    };
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let example = json!({"order_id": 42, "total": 19.99, "lines": [{"sku": "a"}]});
    let (status, error) = put_type(
        &app,
        app.producer,
        "order.created",
        &json!({"description": "An order was placed.", "schema": order_schema(), "examples": [example]}),
    )
    .await;
    assert_eq!(status, 201, "{error}");
    put_type(
        &app,
        app.producer,
        "invoice.paid",
        &json!({"deprecated": true}),
    )
    .await;
    let response = app
        .http
        .get(app.producer_url("/v1/event-types/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let post = &document["webhooks"]["order.created"]["post"];
    assert_eq!(
        post["requestBody"]["content"]["application/json"]["examples"]["example1"]["value"],
        example
    );
    assert_eq!(
        document["webhooks"]["invoice.paid"]["post"]["deprecated"],
        true
    );

    let dir = std::env::temp_dir().join(format!("hookfleet-catalogue-{}", app.name));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("openapi.json");
    std::fs::write(&spec, serde_json::to_vec_pretty(&document).unwrap()).unwrap();
    let spec = spec.to_str().unwrap();

    // A real OpenAPI 3.1 validator accepts it.
    let said = run(&tools.join("openapi-spec-validator"), &[spec]);
    assert!(said.contains("OK"), "{said}");

    // A real generator makes models of it, and they take the example and
    // refuse what the schema refuses.
    let models = dir.join("models.py");
    run(
        &tools.join("datamodel-codegen"),
        &[
            "--input",
            spec,
            "--input-file-type",
            "openapi",
            "--output-model-type",
            "pydantic_v2.BaseModel",
            "--output",
            models.to_str().unwrap(),
        ],
    );
    let check = format!(
        "import sys; sys.path.insert(0, {dir:?})\n\
         import models, pydantic\n\
         order = models.OrderCreated.model_validate_json({example:?})\n\
         assert order.order_id == 42 and order.lines[0].sku == 'a', order\n\
         try:\n    models.OrderCreated.model_validate({{'order_id': 1, 'total': 'x'}})\n\
         except pydantic.ValidationError:\n    print('refused')\n",
        dir = dir.to_str().unwrap(),
        example = example.to_string(),
    );
    let said = run(&tools.join("python"), &["-c", &check]);
    assert!(said.contains("refused"), "{said}");
    let _ = std::fs::remove_dir_all(&dir);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_tenant_still_hears_of_its_disabled_endpoints() {
    let app = TestApp::spawn().await;
    let gone = Receiver::start().await;
    gone.set_default(hookfleet_tests::Reply::Status(410));
    let watcher = Receiver::start().await;
    app.create_endpoint(&gone.url("/h"), &["order.*"]).await;
    app.create_endpoint(&watcher.url("/ops"), &["endpoint.disabled"])
        .await;
    let (status, _) = put_type(&app, app.producer, "order.created", &json!({})).await;
    assert_eq!(status, 201);
    let response = reqwest::Client::new()
        .patch(app.producer_url(&format!("/v1/tenants/{}", app.tenant)))
        .bearer_auth(&app.admin_token)
        .json(&json!({"strict_types": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    app.send_event("order.created", r#"{"n":1}"#).await;
    // hookfleet's own event is not the tenant's to declare.
    let announced = watcher.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(announced.len(), 1, "endpoint.disabled was not delivered");
    app.shutdown().await;
}
