//! TLS to Postgres (`database.tls = verify-full`): the services reach the
//! database encrypted, with its certificate checked, and refuse to start
//! against a certificate they were not told to trust.
//!
//! The machine's Postgres serves TLS with its own certificate (Debian
//! turns `ssl` on with the snakeoil certificate). The test trusts that
//! certificate and connects by a name in it that resolves to this
//! machine; a server without TLS, or without such a name, is said and
//! skipped.

use std::process::Command;
use std::time::Duration;

use hookfleet_config::{DatabaseSettings, DatabaseTls};
use hookfleet_tests::{DatabaseTlsOption, Options, Receiver, TestApp, admin_database_url};

/// The server's certificate file and a name in it for this machine, when
/// the server speaks TLS.
async fn server_certificate() -> Option<DatabaseTlsOption> {
    let (client, connection) = hookfleet_db::tokio_postgres::connect(
        &admin_database_url(),
        hookfleet_db::tokio_postgres::NoTls,
    )
    .await
    .ok()?;
    tokio::spawn(connection);
    let setting = |name: &'static str| {
        let client = &client;
        async move {
            let row = client.query_one(&format!("SHOW {name}"), &[]).await.ok()?;
            Some(row.get::<_, String>(0))
        }
    };
    if setting("ssl").await.as_deref() != Some("on") {
        eprintln!("skipped: this Postgres does not serve TLS (ssl = off)");
        return None;
    }
    let ca_file = setting("ssl_cert_file").await?;
    let ca_file = if ca_file.starts_with('/') {
        ca_file
    } else {
        format!("{}/{ca_file}", setting("data_directory").await?)
    };
    let names = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in", &ca_file])
        .output()
        .ok()?;
    let names = String::from_utf8_lossy(&names.stdout).into_owned();
    for name in names
        .split([',', ' ', '\n'])
        .filter_map(|n| n.strip_prefix("DNS:"))
    {
        let local = tokio::net::lookup_host((name, 5432))
            .await
            .map(|mut addrs| addrs.any(|a| a.ip().is_loopback()))
            .unwrap_or(false);
        if local {
            return Some(DatabaseTlsOption {
                host: name.to_owned(),
                ca_file,
            });
        }
    }
    eprintln!("skipped: no name in {ca_file} ({names:?}) resolves to this machine");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_reach_postgres_over_verified_tls() {
    let Some(tls) = server_certificate().await else {
        return;
    };
    let app = TestApp::spawn_with(Options {
        database_tls: Some(tls.clone()),
        ..Options::default()
    })
    .await;
    assert!(
        app.database_url.contains(&format!("@{}:", tls.host)),
        "{}",
        app.database_url
    );

    // An event still goes end to end: ingest and routing (the producer's
    // claims), and the ledger's record of the attempt.
    let receiver = Receiver::start().await;
    let (endpoint_id, _) = app
        .create_endpoint(&receiver.url("/hook"), &["order.*"])
        .await;
    let event_id = app.send_event("order.created", r#"{"n": 1}"#).await;
    assert_eq!(receiver.wait_for(1, Duration::from_secs(30)).await.len(), 1);
    let db = app.db().await;
    let recorded = hookfleet_tests::eventually(Duration::from_secs(30), || async {
        db.query_opt(
            "SELECT 1 FROM deliveries WHERE event_id = $1 AND endpoint_id = $2
             AND state = 'succeeded'",
            &[&event_id, &endpoint_id],
        )
        .await
        .ok()?
    })
    .await;
    assert!(recorded.is_some(), "the ledger did not record the delivery");

    // The services' connections to the test database are encrypted: the
    // producer's and the ledger's pools and the producer's LISTEN.
    let database = app.database_url.rsplit('/').next().unwrap().to_owned();
    let encrypted: i64 = db
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.datname = $1 AND s.ssl",
            &[&database],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        encrypted >= 3,
        "only {encrypted} encrypted connections to {database}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_not_trusted_is_refused_at_start() {
    let Some(tls) = server_certificate().await else {
        return;
    };
    // A CA the server's certificate does not chain to: a fresh self-signed
    // one from openssl.
    let dir = std::env::temp_dir().join(format!("hft_tls_{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let other_ca = dir.join("other-ca.pem");
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=not-the-database"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{made:?}");
    let mut url = reqwest::Url::parse(&admin_database_url()).unwrap();
    url.set_host(Some(&tls.host)).unwrap();
    let settings = DatabaseSettings {
        url: url.to_string(),
        tls: DatabaseTls::VerifyFull,
        tls_ca_file: other_ca.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let refused = hookfleet_db::migrate(&settings)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("certificate"), "{refused}");

    // The right CA, but a name the certificate does not carry.
    let mut by_address = url.clone();
    by_address.set_host(Some("127.0.0.1")).unwrap();
    let settings = DatabaseSettings {
        url: by_address.to_string(),
        tls: DatabaseTls::VerifyFull,
        tls_ca_file: tls.ca_file.clone(),
        ..Default::default()
    };
    let names = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            &tls.ca_file,
        ])
        .output()
        .unwrap();
    if !String::from_utf8_lossy(&names.stdout).contains("IP Address:127.0.0.1") {
        let refused = hookfleet_db::migrate(&settings)
            .await
            .unwrap_err()
            .to_string();
        assert!(refused.contains("certificate"), "{refused}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
