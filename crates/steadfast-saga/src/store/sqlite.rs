//! The SQLite dialect: the embedded default. One database file in WAL mode; every write is a
//! `BEGIN IMMEDIATE` transaction (the database's single writer lock), so claims and fenced
//! writes serialise across processes sharing the file. Lease times use SQLite's clock
//! (`unixepoch('subsec')`), which is the host's clock for every process on the host. Times are
//! stored as integer milliseconds; SQLite keeps whatever type a value was written with, so the
//! fragments below never compute on a value that is not an integer.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Sqlite;

use super::sql::{impl_driver, Fragments, SqlStore};
use crate::error::Error;

/// The schema, applied by [`SqliteStore::open`] (embedded; no database needed at build time).
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS steadfast_sagas (
        id TEXT PRIMARY KEY,
        saga_type TEXT NOT NULL,
        version INTEGER NOT NULL,
        business_key TEXT NOT NULL,
        status TEXT NOT NULL,
        compensating INTEGER NOT NULL DEFAULT 0,
        input TEXT NOT NULL,
        cursor INTEGER NOT NULL DEFAULT 0,
        recoveries INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        lease_owner TEXT,
        lease_epoch INTEGER NOT NULL,
        lease_expires_ms INTEGER NOT NULL,
        deadline_ms INTEGER,
        forward_only INTEGER NOT NULL DEFAULT 0,
        cancel_requested TEXT,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL,
        UNIQUE (saga_type, business_key)
    )",
    "CREATE INDEX IF NOT EXISTS steadfast_sagas_claim
        ON steadfast_sagas (status, lease_expires_ms)",
    concat!(
        "CREATE INDEX IF NOT EXISTS steadfast_sagas_claimable
            ON steadfast_sagas (lease_expires_ms) WHERE status NOT IN ",
        settled_statuses_sql!()
    ),
    "CREATE TABLE IF NOT EXISTS steadfast_saga_steps (
        saga_id TEXT NOT NULL,
        step TEXT NOT NULL,
        phase TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        output TEXT,
        error TEXT,
        updated_ms INTEGER NOT NULL,
        PRIMARY KEY (saga_id, step, phase)
    )",
    "CREATE TABLE IF NOT EXISTS steadfast_saga_history (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        saga_id TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        epoch INTEGER NOT NULL,
        kind TEXT NOT NULL,
        step TEXT,
        phase TEXT,
        detail TEXT
    )",
    "CREATE INDEX IF NOT EXISTS steadfast_saga_history_by_saga
        ON steadfast_saga_history (saga_id, seq)",
];

/// Columns added after the first schema: (name, definition), added to older databases on open.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("forward_only", "INTEGER NOT NULL DEFAULT 0"),
    ("cancel_requested", "TEXT"),
];

/// The store clock: milliseconds since the Unix epoch.
macro_rules! now_ms {
    () => {
        "CAST(unixepoch('subsec') * 1000 AS INTEGER)"
    };
}

/// A transition in one statement: an `INSERT` into this view runs the trigger below, which
/// checks the fence (the lease epoch, unless `fenced` is 0, the test hook's unfenced handle; and
/// the cancel request, `unless_cancelled`) and fails the statement with "steadfast: transition
/// refused" when it does not hold, then updates the saga row, adds the history entry and
/// inserts or replaces the step record (when `step` is not NULL). One statement is atomic on its
/// own and takes the write lock at its start as `BEGIN IMMEDIATE` does: the write is one call to
/// the database instead of `BEGIN IMMEDIATE`, the statements and `COMMIT`, and dropping it half
/// way leaves no transaction open. Created after the columns of [`ADDED_COLUMNS`]; versioned by
/// name (a changed trigger gets a new name).
const TRANSITIONS: &[&str] = &[
    "CREATE VIEW IF NOT EXISTS steadfast_saga_transitions_v1 AS SELECT
        NULL AS saga_id, NULL AS epoch, NULL AS fenced, NULL AS unless_cancelled,
        NULL AS status, NULL AS compensating, NULL AS cursor, NULL AS set_error, NULL AS error,
        NULL AS reset_recoveries, NULL AS forward_only, NULL AS kind, NULL AS event_step,
        NULL AS event_phase, NULL AS detail, NULL AS step, NULL AS phase, NULL AS state,
        NULL AS attempts, NULL AS output, NULL AS step_error
        WHERE 0",
    concat!(
        "CREATE TRIGGER IF NOT EXISTS steadfast_saga_transition_v1
        INSTEAD OF INSERT ON steadfast_saga_transitions_v1
        BEGIN
            SELECT RAISE(ABORT, 'steadfast: transition refused') WHERE NOT EXISTS (
                SELECT 1 FROM steadfast_sagas WHERE id = NEW.saga_id
                    AND (NEW.fenced = 0 OR lease_epoch = NEW.epoch)
                    AND (NEW.unless_cancelled = 0 OR cancel_requested IS NULL));
            UPDATE steadfast_sagas SET
                status = COALESCE(NEW.status, status),
                compensating = COALESCE(NEW.compensating, compensating),
                cursor = COALESCE(NEW.cursor, cursor),
                error = CASE WHEN NEW.set_error THEN NEW.error ELSE error END,
                recoveries = CASE WHEN NEW.reset_recoveries THEN 0 ELSE recoveries END,
                forward_only = CASE WHEN NEW.forward_only THEN TRUE ELSE forward_only END,
                updated_ms = ",
        now_ms!(),
        "
            WHERE id = NEW.saga_id;
            INSERT INTO steadfast_saga_history
                (saga_id, at_ms, epoch, kind, step, phase, detail)
            VALUES (NEW.saga_id, ",
        now_ms!(),
        ", NEW.epoch, NEW.kind, NEW.event_step,
                NEW.event_phase, NEW.detail);
            INSERT INTO steadfast_saga_steps
                (saga_id, step, phase, state, attempts, output, error, updated_ms)
            SELECT NEW.saga_id, NEW.step, NEW.phase, NEW.state, NEW.attempts, NEW.output,
                NEW.step_error, ",
        now_ms!(),
        "
            WHERE NEW.step IS NOT NULL
            ON CONFLICT (saga_id, step, phase) DO UPDATE SET
                state = excluded.state, attempts = excluded.attempts,
                output = excluded.output, error = excluded.error,
                updated_ms = excluded.updated_ms;
        END"
    ),
];

impl_driver!(
    Sqlite,
    fragments: Fragments {
        now: now_ms!(),
        history_now: now_ms!(),
        ms: ("", ""),
        expires: "lease_expires_ms",
        deadline: "deadline_ms",
        created: "created_ms",
        updated: "updated_ms",
        history_at: "at_ms",
        history_at_ms: "at_ms",
        row_key: "rowid",
        step_order: "rowid",
        age_ms: concat!(
            "CASE WHEN typeof(created_ms) <> 'integer' THEN created_ms
                  WHEN created_ms >= ", now_ms!(), " THEN 0
                  ELSE ", now_ms!(), " - MAX(created_ms, 0) END"
        ),
        left_ms: concat!(
            "CASE WHEN typeof(deadline_ms) <> 'integer' THEN deadline_ms
                  WHEN deadline_ms <= ", now_ms!(), " THEN 0
                  ELSE deadline_ms - ", now_ms!(), " END"
        ),
        // A lease expiry that is not a number counts as expired, so that such a row is not left
        // unclaimed for ever.
        claimable: concat!(
            "status NOT IN ",
            settled_statuses_sql!(),
            " AND (typeof(lease_expires_ms) NOT IN ('integer', 'real')
                   OR lease_expires_ms <= ", now_ms!(), ")"
        ),
        // SQLite would turn an overflowing sum into a float, and text into 1.
        fenceable: "typeof(lease_epoch) = 'integer' AND lease_epoch < 9223372036854775807",
        recoveries_increasable:
            "typeof(recoveries) = 'integer' AND recoveries < 9223372036854775807",
        epoch_type: "typeof(lease_epoch)",
        epoch_or_zero: "CASE WHEN typeof(lease_epoch) = 'integer' THEN lease_epoch ELSE 0 END",
        skip_locked: "",
        // SQLite keeps whatever type is stored: a blob is not text at all.
        undecodable_status: Some("UPDATE steadfast_sagas SET status = X'00FF' WHERE id = $1"),
        one_statement_writes: false,
        one_writer: true,
        transition_view: Some("steadfast_saga_transitions_v1"),
    },
    begin: Some("BEGIN IMMEDIATE")
);

/// A [`SagaStore`](super::SagaStore) on one SQLite database file (WAL mode, `synchronous =
/// FULL` by default): the [`SqlStore`] on SQLite (feature `sqlite`, on by default).
///
/// ```
/// use steadfast_saga::store::SqliteStore;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), steadfast_saga::Error> {
/// let path = std::env::temp_dir().join(format!("doc-{}.db", std::process::id()));
/// let store = SqliteStore::open(&path).await?;
/// # drop(store); let _ = std::fs::remove_file(&path);
/// # Ok(()) }
/// ```
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub type SqliteStore = SqlStore<Sqlite>;

impl SqlStore<Sqlite> {
    /// Opens (creating if needed) the database at `path` and applies the schema.
    ///
    /// ```
    /// # use steadfast_saga::store::SqliteStore;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let dir = std::env::temp_dir().join("steadfast-no-such-dir/a/b");
    /// assert!(SqliteStore::open(dir.join("x.db")).await.is_err());
    /// # }
    /// ```
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, Error> {
        Self::open_with(path, true).await
    }

    /// Like [`SqliteStore::open`]; `durable = false` uses `synchronous = NORMAL` (survives a
    /// process crash, may lose the last transactions on power loss; faster).
    ///
    /// ```
    /// # use steadfast_saga::store::SqliteStore;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), steadfast_saga::Error> {
    /// let path = std::env::temp_dir().join(format!("doc-nd-{}.db", std::process::id()));
    /// let store = SqliteStore::open_with(&path, false).await?;
    /// # drop(store); let _ = std::fs::remove_file(&path);
    /// # Ok(()) }
    /// ```
    pub async fn open_with(path: impl AsRef<Path>, durable: bool) -> Result<Self, Error> {
        let opts = SqliteConnectOptions::new()
            .filename(path.as_ref())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if durable {
                SqliteSynchronous::Full
            } else {
                SqliteSynchronous::Normal
            })
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        let store = SqlStore::on(pool, None);
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), Error> {
        let mut tx = self.begin().await?;
        for m in MIGRATIONS {
            sqlx::query(m).execute(&mut *tx).await?;
        }
        for (name, def) in ADDED_COLUMNS {
            let present: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM pragma_table_info('steadfast_sagas') WHERE name = ?",
            )
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
            if present.is_none() {
                let sql = format!("ALTER TABLE steadfast_sagas ADD COLUMN {name} {def}");
                sqlx::query(&sql).execute(&mut *tx).await?;
            }
        }
        for t in TRANSITIONS {
            sqlx::query(t).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
