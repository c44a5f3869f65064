//! The PostgreSQL store: for many orchestrator instances on one database. Claims use
//! `SELECT ... FOR UPDATE SKIP LOCKED`; every fenced write is an `UPDATE ... WHERE lease_epoch =
//! $epoch` in the transition's transaction; lease times use the database's `now()`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};

use super::conformance::{Corrupt, Corruption};
use super::rows as row;
use super::{
    begin_detached, column, decode_err, duration_ms, Created, Event, HistoryEntry, Lease,
    ListQuery, NewSaga, SagaRecord, SagaStatus, SagaStore, SagaSummary, StepRecord, StoreFuture,
    Transition,
};
use crate::error::{Error, Fenced};
use crate::keys::SagaId;

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

/// A [`SagaStore`] on PostgreSQL, in a schema of its own choosing (default `public`).
///
/// ```no_run
/// use steadfast_saga::store::PostgresStore;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), steadfast_saga::Error> {
/// let store = PostgresStore::connect("postgres://postgres@127.0.0.1/test", Some("sagas")).await?;
/// # let _ = store;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    schema: Option<String>,
    /// Test hook: skip the lease-epoch check on writes and heartbeats.
    #[cfg(feature = "test-hooks")]
    unfenced: bool,
}

/// The fenced write of a transition's saga fields; `$fence` is the epoch check.
macro_rules! record_sql {
    ($fence:literal) => {
        concat!(
            "UPDATE steadfast_sagas SET
                status = COALESCE($1, status),
                compensating = COALESCE($2, compensating),
                cursor = COALESCE($3, cursor),
                error = CASE WHEN $4 THEN $5 ELSE error END,
                recoveries = CASE WHEN $6 THEN 0 ELSE recoveries END,
                forward_only = forward_only OR $9,
                updated_at = now()
             WHERE id = $7 AND (NOT $10 OR cancel_requested IS NULL)",
            $fence
        )
    };
}

/// The fenced lease renewal; `$fence` is the epoch check.
macro_rules! heartbeat_sql {
    ($fence:literal) => {
        concat!(
            "UPDATE steadfast_sagas
             SET lease_expires_at = now() + $1::bigint * interval '1 millisecond'
             WHERE id = $2",
            $fence
        )
    };
}

const RECORD: &str = record_sql!(" AND lease_epoch = $8");
const HEARTBEAT: &str = heartbeat_sql!(" AND lease_epoch = $3");
/// The same statements without the epoch check (the epoch is still bound): test hook only.
const RECORD_UNFENCED: &str = record_sql!(" AND $8::bigint IS NOT NULL");
const HEARTBEAT_UNFENCED: &str = heartbeat_sql!(" AND $3::bigint IS NOT NULL");

fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

impl PostgresStore {
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
        let store = PostgresStore {
            pool,
            schema: schema.map(str::to_string),
            #[cfg(feature = "test-hooks")]
            unfenced: false,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// A transaction; safe to drop at any point (see [`begin_detached`]).
    async fn begin(&self) -> Result<Transaction<'static, Postgres>, Error> {
        let pool = self.pool.clone();
        begin_detached(async move { pool.begin().await }).await
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

    /// The connection pool (for tests and tools that read the tables directly).
    ///
    /// ```
    /// # use steadfast_saga::store::PostgresStore;
    /// fn pool(s: &PostgresStore) -> &sqlx::PgPool { s.pool() }
    /// # let _ = pool;
    /// ```
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Test hook (feature `test-hooks`, never for production): a handle on the same database
    /// whose `record` and `heartbeat` skip the lease-epoch check, so a fenced-out orchestrator
    /// keeps writing and renewing. Used to show that the overlap detector of
    /// `tests/two_orchestrators.rs` catches a broken orchestrator.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn without_fencing_for_tests(&self) -> Self {
        PostgresStore {
            pool: self.pool.clone(),
            schema: self.schema.clone(),
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
    tx: &mut Transaction<'static, Postgres>,
    id: SagaId,
    s: &StepRecord,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO steadfast_saga_steps
            (saga_id, step, phase, state, attempts, output, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (saga_id, step, phase) DO UPDATE SET
            state = excluded.state, attempts = excluded.attempts,
            output = excluded.output, error = excluded.error, updated_at = now()",
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
    tx: &mut Transaction<'static, Postgres>,
    id: SagaId,
    epoch: i64,
    event: &Event,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO steadfast_saga_history (saga_id, epoch, kind, step, phase, detail)
         VALUES ($1, $2, $3, $4, $5, $6)",
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
    tx: &mut Transaction<'static, Postgres>,
    lease: &Lease,
    unless_cancelled: bool,
) -> Result<Error, Error> {
    let row =
        sqlx::query("SELECT lease_epoch, cancel_requested FROM steadfast_sagas WHERE id = $1")
            .bind(lease.saga.to_string())
            .fetch_optional(&mut **tx)
            .await?;
    let Some(row) = row else {
        return Ok(Error::NotFound(lease.saga));
    };
    let epoch: i64 = row.try_get("lease_epoch")?;
    let cancel: Option<String> = row.try_get("cancel_requested")?;
    Ok(match cancel {
        Some(reason) if unless_cancelled && epoch == lease.epoch => {
            Error::CancelRequested(crate::error::CancelRequested {
                saga: lease.saga,
                reason,
            })
        }
        _ => Error::Fenced(Fenced {
            saga: lease.saga,
            epoch: lease.epoch,
        }),
    })
}

/// Expired and not settled (active, or a status this version cannot read); a lease that never
/// expires (`infinity`, which no store write produces) counts as expired, so that such a row is
/// not left unclaimed for ever.
macro_rules! claimable_sql {
    () => {
        concat!(
            "status NOT IN ",
            settled_statuses_sql!(),
            " AND (lease_expires_at <= now() OR lease_expires_at = 'infinity')"
        )
    };
}

/// Claims up to `$3` claimable rows, oldest lease first, for owner `$1` and `$2` ms. Rows whose
/// epoch cannot be increased are left to `set_aside_unfenceable` (an overflow would fail the
/// whole statement); a recovery count at its maximum stays there.
const CLAIM: &str = concat!(
    "WITH c AS (
        SELECT id FROM steadfast_sagas WHERE ",
    claimable_sql!(),
    " AND lease_epoch < 9223372036854775807
        ORDER BY lease_expires_at
        LIMIT $3
        FOR UPDATE SKIP LOCKED)
     UPDATE steadfast_sagas s SET
        lease_epoch = s.lease_epoch + 1,
        recoveries = CASE WHEN s.recoveries < 9223372036854775807
            THEN s.recoveries + 1 ELSE s.recoveries END,
        lease_owner = $1,
        lease_expires_at = now() + $2::bigint * interval '1 millisecond'
     FROM c WHERE s.id = c.id
     RETURNING s.id, s.lease_epoch"
);

/// Sets aside (puts in `needs_attention`, with the reason) claimable rows whose lease epoch is at
/// its maximum, so that no claim can fence their last owner: they are not claimed.
async fn set_aside_unfenceable(
    tx: &mut Transaction<'static, Postgres>,
    owner: &str,
    limit: u32,
) -> Result<(), Error> {
    let rows = sqlx::query(concat!(
        "SELECT id FROM steadfast_sagas WHERE ",
        claimable_sql!(),
        " AND lease_epoch >= 9223372036854775807
         ORDER BY lease_expires_at LIMIT $1 FOR UPDATE SKIP LOCKED"
    ))
    .bind(i64::from(limit))
    .fetch_all(&mut **tx)
    .await?;
    for r in &rows {
        let raw: String = r.try_get("id")?;
        let e = match row::read_id(r) {
            Ok(id) => super::epoch_exhausted(id),
            Err(e) => e,
        };
        set_aside(tx, &raw, owner, &e).await?;
    }
    Ok(())
}

/// Puts the row whose stored id is `raw` in `needs_attention` with `why`, releases its lease, and
/// logs it: a row a claim cannot hand out (its id cannot be read, or its lease epoch cannot be
/// increased) stops no other saga.
async fn set_aside(
    tx: &mut Transaction<'static, Postgres>,
    raw: &str,
    owner: &str,
    why: &Error,
) -> Result<(), Error> {
    let why = why.to_string();
    tracing::warn!(target: "steadfast::saga", error = %why,
        "a saga row cannot be claimed: set aside as needing attention");
    sqlx::query(
        "UPDATE steadfast_sagas SET status = 'needs_attention', error = $1, lease_owner = $2,
            lease_expires_at = now(), updated_at = now()
         WHERE id = $3",
    )
    .bind(&why)
    .bind(owner)
    .bind(raw)
    .execute(&mut **tx)
    .await?;
    push_history_raw(tx, raw, &Event::new("needs_attention").detail(why)).await
}

/// A history entry for the row whose stored id is `raw`, at its current epoch.
async fn push_history_raw(
    tx: &mut Transaction<'static, Postgres>,
    raw: &str,
    event: &Event,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO steadfast_saga_history (saga_id, epoch, kind, step, phase, detail)
         SELECT id, lease_epoch, $2, $3, $4, $5 FROM steadfast_sagas WHERE id = $1",
    )
    .bind(raw)
    .bind(&event.kind)
    .bind(&event.step)
    .bind(event.phase.map(|p| p.as_str()))
    .bind(&event.detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl SagaStore for PostgresStore {
    fn create<'a>(
        &'a self,
        new: NewSaga,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Created> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO steadfast_sagas (id, saga_type, version, business_key, status, input,
                    lease_owner, lease_epoch, lease_expires_at, deadline_at, forward_only)
                 VALUES ($1, $2, $3, $4, 'running', $5, $6, 1,
                    now() + $7::bigint * interval '1 millisecond',
                    now() + $8::bigint * interval '1 millisecond', $9)
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
            .bind(new.forward_only)
            .execute(&mut *tx)
            .await?;
            if inserted.rows_affected() == 0 {
                let row = sqlx::query(
                    "SELECT id FROM steadfast_sagas WHERE saga_type = $1 AND business_key = $2",
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
            // A deadline of `infinity` is no deadline, `-infinity` one long past: extract() of an
            // infinite interval would not fit a bigint.
            let row = sqlx::query(
                "SELECT saga_type, version, business_key, status, compensating, input, cursor,
                    recoveries, error, lease_epoch, lease_owner, forward_only, cancel_requested,
                    CASE WHEN isfinite(created_at)
                         THEN GREATEST((extract(epoch FROM (now() - created_at)) * 1000)::bigint, 0)
                    END AS age_ms,
                    CASE WHEN deadline_at IS NULL OR deadline_at = 'infinity' THEN NULL
                         WHEN deadline_at = '-infinity' THEN 0
                         ELSE GREATEST(
                            (extract(epoch FROM (deadline_at - now())) * 1000)::bigint, 0)
                    END AS left_ms
                 FROM steadfast_sagas WHERE id = $1",
            )
            .bind(id.to_string())
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(Error::NotFound(id))?;
            let status: String = column(id, "the saga status", row.try_get("status"))?;
            let left: Option<i64> = column(id, "the deadline", row.try_get("left_ms"))?;
            // NULL for an infinite creation time: a decode error.
            let age: i64 = column(id, "the creation time", row.try_get("age_ms"))?;
            let steps = sqlx::query(
                "SELECT step, phase, state, attempts, output, error
                 FROM steadfast_saga_steps WHERE saga_id = $1 ORDER BY seq",
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
                compensating: column(id, "the compensating flag", row.try_get("compensating"))?,
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
                age: Duration::from_millis(age.max(0) as u64),
                forward_only: column(id, "the forward-only flag", row.try_get("forward_only"))?,
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
            let mut tx = self.begin().await?;
            let (set_error, error) = match &t.error {
                Some(e) => (true, e.clone()),
                None => (false, None),
            };
            // The row lock taken here orders this write against any concurrent claim.
            let updated = sqlx::query(self.fence(RECORD, RECORD_UNFENCED))
                .bind(t.status.map(|s| s.as_str()))
                .bind(t.compensating)
                .bind(t.cursor)
                .bind(set_error)
                .bind(error)
                .bind(t.reset_recoveries)
                .bind(lease.saga.to_string())
                .bind(lease.epoch)
                .bind(t.forward_only)
                .bind(t.unless_cancelled)
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
            let mut tx = self.begin().await?;
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
                "UPDATE steadfast_sagas SET lease_expires_at = now()
                 WHERE id = $1 AND lease_epoch = $2",
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
            let mut tx = self.begin().await?;
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
                            // A TEXT column of a UTF-8 database is always readable as text.
                            let raw: String = r.try_get("id")?;
                            set_aside(&mut tx, &raw, owner, &e).await?;
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
            let mut tx = self.begin().await?;
            let row = sqlx::query(
                "UPDATE steadfast_sagas SET
                    lease_epoch = lease_epoch + 1,
                    lease_owner = $1,
                    lease_expires_at = now() + $2::bigint * interval '1 millisecond'
                 WHERE id = $3 AND lease_epoch < 9223372036854775807 RETURNING lease_epoch",
            )
            .bind(owner)
            .bind(duration_ms(lease_for))
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                let exists = sqlx::query("SELECT 1 FROM steadfast_sagas WHERE id = $1")
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
                 WHERE ($1::text IS NULL OR status = $1
                    OR ($1 = 'needs_attention' AND status NOT IN ",
                known_statuses_sql!(),
                "))
                   AND ($3::text IS NULL OR saga_type = $3)
                 ORDER BY created_at, id LIMIT $2"
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
            if sqlx::query("SELECT 1 FROM steadfast_sagas WHERE id = $1")
                .bind(id.to_string())
                .fetch_optional(&mut *conn)
                .await?
                .is_none()
            {
                return Err(Error::NotFound(id));
            }
            let rows = sqlx::query(
                // An infinite time reads as NULL: a decode error, not a failed statement.
                "SELECT seq, CASE WHEN isfinite(at) THEN (extract(epoch FROM at) * 1000)::bigint
                    END AS at_ms, epoch, kind, step, phase, detail
                 FROM steadfast_saga_history WHERE saga_id = $1 ORDER BY seq",
            )
            .bind(id.to_string())
            .fetch_all(&mut *conn)
            .await?;
            rows.iter().map(|r| row::history(id, r)).collect()
        })
    }

    fn request_cancel<'a>(&'a self, id: SagaId, reason: &'a str) -> StoreFuture<'a, SagaStatus> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            // The row lock orders this write against the owner's: a pivot's start
            // (`forward_only`) committed first refuses the cancel; a cancel committed first
            // refuses the pivot's start (`unless_cancelled`).
            let updated = sqlx::query(
                "UPDATE steadfast_sagas SET cancel_requested = $1, updated_at = now()
                 WHERE id = $2 AND status IN ('running', 'needs_attention') AND NOT compensating
                    AND NOT forward_only AND cancel_requested IS NULL
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
                "SELECT status, compensating, forward_only FROM steadfast_sagas WHERE id = $1",
            )
            .bind(id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(Error::NotFound(id))?;
            tx.rollback().await?;
            let status: String = column(id, "the saga status", row.try_get("status"))?;
            let status = SagaStatus::from_str(&status)
                .map_err(|e| decode_err(Some(id), "the saga status", e))?;
            super::cancel_verdict(
                id,
                status,
                column(id, "the compensating flag", row.try_get("compensating"))?,
                column(id, "the forward-only flag", row.try_get("forward_only"))?,
            )
        })
    }
}

impl Corrupt for PostgresStore {
    fn corrupt(&self, id: SagaId, what: Corruption) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let sql = match what {
                Corruption::InputNotJson => {
                    "UPDATE steadfast_sagas SET input = '{not json' WHERE id = $1"
                }
                Corruption::UnknownStatus => {
                    "UPDATE steadfast_sagas SET status = 'bogus' WHERE id = $1"
                }
                Corruption::UnknownStepState => {
                    "UPDATE steadfast_saga_steps SET state = 'bogus' WHERE saga_id = $1"
                }
                Corruption::EpochExhausted => {
                    "UPDATE steadfast_sagas SET lease_epoch = 9223372036854775807 WHERE id = $1"
                }
                Corruption::RecoveriesExhausted => {
                    "UPDATE steadfast_sagas SET recoveries = 9223372036854775807 WHERE id = $1"
                }
                // Unique, and not a UUID.
                Corruption::IdNotUuid => {
                    "UPDATE steadfast_sagas SET id = 'not-a-uuid:' || id WHERE id = $1"
                }
                // A TEXT column of a UTF-8 database holds only readable text.
                Corruption::UndecodableStatus => return Ok(false),
            };
            let r = sqlx::query(sql)
                .bind(id.to_string())
                .execute(&self.pool)
                .await?;
            Ok(r.rows_affected() > 0)
        })
    }
}
