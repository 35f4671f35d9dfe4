//! PostgreSQL access shared by the producer and the ledger: the connection
//! pool, the schema migrations, and database administration used by
//! `scripts/up` and the tests.

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use hookfleet_config::DatabaseSettings;
use tokio_postgres::NoTls;

pub mod tokens;

pub use deadpool_postgres;
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
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database pool set-up: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    #[error("migrations: {0}")]
    Migration(#[from] refinery::Error),
}

/// A pool of connections. Connections are made lazily, so building the
/// pool succeeds even while Postgres is down.
pub fn pool(settings: &DatabaseSettings) -> Result<Pool, DbError> {
    let config: tokio_postgres::Config = settings.url.parse().map_err(DbError::BadUrl)?;
    let manager = Manager::from_config(
        config,
        NoTls,
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
pub async fn migrate(url: &str) -> Result<(), DbError> {
    let mut client = connect(url).await?;
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
