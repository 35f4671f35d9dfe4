//! Inbound sources: a provider's webhook, signed the provider's documented
//! way, is verified, published as the tenant's event with its bytes
//! unchanged, delivered to HTTP endpoints and AMQP destinations, and
//! recorded in the ledger with its source. A bad signature, a stale
//! timestamp or a repeat delivers nothing.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use hookfleet_signing::SigningSecret;
use hookfleet_tests::{DestinationQueue, Receiver, TestApp, eventually};
use serde_json::{Value, json};
use sha2::Sha256;

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A created source: (id, ingest path, secret).
type Created = (String, String, String);

async fn create_source(app: &TestApp, body: Value) -> Created {
    let response = app
        .http
        .post(app.producer_url("/v1/sources"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "source not created");
    let created: Value = response.json().await.unwrap();
    (
        created["id"].as_str().unwrap().to_owned(),
        created["ingest_path"].as_str().unwrap().to_owned(),
        created["secret"].as_str().unwrap().to_owned(),
    )
}

/// POSTs a provider's webhook: no token, just its headers and body.
async fn post_inbound(
    app: &TestApp,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(app.producer_url(path))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.unwrap()
}

/// GitHub: `X-Hub-Signature-256: sha256=<hex HMAC of the body>`.
fn github_headers(
    secret: &str,
    delivery: &str,
    event: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    vec![
        ("x-github-event", event.to_owned()),
        ("x-github-delivery", delivery.to_owned()),
        (
            "x-hub-signature-256",
            format!("sha256={}", hex(&hmac(secret.as_bytes(), &[body]))),
        ),
    ]
}

/// Stripe: `Stripe-Signature: t=<ts>,v1=<hex HMAC of "<ts>.<body>">`.
fn stripe_headers(secret: &str, t: i64, body: &[u8]) -> Vec<(&'static str, String)> {
    let signature = hex(&hmac(
        secret.as_bytes(),
        &[t.to_string().as_bytes(), b".", body],
    ));
    vec![("stripe-signature", format!("t={t},v1={signature}"))]
}

/// Shopify: `X-Shopify-Hmac-Sha256: <base64 HMAC of the body>`.
fn shopify_headers(
    secret: &str,
    id: &str,
    topic: &str,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    vec![
        ("x-shopify-topic", topic.to_owned()),
        ("x-shopify-webhook-id", id.to_owned()),
        (
            "x-shopify-hmac-sha256",
            STANDARD.encode(hmac(secret.as_bytes(), &[body])),
        ),
    ]
}

/// Standard Webhooks, signed by the reference construction.
fn standard_headers(secret: &str, id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let secret = SigningSecret::parse(secret).unwrap();
    let t = now();
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", t.to_string()),
        ("webhook-signature", secret.sign(id, t, body)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_is_verified_and_delivered_byte_for_byte_to_http_and_amqp() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    let queue = DestinationQueue::declare(&app, "inbound").await;
    let (http_endpoint, _) = app.create_endpoint(&receiver.url("/in"), &["*"]).await;
    let amqp_endpoint = app
        .create_destination(&queue.exchange, "{type}", &["*"])
        .await;

    let github = create_source(
        &app,
        json!({"name": "repo", "kind": "github", "secret": "It's a Secret to Everybody"}),
    )
    .await;
    let stripe = create_source(
        &app,
        json!({"name": "billing", "kind": "stripe", "secret": "whsec_stripe_test_1234"}),
    )
    .await;
    let shopify = create_source(
        &app,
        json!({"name": "shop", "kind": "shopify", "secret": "shpss_0123456789", "type_prefix": "shop"}),
    )
    .await;
    let standard = create_source(
        &app,
        json!({"name": "partner", "kind": "standard_webhooks"}),
    )
    .await;
    assert!(standard.2.starts_with("whsec_"), "a generated secret");

    // Odd spacing and key order, which the signatures cover: (source,
    // body, event type, provider id).
    type Case<'a> = (&'a Created, Vec<u8>, &'a str, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            &github,
            br#"{"action":"opened",  "number": 7}"#.to_vec(),
            "github.pull_request.opened",
            "gh-delivery-1",
        ),
        (
            &stripe,
            br#"{ "id": "evt_1NG8Du2eZvKYlo2C", "type": "invoice.paid" ,"data":{}}"#.to_vec(),
            "stripe.invoice.paid",
            "evt_1NG8Du2eZvKYlo2C",
        ),
        (
            &shopify,
            br#"{"id": 820982911946154508,"total_price":"19.99"}"#.to_vec(),
            "shop.orders.create",
            "b54557e4-bdd9-4b37",
        ),
        (
            &standard,
            br#"{"type":"user.created", "data": {"id": 1}}"#.to_vec(),
            "standard_webhooks.user.created",
            "msg_p5jXN8AQM9LWM0D4",
        ),
    ];
    let mut event_ids = Vec::new();
    for (source, body, event_type, provider_id) in &cases {
        let (id, path, secret) = source;
        let headers = match event_type.split('.').next().unwrap() {
            "github" => github_headers(secret, provider_id, "pull_request", body),
            "stripe" => stripe_headers(secret, now(), body),
            "shop" => shopify_headers(secret, provider_id, "orders/create", body),
            _ => standard_headers(secret, provider_id, body),
        };
        let response = post_inbound(&app, path, &headers, body).await;
        assert_eq!(response.status(), 200, "{event_type} not accepted");
        let accepted: Value = response.json().await.unwrap();
        assert_eq!(accepted["type"], *event_type);
        assert_eq!(accepted["id"], format!("{id}:{provider_id}"));
        event_ids.push(accepted["id"].as_str().unwrap().to_owned());
    }

    // Every body reached the HTTP endpoint and the AMQP destination exactly
    // as the provider sent it.
    let arrived = receiver.wait_for(4, Duration::from_secs(30)).await;
    assert_eq!(arrived.len(), 4);
    let consumed = queue.wait_for(4, Duration::from_secs(30)).await;
    assert_eq!(consumed.len(), 4);
    for ((_, body, event_type, _), event_id) in cases.iter().zip(&event_ids) {
        let webhook = arrived
            .iter()
            .find(|w| w.header("webhook-id") == Some(event_id))
            .unwrap_or_else(|| panic!("{event_type} not delivered over HTTP"));
        assert_eq!(&webhook.body[..], &body[..]);
        let message = consumed
            .iter()
            .find(|m| m.header("webhook-id") == Some(event_id))
            .unwrap_or_else(|| panic!("{event_type} not published to the destination"));
        assert_eq!(&message.body[..], &body[..]);
        assert_eq!(message.routing_key, *event_type);
    }

    // The ledger names the source of each event, in its API too.
    let db = app.db().await;
    for ((source, ..), event_id) in cases.iter().zip(&event_ids) {
        let delivered = eventually(Duration::from_secs(30), || async {
            let row = db
                .query_opt(
                    "SELECT count(*) FROM deliveries
                     WHERE event_id = $1 AND state = 'succeeded'",
                    &[event_id],
                )
                .await
                .ok()??;
            (row.get::<_, i64>(0) == 2).then_some(())
        })
        .await;
        assert!(
            delivered.is_some(),
            "{event_id}: not recorded as delivered twice"
        );
        let view: Value = app
            .http
            .get(app.ledger_url(&format!("/v1/events/{event_id}")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(view["source"], source.0.as_str());
        let endpoints: Vec<&str> = view["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["endpoint_id"].as_str().unwrap())
            .collect();
        assert!(endpoints.contains(&http_endpoint.as_str()));
        assert!(endpoints.contains(&amqp_endpoint.as_str()));
    }
    queue.close().await;
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_stale_timestamps_and_repeats_deliver_nothing() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/in"), &["*"]).await;
    let (_, github_path, github_secret) = create_source(
        &app,
        json!({"name": "repo", "kind": "github", "secret": "the right secret"}),
    )
    .await;
    let (_, stripe_path, stripe_secret) = create_source(
        &app,
        json!({"name": "billing", "kind": "stripe", "secret": "whsec_right"}),
    )
    .await;
    let body = br#"{"id": "evt_1", "type": "charge.succeeded"}"#;

    let refusals = [
        // Signed with another secret.
        post_inbound(
            &app,
            &github_path,
            &github_headers("a wrong secret", "d-1", "push", body),
            body,
        )
        .await,
        // No signature at all.
        post_inbound(
            &app,
            &github_path,
            &github_headers(&github_secret, "d-2", "push", body)[..2],
            body,
        )
        .await,
        // Stripe, signed right, but six minutes ago.
        post_inbound(
            &app,
            &stripe_path,
            &stripe_headers(&stripe_secret, now() - 360, body),
            body,
        )
        .await,
        // Stripe, signed with another secret.
        post_inbound(
            &app,
            &stripe_path,
            &stripe_headers("whsec_wrong", now(), body),
            body,
        )
        .await,
    ];
    for response in refusals {
        assert_eq!(response.status(), 401);
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "unauthorized");
    }
    let error: Value = post_inbound(
        &app,
        &stripe_path,
        &stripe_headers(&stripe_secret, now() - 360, body),
        body,
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("timestamp"),
        "{error}"
    );
    // Too large: 413, whatever the signature.
    let large = format!(r#"{{"pad": "{}"}}"#, "x".repeat(300 * 1024));
    let response = post_inbound(
        &app,
        &github_path,
        &github_headers(&github_secret, "d-3", "push", large.as_bytes()),
        large.as_bytes(),
    )
    .await;
    assert_eq!(response.status(), 413);
    // An unknown source.
    let response = post_inbound(&app, "/v1/inbound/src_nope", &[], body).await;
    assert_eq!(response.status(), 404);

    // Stripe retries a delivery: both answered alike, delivered once.
    let first = post_inbound(
        &app,
        &stripe_path,
        &stripe_headers(&stripe_secret, now(), body),
        body,
    )
    .await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    receiver.wait_for(1, Duration::from_secs(30)).await;
    let again = post_inbound(
        &app,
        &stripe_path,
        &stripe_headers(&stripe_secret, now(), body),
        body,
    )
    .await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    // A later, different delivery marks the point by which a repeat or a
    // refused request would have arrived.
    let later = br#"{"id": "evt_2", "type": "charge.succeeded"}"#;
    let response = post_inbound(
        &app,
        &stripe_path,
        &stripe_headers(&stripe_secret, now(), later),
        later,
    )
    .await;
    assert_eq!(response.status(), 200);
    let arrived = receiver.wait_for(2, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrived_ids: Vec<String> = receiver
        .received()
        .iter()
        .map(|w| w.header("webhook-id").unwrap_or_default().to_owned())
        .collect();
    assert_eq!(arrived.len(), 2, "{arrived_ids:?}");
    assert_eq!(receiver.received().len(), 2, "{arrived_ids:?}");
    let db = app.db().await;
    let events: i64 = eventually(Duration::from_secs(30), || async {
        let n: i64 = db
            .query_one("SELECT count(*) FROM events", &[])
            .await
            .ok()?
            .get(0);
        (n == 2).then_some(n)
    })
    .await
    .expect("two events in the ledger");
    assert_eq!(events, 2);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sources_are_managed_like_endpoints_and_rotation_keeps_the_old_secret_a_while() {
    let app = TestApp::spawn_with(hookfleet_tests::Options {
        workers: 0,
        ..Default::default()
    })
    .await;
    let (id, path, secret) = create_source(&app, json!({"name": "repo", "kind": "github"})).await;
    assert_eq!(path, format!("/v1/inbound/{id}"));
    assert!(id.starts_with("src_"));

    // Shown without its secret.
    let shown: Value = app
        .http
        .get(app.producer_url(&format!("/v1/sources/{id}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["kind"], "github");
    assert_eq!(shown["type_prefix"], "github");
    assert!(shown.get("secret").is_none());
    let page: Value = app
        .http
        .get(app.producer_url("/v1/sources"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 1);
    // Sealed at rest.
    let db = app.db().await;
    let stored: String = db
        .query_one("SELECT secret FROM sources WHERE id = $1", &[&id])
        .await
        .unwrap()
        .get(0);
    assert!(!stored.contains(&secret));

    let patched: Value = app
        .http
        .patch(app.producer_url(&format!("/v1/sources/{id}")))
        .json(&json!({"name": "monorepo", "type_prefix": "gh"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(patched["name"], "monorepo");
    assert_eq!(patched["type_prefix"], "gh");

    // Stripe and Shopify issue their secrets: one must be given.
    let response = app
        .http
        .post(app.producer_url("/v1/sources"))
        .json(&json!({"name": "s", "kind": "stripe"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = app
        .http
        .post(app.producer_url("/v1/sources"))
        .json(&json!({"name": "s", "kind": "paypal", "secret": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // Rotation: the new secret is shown once; the old one still verifies
    // during the grace period.
    let rotated: Value = app
        .http
        .post(app.producer_url(&format!("/v1/sources/{id}/secret/rotate")))
        .json(&json!({"secret": "the new secret"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rotated["secret"], "the new secret");
    let body = br#"{"zen": "Keep it simple."}"#;
    for (n, key) in [secret.as_str(), "the new secret"].into_iter().enumerate() {
        let response = post_inbound(
            &app,
            &path,
            &github_headers(key, &format!("d-{n}"), "ping", body),
            body,
        )
        .await;
        assert_eq!(response.status(), 200, "secret #{n}");
        let accepted: Value = response.json().await.unwrap();
        assert_eq!(accepted["type"], "gh.ping");
    }

    // Another tenant sees none of it.
    let other = hookfleet_tests::client_with_token(&app.new_tenant("globex").await);
    let response = other
        .get(app.producer_url(&format!("/v1/sources/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    let response = app
        .http
        .delete(app.producer_url(&format!("/v1/sources/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let response = post_inbound(
        &app,
        &path,
        &github_headers("the new secret", "d-9", "ping", body),
        body,
    )
    .await;
    assert_eq!(response.status(), 404);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_found_before_a_postgres_outage_keeps_receiving_during_it() {
    let app = TestApp::spawn().await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/in"), &["github.*"])
        .await;
    let (known, known_path, secret) = create_source(
        &app,
        json!({"name": "repo", "kind": "github", "secret": "the secret"}),
    )
    .await;
    let (_, unseen_path, unseen_secret) = create_source(
        &app,
        json!({"name": "other", "kind": "github", "secret": "another secret"}),
    )
    .await;
    let body = br#"{"ref": "refs/heads/main"}"#;
    let response = post_inbound(
        &app,
        &known_path,
        &github_headers(&secret, "before", "push", body),
        body,
    )
    .await;
    assert_eq!(response.status(), 200);

    // This test's database refuses connections, and the open ones are cut.
    let admin = hookfleet_tests::admin_database_url();
    let (db, connection) =
        hookfleet_db::tokio_postgres::connect(&admin, hookfleet_db::tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    db.batch_execute(&format!(
        "ALTER DATABASE {0} ALLOW_CONNECTIONS false;
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{0}';",
        app.name
    ))
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = post_inbound(
        &app,
        &known_path,
        &github_headers(&secret, "during", "push", body),
        body,
    )
    .await;
    // A wrong signature is still refused from what was remembered.
    let forged = post_inbound(
        &app,
        &known_path,
        &github_headers("a guess", "forged", "push", body),
        body,
    )
    .await;
    // A source not seen before cannot be checked: 503, not a guess.
    let unseen = post_inbound(
        &app,
        &unseen_path,
        &github_headers(&unseen_secret, "unseen", "push", body),
        body,
    )
    .await;
    db.batch_execute(&format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS true",
        app.name
    ))
    .await
    .unwrap();
    assert_eq!(
        during.status(),
        200,
        "the inbound path closed during the outage"
    );
    assert_eq!(forged.status(), 401);
    assert_eq!(unseen.status(), 503);

    // Once Postgres is back, the event accepted during the outage is
    // delivered like the one before it.
    let arrived = receiver.wait_for(2, Duration::from_secs(60)).await;
    let ids: Vec<&str> = arrived
        .iter()
        .filter_map(|w| w.header("webhook-id"))
        .collect();
    for delivery in ["before", "during"] {
        assert!(
            ids.contains(&format!("{known}:{delivery}").as_str()),
            "{delivery} not delivered: {ids:?}"
        );
    }
    app.shutdown().await;
}
