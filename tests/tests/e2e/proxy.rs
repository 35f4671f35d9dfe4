//! The worker does not take a proxy from the environment (issue 16 item
//! 8): a proxy resolves names itself, past the SSRF guard. Only
//! `delivery.proxy` routes webhooks through one.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hookfleet_tests::{Options, Receiver, TestApp};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_variables_in_the_environment_are_ignored() {
    let app = TestApp::spawn_with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    // A "proxy" that counts the connections it gets and answers nothing.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let accepting = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = proxy.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });

    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let mut worker = Command::new(env!("CARGO_BIN_EXE_hookfleet-test-worker"))
        .env_clear()
        .envs(app.worker_env())
        .envs(
            [
                "HTTP_PROXY",
                "http_proxy",
                "HTTPS_PROXY",
                "https_proxy",
                "ALL_PROXY",
                "all_proxy",
            ]
            .map(|name| (name, proxy_url.as_str())),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a worker process");
    app.send_event("a.b", r#"{"n":1}"#).await;
    let arrived = receiver.wait_for(1, Duration::from_secs(30)).await;
    let _ = worker.kill();
    let _ = worker.wait();
    accepting.abort();
    assert_eq!(arrived.len(), 1, "the webhook did not arrive directly");
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the worker used the proxy"
    );
    app.shutdown().await;
}
