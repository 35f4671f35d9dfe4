//! The OpenAPI document is generated from the handlers and covers the
//! whole API, producer and ledger, in one document.

use hookfleet_tests::{Options, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_route() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    let document: serde_json::Value = reqwest::get(app.producer_url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let mut paths: Vec<String> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, methods)| {
            methods
                .as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    paths.sort();
    let mut expected = vec![
        "POST /v1/events",
        "POST /v1/events/batch",
        "GET /v1/events/{id}",
        "GET /v1/events/{id}/attempts",
        "GET /v1/attempts",
        "POST /v1/events/{id}/replay",
        "POST /v1/endpoints",
        "GET /v1/endpoints",
        "GET /v1/endpoints/{id}",
        "PATCH /v1/endpoints/{id}",
        "DELETE /v1/endpoints/{id}",
        "POST /v1/endpoints/{id}/disable",
        "POST /v1/endpoints/{id}/enable",
        "POST /v1/endpoints/{id}/secret/rotate",
        "GET /v1/endpoints/{id}/attempts",
        "GET /v1/endpoints/{id}/stats",
        "POST /v1/endpoints/{id}/recover",
        "GET /v1/recoveries/{id}",
        "POST /v1/portal/sessions",
        "POST /v1/tenants",
        "PATCH /v1/tenants/{id}",
        "POST /v1/tenants/{id}/tokens",
        "GET /v1/event-types",
        "PUT /v1/event-types/{type}",
        "GET /v1/event-types/{type}",
        "DELETE /v1/event-types/{type}",
        "GET /v1/event-types/openapi.json",
        "GET /v1/tenants/{id}/tokens",
        "DELETE /v1/tenants/{id}/tokens/{token_id}",
        "GET /v1/dlq",
        "POST /v1/dlq/requeue",
        "POST /v1/sources",
        "GET /v1/sources",
        "GET /v1/sources/{id}",
        "PATCH /v1/sources/{id}",
        "DELETE /v1/sources/{id}",
        "POST /v1/sources/{id}/secret/rotate",
        "POST /v1/inbound/{source_id}",
    ];
    expected.sort();
    assert_eq!(paths, expected);
    // Request and answer shapes are in it, with the error shape.
    let schemas = document["components"]["schemas"].as_object().unwrap();
    for schema in [
        "EventRequest",
        "Endpoint",
        "WithSecret",
        "ErrorBody",
        "EventTypeView",
        "EventView",
        "Stats",
        "Source",
        "SourceWithSecret",
    ] {
        assert!(schemas.contains_key(schema), "no schema {schema}");
    }
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // Every documented path is served: none answers the router's bare 404.
    for path in &expected {
        let (method, path) = path.split_once(' ').unwrap();
        let concrete = path
            .replace("{id}", "x")
            .replace("{type}", "a.b")
            .replace("{source_id}", "x");
        let base = if ["GET /v1/events/{id}", "POST /v1/events/{id}/replay"]
            .contains(&format!("{method} {path}").as_str())
            || path.contains("attempts")
            || path.contains("stats")
            || path.contains("recover")
            || path.contains("dlq")
        {
            app.ledger_url(&concrete)
        } else {
            app.producer_url(&concrete)
        };
        let response = reqwest::Client::new()
            .request(method.parse().unwrap(), &base)
            .send()
            .await
            .unwrap();
        // Unauthenticated: a routed path answers 401 with our JSON error;
        // the inbound path takes no token and knows no source "x".
        let expected = if path.starts_with("/v1/inbound/") {
            404
        } else {
            401
        };
        assert_eq!(response.status(), expected, "{method} {path} is not served");
    }
    app.shutdown().await;
}
