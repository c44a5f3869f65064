//! The SQLite store: the embedded default. One database file in WAL mode; every write is a
//! `BEGIN IMMEDIATE` transaction (the database's single writer lock), so claims and fenced
//! writes serialise across processes sharing the file. Lease times use SQLite's clock
//! (`unixepoch('subsec')`), which is the host's clock for every process on the host.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use super::conformance::{Corrupt, Corruption};
use super::rows as row;
use super::{
    begin_detached, column, decode_err, duration_ms, Created, Event, HistoryEntry, Lease,
    ListQuery, NewSaga, SagaRecord, SagaStatus, SagaStore, SagaSummary, StepRecord, StoreFuture,
    Transition,
};
use crate::error::{Error, Fenced};
use crate::keys::SagaId;

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

/// A [`SagaStore`] on one SQLite database file (WAL mode, `synchronous = FULL` by default).
///
/// ```
/// use steadfast_saga::store::SqliteStore;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), steadfast_saga::Error> {
/// let path = std::env::temp_dir().join(format!("doc-{}.db", std::process::id()));
/// let store = SqliteStore::open(&path).await?;
/// # drop(store); let _ = std::fs::remove_file(&path);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Test hook: skip the lease-epoch check on writes and heartbeats.
    #[cfg(feature = "test-hooks")]
    unfenced: bool,
}

/// The fenced write of a transition's saga fields; `$fence` is the epoch check.
macro_rules! record_sql {
    ($fence:literal) => {
        concat!(
            "UPDATE steadfast_sagas SET
                status = COALESCE(?, status),
                compensating = COALESCE(?, compensating),
                cursor = COALESCE(?, cursor),
                error = CASE WHEN ? = 1 THEN ? ELSE error END,
                recoveries = CASE WHEN ? = 1 THEN 0 ELSE recoveries END,
                forward_only = CASE WHEN ? = 1 THEN 1 ELSE forward_only END,
                updated_ms = CAST(unixepoch('subsec') * 1000 AS INTEGER)
             WHERE id = ? AND (? = 0 OR cancel_requested IS NULL)",
            $fence
        )
    };
}

/// The fenced lease renewal; `$fence` is the epoch check.
macro_rules! heartbeat_sql {
    ($fence:literal) => {
        concat!(
            "UPDATE steadfast_sagas
             SET lease_expires_ms = CAST(unixepoch('subsec') * 1000 AS INTEGER) + ?
             WHERE id = ?",
            $fence
        )
    };
}

const RECORD: &str = record_sql!(" AND lease_epoch = ?");
const HEARTBEAT: &str = heartbeat_sql!(" AND lease_epoch = ?");
/// The same statements without the epoch check (the epoch is still bound): test hook only.
const RECORD_UNFENCED: &str = record_sql!(" AND ? IS NOT NULL");
const HEARTBEAT_UNFENCED: &str = heartbeat_sql!(" AND ? IS NOT NULL");

impl SqliteStore {
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
        let store = SqliteStore {
            pool,
            #[cfg(feature = "test-hooks")]
            unfenced: false,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), Error> {
        let mut tx = self.immediate().await?;
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
        tx.commit().await?;
        Ok(())
    }

    /// The connection pool (for tests and tools that read the tables directly).
    ///
    /// ```
    /// # use steadfast_saga::store::SqliteStore;
    /// fn pool(s: &SqliteStore) -> &sqlx::SqlitePool { s.pool() }
    /// # let _ = pool;
    /// ```
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// A `BEGIN IMMEDIATE` transaction; safe to drop at any point (see [`begin_detached`]).
    async fn immediate(&self) -> Result<Transaction<'static, Sqlite>, Error> {
        let pool = self.pool.clone();
        begin_detached(async move { pool.begin_with("BEGIN IMMEDIATE").await }).await
    }

    /// Test hook (feature `test-hooks`, never for production): a handle on the same database
    /// whose `record` and `heartbeat` skip the lease-epoch check, so a fenced-out orchestrator
    /// keeps writing and renewing. Used to show that the overlap detector of
    /// `tests/two_orchestrators.rs` catches a broken orchestrator.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn without_fencing_for_tests(&self) -> Self {
        SqliteStore {
            pool: self.pool.clone(),
            unfenced: true,
        }
    }

    /// `fenced`, or `unfenced` on a handle made by the test hook.
    fn fence(&self, fenced: &'static str, unfenced: &'static str) -> &'static str {
        #[cfg(feature = "test-hooks")]
        if self.unfenced {
            return unfenced;
        }
        let _ = unfenced;
        fenced
    }
}

/// Inserts or replaces one step record.
async fn upsert_step(
    tx: &mut Transaction<'static, Sqlite>,
    id: SagaId,
    s: &StepRecord,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO steadfast_saga_steps
            (saga_id, step, phase, state, attempts, output, error, updated_ms)
         VALUES (?, ?, ?, ?, ?, ?, ?, CAST(unixepoch('subsec') * 1000 AS INTEGER))
         ON CONFLICT (saga_id, step, phase) DO UPDATE SET
            state = excluded.state, attempts = excluded.attempts,
            output = excluded.output, error = excluded.error,
            updated_ms = excluded.updated_ms",
    )
    .bind(id.to_string())
    .bind(&s.step)
    .bind(s.phase.as_str())
    .bind(s.state.as_str())
    .bind(i64::from(s.attempts))
    .bind(&s.output)
    .bind(&s.error)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn push_history(
    tx: &mut Transaction<'static, Sqlite>,
    id: SagaId,
    epoch: i64,
    event: &Event,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO steadfast_saga_history (saga_id, at_ms, epoch, kind, step, phase, detail)
         VALUES (?, CAST(unixepoch('subsec') * 1000 AS INTEGER), ?, ?, ?, ?, ?)",
    )
    .bind(id.to_string())
    .bind(epoch)
    .bind(&event.kind)
    .bind(&event.step)
    .bind(event.phase.map(|p| p.as_str()))
    .bind(&event.detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Why a fenced write changed nothing: the saga is gone, its lease was taken over, or (for a
/// transition `unless_cancelled`) it was cancelled.
async fn refused(
    tx: &mut Transaction<'static, Sqlite>,
    lease: &Lease,
    unless_cancelled: bool,
) -> Result<Error, Error> {
    let row = sqlx::query("SELECT lease_epoch, cancel_requested FROM steadfast_sagas WHERE id = ?")
        .bind(lease.saga.to_string())
        .fetch_optional(&mut **tx)
        .await?;
    let fenced = Error::Fenced(Fenced {
        saga: lease.saga,
        epoch: lease.epoch,
    });
    let Some(row) = row else {
        return Ok(Error::NotFound(lease.saga));
    };
    let epoch: Option<i64> = row.try_get("lease_epoch").ok();
    let cancel: Option<String> = row.try_get("cancel_requested").ok().flatten();
    Ok(match cancel {
        Some(reason) if unless_cancelled && epoch == Some(lease.epoch) => {
            Error::CancelRequested(crate::error::CancelRequested {
                saga: lease.saga,
                reason,
            })
        }
        _ => fenced,
    })
}

/// Expired and not settled (active, or a status this version cannot read); a lease expiry that
/// is not a number counts as expired, so that such a row is not left unclaimed for ever.
macro_rules! claimable_sql {
    () => {
        concat!(
            "status NOT IN ",
            settled_statuses_sql!(),
            " AND (typeof(lease_expires_ms) NOT IN ('integer', 'real')
                   OR lease_expires_ms <= CAST(unixepoch('subsec') * 1000 AS INTEGER))"
        )
    };
}

/// A lease epoch a claim can increase: an integer below the maximum (SQLite would turn an
/// overflowing sum into a float, and text into 1).
macro_rules! fenceable_sql {
    () => {
        "typeof(lease_epoch) = 'integer' AND lease_epoch < 9223372036854775807"
    };
}

/// Claims up to `?3` claimable rows, oldest lease first, for owner `?1` and `?2` ms.
const CLAIM: &str = concat!(
    "UPDATE steadfast_sagas SET
        lease_epoch = lease_epoch + 1,
        recoveries = CASE WHEN typeof(recoveries) = 'integer' AND recoveries < 9223372036854775807
            THEN recoveries + 1 ELSE recoveries END,
        lease_owner = ?1,
        lease_expires_ms = CAST(unixepoch('subsec') * 1000 AS INTEGER) + ?2
     WHERE rowid IN (
        SELECT rowid FROM steadfast_sagas WHERE ",
    claimable_sql!(),
    " AND ",
    fenceable_sql!(),
    " ORDER BY lease_expires_ms LIMIT ?3)
     RETURNING rowid AS rid, id, lease_epoch"
);

/// Sets aside (puts in `needs_attention`, with the reason) claimable rows whose lease epoch
/// cannot be increased, so that no claim can fence their last owner: they are not claimed.
async fn set_aside_unfenceable(
    tx: &mut Transaction<'static, Sqlite>,
    owner: &str,
    limit: u32,
) -> Result<(), Error> {
    let rows = sqlx::query(concat!(
        "SELECT rowid AS rid, id, typeof(lease_epoch) AS epoch_type FROM steadfast_sagas WHERE ",
        claimable_sql!(),
        " AND NOT (",
        fenceable_sql!(),
        ") LIMIT ?"
    ))
    .bind(i64::from(limit))
    .fetch_all(&mut **tx)
    .await?;
    for r in &rows {
        let rid: i64 = r.try_get("rid")?;
        let ty: String = r.try_get("epoch_type")?;
        let saga = row::read_id(r).ok();
        let e = match (ty.as_str(), saga) {
            ("integer", Some(id)) => super::epoch_exhausted(id),
            _ => decode_err(
                saga,
                "the lease epoch",
                format!("stored as {ty}, not an integer"),
            ),
        };
        set_aside(tx, rid, owner, &e).await?;
    }
    Ok(())
}

/// Puts the row `rid` in `needs_attention` with `why`, releases its lease, and logs it: a row a
/// claim cannot hand out (its id or lease epoch cannot be read) stops no other saga. (SQLite lets
/// a `TEXT PRIMARY KEY` hold NULL: its history entry is filed under the empty id.)
async fn set_aside(
    tx: &mut Transaction<'static, Sqlite>,
    rid: i64,
    owner: &str,
    why: &Error,
) -> Result<(), Error> {
    let why = why.to_string();
    tracing::warn!(target: "steadfast::saga", error = %why,
        "a saga row cannot be claimed: set aside as needing attention");
    sqlx::query(
        "UPDATE steadfast_sagas SET status = 'needs_attention', error = ?, lease_owner = ?,
            lease_expires_ms = CAST(unixepoch('subsec') * 1000 AS INTEGER),
            updated_ms = CAST(unixepoch('subsec') * 1000 AS INTEGER)
         WHERE rowid = ?",
    )
    .bind(&why)
    .bind(owner)
    .bind(rid)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO steadfast_saga_history (saga_id, at_ms, epoch, kind, detail)
         SELECT COALESCE(id, ''), CAST(unixepoch('subsec') * 1000 AS INTEGER),
            CASE WHEN typeof(lease_epoch) = 'integer' THEN lease_epoch ELSE 0 END,
            'needs_attention', ?
         FROM steadfast_sagas WHERE rowid = ?",
    )
    .bind(&why)
    .bind(rid)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl SagaStore for SqliteStore {
    fn create<'a>(
        &'a self,
        new: NewSaga,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Created> {
        Box::pin(async move {
            let mut tx = self.immediate().await?;
            let inserted = sqlx::query(
                "INSERT INTO steadfast_sagas (id, saga_type, version, business_key, status, input,
                    lease_owner, lease_epoch, lease_expires_ms, deadline_ms, forward_only,
                    created_ms, updated_ms)
                 VALUES (?, ?, ?, ?, 'running', ?, ?, 1,
                    CAST(unixepoch('subsec') * 1000 AS INTEGER) + ?,
                    CAST(unixepoch('subsec') * 1000 AS INTEGER) + ?, ?,
                    CAST(unixepoch('subsec') * 1000 AS INTEGER),
                    CAST(unixepoch('subsec') * 1000 AS INTEGER))
                 ON CONFLICT (saga_type, business_key) DO NOTHING",
            )
            .bind(new.id.to_string())
            .bind(&new.saga_type)
            .bind(i64::from(new.version))
            .bind(&new.business_key)
            .bind(&new.input)
            .bind(owner)
            .bind(duration_ms(lease))
            .bind(new.deadline.map(duration_ms))
            .bind(i64::from(new.forward_only))
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                let row = sqlx::query(
                    "SELECT id FROM steadfast_sagas WHERE saga_type = ? AND business_key = ?",
                )
                .bind(&new.saga_type)
                .bind(&new.business_key)
                .fetch_one(&mut *tx)
                .await?;
                tx.rollback().await?;
                let id: String = row.try_get("id")?;
                return Ok(Created::Existing(row::parse_id(&id)?));
            }
            if let Some(s) = &new.first_step {
                upsert_step(&mut tx, new.id, s).await?;
            }
            let created = super::created_event(new.first_step.as_ref());
            push_history(&mut tx, new.id, 1, &created).await?;
            tx.commit().await?;
            Ok(Created::New(Lease {
                saga: new.id,
                owner: owner.to_string(),
                epoch: 1,
            }))
        })
    }

    fn load(&self, id: SagaId) -> StoreFuture<'_, SagaRecord> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            let row = sqlx::query(
                "SELECT saga_type, version, business_key, status, compensating, input, cursor,
                    recoveries, error, lease_epoch, lease_owner, deadline_ms, forward_only,
                    cancel_requested, created_ms,
                    CAST(unixepoch('subsec') * 1000 AS INTEGER) AS now_ms
                 FROM steadfast_sagas WHERE id = ?",
            )
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(Error::NotFound(id))?;
            let status: String = column(id, "the saga status", row.try_get("status"))?;
            // Read as a number (never computed on in SQL, where text would count as 0).
            let deadline: Option<i64> = column(id, "the deadline", row.try_get("deadline_ms"))?;
            let now: i64 = row.try_get("now_ms")?;
            let left = deadline.map(|d| d.saturating_sub(now));
            let created: i64 = column(id, "the creation time", row.try_get("created_ms"))?;
            let age = Duration::from_millis(now.saturating_sub(created).max(0) as u64);
            let steps = sqlx::query(
                "SELECT step, phase, state, attempts, output, error
                 FROM steadfast_saga_steps WHERE saga_id = ? ORDER BY rowid",
            )
            .bind(id.to_string())
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| row::step(id, r))
            .collect::<Result<Vec<_>, _>>()?;
            Ok(SagaRecord {
                id,
                saga_type: column(id, "the saga type", row.try_get("saga_type"))?,
                version: row::to_u32(
                    id,
                    "the version",
                    column(id, "the version", row.try_get("version"))?,
                )?,
                business_key: column(id, "the business key", row.try_get("business_key"))?,
                status: SagaStatus::from_str(&status)
                    .map_err(|e| decode_err(Some(id), "the saga status", e))?,
                compensating: column::<i64>(
                    id,
                    "the compensating flag",
                    row.try_get("compensating"),
                )? != 0,
                input: column(id, "the saga input", row.try_get("input"))?,
                cursor: column(id, "the cursor", row.try_get("cursor"))?,
                recoveries: row::to_u32(
                    id,
                    "the recovery count",
                    column(id, "the recovery count", row.try_get("recoveries"))?,
                )?,
                error: column(id, "the kept error", row.try_get("error"))?,
                epoch: column(id, "the lease epoch", row.try_get("lease_epoch"))?,
                owner: column(id, "the lease owner", row.try_get("lease_owner"))?,
                deadline_remaining: left.map(|ms| Duration::from_millis(ms.max(0) as u64)),
                age,
                forward_only: column::<i64>(
                    id,
                    "the forward-only flag",
                    row.try_get("forward_only"),
                )? != 0,
                cancel_requested: column(
                    id,
                    "the cancel request",
                    row.try_get("cancel_requested"),
                )?,
                steps,
            })
        })
    }

    fn record<'a>(&'a self, lease: &'a Lease, t: Transition) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.immediate().await?;
            let (set_error, error) = match &t.error {
                Some(e) => (1i64, e.clone()),
                None => (0, None),
            };
            let updated = sqlx::query(self.fence(RECORD, RECORD_UNFENCED))
                .bind(t.status.map(|s| s.as_str()))
                .bind(t.compensating.map(i64::from))
                .bind(t.cursor)
                .bind(set_error)
                .bind(error)
                .bind(i64::from(t.reset_recoveries))
                .bind(i64::from(t.forward_only))
                .bind(lease.saga.to_string())
                .bind(i64::from(t.unless_cancelled))
                .bind(lease.epoch)
                .execute(&mut *tx)
                .await?;
            if updated.rows_affected() == 0 {
                let e = refused(&mut tx, lease, t.unless_cancelled).await?;
                tx.rollback().await?;
                return Err(e);
            }
            if let Some(s) = &t.step {
                upsert_step(&mut tx, lease.saga, s).await?;
            }
            push_history(&mut tx, lease.saga, lease.epoch, &t.event).await?;
            tx.commit().await?;
            Ok(())
        })
    }

    fn heartbeat<'a>(&'a self, lease: &'a Lease, lease_for: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut tx = self.immediate().await?;
            let updated = sqlx::query(self.fence(HEARTBEAT, HEARTBEAT_UNFENCED))
                .bind(duration_ms(lease_for))
                .bind(lease.saga.to_string())
                .bind(lease.epoch)
                .execute(&mut *tx)
                .await?;
            if updated.rows_affected() == 0 {
                let e = refused(&mut tx, lease, false).await?;
                tx.rollback().await?;
                return Err(e);
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query(
                "UPDATE steadfast_sagas
                 SET lease_expires_ms = CAST(unixepoch('subsec') * 1000 AS INTEGER)
                 WHERE id = ? AND lease_epoch = ?",
            )
            .bind(lease.saga.to_string())
            .bind(lease.epoch)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn claim_expired<'a>(
        &'a self,
        owner: &'a str,
        lease_for: Duration,
        limit: u32,
    ) -> StoreFuture<'a, Vec<Lease>> {
        Box::pin(async move {
            // BEGIN IMMEDIATE takes the write lock first: two claimers (threads or processes)
            // serialise here and the second sees the first one's new expiry.
            let mut tx = self.immediate().await?;
            set_aside_unfenceable(&mut tx, owner, limit).await?;
            let mut leases = Vec::new();
            // Rows set aside do not count against the limit: claim again for their places.
            while let Some(want) = limit.checked_sub(leases.len() as u32).filter(|w| *w > 0) {
                let rows = sqlx::query(CLAIM)
                    .bind(owner)
                    .bind(duration_ms(lease_for))
                    .bind(i64::from(want))
                    .fetch_all(&mut *tx)
                    .await?;
                let mut any_set_aside = false;
                for r in &rows {
                    let rid: i64 = r.try_get("rid")?;
                    match row::read_id(r) {
                        Ok(saga) => {
                            let lease = Lease {
                                saga,
                                owner: owner.to_string(),
                                epoch: column(saga, "the lease epoch", r.try_get("lease_epoch"))?,
                            };
                            push_history(
                                &mut tx,
                                lease.saga,
                                lease.epoch,
                                &Event::new("claimed").detail(format!("by {owner}")),
                            )
                            .await?;
                            leases.push(lease);
                        }
                        Err(e) => {
                            set_aside(&mut tx, rid, owner, &e).await?;
                            any_set_aside = true;
                        }
                    }
                }
                if !any_set_aside {
                    break;
                }
            }
            tx.commit().await?;
            Ok(leases)
        })
    }

    fn take_over<'a>(
        &'a self,
        id: SagaId,
        owner: &'a str,
        lease_for: Duration,
    ) -> StoreFuture<'a, Lease> {
        Box::pin(async move {
            let mut tx = self.immediate().await?;
            let row = sqlx::query(
                "UPDATE steadfast_sagas SET
                    lease_epoch = lease_epoch + 1,
                    lease_owner = ?,
                    lease_expires_ms = CAST(unixepoch('subsec') * 1000 AS INTEGER) + ?
                 WHERE id = ? AND typeof(lease_epoch) = 'integer'
                    AND lease_epoch < 9223372036854775807
                 RETURNING lease_epoch",
            )
            .bind(owner)
            .bind(duration_ms(lease_for))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                let exists = sqlx::query("SELECT 1 FROM steadfast_sagas WHERE id = ?")
                    .bind(id.to_string())
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.rollback().await?;
                return Err(match exists {
                    Some(_) => super::epoch_exhausted(id),
                    None => Error::NotFound(id),
                });
            };
            let epoch: i64 = row.try_get("lease_epoch")?;
            push_history(
                &mut tx,
                id,
                epoch,
                &Event::new("taken_over").detail(format!("by {owner}")),
            )
            .await?;
            tx.commit().await?;
            Ok(Lease {
                saga: id,
                owner: owner.to_string(),
                epoch,
            })
        })
    }

    fn list(&self, query: ListQuery) -> StoreFuture<'_, Vec<SagaSummary>> {
        Box::pin(async move {
            // A status this version cannot read is listed as needs_attention.
            let rows = sqlx::query(concat!(
                "SELECT id, saga_type, business_key, status, error, recoveries
                 FROM steadfast_sagas
                 WHERE (?1 IS NULL OR status = ?1
                    OR (?1 = 'needs_attention' AND status NOT IN ",
                known_statuses_sql!(),
                "))
                   AND (?3 IS NULL OR saga_type = ?3)
                 ORDER BY created_ms, rowid LIMIT ?2"
            ))
            .bind(query.status.map(|s| s.as_str()))
            .bind(i64::from(query.limit))
            .bind(query.saga_type)
            .fetch_all(&self.pool)
            .await?;
            Ok(rows.iter().map(row::summary).collect())
        })
    }

    fn history(&self, id: SagaId) -> StoreFuture<'_, Vec<HistoryEntry>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            if sqlx::query("SELECT 1 FROM steadfast_sagas WHERE id = ?")
                .bind(id.to_string())
                .fetch_optional(&mut *conn)
                .await?
                .is_none()
            {
                return Err(Error::NotFound(id));
            }
            let rows = sqlx::query(
                "SELECT seq, at_ms, epoch, kind, step, phase, detail
                 FROM steadfast_saga_history WHERE saga_id = ? ORDER BY seq",
            )
            .bind(id.to_string())
            .fetch_all(&mut *conn)
            .await?;
            rows.iter().map(|r| row::history(id, r)).collect()
        })
    }

    fn request_cancel<'a>(&'a self, id: SagaId, reason: &'a str) -> StoreFuture<'a, SagaStatus> {
        Box::pin(async move {
            let mut tx = self.immediate().await?;
            let updated = sqlx::query(
                "UPDATE steadfast_sagas SET cancel_requested = ?,
                    updated_ms = CAST(unixepoch('subsec') * 1000 AS INTEGER)
                 WHERE id = ? AND status IN ('running', 'needs_attention') AND compensating = 0
                    AND forward_only = 0 AND cancel_requested IS NULL
                 RETURNING status, lease_epoch",
            )
            .bind(reason)
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = updated {
                let status: String = column(id, "the saga status", r.try_get("status"))?;
                let epoch: i64 = column(id, "the lease epoch", r.try_get("lease_epoch"))?;
                push_history(
                    &mut tx,
                    id,
                    epoch,
                    &Event::new("cancel_requested").detail(reason),
                )
                .await?;
                tx.commit().await?;
                return SagaStatus::from_str(&status)
                    .map_err(|e| decode_err(Some(id), "the saga status", e));
            }
            let row = sqlx::query(
                "SELECT status, compensating, forward_only FROM steadfast_sagas WHERE id = ?",
            )
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(Error::NotFound(id))?;
            tx.rollback().await?;
            let status: String = column(id, "the saga status", row.try_get("status"))?;
            let status = SagaStatus::from_str(&status)
                .map_err(|e| decode_err(Some(id), "the saga status", e))?;
            let compensating: i64 =
                column(id, "the compensating flag", row.try_get("compensating"))?;
            let forward_only: i64 =
                column(id, "the forward-only flag", row.try_get("forward_only"))?;
            super::cancel_verdict(id, status, compensating != 0, forward_only != 0)
        })
    }
}

impl Corrupt for SqliteStore {
    fn corrupt(&self, id: SagaId, what: Corruption) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let sql = match what {
                Corruption::InputNotJson => {
                    "UPDATE steadfast_sagas SET input = '{not json' WHERE id = ?"
                }
                Corruption::UnknownStatus => {
                    "UPDATE steadfast_sagas SET status = 'bogus' WHERE id = ?"
                }
                // SQLite keeps whatever type is stored: a blob is not text at all.
                Corruption::UndecodableStatus => {
                    "UPDATE steadfast_sagas SET status = X'00FF' WHERE id = ?"
                }
                Corruption::UnknownStepState => {
                    "UPDATE steadfast_saga_steps SET state = 'bogus' WHERE saga_id = ?"
                }
                Corruption::EpochExhausted => {
                    "UPDATE steadfast_sagas SET lease_epoch = 9223372036854775807 WHERE id = ?"
                }
                Corruption::RecoveriesExhausted => {
                    "UPDATE steadfast_sagas SET recoveries = 9223372036854775807 WHERE id = ?"
                }
                // Unique, and not a UUID.
                Corruption::IdNotUuid => {
                    "UPDATE steadfast_sagas SET id = 'not-a-uuid:' || id WHERE id = ?"
                }
            };
            let r = sqlx::query(sql)
                .bind(id.to_string())
                .execute(&self.pool)
                .await?;
            Ok(r.rows_affected() > 0)
        })
    }
}
