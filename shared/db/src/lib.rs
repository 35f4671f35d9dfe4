//! PostgreSQL access shared by the producer and the ledger: the connection
//! pool, the schema migrations, the endpoint as stored ([`endpoint`]), and
//! database administration used by `scripts/up` and the tests.

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use futures_util::stream::BoxStream;
use hookfleet_config::{DatabaseSettings, DatabaseTls};
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

pub mod endpoint;
pub mod remembered;
pub mod tokens;

pub use deadpool_postgres;
pub use remembered::Remembered;
pub use tokens::TokenStore;
pub use tokio_postgres;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// An arbitrary, fixed key for the advisory lock that serialises
/// migrations when several services start at once.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_666c;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database url: {0}")]
    BadUrl(tokio_postgres::Error),
    #[error("database: {}", with_causes(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("database pool: {}", with_causes(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database pool set-up: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("migrations: {0}")]
    Migration(#[from] refinery::Error),
    #[error("database TLS: {0}")]
    Tls(String),
}

/// An error and its causes, `outer: inner: innermost`: tokio-postgres
/// says only "error performing TLS handshake" or "error connecting to
/// server", and the reason (an unknown issuer, a refused connection) is
/// its source.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.ends_with(&said) {
            text = format!("{text}: {said}");
        }
        cause = inner.source();
    }
    text
}

/// What a connection of [`connect_with`] says besides answers
/// (notifications, notices); it ends when the connection does. The
/// connection lives as long as this is polled.
pub type Messages = BoxStream<'static, Result<AsyncMessage, tokio_postgres::Error>>;

/// The URL's connection settings, with TLS as `database.tls` says, and the
/// connector for it. One connector type serves both: with `disable`, it is
/// never asked to connect.
fn config_and_tls(
    settings: &DatabaseSettings,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), DbError> {
    let mut config: tokio_postgres::Config = settings.url.parse().map_err(DbError::BadUrl)?;
    let mut roots = rustls::RootCertStore::empty();
    match settings.tls {
        DatabaseTls::Disable => {
            config.ssl_mode(SslMode::Disable);
        }
        DatabaseTls::VerifyFull => {
            config.ssl_mode(SslMode::Require);
            add_roots(&mut roots, &settings.tls_ca_file)?;
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((config, MakeRustlsConnect::new(tls)))
}

/// The authorities of `ca_file` (PEM), or the system's when it is empty.
fn add_roots(roots: &mut rustls::RootCertStore, ca_file: &str) -> Result<(), DbError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let failed = |reason: String| DbError::Tls(format!("tls_ca_file {ca_file:?}: {reason}"));
    let certificates: Vec<CertificateDer<'static>> = if ca_file.is_empty() {
        rustls_native_certs::load_native_certs().certs
    } else {
        CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| failed(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| failed(e.to_string()))?
    };
    let (added, _ignored) = roots.add_parsable_certificates(certificates);
    if added == 0 {
        return Err(failed("no usable certificate in it".into()));
    }
    Ok(())
}

/// One connection, outside the pool, for a caller that needs its messages
/// (LISTEN/NOTIFY): the caller drives it by polling the [`Messages`].
pub async fn connect_with(
    settings: &DatabaseSettings,
) -> Result<(tokio_postgres::Client, Messages), DbError> {
    let (config, tls) = config_and_tls(settings)?;
    let (client, mut connection) = config.connect(tls).await?;
    let messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    Ok((client, Box::pin(messages)))
}

/// A pool of connections. Connections are made lazily, so building the
/// pool succeeds even while Postgres is down.
pub fn pool(settings: &DatabaseSettings) -> Result<Pool, DbError> {
    let (config, tls) = config_and_tls(settings)?;
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()?)
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, DbError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "database connection closed");
        }
    });
    Ok(client)
}

/// Brings the schema up to date. Safe to run from several processes at
/// once: they queue on an advisory lock.
pub async fn migrate(settings: &DatabaseSettings) -> Result<(), DbError> {
    let (mut client, mut messages) = connect_with(settings).await?;
    tokio::spawn(async move {
        use futures_util::StreamExt;
        while let Some(message) = messages.next().await {
            if let Err(error) = message {
                tracing::debug!(%error, "database connection closed");
            }
        }
    });
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let report = embedded::migrations::runner().run_async(&mut client).await;
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await?;
    for migration in report?.applied_migrations() {
        tracing::info!(migration = %migration, "migration applied");
    }
    Ok(())
}

/// Creates database `name` unless it exists. `admin_url` points at any
/// database of the same server, as a role allowed to create databases.
pub async fn create_database(admin_url: &str, name: &str) -> Result<(), DbError> {
    let client = connect(admin_url).await?;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("CREATE DATABASE {}", quote_ident(name)))
            .await?;
    }
    Ok(())
}

/// Drops database `name`, closing other sessions on it first.
pub async fn drop_database(admin_url: &str, name: &str) -> Result<(), DbError> {
    let client = connect(admin_url).await?;
    client
        .batch_execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(name)
        ))
        .await?;
    Ok(())
}

/// `url` with its database name replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    match url.rsplit_once('/') {
        Some((base, rest)) => match rest.split_once('?') {
            Some((_, query)) => format!("{base}/{name}?{query}"),
            None => format!("{base}/{name}"),
        },
        None => url.to_owned(),
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/hookfleet", "t1"),
            "postgres://u:p@h:5432/t1"
        );
        assert_eq!(
            with_database("postgres://h/db?sslmode=disable", "t2"),
            "postgres://h/t2?sslmode=disable"
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}

#[cfg(test)]
mod released {
    //! Released migrations are never edited: a database that applied one
    //! refuses to start when its checksum changes (refinery compares them),
    //! so an edit strands every installation that ran the first version.
    //! `migrations.lock` lists each released migration's checksum; a new
    //! migration is added to it when it lands.

    use std::collections::BTreeMap;

    fn locked() -> BTreeMap<String, u64> {
        include_str!("../migrations.lock")
            .lines()
            .filter(|line| !line.trim().is_empty() && !line.starts_with('#'))
            .map(|line| {
                let (name, checksum) = line.split_once(' ').expect("`<name> <checksum>`");
                (
                    name.to_owned(),
                    checksum.trim().parse().expect("a u64 checksum"),
                )
            })
            .collect()
    }

    #[test]
    fn released_migrations_are_never_edited() {
        let locked = locked();
        let mut problems = Vec::new();
        for migration in super::embedded::migrations::runner().get_migrations() {
            let name = migration.to_string();
            match locked.get(&name) {
                Some(&checksum) if checksum == migration.checksum() => {}
                Some(_) => problems.push(format!(
                    "{name} was edited after release; revert it and add a new migration"
                )),
                None => problems.push(format!(
                    "{name} is new: add `{name} {}` to shared/db/migrations.lock",
                    migration.checksum()
                )),
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
