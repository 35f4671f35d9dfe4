//! The ledger's history kept for `retention.period` and no longer: events,
//! deliveries and attempts are partitioned by UTC day of the event's
//! creation (see migration V6). Every `retention.check_every` the ledger
//! makes the partitions of the coming days, moves rows that the default
//! partitions caught into day partitions of their own, and drops whole days
//! once they are older than the period. Dropping a partition costs the same
//! whatever it holds, and leaves no dead rows behind for vacuum.

use std::sync::Arc;
use std::time::Duration;

use hookfleet_db::deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

/// The partitioned tables and their partition keys.
pub const PARTITIONED: [(&str, &str); 3] = [
    ("events", "created_at"),
    ("deliveries", "event_created_at"),
    ("attempts", "event_created_at"),
];

/// Days made ahead of today, so that records never wait for a partition.
const DAYS_AHEAD: i32 = 2;

/// Serialises maintenance across ledger replicas (an arbitrary fixed key).
const MAINTENANCE_LOCK: i64 = 0x0068_6672_6574_656e;

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("database: {0}")]
    Pool(#[from] hookfleet_db::deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Postgres(#[from] hookfleet_db::tokio_postgres::Error),
}

/// What one maintenance pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Maintenance {
    /// Day partitions made (one per table and day).
    pub made: Vec<String>,
    /// Day partitions dropped.
    pub dropped: Vec<String>,
    /// Expired rows deleted from the default partitions.
    pub expired_outliers: u64,
    /// Expired hourly rollups of endpoint stats deleted.
    pub expired_stats_hours: u64,
}

#[derive(Debug, Clone)]
pub struct Retention {
    pub pool: Pool,
    /// How long the history is kept.
    pub period: Duration,
    pub check_every: Duration,
}

impl Retention {
    /// Maintains at once, then every `check_every` until `cancel` fires.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            match self.maintain().await {
                Ok(done) if done.made.is_empty() && done.dropped.is_empty() => {}
                Ok(done) => tracing::info!(
                    made = ?done.made,
                    dropped = ?done.dropped,
                    expired_outliers = done.expired_outliers,
                    "ledger partitions maintained"
                ),
                Err(error) => tracing::warn!(%error, "ledger partition maintenance failed"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.check_every) => {}
            }
        }
    }

    /// One pass: make the coming days and the days the default partitions
    /// hold within the period, drop the days before it.
    pub async fn maintain(&self) -> Result<Maintenance, RetentionError> {
        let mut done = Maintenance::default();
        let mut client = self.pool.get().await?;
        let period = self.period.as_secs_f64();
        // The first UTC day kept, fixed for the whole pass.
        let cutoff: String = client
            .query_one(
                "SELECT to_char(((now() - make_interval(secs => $1)) AT TIME ZONE 'UTC')::date,
                                'YYYY-MM-DD')",
                &[&period],
            )
            .await?
            .get(0);
        for (table, key) in PARTITIONED {
            // Today and the days ahead, and every day within the period
            // that the default partition holds rows of.
            let days: Vec<String> = client
                .query(
                    &format!(
                        "SELECT to_char(d, 'YYYY-MM-DD')
                         FROM generate_series((now() AT TIME ZONE 'UTC')::date,
                                              (now() AT TIME ZONE 'UTC')::date + $2::int4,
                                              interval '1 day') d
                         UNION
                         SELECT DISTINCT to_char(({key} AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD')
                         FROM {table}_default
                         WHERE ({key} AT TIME ZONE 'UTC')::date >= $1::text::date"
                    ),
                    &[&cutoff, &DAYS_AHEAD],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            for day in days {
                if make_day(&mut client, table, key, &day).await? {
                    done.made.push(partition_name(table, &day));
                }
            }
            let expired: Vec<String> = client
                .query(
                    "SELECT c.relname::text FROM pg_inherits i
                     JOIN pg_class c ON c.oid = i.inhrelid
                     JOIN pg_class p ON p.oid = i.inhparent
                     WHERE p.relname = $1 AND c.relname ~ ('^' || $1 || '_p[0-9]{8}$')
                       AND to_date(right(c.relname, 8), 'YYYYMMDD') < $2::text::date
                     ORDER BY 1",
                    &[&table, &cutoff],
                )
                .await?
                .iter()
                .map(|row| row.get(0))
                .collect();
            for partition in expired {
                client
                    .batch_execute(&format!("DROP TABLE IF EXISTS {partition}"))
                    .await?;
                done.dropped.push(partition);
            }
            done.expired_outliers += client
                .execute(
                    &format!(
                        "DELETE FROM {table}_default
                         WHERE {key} < $1::text::timestamp AT TIME ZONE 'UTC'"
                    ),
                    &[&cutoff],
                )
                .await?;
        }
        // The hourly rollups of endpoint stats expire with the attempts.
        done.expired_stats_hours = client
            .execute(
                "DELETE FROM endpoint_stats WHERE hour < now() - make_interval(secs => $1)",
                &[&period],
            )
            .await?;
        Ok(done)
    }

    /// Makes the day partitions from `first` to `last` (`YYYY-MM-DD`,
    /// inclusive) of every partitioned table; for loading history in bulk.
    pub async fn make_days(&self, first: &str, last: &str) -> Result<usize, RetentionError> {
        let mut client = self.pool.get().await?;
        let days: Vec<String> = client
            .query(
                "SELECT to_char(d, 'YYYY-MM-DD')
                 FROM generate_series($1::text::date, $2::text::date, interval '1 day') d",
                &[&first, &last],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let mut made = 0;
        for (table, key) in PARTITIONED {
            for day in &days {
                made += usize::from(make_day(&mut client, table, key, day).await?);
            }
        }
        Ok(made)
    }
}

fn partition_name(table: &str, day: &str) -> String {
    format!("{table}_p{}", day.replace('-', ""))
}

/// Makes one day's partition of `table`, moving the rows of that day out of
/// the default partition first (Postgres refuses to attach a partition
/// while the default one holds rows belonging to it). False if it existed.
async fn make_day(
    client: &mut hookfleet_db::deadpool_postgres::Object,
    table: &str,
    key: &str,
    day: &str,
) -> Result<bool, RetentionError> {
    let partition = partition_name(table, day);
    let found = |row: hookfleet_db::tokio_postgres::Row| row.get::<_, bool>(0);
    let probe = "SELECT to_regclass($1) IS NOT NULL";
    if found(client.query_one(probe, &[&partition]).await?) {
        return Ok(false);
    }
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MAINTENANCE_LOCK])
        .await?;
    // Another replica may have made it while this one waited for the lock.
    if found(tx.query_one(probe, &[&partition]).await?) {
        return Ok(false);
    }
    let (from, to) = (
        format!("{day} 00:00:00+00"),
        tx.query_one(
            "SELECT to_char($1::text::date + 1, 'YYYY-MM-DD') || ' 00:00:00+00'",
            &[&day],
        )
        .await?
        .get::<_, String>(0),
    );
    tx.batch_execute(&format!(
        "CREATE TABLE {partition} (LIKE {table} INCLUDING DEFAULTS);
         WITH moved AS (
             DELETE FROM {table}_default WHERE {key} >= '{from}' AND {key} < '{to}' RETURNING *)
         INSERT INTO {partition} SELECT * FROM moved;
         ALTER TABLE {table} ATTACH PARTITION {partition} FOR VALUES FROM ('{from}') TO ('{to}');"
    ))
    .await?;
    tx.commit().await?;
    Ok(true)
}
