//! The PostgreSQL dialect: for many orchestrator instances on one database. Claims use
//! `SELECT ... FOR UPDATE SKIP LOCKED`; every fenced write is an `UPDATE ... WHERE lease_epoch =
//! $epoch` in the transition's transaction, whose row lock orders it against claims; lease times
//! use the database's `now()` and are stored as `timestamptz`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Postgres;

use super::sql::{impl_driver, Fragments, SqlStore};
use crate::error::Error;

const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS steadfast_sagas (
        id TEXT PRIMARY KEY,
        saga_type TEXT NOT NULL,
        version BIGINT NOT NULL,
        business_key TEXT NOT NULL,
        status TEXT NOT NULL,
        compensating BOOLEAN NOT NULL DEFAULT FALSE,
        input TEXT NOT NULL,
        cursor BIGINT NOT NULL DEFAULT 0,
        recoveries BIGINT NOT NULL DEFAULT 0,
        error TEXT,
        lease_owner TEXT,
        lease_epoch BIGINT NOT NULL,
        lease_expires_at TIMESTAMPTZ NOT NULL,
        deadline_at TIMESTAMPTZ,
        created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        UNIQUE (saga_type, business_key)
    )",
    // Cancel (issue 14): the point of no return, and an operator's request. First after the
    // table, so that a migration takes the table's exclusive lock before any weaker one.
    "ALTER TABLE steadfast_sagas ADD COLUMN IF NOT EXISTS forward_only BOOLEAN NOT NULL DEFAULT FALSE",
    "ALTER TABLE steadfast_sagas ADD COLUMN IF NOT EXISTS cancel_requested TEXT",
    // Claims take every saga that is not settled: active ones and ones whose status cannot be
    // read. This index replaces `steadfast_sagas_claim` (which covered active ones only).
    concat!(
        "CREATE INDEX IF NOT EXISTS steadfast_sagas_claimable
            ON steadfast_sagas (lease_expires_at) WHERE status NOT IN ",
        settled_statuses_sql!()
    ),
    "DROP INDEX IF EXISTS steadfast_sagas_claim",
    "CREATE INDEX IF NOT EXISTS steadfast_sagas_status ON steadfast_sagas (status, created_at)",
    "CREATE TABLE IF NOT EXISTS steadfast_saga_steps (
        saga_id TEXT NOT NULL,
        step TEXT NOT NULL,
        phase TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts BIGINT NOT NULL,
        output TEXT,
        error TEXT,
        seq BIGSERIAL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (saga_id, step, phase)
    )",
    "CREATE TABLE IF NOT EXISTS steadfast_saga_history (
        seq BIGSERIAL PRIMARY KEY,
        saga_id TEXT NOT NULL,
        at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        epoch BIGINT NOT NULL,
        kind TEXT NOT NULL,
        step TEXT,
        phase TEXT,
        detail TEXT
    )",
    "CREATE INDEX IF NOT EXISTS steadfast_saga_history_by_saga
        ON steadfast_saga_history (saga_id, seq)",
];

/// Whether every migration has been applied (catalog reads only, no table lock): the newest
/// column and indexes exist and the index the claim index replaced is gone.
const UP_TO_DATE: &str = "SELECT to_regclass('steadfast_sagas_status') IS NOT NULL
        AND to_regclass('steadfast_saga_history_by_saga') IS NOT NULL
        AND to_regclass('steadfast_sagas_claimable') IS NOT NULL
        AND to_regclass('steadfast_sagas_claim') IS NULL
        AND EXISTS (SELECT 1 FROM information_schema.columns
                     WHERE table_schema = current_schema()
                       AND table_name = 'steadfast_sagas'
                       AND column_name = 'cancel_requested')";

impl_driver!(
    Postgres,
    fragments: Fragments {
        now: "now()",
        history_now: "clock_timestamp()",
        ms: ("CAST(", " AS BIGINT) * interval '1 millisecond'"),
        expires: "lease_expires_at",
        deadline: "deadline_at",
        created: "created_at",
        updated: "updated_at",
        history_at: "at",
        // An infinite time reads as NULL: a decode error, not a failed statement.
        history_at_ms: "CASE WHEN isfinite(at) THEN (extract(epoch FROM at) * 1000)::bigint END",
        row_key: "id",
        step_order: "seq",
        // NULL for an infinite creation time (a decode error).
        age_ms: "CASE WHEN isfinite(created_at)
            THEN GREATEST((extract(epoch FROM (now() - created_at)) * 1000)::bigint, 0) END",
        // A deadline of `infinity` is no deadline, `-infinity` one long past: extract() of an
        // infinite interval would not fit a bigint.
        left_ms: "CASE WHEN deadline_at IS NULL OR deadline_at = 'infinity' THEN NULL
                 WHEN deadline_at = '-infinity' THEN 0
                 ELSE GREATEST((extract(epoch FROM (deadline_at - now())) * 1000)::bigint, 0)
            END",
        // A lease that never expires (`infinity`, which no store write produces) counts as
        // expired, so that such a row is not left unclaimed for ever.
        claimable: concat!(
            "status NOT IN ",
            settled_statuses_sql!(),
            " AND (lease_expires_at <= now() OR lease_expires_at = 'infinity')"
        ),
        fenceable: "lease_epoch < 9223372036854775807",
        recoveries_increasable: "recoveries < 9223372036854775807",
        epoch_type: "'integer'",
        epoch_or_zero: "lease_epoch",
        skip_locked: " FOR UPDATE SKIP LOCKED",
        // A TEXT column of a UTF-8 database holds only readable text.
        undecodable_status: None,
        one_statement_writes: true,
        one_writer: false,
        transition_view: None,
    },
    begin: None
);

/// A [`SagaStore`](super::SagaStore) on PostgreSQL, in a schema of its own choosing (default
/// `public`): the [`SqlStore`] on PostgreSQL (feature `postgres`).
///
/// ```no_run
/// use steadfast_saga::store::PostgresStore;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), steadfast_saga::Error> {
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1/test", Some("sagas")).await?;
/// # let _ = store;
/// # Ok(()) }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub type PostgresStore = SqlStore<Postgres>;

fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

impl SqlStore<Postgres> {
    /// Connects to `url`, creates `schema` if needed (lower-case letters, digits and `_`),
    /// sets it as the search path of every connection, and applies the schema migrations
    /// (embedded, idempotent, serialised by an advisory lock).
    ///
    /// ```
    /// # use steadfast_saga::store::PostgresStore;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let bad = PostgresStore::connect("postgres://127.0.0.1:1/x", Some("Robert'); DROP")).await;
    /// assert!(bad.is_err());
    /// # }
    /// ```
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Self, Error> {
        Self::connect_with(url, schema, 8).await
    }

    /// Like [`PostgresStore::connect`] with a pool of at most `max_connections`.
    ///
    /// ```
    /// # use steadfast_saga::store::PostgresStore;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// assert!(PostgresStore::connect_with("not a url", None, 2).await.is_err());
    /// # }
    /// ```
    pub async fn connect_with(
        url: &str,
        schema: Option<&str>,
        max_connections: u32,
    ) -> Result<Self, Error> {
        if let Some(s) = schema {
            if !valid_schema(s) {
                return Err(Error::InvalidOperation(format!(
                    "schema name {s:?}: use lower-case letters, digits and _"
                )));
            }
        }
        let mut opts = PgConnectOptions::from_str(url)?;
        if let Some(s) = schema {
            opts = opts.options([("search_path", s)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        let store = SqlStore::on(pool, schema.map(str::to_string));
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(7305514275917336113)")
            .execute(&mut *tx)
            .await?;
        if let Some(s) = &self.schema {
            let sql = format!("CREATE SCHEMA IF NOT EXISTS \"{s}\"");
            sqlx::query(&sql).execute(&mut *tx).await?;
        }
        // An up-to-date schema gets no DDL at all: `CREATE INDEX IF NOT EXISTS` and `ALTER TABLE
        // ... IF NOT EXISTS` lock the table even when there is nothing to do, and one DDL
        // transaction taking a share lock then asking for an exclusive one deadlocks against a
        // running orchestrator's writes (another instance starting, the operator CLI opening the
        // log). The check reads the catalog only.
        let current: bool = sqlx::query_scalar(UP_TO_DATE).fetch_one(&mut *tx).await?;
        if !current {
            for m in MIGRATIONS {
                sqlx::query(m).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Drops this store's schema and everything in it (tests).
    ///
    /// ```no_run
    /// # use steadfast_saga::store::PostgresStore;
    /// # async fn f(s: PostgresStore) -> Result<(), steadfast_saga::Error> {
    /// s.drop_schema().await?;
    /// # Ok(()) }
    /// ```
    pub async fn drop_schema(&self) -> Result<(), Error> {
        if let Some(s) = &self.schema {
            let sql = format!("DROP SCHEMA IF EXISTS \"{s}\" CASCADE");
            sqlx::query(&sql).execute(&self.pool).await?;
        }
        Ok(())
    }
}
