//! A list of broker nodes (`amqp.urls`, issue 21): every service connects
//! to the first node that answers, and when that connection is lost, to
//! the next. The "nodes" here are the test broker and things in front of
//! it: a closed port (a node that is down) and a TCP proxy that the test
//! cuts (a node that dies under load). `scripts/chaos --cluster` does the
//! same with three real RabbitMQ nodes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookfleet_tests::{Options, Receiver, TestApp, amqp_url, eventually};
use hookfleet_topology::Nodes;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// `amqp_url()` with its host and port replaced by `addr`.
fn url_at(addr: &str) -> String {
    let url = amqp_url();
    let uri: lapin::uri::AMQPUri = url.parse().expect("the test broker URL");
    let node = format!("{}:{}", uri.authority.host, uri.authority.port);
    assert!(url.contains(&node), "{url} names {node}");
    url.replacen(&node, addr, 1)
}

/// A port nothing listens on: a node that is down.
async fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    url_at(&addr.to_string())
}

/// A TCP proxy to the test broker that can be cut, like a node killed:
/// its connections drop and its port refuses new ones.
struct Proxy {
    url: String,
    connections: Arc<AtomicUsize>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepting: JoinHandle<()>,
}

impl Proxy {
    async fn start() -> Self {
        let uri: lapin::uri::AMQPUri = amqp_url().parse().unwrap();
        let broker = format!("{}:{}", uri.authority.host, uri.authority.port);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = url_at(&listener.local_addr().unwrap().to_string());
        let connections = Arc::new(AtomicUsize::new(0));
        let tasks: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (counted, held) = (connections.clone(), tasks.clone());
        let accepting = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let broker = broker.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(&broker).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                held.lock().unwrap().push(task);
            }
        });
        Self {
            url,
            connections,
            tasks,
            accepting,
        }
    }

    /// Stops listening and drops every connection.
    async fn cut(&self) {
        self.accepting.abort();
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        // The listener is gone once the accepting task has been dropped.
        for _ in 0..50 {
            if TcpStream::connect(self.url_addr()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the proxy still accepts connections after the cut");
    }

    fn url_addr(&self) -> String {
        let uri: lapin::uri::AMQPUri = self.url.parse().unwrap();
        format!("{}:{}", uri.authority.host, uri.authority.port)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_reachable_node_is_the_one_connected_to() {
    let down = closed_port_url().await;
    let up = amqp_url();

    let nodes = Nodes::new(vec![down.clone(), up.clone()]);
    let (index, connection) = nodes
        .connect_first("hookfleet-test-failover")
        .await
        .expect("the second node answers");
    assert_eq!(index, 1, "connected to the node that is down?");
    assert!(connection.status().connected());
    connection.close(200, "bye".into()).await.unwrap();

    // In order: the first node wins when it answers.
    let nodes = Nodes::new(vec![up, down.clone()]);
    let (index, connection) = nodes
        .connect_first("hookfleet-test-failover")
        .await
        .unwrap();
    assert_eq!(index, 0);
    connection.close(200, "bye".into()).await.unwrap();

    // No node answers: an error, not a hang.
    let nodes = Nodes::new(vec![down, closed_port_url().await]);
    assert!(
        nodes
            .connect_first("hookfleet-test-failover")
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_whose_first_node_is_down_starts_on_the_next_and_delivers() {
    let app = TestApp::spawn_with(Options {
        amqp_urls: vec![closed_port_url().await, amqp_url()],
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let event_id = app.send_event("order.created", r#"{"n": 1}"#).await;
    let arrived = receiver.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(arrived.len(), 1, "the webhook did not arrive");
    assert_eq!(arrived[0].header("webhook-id"), Some(event_id.as_str()));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_its_node_dies_the_fleet_moves_to_the_next_and_loses_nothing() {
    let proxy = Proxy::start().await;
    let app = TestApp::spawn_with(Options {
        amqp_urls: vec![proxy.url.clone(), amqp_url()],
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    app.create_endpoint(&receiver.url("/h"), &["*"]).await;
    let first = app.send_event("order.created", r#"{"n": 1}"#).await;
    assert_eq!(receiver.wait_for(1, Duration::from_secs(30)).await.len(), 1);
    let through_proxy = proxy.connections.load(Ordering::SeqCst);
    assert!(
        through_proxy >= 3,
        "producer, ledger and worker all start on the first node; the proxy saw {through_proxy} connection(s)"
    );

    // The first node dies: every session on it drops, and it refuses
    // new connections.
    proxy.cut().await;

    // Ingest answers 503 until the producer's session is back, on the
    // second node; the load retries like a client would.
    let second = eventually(Duration::from_secs(30), || async {
        let response = app
            .http
            .post(app.producer_url("/v1/events"))
            .json(&serde_json::json!({"type": "order.created", "payload": {"n": 2}}))
            .send()
            .await
            .ok()?;
        if response.status() != 202 {
            return None;
        }
        let body: serde_json::Value = response.json().await.ok()?;
        body["id"].as_str().map(str::to_owned)
    })
    .await
    .expect("ingest accepts events again after the node is gone");

    let arrived = receiver.wait_for(2, Duration::from_secs(30)).await;
    let ids: Vec<&str> = arrived
        .iter()
        .filter_map(|w| w.header("webhook-id"))
        .collect();
    assert!(ids.contains(&first.as_str()), "{ids:?}");
    assert!(ids.contains(&second.as_str()), "{ids:?}");
    // Both events are recorded: the ledger moved too.
    let db = app.db().await;
    let recorded = eventually(Duration::from_secs(30), || async {
        let row = db
            .query_one(
                "SELECT count(*) FROM deliveries WHERE state = 'succeeded'",
                &[],
            )
            .await
            .ok()?;
        (row.get::<_, i64>(0) == 2).then_some(())
    })
    .await;
    assert!(
        recorded.is_some(),
        "the ledger did not record both deliveries"
    );
    app.shutdown().await;
}
