use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::Row;

use super::{
    millis, BeginOutcome, BeginRequest, IdempotencyStore, Lease, StoreError, StoreFuture,
    StoredResponse,
};
use crate::ConfigError;

/// The migration, applied by [`PostgresStore::migrate`] (and so by [`PostgresStore::connect`]):
/// one table, keyed by `(scope, key)`, plus an index for purging expired rows. `{schema}`,
/// `{table}` and `{index}` are replaced by the quoted identifiers. Safe to run concurrently and
/// repeatedly (`IF NOT EXISTS` under an advisory lock).
///
/// ```
/// assert!(steadfast_http::idempotency::store::MIGRATION_SQL.contains("PRIMARY KEY (scope, key)"));
/// ```
pub const MIGRATION_SQL: &str = r#"
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {table} (
    scope       text        NOT NULL,
    key         text        NOT NULL,
    fingerprint bytea       NOT NULL,
    -- 0: in flight (held by owner/epoch until lease_until), 1: completed
    state       smallint    NOT NULL,
    owner       uuid        NOT NULL,
    epoch       bigint      NOT NULL,
    lease_until timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    response    bytea,
    PRIMARY KEY (scope, key)
);
CREATE INDEX IF NOT EXISTS {index} ON {table} (expires_at);
"#;

/// A store on PostgreSQL: one row per record in one table; `begin` is an
/// `INSERT ... ON CONFLICT DO NOTHING` and, when the row exists, a `SELECT ... FOR UPDATE` and
/// an `UPDATE` in one transaction; `complete` and `release` are single statements fenced by
/// `owner` and `epoch`. All time is the database's `now()`, so every replica agrees.
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
        let index = format!("\"{}_expires_at\"", self.table);
        let ms = |n: u32| format!("(${n}::bigint * interval '1 millisecond')");
        let sql = Sql {
            migration: MIGRATION_SQL
                .replace("{schema}", &schema)
                .replace("{table}", &t)
                .replace("{index}", &index),
            insert: format!(
                "INSERT INTO {t} (scope, key, fingerprint, state, owner, epoch, lease_until, expires_at) \
                 VALUES ($1, $2, $3, 0, $4::uuid, 1, now() + {}, now() + {}) \
                 ON CONFLICT (scope, key) DO NOTHING RETURNING epoch",
                ms(5),
                ms(6)
            ),
            select_for_update: format!(
                "SELECT state, fingerprint, epoch, response, \
                 lease_until > now() AS leased, expires_at > now() AS live, \
                 GREATEST(0, CEIL(EXTRACT(EPOCH FROM (lease_until - now())) * 1000))::bigint AS lease_left_ms \
                 FROM {t} WHERE scope = $1 AND key = $2 FOR UPDATE"
            ),
            reset: format!(
                "UPDATE {t} SET fingerprint = $3, state = 0, owner = $4::uuid, epoch = epoch + 1, \
                 lease_until = now() + {}, expires_at = now() + {}, response = NULL \
                 WHERE scope = $1 AND key = $2 RETURNING epoch",
                ms(5),
                ms(6)
            ),
            take_over: format!(
                "UPDATE {t} SET owner = $3::uuid, epoch = epoch + 1, \
                 lease_until = now() + {}, expires_at = now() + {} \
                 WHERE scope = $1 AND key = $2 RETURNING epoch",
                ms(4),
                ms(5)
            ),
            complete: format!(
                "UPDATE {t} SET state = 1, response = $5, lease_until = now(), expires_at = now() + {} \
                 WHERE scope = $1 AND key = $2 AND state = 0 AND owner = $3::uuid AND epoch = $4",
                ms(6)
            ),
            release: format!(
                "DELETE FROM {t} WHERE scope = $1 AND key = $2 AND state = 0 AND owner = $3::uuid AND epoch = $4"
            ),
            renew: format!(
                "UPDATE {t} SET lease_until = now() + {} \
                 WHERE scope = $1 AND key = $2 AND state = 0 AND owner = $3::uuid AND epoch = $4",
                ms(5)
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

fn unavailable(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::TypeNotFound { .. } => {
            StoreError::corrupt("postgres row could not be decoded").with_source(e)
        }
        e => StoreError::unavailable(e),
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
    let fingerprint = req.fingerprint().as_bytes().as_slice();
    let (lease_ms, expiry_ms) = (millis(req.lease_duration()), millis(req.expiry_duration()));
    // A row can vanish between the insert and the select (released, or purged): try again.
    for _ in 0..3 {
        let inserted = sqlx::query(&sql.insert)
            .bind(req.scope())
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
            .bind(req.scope())
            .bind(req.key().as_str())
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
                .bind(req.scope())
                .bind(req.key().as_str())
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
                    .bind(req.scope())
                    .bind(req.key().as_str())
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
                .bind(lease.scope())
                .bind(lease.key().as_str())
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
                .bind(lease.scope())
                .bind(lease.key().as_str())
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
                .bind(lease.scope())
                .bind(lease.key().as_str())
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
