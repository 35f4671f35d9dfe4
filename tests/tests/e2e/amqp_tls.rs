//! TLS to RabbitMQ (`amqps://` with `amqp.tls_ca_file`): the services
//! reach a broker that speaks only TLS, with its certificate checked
//! against a CA of the test's own, and a CA the certificate does not chain
//! to is refused.
//!
//! The test starts a RabbitMQ node of its own (as `scripts/lib/cluster-ctl`
//! does: its own node name, ports, data directory, configuration and
//! Erlang cookie; the machine's broker on 5672 is never touched) with a
//! TLS listener only, and certificates made by openssl for the test.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hookfleet_tests::{AmqpTlsOption, Options, Receiver, TestApp};

const RABBITMQ_BIN: &str = "/usr/lib/rabbitmq/bin";

/// A free TCP port on 127.0.0.1 (free when asked).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// openssl, which must succeed.
fn openssl(dir: &Path, args: &[&str]) {
    let made = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "openssl {args:?}: {made:?}");
}

/// A self-signed CA: `{name}.pem` (returned) and `{name}.key`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    let subject = format!("/CN=hookfleet test {name}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &subject,
            "-keyout",
            &key,
            "-out",
            &pem,
        ],
    );
    dir.join(pem)
}

/// `server.pem` and `server.key`, signed by the CA `ca`, for `localhost`
/// and 127.0.0.1.
fn make_server_certificate(dir: &Path, ca: &str) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ],
    );
}

/// A RabbitMQ node of the test's own, listening for AMQP over TLS only.
struct TlsNode {
    dir: PathBuf,
    name: String,
    port: u16,
    env: Vec<(String, String)>,
    server: Child,
}

impl TlsNode {
    async fn start(dir: &Path) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("hft{}@localhost", &id[..8]);
        let (port, dist_port) = (free_port(), free_port());
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let cookie = home.join(".erlang.cookie");
        std::fs::write(&cookie, &id).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cookie, std::fs::Permissions::from_mode(0o400)).unwrap();
        let path = |file: &str| dir.join(file).to_string_lossy().into_owned();
        std::fs::write(dir.join("rabbitmq-env.conf"), "").unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(dir.join("advanced.config"), "[].\n").unwrap();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "loopback_users = none\n\
                 listeners.tcp = none\n\
                 listeners.ssl.default = {port}\n\
                 ssl_options.cacertfile = {}\n\
                 ssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                path("ca.pem"),
                path("server.pem"),
                path("server.key"),
            ),
        )
        .unwrap();
        let env: Vec<(String, String)> = [
            ("HOME", home.to_string_lossy().into_owned()),
            ("RABBITMQ_NODENAME", name.clone()),
            ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".into()),
            ("RABBITMQ_DIST_PORT", dist_port.to_string()),
            ("RABBITMQ_CONF_ENV_FILE", path("rabbitmq-env.conf")),
            ("RABBITMQ_CONFIG_FILE", path("rabbitmq.conf")),
            ("RABBITMQ_ADVANCED_CONFIG_FILE", path("advanced.config")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", path("enabled_plugins")),
            ("RABBITMQ_MNESIA_BASE", path("mnesia")),
            ("RABBITMQ_LOG_BASE", path("log")),
            ("RABBITMQ_PID_FILE", path("pid")),
            ("ERL_EPMD_ADDRESS", "127.0.0.1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let log = std::fs::File::create(dir.join("console.log")).unwrap();
        let server = Command::new(format!("{RABBITMQ_BIN}/rabbitmq-server"))
            .envs(env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start rabbitmq-server");
        let node = Self {
            dir: dir.to_owned(),
            name,
            port,
            env,
            server,
        };
        let listening = hookfleet_tests::eventually(Duration::from_secs(120), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        assert!(
            listening.is_some(),
            "the TLS node did not listen on {port} (see {})",
            dir.join("console.log").display()
        );
        node
    }

    /// `client properties<TAB>ssl` of every client connection to the node.
    fn connections(&self) -> String {
        let listed = Command::new(format!("{RABBITMQ_BIN}/rabbitmqctl"))
            .envs(self.env.iter().cloned())
            .args([
                "-n",
                &self.name,
                "-q",
                "list_connections",
                "--no-table-headers",
            ])
            .args(["client_properties", "ssl"])
            .output()
            .expect("rabbitmqctl list_connections");
        String::from_utf8_lossy(&listed.stdout).into_owned()
    }

    fn url(&self) -> String {
        format!("amqps://guest:guest@localhost:{}/%2f", self.port)
    }
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        let _ = Command::new(format!("{RABBITMQ_BIN}/rabbitmqctl"))
            .envs(self.env.iter().cloned())
            .args(["-n", &self.name, "-q", "stop"])
            .output();
        if !matches!(self.server.try_wait(), Ok(Some(_))) {
            // The whole group: rabbitmq-server's shell and the VM.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.server.id())])
                .output();
        }
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_reach_rabbitmq_over_verified_tls_and_refuse_an_untrusted_certificate() {
    if !Path::new(RABBITMQ_BIN).join("rabbitmq-server").exists() {
        eprintln!("skipped: no RabbitMQ server in {RABBITMQ_BIN} to start a TLS node with");
        return;
    }
    let dir = std::env::temp_dir().join(format!("hft_amqps_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = make_ca(&dir, "ca");
    make_server_certificate(&dir, "ca");
    let other_ca = make_ca(&dir, "other-ca");
    let node = TlsNode::start(&dir).await;

    // A CA the broker's certificate does not chain to: no connection.
    let untrusted = hookfleet_config::AmqpSettings {
        url: node.url(),
        tls_ca_file: other_ca.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let refused = hookfleet_topology::Nodes::from_settings(&untrusted)
        .connect_first("hookfleet-test-untrusted")
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    println!("with another CA: {refused}");

    // The fleet over amqps: an event goes end to end.
    let app = TestApp::spawn_with(Options {
        amqp_tls: Some(AmqpTlsOption {
            url: node.url(),
            ca_file: ca.to_string_lossy().into_owned(),
        }),
        ..Options::default()
    })
    .await;
    let receiver = Receiver::start().await;
    let (endpoint_id, _) = app
        .create_endpoint(&receiver.url("/hook"), &["order.*"])
        .await;
    let event_id = app.send_event("order.created", r#"{"n": 1}"#).await;
    assert_eq!(receiver.wait_for(1, Duration::from_secs(30)).await.len(), 1);
    app.wait_for_delivery_state(
        &event_id,
        &endpoint_id,
        "succeeded",
        Duration::from_secs(30),
    )
    .await
    .expect("the ledger recorded the delivery");
    // Every service's connection is this node's, and encrypted (it has no
    // other listener).
    let connections = node.connections();
    println!("connections to the TLS node:\n{connections}");
    for service in ["producer", "worker", "ledger"] {
        assert!(
            connections
                .lines()
                .any(|line| line.contains(service) && line.trim_end().ends_with("true")),
            "no TLS connection of the {service}: {connections}"
        );
    }
    app.shutdown().await;
    drop(node);
}
