use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;

use super::{
    millis, BeginOutcome, BeginRequest, IdempotencyStore, Lease, StoreError, StoreErrorKind,
    StoreFuture, StoredResponse,
};
use crate::ConfigError;

/// The migration, applied by [`PostgresStore::migrate`] (and so by [`PostgresStore::connect`]):
/// one table whose primary key is the record's 32-byte [`RecordId`](super::RecordId) (`id`), plus an index for
/// purging expired rows. `{schema}`, `{table}`, `{table_literal}` and `{index}` are replaced by
/// the quoted identifiers (and the table's name as a string literal). Safe to run concurrently
/// and repeatedly (`IF NOT EXISTS` under an advisory lock).
///
/// **Schema version 2.** Version 1 (before records were addressed by digest) keyed rows by
/// `PRIMARY KEY (scope, key)`, which PostgreSQL cannot index for long keys or principals (a
/// B-tree entry is limited to about 2.7 kB). The migration upgrades a version-1 table in place,
/// in the same transaction: it converts `scope` to `bytea`, adds `id` and fills it with the
/// same digest the code computes (`sha256(int8send(octet_length(scope)) || scope ||
/// int8send(octet_length(key)) || key)`), and swaps the primary key; stored records, in flight
/// or completed, keep working. It rewrites the table under an exclusive lock (the table holds
/// at most one expiry's worth of records), and instances of the earlier version cannot use the
/// upgraded table: upgrade them together. The table's comment records the version.
///
/// `scope` is `bytea` (a principal is any string, NUL included, which `text` cannot hold);
/// read it with `convert_from(scope, 'UTF8')`. `key` is `text` (printable ASCII).
///
/// ```
/// let sql = steadfast_http::idempotency::store::MIGRATION_SQL;
/// assert!(sql.contains("id          bytea       NOT NULL PRIMARY KEY"));
/// assert!(sql.contains("schema version 2"));
/// ```
pub const MIGRATION_SQL: &str = r#"
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {table} (
    -- sha256(int8send(octet_length(scope)) || scope || int8send(octet_length(key)) || key)
    id          bytea       NOT NULL PRIMARY KEY CHECK (octet_length(id) = 32),
    scope       bytea       NOT NULL,
    key         text        NOT NULL,
    fingerprint bytea       NOT NULL,
    -- 0: in flight (held by owner/epoch until lease_until), 1: completed
    state       smallint    NOT NULL,
    owner       uuid        NOT NULL,
    epoch       bigint      NOT NULL,
    lease_until timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    response    bytea
);
DO $migrate$
DECLARE
    pkey name;
BEGIN
    -- Version 1: PRIMARY KEY (scope, key), scope text, no id. Upgrade in place.
    IF NOT EXISTS (
        SELECT 1 FROM pg_attribute
        WHERE attrelid = {table_literal}::regclass AND attname = 'id' AND NOT attisdropped
    ) THEN
        SELECT conname INTO pkey FROM pg_constraint
        WHERE conrelid = {table_literal}::regclass AND contype = 'p';
        IF pkey IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', {table_literal}, pkey);
        END IF;
        ALTER TABLE {table} ALTER COLUMN scope TYPE bytea USING convert_to(scope, 'UTF8');
        ALTER TABLE {table} ADD COLUMN id bytea;
        UPDATE {table} SET id = sha256(
            int8send(octet_length(scope)::bigint) || scope
            || int8send(octet_length(convert_to(key, 'UTF8'))::bigint) || convert_to(key, 'UTF8'));
        ALTER TABLE {table} ALTER COLUMN id SET NOT NULL;
        ALTER TABLE {table} ADD PRIMARY KEY (id);
        ALTER TABLE {table} ADD CHECK (octet_length(id) = 32);
    END IF;
END
$migrate$;
CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at);
COMMENT ON TABLE {table} IS 'steadfast idempotency records, schema version 2 (primary key: id = sha256 of the length-prefixed scope and key)';
"#;

/// A store on PostgreSQL: one row per record in one table, keyed by the record's 32-byte
/// [`RecordId`](super::RecordId) (see [`MIGRATION_SQL`] and the [store docs](super#how-records-are-addressed)), so
/// keys up to 8192 characters and principals of any length or content are stored; `begin` is
/// an `INSERT ... ON CONFLICT DO NOTHING` and, when the row exists, a `SELECT ... FOR UPDATE`
/// and an `UPDATE` in one transaction; `complete` and `release` are single statements fenced by
/// `owner` and `epoch`. All time is the database's `now()`, so every replica agrees.
///
/// Errors are classified by SQLSTATE (see [`StoreErrorKind`]): connection exceptions (`08`),
/// transaction rollbacks (`40`: serialization failures, deadlocks), insufficient resources
/// (`53`), lock timeouts (`55`), operator intervention (`57`: statement timeout, shutdown),
/// system errors (`58`), a read-only transaction (`25`, a standby after failover), and pool or
/// I/O failures are [`Unavailable`](StoreErrorKind::Unavailable) (transient); data corruption
/// (`XX`) and rows that do not decode are [`Corrupt`](StoreErrorKind::Corrupt); everything else
/// (a missing table or schema, a permission, a data exception, a program limit) is
/// [`Refused`](StoreErrorKind::Refused) (permanent).
///
/// Expired rows are ignored (and reused) by `begin`; delete them in bulk with
/// [`purge_expired`](PostgresStore::purge_expired), e.g. from a periodic job.
///
/// ```no_run
/// use steadfast_http::idempotency::store::PostgresStore;
/// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
/// // Connects and applies the migration.
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1:5432/test").await?;
/// // Or on your pool, in your schema:
/// let pool = sqlx::postgres::PgPoolOptions::new().connect("postgres://postgres@127.0.0.1/test").await?;
/// let store = PostgresStore::builder(pool).schema("payments").build()?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    pool: PgPool,
    sql: Arc<Sql>,
}

struct Sql {
    schema: String,
    table: String,
    migration: String,
    insert: String,
    select_for_update: String,
    reset: String,
    take_over: String,
    complete: String,
    release: String,
    renew: String,
    purge: String,
}

/// Builds a [`PostgresStore`] on a pool.
///
/// ```no_run
/// # async fn f(pool: sqlx::PgPool) {
/// use steadfast_http::idempotency::store::PostgresStore;
/// assert!(PostgresStore::builder(pool).table("bad name").build().is_err());
/// # }
/// ```
#[derive(Debug)]
pub struct PostgresStoreBuilder {
    pool: PgPool,
    schema: String,
    table: String,
}

fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

impl PostgresStoreBuilder {
    /// The schema of the table (default `public`); created by the migration if missing.
    /// Lowercase letters, digits and `_`, at most 63 characters.
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = schema.into();
        self
    }

    /// The table name (default `steadfast_idempotency`); same rules as the schema.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// Validates and builds the store (no I/O: call [`PostgresStore::migrate`] next).
    pub fn build(self) -> Result<PostgresStore, ConfigError> {
        if !valid_identifier(&self.schema) {
            return Err(ConfigError::out_of_range(
                "schema",
                &self.schema,
                "[a-z_][a-z0-9_]{0,62}",
            ));
        }
        if !valid_identifier(&self.table) {
            return Err(ConfigError::out_of_range(
                "table",
                &self.table,
                "[a-z_][a-z0-9_]{0,62}",
            ));
        }
        let schema = format!("\"{}\"", self.schema);
        let t = format!("\"{}\".\"{}\"", self.schema, self.table);
        // Identifiers are validated ([a-z_][a-z0-9_]*): no quote to escape.
        let t_literal = format!("'{t}'");
        let index = format!("\"{}_expires_at\"", self.table);
        let ms = |n: u32| format!("(${n}::bigint * interval '1 millisecond')");
        let sql = Sql {
            migration: MIGRATION_SQL
                .replace("{schema}", &schema)
                .replace("{table_literal}", &t_literal)
                .replace("{table}", &t)
                .replace("{index}", &index),
            insert: format!(
                "INSERT INTO {t} (id, scope, key, fingerprint, state, owner, epoch, lease_until, expires_at) \
                 VALUES ($1, $2, $3, $4, 0, $5::uuid, 1, now() + {}, now() + {}) \
                 ON CONFLICT (id) DO NOTHING RETURNING epoch",
                ms(6),
                ms(7)
            ),
            select_for_update: format!(
                "SELECT state, fingerprint, epoch, response, \
                 lease_until > now() AS leased, expires_at > now() AS live, \
                 GREATEST(0, CEIL(EXTRACT(EPOCH FROM (lease_until - now())) * 1000))::bigint AS lease_left_ms \
                 FROM {t} WHERE id = $1 FOR UPDATE"
            ),
            reset: format!(
                "UPDATE {t} SET fingerprint = $2, state = 0, owner = $3::uuid, epoch = epoch + 1, \
                 lease_until = now() + {}, expires_at = now() + {}, response = NULL \
                 WHERE id = $1 RETURNING epoch",
                ms(4),
                ms(5)
            ),
            take_over: format!(
                "UPDATE {t} SET owner = $2::uuid, epoch = epoch + 1, \
                 lease_until = now() + {}, expires_at = now() + {} \
                 WHERE id = $1 RETURNING epoch",
                ms(3),
                ms(4)
            ),
            complete: format!(
                "UPDATE {t} SET state = 1, response = $4, lease_until = now(), expires_at = now() + {} \
                 WHERE id = $1 AND state = 0 AND owner = $2::uuid AND epoch = $3",
                ms(5)
            ),
            release: format!(
                "DELETE FROM {t} WHERE id = $1 AND state = 0 AND owner = $2::uuid AND epoch = $3"
            ),
            renew: format!(
                "UPDATE {t} SET lease_until = now() + {} \
                 WHERE id = $1 AND state = 0 AND owner = $2::uuid AND epoch = $3",
                ms(4)
            ),
            purge: format!("DELETE FROM {t} WHERE expires_at <= now()"),
            schema: self.schema,
            table: t,
        };
        Ok(PostgresStore {
            pool: self.pool,
            sql: Arc::new(sql),
        })
    }
}

/// Classifies a driver error (see the type's docs): transient, corrupt or refused.
fn unavailable(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::TypeNotFound { .. } => {
            StoreError::corrupt("postgres row could not be decoded").with_source(e)
        }
        sqlx::Error::Database(ref db) => {
            let class = db.code().map(|c| c.get(..2).unwrap_or_default().to_owned());
            match sqlstate_kind(class.as_deref()) {
                StoreErrorKind::Corrupt => {
                    StoreError::corrupt("postgres reports data corruption").with_source(e)
                }
                StoreErrorKind::Refused => StoreError::refused(e),
                _ => StoreError::unavailable(e),
            }
        }
        sqlx::Error::Configuration(_)
        | sqlx::Error::InvalidArgument(_)
        | sqlx::Error::Encode(_)
        | sqlx::Error::InvalidSavePointStatement => StoreError::refused(e),
        e => StoreError::unavailable(e),
    }
}

/// What a SQLSTATE class (its first two characters) says about retrying.
fn sqlstate_kind(class: Option<&str>) -> StoreErrorKind {
    match class {
        // Connection exception; invalid transaction state (25006: read-only, a standby after a
        // failover); transaction rollback (serialization failure, deadlock); insufficient
        // resources; object not in prerequisite state (lock not available); operator
        // intervention (statement timeout, shutdown); system error (I/O).
        Some("08" | "25" | "40" | "53" | "55" | "57" | "58") | None => StoreErrorKind::Unavailable,
        Some("XX") => StoreErrorKind::Corrupt,
        // Data exception, integrity violation, syntax error or access rule violation (missing
        // table, permission), program limit exceeded, feature not supported, ...
        Some(_) => StoreErrorKind::Refused,
    }
}

impl PostgresStore {
    /// Connects a pool of up to 10 connections (2 s acquire timeout) to `url`, in schema
    /// `public`, and applies the migration.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(unavailable)?;
        let store = Self::builder(pool)
            .build()
            .map_err(|e| StoreError::unavailable(e.to_string()))?;
        store.migrate().await?;
        Ok(store)
    }

    /// A builder on `pool` (schema `public`, table `steadfast_idempotency`).
    pub fn builder(pool: PgPool) -> PostgresStoreBuilder {
        PostgresStoreBuilder {
            pool,
            schema: "public".to_owned(),
            table: "steadfast_idempotency".to_owned(),
        }
    }

    /// Applies [`MIGRATION_SQL`] (idempotent; serialized across processes by an advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('steadfast_idempotency_migration'))")
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::raw_sql(&self.sql.migration)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    /// Deletes expired rows; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        sqlx::query(&self.sql.purge)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(unavailable)
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The schema.
    pub fn schema(&self) -> &str {
        &self.sql.schema
    }

    /// The quoted, schema-qualified table name.
    pub fn table(&self) -> &str {
        &self.sql.table
    }
}

impl fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresStore")
            .field("table", &self.sql.table)
            .finish_non_exhaustive()
    }
}

async fn begin(pool: PgPool, sql: Arc<Sql>, req: BeginRequest) -> Result<BeginOutcome, StoreError> {
    let owner = req.lease_owner().to_string();
    let id = req.id().as_bytes().as_slice();
    let fingerprint = req.fingerprint().as_bytes().as_slice();
    let (lease_ms, expiry_ms) = (millis(req.lease_duration()), millis(req.expiry_duration()));
    // A row can vanish between the insert and the select (released, or purged): try again.
    for _ in 0..3 {
        let inserted = sqlx::query(&sql.insert)
            .bind(id)
            .bind(req.scope().as_bytes())
            .bind(req.key().as_str())
            .bind(fingerprint)
            .bind(&owner)
            .bind(lease_ms)
            .bind(expiry_ms)
            .fetch_optional(&pool)
            .await
            .map_err(unavailable)?;
        if let Some(row) = inserted {
            let epoch: i64 = row.try_get("epoch").map_err(unavailable)?;
            return Ok(BeginOutcome::Acquired(
                req.lease_at(epoch_u64(epoch)?, false),
            ));
        }
        let mut tx = pool.begin().await.map_err(unavailable)?;
        let Some(row) = sqlx::query(&sql.select_for_update)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        else {
            tx.rollback().await.map_err(unavailable)?;
            continue;
        };
        let live: bool = row.try_get("live").map_err(unavailable)?;
        let outcome = if !live {
            // Expired: start afresh (the fingerprint may differ), raising the epoch.
            let row = sqlx::query(&sql.reset)
                .bind(id)
                .bind(fingerprint)
                .bind(&owner)
                .bind(lease_ms)
                .bind(expiry_ms)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
            let epoch: i64 = row.try_get("epoch").map_err(unavailable)?;
            BeginOutcome::Acquired(req.lease_at(epoch_u64(epoch)?, false))
        } else {
            let stored: Vec<u8> = row.try_get("fingerprint").map_err(unavailable)?;
            let state: i16 = row.try_get("state").map_err(unavailable)?;
            if stored.as_slice() != fingerprint {
                BeginOutcome::Mismatch
            } else if state == 1 {
                let response: Option<Vec<u8>> = row.try_get("response").map_err(unavailable)?;
                let response = response
                    .ok_or_else(|| StoreError::corrupt("completed row without a response"))?;
                BeginOutcome::Completed(StoredResponse::decode(&response)?)
            } else if state != 0 {
                return Err(StoreError::corrupt(format!("row in unknown state {state}")));
            } else if row.try_get::<bool, _>("leased").map_err(unavailable)? {
                let left: i64 = row.try_get("lease_left_ms").map_err(unavailable)?;
                BeginOutcome::InFlight {
                    retry_after: Duration::from_millis(u64::try_from(left).unwrap_or(0)),
                }
            } else {
                let row = sqlx::query(&sql.take_over)
                    .bind(id)
                    .bind(&owner)
                    .bind(lease_ms)
                    .bind(expiry_ms)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(unavailable)?;
                let epoch: i64 = row.try_get("epoch").map_err(unavailable)?;
                BeginOutcome::Acquired(req.lease_at(epoch_u64(epoch)?, true))
            }
        };
        tx.commit().await.map_err(unavailable)?;
        return Ok(outcome);
    }
    Err(StoreError::unavailable(
        "the record kept vanishing between insert and select",
    ))
}

fn epoch_u64(epoch: i64) -> Result<u64, StoreError> {
    u64::try_from(epoch).map_err(|_| StoreError::corrupt(format!("negative epoch {epoch}")))
}

fn epoch_i64(lease: &Lease) -> i64 {
    i64::try_from(lease.epoch()).unwrap_or(i64::MAX)
}

impl IdempotencyStore for PostgresStore {
    fn begin(&self, request: BeginRequest) -> StoreFuture<BeginOutcome> {
        Box::pin(begin(self.pool.clone(), Arc::clone(&self.sql), request))
    }

    fn complete(
        &self,
        lease: &Lease,
        response: StoredResponse,
        expiry: Duration,
    ) -> StoreFuture<()> {
        let (pool, sql, lease) = (self.pool.clone(), Arc::clone(&self.sql), lease.clone());
        Box::pin(async move {
            let done = sqlx::query(&sql.complete)
                .bind(lease.id().as_bytes().as_slice())
                .bind(lease.owner().to_string())
                .bind(epoch_i64(&lease))
                .bind(response.encode())
                .bind(millis(expiry))
                .execute(&pool)
                .await
                .map_err(unavailable)?;
            if done.rows_affected() == 1 {
                Ok(())
            } else {
                Err(StoreError::lease_lost(&lease))
            }
        })
    }

    fn release(&self, lease: &Lease) -> StoreFuture<()> {
        let (pool, sql, lease) = (self.pool.clone(), Arc::clone(&self.sql), lease.clone());
        Box::pin(async move {
            let done = sqlx::query(&sql.release)
                .bind(lease.id().as_bytes().as_slice())
                .bind(lease.owner().to_string())
                .bind(epoch_i64(&lease))
                .execute(&pool)
                .await
                .map_err(unavailable)?;
            if done.rows_affected() == 1 {
                Ok(())
            } else {
                Err(StoreError::lease_lost(&lease))
            }
        })
    }

    fn renew(&self, lease: &Lease, duration: Duration) -> StoreFuture<()> {
        let (pool, sql, lease) = (self.pool.clone(), Arc::clone(&self.sql), lease.clone());
        Box::pin(async move {
            let done = sqlx::query(&sql.renew)
                .bind(lease.id().as_bytes().as_slice())
                .bind(lease.owner().to_string())
                .bind(epoch_i64(&lease))
                .bind(millis(duration))
                .execute(&pool)
                .await
                .map_err(unavailable)?;
            if done.rows_affected() == 1 {
                Ok(())
            } else {
                Err(StoreError::lease_lost(&lease))
            }
        })
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_classes_are_transient_or_permanent() {
        for transient in ["08", "25", "40", "53", "55", "57", "58"] {
            assert_eq!(
                sqlstate_kind(Some(transient)),
                StoreErrorKind::Unavailable,
                "{transient}"
            );
        }
        assert_eq!(sqlstate_kind(None), StoreErrorKind::Unavailable);
        assert_eq!(sqlstate_kind(Some("XX")), StoreErrorKind::Corrupt);
        // Data exception, integrity, missing table or permission, program limit (the old
        // "index row size exceeds maximum"), feature not supported, authorization.
        for permanent in ["22", "23", "42", "54", "0A", "28", "3F"] {
            assert_eq!(
                sqlstate_kind(Some(permanent)),
                StoreErrorKind::Refused,
                "{permanent}"
            );
        }
    }

    #[test]
    fn driver_errors_are_classified() {
        assert_eq!(
            unavailable(sqlx::Error::PoolTimedOut).kind(),
            StoreErrorKind::Unavailable
        );
        assert_eq!(
            unavailable(sqlx::Error::Io(std::io::Error::other("reset"))).kind(),
            StoreErrorKind::Unavailable
        );
        assert_eq!(
            unavailable(sqlx::Error::ColumnNotFound("id".into())).kind(),
            StoreErrorKind::Corrupt
        );
        assert_eq!(
            unavailable(sqlx::Error::Configuration("bad url".into())).kind(),
            StoreErrorKind::Refused
        );
    }
}
