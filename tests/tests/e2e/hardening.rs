//! Bad or hostile input at the API's edge is a 400 (or 413) in the one
//! JSON error shape, never a 503 from the database behind it; caps keep
//! one tenant's endpoint from hurting the broker connection all share.

use hookfleet_tests::{Options, Receiver, TestApp};
use serde_json::{Value, json};

/// Status and body of an answer, asserting the body is the JSON error
/// shape whenever the status is an error.
async fn answer(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = response.text().await.unwrap();
    if status >= 400 {
        assert!(
            content_type.starts_with("application/json"),
            "{status} answered as {content_type:?}: {text}"
        );
        let body: Value = serde_json::from_str(&text).unwrap();
        assert!(body["error"]["code"].is_string(), "{text}");
        assert!(body["error"]["message"].is_string(), "{text}");
        return (status, body);
    }
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn get(app: &TestApp, url: String) -> (u16, Value) {
    answer(app.http.get(url).send().await.unwrap()).await
}

async fn post(app: &TestApp, url: String, body: Value) -> (u16, Value) {
    answer(app.http.post(url).json(&body).send().await.unwrap()).await
}

fn workers(n: usize) -> Options {
    Options {
        workers: n,
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_and_impossible_cursors_are_a_400_not_a_503() {
    let app = TestApp::spawn_with(workers(0)).await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let event = app.send_event("a.b", "{}").await;
    let p = |path: &str| app.producer_url(path);
    let l = |path: &str| app.ledger_url(path);
    for url in [
        p("/v1/endpoints/ep%00x"),
        p("/v1/endpoints?after=a%00b"),
        l("/v1/events/ev%00x"),
        l("/v1/events/ev%00x/attempts"),
        l(&format!("/v1/events/{event}/attempts?after=1~a%00")),
        l("/v1/attempts?after=1~a%00"),
        l(&format!("/v1/endpoints/{endpoint}/attempts?after=1~x%00")),
        l("/v1/recoveries/r%00"),
        // Times Postgres cannot hold.
        l("/v1/attempts?after=99999999999999999~x"),
        l("/v1/attempts?after=-99999999999999999~x"),
        l(&format!(
            "/v1/events/{event}/attempts?after=9223372036854775807~x"
        )),
        // Query strings that do not parse.
        p("/v1/endpoints?limit=many"),
        l("/v1/attempts?limit=1.5"),
        l("/v1/dlq?scan=-1"),
    ] {
        let (status, body) = get(&app, url.clone()).await;
        assert_eq!(status, 400, "{url}: {body}");
    }
    for (url, body) in [
        (
            p("/v1/endpoints"),
            json!({"url": receiver.url("/n"), "event_types": ["*"], "description": "a\u{0}b"}),
        ),
        (
            l(&format!("/v1/events/{event}/replay")),
            json!({"endpoint_id": "ep\u{0}"}),
        ),
        (
            l(&format!("/v1/endpoints/{endpoint}/recover")),
            json!({"since": "2026-01-01T00:00:00Z\u{0}"}),
        ),
        (
            p(&format!("/v1/endpoints/{endpoint}/disable")),
            json!({"reason": "\u{0}"}),
        ),
    ] {
        let (status, answer) = post(&app, url.clone(), body).await;
        assert_eq!(status, 400, "{url}: {answer}");
    }
    let (status, body) = answer(
        reqwest::Client::new()
            .post(p("/v1/tenants"))
            .bearer_auth(&app.admin_token)
            .json(&json!({"id": "nul", "name": "a\u{0}"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_deep_payloads_are_refused_in_json() {
    let app = TestApp::spawn_with(workers(0)).await;
    // Beyond the body limit of a management call: 413, as JSON.
    let huge = "x".repeat(3 * 1024 * 1024);
    let (status, body) = post(
        &app,
        app.producer_url("/v1/endpoints"),
        json!({"url": "http://x.example", "event_types": ["*"], "description": huge}),
    )
    .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");
    // A payload nested deeper than the limit: 400, naming the depth.
    let deep = format!("{{\"a\": {}1{}}}", "[".repeat(100), "]".repeat(100));
    let send = || {
        app.http
            .post(app.producer_url("/v1/events"))
            .header("content-type", "application/json")
            .body(format!(r#"{{"type": "a.b", "payload": {deep}}}"#))
            .send()
    };
    // The server closes the connection after a 413 without reading the
    // rest of the body; a pooled connection may die under the next call,
    // which a client then simply sends again.
    let sent = match send().await {
        Ok(response) => response,
        Err(error) if error.is_request() => send().await.unwrap(),
        Err(error) => panic!("{error}"),
    };
    let (status, body) = answer(sent).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("deep"),
        "{body}"
    );
    // A shallow one is fine.
    let shallow = format!("{{\"a\": {}1{}}}", "[".repeat(10), "]".repeat(10));
    app.send_event("a.b", &shallow).await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requeue_must_say_what_to_requeue() {
    let app = TestApp::spawn_with(workers(0)).await;
    let url = app.ledger_url("/v1/dlq/requeue");
    let (status, body) = answer(app.http.post(&url).send().await.unwrap()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("all"));
    for bad in [
        json!({}),
        json!({"all": false}),
        json!({"message_ids": []}),
        json!({"all": true, "message_ids": ["m"]}),
    ] {
        let (status, body) = post(&app, url.clone(), bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) = post(&app, url.clone(), json!({"all": true})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!([]));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_sizes_are_capped_and_hop_by_hop_headers_refused() {
    let app = TestApp::spawn_with(workers(0)).await;
    let receiver = Receiver::start().await;
    let url = app.producer_url("/v1/endpoints");
    let ok = receiver.url("/h");
    let many: serde_json::Map<String, Value> =
        (0..21).map(|i| (format!("x-h{i}"), json!("v"))).collect();
    for (what, body) in [
        (
            "a 200 KB header value",
            json!({"url": ok, "event_types": ["*"], "headers": {"x-big": "v".repeat(200_000)}}),
        ),
        (
            "21 headers",
            json!({"url": ok, "event_types": ["*"], "headers": many}),
        ),
        (
            "a 3 KB URL",
            json!({"url": format!("{ok}?q={}", "a".repeat(3000)), "event_types": ["*"]}),
        ),
        (
            "a 2000-character description",
            json!({"url": ok, "event_types": ["*"], "description": "d".repeat(2000)}),
        ),
        (
            "credentials in the URL",
            json!({"url": ok.replace("http://", "http://user:pass@"), "event_types": ["*"]}),
        ),
    ] {
        let (status, body) = post(&app, url.clone(), body).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert_eq!(body["error"]["code"], "invalid_field", "{what}: {body}");
    }
    for name in [
        "expect",
        "Content-Encoding",
        "te",
        "upgrade",
        "keep-alive",
        "trailer",
    ] {
        let (status, body) = post(
            &app,
            url.clone(),
            json!({"url": ok, "event_types": ["*"], "headers": {name: "x"}}),
        )
        .await;
        assert_eq!(status, 400, "{name}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(name),
            "{body}"
        );
    }
    // The caps apply to changes too.
    let (endpoint, _) = app.create_endpoint(&ok, &["*"]).await;
    let (status, body) = answer(
        app.http
            .patch(app.producer_url(&format!("/v1/endpoints/{endpoint}")))
            .json(&json!({"headers": {"x-big": "v".repeat(5000)}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // Within the caps is fine.
    let (status, body) = post(
        &app,
        url.clone(),
        json!({"url": ok, "event_types": ["*"], "headers": {"x-api-key": "k".repeat(4096)},
               "description": "d".repeat(1024)}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_addresses_are_refused_when_an_endpoint_is_created() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        endpoint_ssrf_allow: String::new(),
        ..Options::default()
    })
    .await;
    let url = app.producer_url("/v1/endpoints");
    for target in [
        "http://127.0.0.1:9/h",
        "http://localhost:9/h",
        "http://10.0.0.1/h",
        "http://169.254.169.254/latest/meta-data",
        "http://192.0.0.8/h",
        "http://198.18.0.1/h",
        "http://[::1]/h",
        "http://[fec0::1]/h",
        "http://[64:ff9b:1::a00:1]/h",
        "http://[2002:a00:1::1]/h",
        "http://[::10.0.0.1]/h",
        "http://[::ffff:127.0.0.1]/h",
    ] {
        let (status, body) = post(
            &app,
            url.clone(),
            json!({"url": target, "event_types": ["*"]}),
        )
        .await;
        assert_eq!(status, 400, "{target}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("address"),
            "{target}: {body}"
        );
    }
    // A public address is accepted (and a name that does not resolve is
    // left to the workers).
    for target in ["http://93.184.216.34/h", "http://no-such-host.invalid/h"] {
        let (status, body) = post(
            &app,
            url.clone(),
            json!({"url": target, "event_types": ["*"]}),
        )
        .await;
        assert_eq!(status, 201, "{target}: {body}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_excess_requests_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(Options {
        workers: 0,
        listen: hookfleet_config::ListenSettings {
            header_read_timeout_ms: 1_000,
            body_read_timeout_ms: 1_000,
            max_concurrent_requests: 2,
            ..hookfleet_config::ListenSettings::on_port(0)
        },
        ..Options::default()
    })
    .await;
    // Headers never finished: the connection is closed.
    let mut stream = tokio::net::TcpStream::connect(app.producer).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut buffer),
    )
    .await;
    assert!(
        read.is_ok(),
        "a connection with unfinished headers stayed open"
    );

    // Two requests whose bodies never arrive hold both slots; a third is
    // refused at once with 503 and Retry-After.
    let mut holders = Vec::new();
    for _ in 0..2 {
        let mut stream = tokio::net::TcpStream::connect(app.producer).await.unwrap();
        let head = format!(
            "POST /v1/endpoints HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
            app.token
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        holders.push(stream);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let response = app
        .http
        .get(app.producer_url("/v1/endpoints"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "1");
    let (status, body) = answer(response).await;
    assert_eq!(status, 503, "{body}");
    // The body deadline frees them: each gets an error, in JSON.
    for mut stream in holders {
        let mut buffer = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read_to_end(&mut buffer),
        )
        .await;
        let text = String::from_utf8_lossy(&buffer);
        assert!(text.starts_with("HTTP/1.1 4"), "{text}");
        assert!(text.contains("application/json"), "{text}");
    }
    let (status, body) = get(&app, app.producer_url("/v1/endpoints")).await;
    assert_eq!(status, 200, "{body}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_id_reused_after_the_idempotency_window_reads_and_replays() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let (endpoint, _) = app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let send = |n: u32| {
        let app = &app;
        async move {
            let (status, body) = post(
                app,
                app.producer_url("/v1/events"),
                json!({"id": "order-42", "type": "a.b", "payload": {"n": n}}),
            )
            .await;
            assert_eq!(status, 202, "{body}");
        }
    };
    send(1).await;
    app.wait_for_delivery_state(
        "order-42",
        &endpoint,
        "succeeded",
        std::time::Duration::from_secs(20),
    )
    .await
    .expect("the first is delivered");
    // The window passes: the producer forgets the id.
    let db = app.db().await;
    db.execute("DELETE FROM routed_events", &[]).await.unwrap();
    // Nudge the second into another day's partition key, as a reuse a day
    // later would be.
    db.execute(
        "UPDATE events SET created_at = created_at - interval '2 days'",
        &[],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE deliveries SET event_created_at = event_created_at - interval '2 days'",
        &[],
    )
    .await
    .unwrap();
    send(2).await;
    let rows = hookfleet_tests::eventually(std::time::Duration::from_secs(20), || async {
        let n: i64 = db
            .query_one("SELECT count(*) FROM events WHERE id = 'order-42'", &[])
            .await
            .ok()?
            .get(0);
        (n == 2).then_some(n)
    })
    .await;
    assert_eq!(
        rows,
        Some(2),
        "the reuse was not recorded as a second event"
    );
    let (status, body) = get(&app, app.ledger_url("/v1/events/order-42")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["payload"], json!({"n": 2}), "the newest is shown");
    let (status, body) = get(&app, app.ledger_url("/v1/events/order-42/attempts")).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &app,
        app.ledger_url("/v1/events/order-42/replay"),
        json!({}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_header_values_are_sealed_at_rest_masked_and_still_sent() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let (status, created) = post(
        &app,
        app.producer_url("/v1/endpoints"),
        json!({"url": receiver.url("/h"), "event_types": ["*"],
               "headers": {"X-Api-Key": "key-4f9a1c"}}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    let (_, shown) = get(&app, app.producer_url(&format!("/v1/endpoints/{id}"))).await;
    assert_eq!(shown["headers"], json!({"x-api-key": "****"}));
    let (_, listed) = get(&app, app.producer_url("/v1/endpoints")).await;
    assert!(!listed.to_string().contains("key-4f9a1c"), "{listed}");
    let db = app.db().await;
    let stored: Value = db
        .query_one("SELECT headers FROM endpoints WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert!(
        !stored.to_string().contains("key-4f9a1c"),
        "in clear at rest: {stored}"
    );
    assert!(
        !stored.to_string().contains("x-api-key"),
        "names in clear at rest: {stored}"
    );

    // Delivered with the header, and a replay (through the ledger) too.
    let event = app.send_event("a.b", "{}").await;
    let arrived = receiver
        .wait_for(1, std::time::Duration::from_secs(30))
        .await;
    assert_eq!(arrived[0].header("x-api-key"), Some("key-4f9a1c"));
    app.wait_for_delivery_state(&event, id, "succeeded", std::time::Duration::from_secs(20))
        .await
        .expect("delivered");
    let (status, body) = post(
        &app,
        app.ledger_url(&format!("/v1/events/{event}/replay")),
        json!({}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let arrived = receiver
        .wait_for(2, std::time::Duration::from_secs(30))
        .await;
    assert_eq!(arrived[1].header("x-api-key"), Some("key-4f9a1c"));
    app.shutdown().await;
}

/// `scripts/up`'s allow-list: the demo receiver's own loopback address, and
/// not the rest of loopback where the services listen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_allow_list_opens_the_demo_receiver_only() {
    let demo = "127.0.0.9/32";
    let app = TestApp::spawn_with(Options {
        ssrf_allow: demo.into(),
        endpoint_ssrf_allow: demo.into(),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start_at("127.0.0.9".parse().unwrap(), 0)
        .await
        .unwrap();
    let url = app.producer_url("/v1/endpoints");
    let producer_itself = format!("http://{}/v1/tenants", app.producer);
    let (status, body) = post(
        &app,
        url.clone(),
        json!({"url": producer_itself, "event_types": ["*"]}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (endpoint, _) = app.create_endpoint(&receiver.url("/demo"), &["*"]).await;
    let event = app.send_event("a.b", "{}").await;
    app.wait_for_delivery_state(
        &event,
        &endpoint,
        "succeeded",
        std::time::Duration::from_secs(20),
    )
    .await
    .expect("the demo receiver is reachable");
    app.shutdown().await;
}
