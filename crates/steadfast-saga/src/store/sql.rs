//! The SQL saga log, written once over its two dialects: [`SqlStore<D>`](SqlStore) holds the
//! claim, fencing, transition and cancel logic; a [`Dialect`] (SQLite or PostgreSQL, behind the
//! crate features `sqlite` and `postgres`) supplies only what differs between them — the
//! clock and time columns of its schema, the row key a claim sets rows aside
//! by, how a claim locks (SQLite's `BEGIN IMMEDIATE`, PostgreSQL's `FOR UPDATE SKIP LOCKED`), and
//! the few decode rules of its column types. Each dialect's schema, migrations and constructors
//! live in its own module (`sqlite.rs`, `postgres.rs`).
//!
//! The statements are templates over the dialect's fragments, rendered once per dialect.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool, Transaction};

use super::group::{self, Writer};
use super::rows::{self as row, Columns, RowKey};
use super::{
    begin_detached, column, decode_err, duration_ms, Created, Event, HistoryEntry, Lease,
    ListQuery, NewSaga, SagaRecord, SagaStatus, SagaStore, SagaSummary, StepRecord, StoreFuture,
    Transition,
};
use crate::error::{Error, Fenced};
use crate::keys::SagaId;

/// A statement of dialect `D` with its arguments (the SQL is a rendered template: `'static`).
pub(super) type Query<D> = sqlx::query::Query<'static, D, <D as Database>::Arguments<'static>>;

/// What the shared store needs of a driver, implemented once per dialect by
/// `impl_driver!` (so that the store's logic names no driver type and needs no `where` clause).
pub trait Driver: Database<Row: Columns> {
    /// The fragments the statement templates are rendered with.
    const FRAGMENTS: Fragments;
    /// The statements, rendered once.
    fn statements() -> &'static Statements;
    /// Begins a write transaction (not cancel-safe: run it through `begin_detached`).
    fn begin(
        pool: Pool<Self>,
    ) -> BoxFuture<'static, Result<Transaction<'static, Self>, sqlx::Error>>;
    /// A connection from the pool, for reads and single statements.
    fn acquire(pool: Pool<Self>) -> BoxFuture<'static, Result<PoolConnection<Self>, sqlx::Error>>;
    /// Binds a (nullable) text argument.
    fn bind_text(q: Query<Self>, v: Option<String>) -> Query<Self>;
    /// Binds a (nullable) integer argument.
    fn bind_int(q: Query<Self>, v: Option<i64>) -> Query<Self>;
    /// Binds a (nullable) boolean argument (SQLite stores it as 0 or 1).
    fn bind_flag(q: Query<Self>, v: Option<bool>) -> Query<Self>;
    /// Runs a statement; the number of rows it changed.
    fn execute(q: Query<Self>, c: &mut Self::Connection)
        -> BoxFuture<'_, Result<u64, sqlx::Error>>;
    /// Runs a query; every row.
    fn fetch_all(
        q: Query<Self>,
        c: &mut Self::Connection,
    ) -> BoxFuture<'_, Result<Vec<Self::Row>, sqlx::Error>>;
    /// Runs a query; its row, if any.
    fn fetch_optional(
        q: Query<Self>,
        c: &mut Self::Connection,
    ) -> BoxFuture<'_, Result<Option<Self::Row>, sqlx::Error>>;
}

/// The driver glue, the same text for every dialect (each expansion is concrete). `$begin` is the
/// statement that opens a write transaction (an `Option<&'static str>`; `None`: the driver's own
/// `BEGIN`).
macro_rules! impl_driver {
    ($db:ty, fragments: $fragments:expr, begin: $begin:expr) => {
        impl $crate::store::sql::Driver for $db {
            const FRAGMENTS: $crate::store::sql::Fragments = $fragments;

            fn statements() -> &'static $crate::store::sql::Statements {
                static RENDERED: std::sync::OnceLock<$crate::store::sql::Statements> =
                    std::sync::OnceLock::new();
                RENDERED.get_or_init(|| $crate::store::sql::Statements::render(&Self::FRAGMENTS))
            }

            fn begin(
                pool: sqlx::Pool<Self>,
            ) -> futures::future::BoxFuture<
                'static,
                Result<sqlx::Transaction<'static, Self>, sqlx::Error>,
            > {
                const BEGIN: Option<&'static str> = $begin;
                Box::pin(async move {
                    match BEGIN {
                        Some(statement) => pool.begin_with(statement).await,
                        None => pool.begin().await,
                    }
                })
            }

            fn acquire(
                pool: sqlx::Pool<Self>,
            ) -> futures::future::BoxFuture<
                'static,
                Result<sqlx::pool::PoolConnection<Self>, sqlx::Error>,
            > {
                Box::pin(async move { pool.acquire().await })
            }

            fn bind_text(
                q: $crate::store::sql::Query<Self>,
                v: Option<String>,
            ) -> $crate::store::sql::Query<Self> {
                q.bind(v)
            }

            fn bind_int(
                q: $crate::store::sql::Query<Self>,
                v: Option<i64>,
            ) -> $crate::store::sql::Query<Self> {
                q.bind(v)
            }

            fn bind_flag(
                q: $crate::store::sql::Query<Self>,
                v: Option<bool>,
            ) -> $crate::store::sql::Query<Self> {
                q.bind(v)
            }

            fn execute(
                q: $crate::store::sql::Query<Self>,
                c: &mut <Self as sqlx::Database>::Connection,
            ) -> futures::future::BoxFuture<'_, Result<u64, sqlx::Error>> {
                Box::pin(async move { Ok(q.execute(c).await?.rows_affected()) })
            }

            fn fetch_all(
                q: $crate::store::sql::Query<Self>,
                c: &mut <Self as sqlx::Database>::Connection,
            ) -> futures::future::BoxFuture<
                '_,
                Result<Vec<<Self as sqlx::Database>::Row>, sqlx::Error>,
            > {
                Box::pin(q.fetch_all(c))
            }

            fn fetch_optional(
                q: $crate::store::sql::Query<Self>,
                c: &mut <Self as sqlx::Database>::Connection,
            ) -> futures::future::BoxFuture<
                '_,
                Result<Option<<Self as sqlx::Database>::Row>, sqlx::Error>,
            > {
                Box::pin(q.fetch_optional(c))
            }
        }

        impl $crate::store::sql::Dialect for $db {}
    };
}
pub(super) use impl_driver;

/// An SQL dialect the saga log runs on: [`sqlx::Sqlite`] (feature `sqlite`, the default) and
/// [`sqlx::Postgres`] (feature `postgres`). Sealed: the store's statements are written for
/// these two.
///
/// ```
/// # #[cfg(feature = "sqlite")] {
/// fn on_sql<D: steadfast_saga::store::Dialect>(_: &steadfast_saga::store::SqlStore<D>) {}
/// # let _ = on_sql::<sqlx::Sqlite>;
/// # }
/// ```
pub trait Dialect: Driver {}

/// What differs between the dialects, as SQL text the statement templates are rendered with
/// (`{name}` in a template is the fragment `name`; `{now+$N}` is the store clock plus `$N`
/// milliseconds). Time columns are named as each schema names them: SQLite keeps integer
/// milliseconds (`..._ms`), PostgreSQL `timestamptz` (`..._at`). Placeholders are `$N` in both
/// (sqlx's SQLite driver binds `$N` to the N-th argument).
#[derive(Debug)]
pub struct Fragments {
    /// The store clock, in the time columns' representation.
    pub now: &'static str,
    /// The clock a history entry is stamped with (PostgreSQL: the statement's, not the
    /// transaction's, so that one transaction's entries keep their order in time).
    pub history_now: &'static str,
    /// Around a bound number of milliseconds, to add it to `now`.
    pub ms: (&'static str, &'static str),
    /// The lease expiry column.
    pub expires: &'static str,
    /// The deadline column.
    pub deadline: &'static str,
    /// The creation time column.
    pub created: &'static str,
    /// The last-update time column (sagas and steps).
    pub updated: &'static str,
    /// The history time column.
    pub history_at: &'static str,
    /// The history time, selected as milliseconds since the Unix epoch (NULL when it has none).
    pub history_at_ms: &'static str,
    /// What identifies a saga row whatever its id holds (SQLite's id may be NULL or a blob).
    pub row_key: &'static str,
    /// The order step records were first written in.
    pub step_order: &'static str,
    /// The saga's age in milliseconds, at least 0; a value of the wrong type is returned as is
    /// (a decode error), never computed on.
    pub age_ms: &'static str,
    /// The time left to the deadline in milliseconds, at least 0, NULL for none; likewise.
    pub left_ms: &'static str,
    /// A saga a claim may take: not settled, and its lease expired (or unreadable).
    pub claimable: &'static str,
    /// A lease epoch a claim or take-over can increase.
    pub fenceable: &'static str,
    /// A recovery count a claim can increase.
    pub recoveries_increasable: &'static str,
    /// The stored type of the lease epoch, as text (`integer` when it is one).
    pub epoch_type: &'static str,
    /// The lease epoch, or 0 when it is not an integer.
    pub epoch_or_zero: &'static str,
    /// The row locks of a claim: SQLite's write lock is the transaction's (`BEGIN IMMEDIATE`).
    pub skip_locked: &'static str,
    /// Test hook: the statement that stores a status that is not text at all (`$1`: the saga),
    /// where the dialect can hold one.
    pub undecodable_status: Option<&'static str>,
    /// Whether a statement can modify several tables (PostgreSQL's data-modifying `WITH`): a
    /// saga's creation and each transition are then one statement, atomic on its own, sent
    /// outside any explicit transaction (one round trip). Otherwise (SQLite) they are one
    /// script of statements in a `BEGIN IMMEDIATE` transaction, each later statement writing
    /// only when the one before it changed a row.
    pub one_statement_writes: bool,
    /// Whether the database has one writer at a time (SQLite's write lock): the store then lets
    /// one of its own write transactions at a time begin, in arrival order, instead of having
    /// its connections wait for the lock in the driver's busy loop (sleeps of up to 100 ms),
    /// and (with a `transition_view`) commits the creations and transitions that queue up
    /// meanwhile together, in one transaction (group commit, `group.rs`). Other processes on
    /// the same file still wait for the lock as before.
    pub one_writer: bool,
    /// A view whose `INSERT` trigger writes a whole transition (SQLite, see `sqlite.rs`): a
    /// transition is then one `INSERT` statement, failed by the trigger with
    /// `REFUSED_BY_TRIGGER` when the fence does not hold (which aborts the statement, not its
    /// transaction): alone, outside any explicit transaction; or in a group commit.
    pub transition_view: Option<&'static str>,
}

/// The message of the error a transition view's trigger fails a refused transition with.
pub(super) const REFUSED_BY_TRIGGER: &str = "steadfast: transition refused";

/// The store's statements, rendered from [`TEMPLATES`] for one dialect.
#[derive(Debug)]
pub struct Statements {
    create: String,
    find_existing: String,
    push_history: String,
    load: String,
    load_steps: String,
    record: String,
    record_unfenced: String,
    heartbeat: String,
    heartbeat_unfenced: String,
    refused: String,
    release: String,
    claim: String,
    unfenceable: String,
    set_aside: String,
    set_aside_history: String,
    take_over: String,
    exists: String,
    list: String,
    history: String,
    cancel: String,
    cancel_state: String,
}

/// The statement templates, written once for both dialects.
mod templates {
    pub(super) const CREATE: &str = "INSERT INTO steadfast_sagas (id, saga_type, version,
            business_key, status, input, lease_owner, lease_epoch, {expires}, {deadline},
            forward_only, {created}, {updated})
         VALUES ($1, $2, $3, $4, 'running', $5, $6, 1, {now+$7}, {now+$8}, $9, {now}, {now})
         ON CONFLICT (saga_type, business_key) DO NOTHING";
    pub(super) const FIND_EXISTING: &str =
        "SELECT id FROM steadfast_sagas WHERE saga_type = $1 AND business_key = $2";
    pub(super) const PUSH_HISTORY: &str = "INSERT INTO steadfast_saga_history
            (saga_id, {history_at}, epoch, kind, step, phase, detail)
         VALUES ($1, {history_now}, $2, $3, $4, $5, $6)";
    /// The history entry a write adds (its values selected from the row it wrote).
    pub(super) const WRITE_HISTORY: &str = "INSERT INTO steadfast_saga_history
            (saga_id, {history_at}, epoch, kind, step, phase, detail)";
    /// The step record a write inserts or replaces (its values selected from the row it wrote).
    pub(super) const WRITE_STEP: &str = "INSERT INTO steadfast_saga_steps
            (saga_id, step, phase, state, attempts, output, error, {updated})";
    pub(super) const WRITE_STEP_CONFLICT: &str = " ON CONFLICT (saga_id, step, phase) DO UPDATE SET
            state = excluded.state, attempts = excluded.attempts,
            output = excluded.output, error = excluded.error, {updated} = excluded.{updated}";
    pub(super) const LOAD: &str = "SELECT saga_type, version, business_key, status,
            compensating, input, cursor, recoveries, error, lease_epoch, lease_owner,
            forward_only, cancel_requested, {age_ms} AS age_ms, {left_ms} AS left_ms
         FROM steadfast_sagas WHERE id = $1";
    pub(super) const LOAD_STEPS: &str = "SELECT step, phase, state, attempts, output, error
         FROM steadfast_saga_steps WHERE saga_id = $1 ORDER BY {step_order}";
    /// The fenced write of a transition's saga fields; the epoch check on `$10` follows it
    /// (`FENCE`). A transition is this update, then its history entry (`$11`-`$14`: kind,
    /// step, phase, detail) and its step record (`$15`-`$20`: step, phase, state, attempts,
    /// output, error; none when `$15` is NULL), written only when the update changed the row.
    pub(super) const RECORD: &str = "UPDATE steadfast_sagas SET
            status = COALESCE($1, status),
            compensating = COALESCE($2, compensating),
            cursor = COALESCE($3, cursor),
            error = CASE WHEN $4 THEN $5 ELSE error END,
            recoveries = CASE WHEN $6 THEN 0 ELSE recoveries END,
            forward_only = CASE WHEN $7 THEN TRUE ELSE forward_only END,
            {updated} = {now}
         WHERE id = $8 AND ($9 = FALSE OR cancel_requested IS NULL)";
    /// The fenced lease renewal; `{fence}` is the epoch check on `$3`.
    pub(super) const HEARTBEAT: &str =
        "UPDATE steadfast_sagas SET {expires} = {now+$1} WHERE id = $2";
    /// The epoch check of a fenced write on parameter `N`, and the same parameter bound but not
    /// checked (the test hook's unfenced handle).
    pub(super) const FENCE: &str = " AND lease_epoch = $N";
    pub(super) const NO_FENCE: &str = " AND CAST($N AS BIGINT) IS NOT NULL";
    pub(super) const REFUSED: &str =
        "SELECT lease_epoch, cancel_requested FROM steadfast_sagas WHERE id = $1";
    pub(super) const RELEASE: &str =
        "UPDATE steadfast_sagas SET {expires} = {now} WHERE id = $1 AND lease_epoch = $2";
    /// Claims up to `$3` claimable rows, oldest lease first, for owner `$1` and `$2` ms. Rows
    /// whose epoch cannot be increased are left to the set-aside (an overflow would fail the
    /// whole statement); a recovery count at its maximum stays there.
    pub(super) const CLAIM: &str = "WITH c AS (
            SELECT {row_key} AS k FROM steadfast_sagas
            WHERE {claimable} AND {fenceable}
            ORDER BY {expires} LIMIT $3{skip_locked})
         UPDATE steadfast_sagas SET
            lease_epoch = lease_epoch + 1,
            recoveries = CASE WHEN {recoveries_increasable}
                THEN recoveries + 1 ELSE recoveries END,
            lease_owner = $1,
            {expires} = {now+$2}
         FROM c WHERE steadfast_sagas.{row_key} = c.k
         RETURNING {row_key} AS row_key, id, lease_epoch";
    /// Claimable rows whose lease epoch cannot be increased (at most `$1`).
    pub(super) const UNFENCEABLE: &str = "SELECT {row_key} AS row_key, id,
            {epoch_type} AS epoch_type
         FROM steadfast_sagas WHERE {claimable} AND NOT ({fenceable})
         ORDER BY {expires} LIMIT $1{skip_locked}";
    pub(super) const SET_ASIDE: &str = "UPDATE steadfast_sagas SET status = 'needs_attention',
            error = $1, lease_owner = $2, {expires} = {now}, {updated} = {now}
         WHERE {row_key} = $3";
    /// The history entry of a row set aside (filed under the empty id when it has none).
    pub(super) const SET_ASIDE_HISTORY: &str = "INSERT INTO steadfast_saga_history
            (saga_id, {history_at}, epoch, kind, detail)
         SELECT COALESCE(id, ''), {history_now}, {epoch_or_zero}, 'needs_attention', $1
         FROM steadfast_sagas WHERE {row_key} = $2";
    pub(super) const TAKE_OVER: &str = "UPDATE steadfast_sagas SET
            lease_epoch = lease_epoch + 1, lease_owner = $1, {expires} = {now+$2}
         WHERE id = $3 AND {fenceable} RETURNING lease_epoch";
    pub(super) const EXISTS: &str = "SELECT 1 FROM steadfast_sagas WHERE id = $1";
    /// A status this version cannot read is listed as `needs_attention`.
    pub(super) const LIST: &str = concat!(
        "SELECT id, saga_type, business_key, status, error, recoveries
         FROM steadfast_sagas
         WHERE (CAST($1 AS TEXT) IS NULL OR status = $1
            OR ($1 = 'needs_attention' AND status NOT IN ",
        known_statuses_sql!(),
        "))
           AND (CAST($3 AS TEXT) IS NULL OR saga_type = $3)
         ORDER BY {created}, {row_key} LIMIT $2"
    );
    pub(super) const HISTORY: &str = "SELECT seq, {history_at_ms} AS at_ms, epoch, kind, step,
            phase, detail
         FROM steadfast_saga_history WHERE saga_id = $1 ORDER BY seq";
    /// Records a cancel; the row lock (SQLite: the write lock) orders it against the owner's
    /// writes: a pivot's start (`forward_only`) committed first refuses the cancel, a cancel
    /// committed first refuses the pivot's start (`unless_cancelled`).
    pub(super) const CANCEL: &str = "UPDATE steadfast_sagas SET cancel_requested = $1,
            {updated} = {now}
         WHERE id = $2 AND status IN ('running', 'needs_attention') AND compensating = FALSE
            AND forward_only = FALSE AND cancel_requested IS NULL
         RETURNING status, lease_epoch";
    pub(super) const CANCEL_STATE: &str =
        "SELECT status, compensating, forward_only FROM steadfast_sagas WHERE id = $1";
}

impl Statements {
    /// Renders every template for the dialect of `f`.
    pub fn render(f: &Fragments) -> Statements {
        use templates as t;
        let r = |template: &str| render(template, f);
        let fenced =
            |template: &str, n: &str| r(&format!("{template}{}", t::FENCE.replace("$N", n)));
        let unfenced =
            |template: &str, n: &str| r(&format!("{template}{}", t::NO_FENCE.replace("$N", n)));
        // A creation (`$10`-`$13`: the history entry, `$14`-`$19`: the first step's record) or a
        // transition (`$11`-`$14`, `$15`-`$20`), its saga row written by `write` (which names the
        // row's id `$id`): one statement with data-modifying `WITH`s, or a script whose later
        // statements write only when the one before them changed a row (`changes()`, SQLite:
        // the saga row's write, then its history entry's).
        let whole = |write: &str, id: &str, epoch: &str, history: &str, step: [&str; 6]| {
            let [name, phase, state, attempts, output, error] = step;
            let (history_sql, step_sql, conflict) =
                (t::WRITE_HISTORY, t::WRITE_STEP, t::WRITE_STEP_CONFLICT);
            if f.one_statement_writes {
                r(&format!(
                    "WITH w AS ({write} RETURNING id),
                     h AS ({history_sql} SELECT id, {{history_now}}, {epoch}, {history} FROM w),
                     s AS ({step_sql} SELECT id, {name}, {phase}, {state}, {attempts}, {output},
                            {error}, {{now}} FROM w
                         WHERE CAST({name} AS TEXT) IS NOT NULL{conflict})
                     SELECT 1 AS written FROM w"
                ))
            } else {
                r(&format!(
                    "{write};
                     {history_sql} SELECT {id}, {{history_now}}, {epoch}, {history}
                         WHERE changes() > 0;
                     {step_sql} SELECT {id}, {name}, {phase}, {state}, {attempts}, {output},
                            {error}, {{now}}
                         WHERE changes() > 0 AND CAST({name} AS TEXT) IS NOT NULL{conflict}"
                ))
            }
        };
        let create_step = ["$14", "$15", "$16", "$17", "$18", "$19"];
        let record_step = ["$15", "$16", "$17", "$18", "$19", "$20"];
        let fence =
            |template: &str, n: &str, check: &str| format!("{template}{}", check.replace("$N", n));
        // A transition through the dialect's transition view, with the same arguments.
        let by_view = |fenced: &str| {
            f.transition_view.map(|view| {
                format!(
                    "INSERT INTO {view} (status, compensating, cursor, set_error, error,
                        reset_recoveries, forward_only, saga_id, unless_cancelled, epoch, kind,
                        event_step, event_phase, detail, step, phase, state, attempts, output,
                        step_error, fenced)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                        $16, $17, $18, $19, $20, {fenced})"
                )
            })
        };
        Statements {
            create: whole(t::CREATE, "$1", "1", "$10, $11, $12, $13", create_step),
            find_existing: r(t::FIND_EXISTING),
            push_history: r(t::PUSH_HISTORY),
            load: r(t::LOAD),
            load_steps: r(t::LOAD_STEPS),
            record: by_view("1").unwrap_or_else(|| {
                whole(
                    &fence(t::RECORD, "$10", t::FENCE),
                    "$8",
                    "$10",
                    "$11, $12, $13, $14",
                    record_step,
                )
            }),
            record_unfenced: by_view("0").unwrap_or_else(|| {
                whole(
                    &fence(t::RECORD, "$10", t::NO_FENCE),
                    "$8",
                    "$10",
                    "$11, $12, $13, $14",
                    record_step,
                )
            }),
            heartbeat: fenced(t::HEARTBEAT, "$3"),
            heartbeat_unfenced: unfenced(t::HEARTBEAT, "$3"),
            refused: r(t::REFUSED),
            release: r(t::RELEASE),
            claim: r(t::CLAIM),
            unfenceable: r(t::UNFENCEABLE),
            set_aside: r(t::SET_ASIDE),
            set_aside_history: r(t::SET_ASIDE_HISTORY),
            take_over: r(t::TAKE_OVER),
            exists: r(t::EXISTS),
            list: r(t::LIST),
            history: r(t::HISTORY),
            cancel: r(t::CANCEL),
            cancel_state: r(t::CANCEL_STATE),
        }
    }
}

/// `template` with its `{fragment}`s (fragments may hold fragments) and `{now+$N}`s replaced.
fn render(template: &str, f: &Fragments) -> String {
    let mut out = String::with_capacity(template.len() * 2);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}').map(|c| open + c) else {
            panic!("unclosed {{ in {template}");
        };
        let name = &rest[open + 1..close];
        let piece = match name {
            "now" => f.now,
            "history_now" => f.history_now,
            "expires" => f.expires,
            "deadline" => f.deadline,
            "created" => f.created,
            "updated" => f.updated,
            "history_at" => f.history_at,
            "history_at_ms" => f.history_at_ms,
            "row_key" => f.row_key,
            "step_order" => f.step_order,
            "age_ms" => f.age_ms,
            "left_ms" => f.left_ms,
            "claimable" => f.claimable,
            "fenceable" => f.fenceable,
            "recoveries_increasable" => f.recoveries_increasable,
            "epoch_type" => f.epoch_type,
            "epoch_or_zero" => f.epoch_or_zero,
            "skip_locked" => f.skip_locked,
            _ => match name.strip_prefix("now+") {
                Some(param) => {
                    out.push_str(&format!("{} + {}{param}{}", f.now, f.ms.0, f.ms.1));
                    rest = &rest[close + 1..];
                    continue;
                }
                None => panic!("unknown fragment {{{name}}} in {template}"),
            },
        };
        out.push_str(&render(piece, f));
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

/// One statement being bound, for dialect `D`.
struct Stmt<D: Dialect>(Query<D>);

impl<D: Dialect> Stmt<D> {
    fn new(sql: &'static str) -> Self {
        Stmt(sqlx::query(sql))
    }
    fn text(self, v: impl Into<String>) -> Self {
        Stmt(D::bind_text(self.0, Some(v.into())))
    }
    fn opt_text(self, v: Option<impl Into<String>>) -> Self {
        Stmt(D::bind_text(self.0, v.map(Into::into)))
    }
    fn int(self, v: i64) -> Self {
        Stmt(D::bind_int(self.0, Some(v)))
    }
    fn opt_int(self, v: Option<i64>) -> Self {
        Stmt(D::bind_int(self.0, v))
    }
    fn flag(self, v: bool) -> Self {
        Stmt(D::bind_flag(self.0, Some(v)))
    }
    fn opt_flag(self, v: Option<bool>) -> Self {
        Stmt(D::bind_flag(self.0, v))
    }
    fn key(self, k: &RowKey) -> Self {
        match k {
            RowKey::Rowid(n) => self.int(*n),
            RowKey::Id(s) => self.text(s.clone()),
        }
    }
    fn saga(self, id: SagaId) -> Self {
        self.text(id.to_string())
    }
    /// A write's history entry: kind, step, phase, detail.
    fn event(self, e: Event) -> Self {
        self.text(e.kind)
            .opt_text(e.step)
            .opt_text(e.phase.map(|p| p.as_str()))
            .opt_text(e.detail)
    }
    /// A write's step record, if any: step, phase, state, attempts, output, error.
    fn step_record(self, s: Option<StepRecord>) -> Self {
        let (step, phase, state, attempts, output, error) = match s {
            Some(s) => (
                Some(s.step),
                Some(s.phase.as_str()),
                Some(s.state.as_str()),
                Some(i64::from(s.attempts)),
                s.output,
                s.error,
            ),
            None => (None, None, None, None, None, None),
        };
        self.opt_text(step)
            .opt_text(phase)
            .opt_text(state)
            .opt_int(attempts)
            .opt_text(output)
            .opt_text(error)
    }
    /// Runs a creation or a transition (see `Statements::render`): whether it wrote the saga
    /// row (and so everything else it writes).
    async fn write(self, c: &mut D::Connection) -> Result<bool, Error> {
        if D::FRAGMENTS.one_statement_writes {
            Ok(self.fetch_optional(c).await?.is_some())
        } else {
            Ok(self.execute(c).await? > 0)
        }
    }
    async fn execute(self, c: &mut D::Connection) -> Result<u64, Error> {
        Ok(D::execute(self.0, c).await?)
    }
    async fn fetch_all(self, c: &mut D::Connection) -> Result<Vec<D::Row>, Error> {
        Ok(D::fetch_all(self.0, c).await?)
    }
    async fn fetch_optional(self, c: &mut D::Connection) -> Result<Option<D::Row>, Error> {
        Ok(D::fetch_optional(self.0, c).await?)
    }
}

/// The SQL saga log over dialect `D`: [`SqliteStore`](super::SqliteStore) (`SqlStore<Sqlite>`)
/// and [`PostgresStore`](super::PostgresStore) (`SqlStore<Postgres>`). Each dialect's module
/// has its constructors; everything else is the same code.
///
/// ```
/// # #[cfg(feature = "sqlite")] {
/// use steadfast_saga::store::{SqlStore, SqliteStore};
/// fn same(s: SqliteStore) -> SqlStore<sqlx::Sqlite> { s }
/// # let _ = same;
/// # }
/// ```
pub struct SqlStore<D: Dialect> {
    pub(super) pool: Pool<D>,
    /// PostgreSQL: the schema the store was opened in (`None`: the default search path).
    pub(super) schema: Option<String>,
    /// Whose turn it is to write, and the writes waiting for a group commit (dialects with one
    /// writer at a time, see `Fragments::one_writer` and `group.rs`); shared by the clones of
    /// this store.
    pub(super) writer: Arc<Writer<D>>,
    /// Test hook: skip the lease-epoch check on writes and heartbeats.
    #[cfg(feature = "test-hooks")]
    pub(super) unfenced: bool,
}

impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        SqlStore {
            pool: self.pool.clone(),
            schema: self.schema.clone(),
            writer: Arc::clone(&self.writer),
            #[cfg(feature = "test-hooks")]
            unfenced: self.unfenced,
        }
    }
}

impl<D: Dialect> fmt::Debug for SqlStore<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlStore")
            .field("dialect", &D::NAME)
            .field("pool", &self.pool)
            .field("schema", &self.schema)
            .finish()
    }
}

impl<D: Dialect> SqlStore<D> {
    /// A store on `pool` (the schema is the caller's to have migrated).
    pub(super) fn on(pool: Pool<D>, schema: Option<String>) -> Self {
        SqlStore {
            pool,
            schema,
            writer: Arc::new(Writer::new()),
            #[cfg(feature = "test-hooks")]
            unfenced: false,
        }
    }

    /// The connection pool (for tests and tools that read the tables directly).
    ///
    /// ```
    /// # #[cfg(feature = "sqlite")] {
    /// # use steadfast_saga::store::SqliteStore;
    /// fn pool(s: &SqliteStore) -> &sqlx::SqlitePool { s.pool() }
    /// # let _ = pool;
    /// # }
    /// ```
    pub fn pool(&self) -> &Pool<D> {
        &self.pool
    }

    /// Test hook (feature `test-hooks`, never for production): a handle on the same database
    /// whose `record` and `heartbeat` skip the lease-epoch check, so a fenced-out orchestrator
    /// keeps writing and renewing. Used to show that the overlap detector of
    /// `tests/two_orchestrators.rs` catches a broken orchestrator.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn without_fencing_for_tests(&self) -> Self {
        SqlStore {
            unfenced: true,
            ..self.clone()
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

    fn sql() -> &'static Statements {
        D::statements()
    }

    /// A write transaction (SQLite: `BEGIN IMMEDIATE`, the database's write lock, begun when
    /// this store's previous write transaction has ended); safe to drop at any point (see
    /// [`begin_detached`]).
    pub(super) async fn begin(&self) -> Result<WriteTx<D>, Error> {
        let turn = self.turn().await;
        let tx = begin_detached(D::begin(self.pool.clone())).await?;
        Ok(WriteTx { tx, _turn: turn })
    }

    /// This store's turn to write, when the database has one writer at a time (see
    /// `Fragments::one_writer`): held until the write ends.
    async fn turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match D::FRAGMENTS.one_writer {
            true => Some(Arc::clone(&self.writer.turn).lock_owned().await),
            false => None,
        }
    }

    /// Whether creations and transitions are written by group commit (`group.rs`): one writer
    /// at a time, and a transition is one statement (the transition view).
    fn grouped() -> bool {
        D::FRAGMENTS.one_writer && D::FRAGMENTS.transition_view.is_some()
    }

    async fn acquire(&self) -> Result<PoolConnection<D>, Error> {
        Ok(D::acquire(self.pool.clone()).await?)
    }
}

/// A write transaction of a [`SqlStore`], and (one writer at a time) its turn to write, held
/// until it ends: dropped unfinished, the transaction rolls back and the turn passes.
pub(super) struct WriteTx<D: Database> {
    // Dropped first: the rollback is on its way before the next writer begins.
    tx: Transaction<'static, D>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<D: Database> WriteTx<D> {
    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        let WriteTx { tx, _turn } = self;
        tx.commit().await
    }

    pub(super) async fn rollback(self) -> Result<(), sqlx::Error> {
        let WriteTx { tx, _turn } = self;
        tx.rollback().await
    }
}

impl<D: Database> Deref for WriteTx<D> {
    type Target = D::Connection;
    fn deref(&self) -> &D::Connection {
        &self.tx
    }
}

impl<D: Database> DerefMut for WriteTx<D> {
    fn deref_mut(&mut self) -> &mut D::Connection {
        &mut self.tx
    }
}

async fn push_history<D: Dialect>(
    c: &mut D::Connection,
    id: SagaId,
    epoch: i64,
    event: &Event,
) -> Result<(), Error> {
    Stmt::<D>::new(&D::statements().push_history)
        .saga(id)
        .int(epoch)
        .text(&*event.kind)
        .opt_text(event.step.as_deref())
        .opt_text(event.phase.map(|p| p.as_str()))
        .opt_text(event.detail.as_deref())
        .execute(c)
        .await?;
    Ok(())
}

/// Whether `e` is a transition view's trigger refusing a transition (its fence does not hold).
pub(super) fn refused_by_trigger(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.message().contains(REFUSED_BY_TRIGGER))
}

/// Why a fenced write (of saga `saga` under lease epoch `epoch`) changed nothing: the saga is
/// gone, its lease was taken over, or (for a transition `unless_cancelled`) it was cancelled.
pub(super) async fn refused<D: Dialect>(
    c: &mut D::Connection,
    saga: SagaId,
    epoch: i64,
    unless_cancelled: bool,
) -> Result<Error, Error> {
    let found = Stmt::<D>::new(&D::statements().refused)
        .saga(saga)
        .fetch_optional(c)
        .await?;
    let Some(r) = found else {
        return Ok(Error::NotFound(saga));
    };
    let stored = r.int("lease_epoch").ok();
    let cancel = r.opt_text("cancel_requested").ok().flatten();
    Ok(match cancel {
        Some(reason) if unless_cancelled && stored == Some(epoch) => {
            Error::CancelRequested(crate::error::CancelRequested { saga, reason })
        }
        _ => Error::Fenced(Fenced { saga, epoch }),
    })
}

/// Sets aside (puts in `needs_attention`, with the reason) claimable rows whose lease epoch
/// cannot be increased (at its maximum, or not an integer), so that no claim can fence their
/// last owner: they are not claimed.
async fn set_aside_unfenceable<D: Dialect>(
    c: &mut D::Connection,
    owner: &str,
    limit: u32,
) -> Result<(), Error> {
    let rows = Stmt::<D>::new(&D::statements().unfenceable)
        .int(i64::from(limit))
        .fetch_all(c)
        .await?;
    for r in &rows {
        let key = r.row_key()?;
        let ty = r.text("epoch_type")?;
        let e = match (ty.as_str(), row::read_id(r)) {
            ("integer", Ok(id)) => super::epoch_exhausted(id),
            ("integer", Err(e)) => e,
            (ty, id) => decode_err(
                id.ok(),
                "the lease epoch",
                format!("stored as {ty}, not an integer"),
            ),
        };
        set_aside::<D>(c, &key, owner, &e).await?;
    }
    Ok(())
}

/// Puts the row `key` in `needs_attention` with `why`, releases its lease, and logs it: a row a
/// claim cannot hand out (its id or lease epoch cannot be read) stops no other saga.
async fn set_aside<D: Dialect>(
    c: &mut D::Connection,
    key: &RowKey,
    owner: &str,
    why: &Error,
) -> Result<(), Error> {
    let why = why.to_string();
    tracing::warn!(target: "steadfast::saga", error = %why,
        "a saga row cannot be claimed: set aside as needing attention");
    Stmt::<D>::new(&D::statements().set_aside)
        .text(&*why)
        .text(owner)
        .key(key)
        .execute(c)
        .await?;
    Stmt::<D>::new(&D::statements().set_aside_history)
        .text(why)
        .key(key)
        .execute(c)
        .await?;
    Ok(())
}

fn status_of(id: SagaId, r: &impl Columns) -> Result<SagaStatus, Error> {
    let status = column(id, "the saga status", r.text("status"))?;
    SagaStatus::from_str(&status).map_err(|e| decode_err(Some(id), "the saga status", e))
}

impl<D: Dialect> SagaStore for SqlStore<D> {
    fn create<'a>(
        &'a self,
        new: NewSaga,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Created> {
        Box::pin(async move {
            super::check_span("lease", lease)?;
            if let Some(d) = new.deadline {
                super::check_span("deadline", d)?;
            }
            let id = new.id;
            let created = super::created_event(new.first_step.as_ref());
            let stmt = Stmt::<D>::new(&Self::sql().create)
                .saga(id)
                .text(&*new.saga_type)
                .int(i64::from(new.version))
                .text(&*new.business_key)
                .text(new.input)
                .text(owner)
                .int(duration_ms(lease))
                .opt_int(new.deadline.map(duration_ms))
                .flag(new.forward_only)
                .event(created)
                .step_record(new.first_step);
            let new_lease = || {
                Created::New(Lease {
                    saga: id,
                    owner: owner.to_string(),
                    epoch: 1,
                })
            };
            let find = Stmt::<D>::new(&Self::sql().find_existing)
                .text(&*new.saga_type)
                .text(&*new.business_key);
            if Self::grouped() {
                // Committed with the writes queued beside it (`group.rs`).
                let write = group::Write::Creation {
                    stmt: stmt.0,
                    find: find.0,
                    id,
                    saga_type: new.saga_type,
                };
                return match group::write(&self.pool, &self.writer, write).await? {
                    None => Ok(new_lease()),
                    Some(existing) => Ok(Created::Existing(existing)),
                };
            }
            let existing = if D::FRAGMENTS.one_statement_writes {
                // One statement, atomic on its own: no transaction to begin or commit.
                let mut conn = self.acquire().await?;
                if stmt.write(&mut conn).await? {
                    return Ok(new_lease());
                }
                find.fetch_optional(&mut conn).await?
            } else {
                let mut tx = self.begin().await?;
                if stmt.write(&mut tx).await? {
                    tx.commit().await?;
                    return Ok(new_lease());
                }
                let existing = find.fetch_optional(&mut tx).await?;
                tx.rollback().await?;
                existing
            };
            let Some(r) = existing else {
                return Err(Error::InvalidOperation(format!(
                    "saga {id} of type {:?}: its business key is taken, yet no saga has it",
                    new.saga_type
                )));
            };
            Ok(Created::Existing(row::read_id(&r)?))
        })
    }

    fn load(&self, id: SagaId) -> StoreFuture<'_, SagaRecord> {
        Box::pin(async move {
            let mut conn = self.acquire().await?;
            let r = Stmt::<D>::new(&Self::sql().load)
                .saga(id)
                .fetch_optional(&mut conn)
                .await?
                .ok_or(Error::NotFound(id))?;
            let status = status_of(id, &r)?;
            let left = column(id, "the deadline", r.opt_int("left_ms"))?;
            // NULL for a creation time that is not a time (PostgreSQL's infinities).
            let age = column(id, "the creation time", r.int("age_ms"))?;
            let steps = Stmt::<D>::new(&Self::sql().load_steps)
                .saga(id)
                .fetch_all(&mut conn)
                .await?
                .iter()
                .map(|s| row::step(id, s))
                .collect::<Result<Vec<_>, _>>()?;
            let ms = |v: i64| Duration::from_millis(v.max(0).unsigned_abs());
            Ok(SagaRecord {
                id,
                saga_type: column(id, "the saga type", r.text("saga_type"))?,
                version: row::to_u32(
                    id,
                    "the version",
                    column(id, "the version", r.int("version"))?,
                )?,
                business_key: column(id, "the business key", r.text("business_key"))?,
                status,
                compensating: column(id, "the compensating flag", r.flag("compensating"))?,
                input: column(id, "the saga input", r.text("input"))?,
                cursor: column(id, "the cursor", r.int("cursor"))?,
                recoveries: row::to_u32(
                    id,
                    "the recovery count",
                    column(id, "the recovery count", r.int("recoveries"))?,
                )?,
                error: column(id, "the kept error", r.opt_text("error"))?,
                epoch: column(id, "the lease epoch", r.int("lease_epoch"))?,
                owner: column(id, "the lease owner", r.opt_text("lease_owner"))?,
                deadline_remaining: left.map(ms),
                age: ms(age),
                forward_only: column(id, "the forward-only flag", r.flag("forward_only"))?,
                cancel_requested: column(id, "the cancel request", r.opt_text("cancel_requested"))?,
                steps,
            })
        })
    }

    fn record<'a>(&'a self, lease: &'a Lease, t: Transition) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let sql = Self::sql();
            let (set_error, error) = match t.error {
                Some(e) => (true, e),
                None => (false, None),
            };
            let unless_cancelled = t.unless_cancelled;
            // The saga row's update is fenced by the lease epoch (and, `unless_cancelled`, by
            // the cancel request); the history entry and step record are written only with it.
            // SQLite: the write lock, taken by `BEGIN IMMEDIATE`; PostgreSQL: the row lock the
            // update takes. Either orders this write against any concurrent claim.
            let stmt = Stmt::<D>::new(self.fence(&sql.record, &sql.record_unfenced))
                .opt_text(t.status.map(|s| s.as_str()))
                .opt_flag(t.compensating)
                .opt_int(t.cursor)
                .flag(set_error)
                .opt_text(error)
                .flag(t.reset_recoveries)
                .flag(t.forward_only)
                .saga(lease.saga)
                .flag(unless_cancelled)
                .int(lease.epoch)
                .event(t.event)
                .step_record(t.step);
            if Self::grouped() {
                // One `INSERT` into the transition view (see `sqlite.rs`), committed with the
                // writes queued beside it (`group.rs`).
                let write = group::Write::Transition {
                    stmt: stmt.0,
                    saga: lease.saga,
                    epoch: lease.epoch,
                    unless_cancelled,
                };
                return group::write(&self.pool, &self.writer, write)
                    .await
                    .map(|_| ());
            }
            if D::FRAGMENTS.one_statement_writes {
                // One statement, atomic on its own: no transaction to begin or commit.
                let mut conn = self.acquire().await?;
                if stmt.write(&mut conn).await? {
                    return Ok(());
                }
                return Err(
                    refused::<D>(&mut conn, lease.saga, lease.epoch, unless_cancelled).await?,
                );
            }
            let mut tx = self.begin().await?;
            if !stmt.write(&mut tx).await? {
                let e = refused::<D>(&mut tx, lease.saga, lease.epoch, unless_cancelled).await?;
                tx.rollback().await?;
                return Err(e);
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn heartbeat<'a>(&'a self, lease: &'a Lease, lease_for: Duration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            super::check_span("lease_for", lease_for)?;
            let sql = Self::sql();
            let mut tx = self.begin().await?;
            let updated = Stmt::<D>::new(self.fence(&sql.heartbeat, &sql.heartbeat_unfenced))
                .int(duration_ms(lease_for))
                .saga(lease.saga)
                .int(lease.epoch)
                .execute(&mut tx)
                .await?;
            if updated == 0 {
                let e = refused::<D>(&mut tx, lease.saga, lease.epoch, false).await?;
                tx.rollback().await?;
                return Err(e);
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut conn = self.acquire().await?;
            Stmt::<D>::new(&Self::sql().release)
                .saga(lease.saga)
                .int(lease.epoch)
                .execute(&mut conn)
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
            super::check_span("lease_for", lease_for)?;
            // SQLite: `BEGIN IMMEDIATE` takes the write lock first, so two claimers (threads or
            // processes) serialise here and the second sees the first one's new expiry.
            // PostgreSQL: the claimed rows are locked, and other claimers skip them.
            let mut tx = self.begin().await?;
            set_aside_unfenceable::<D>(&mut tx, owner, limit).await?;
            let mut leases = Vec::new();
            // Rows set aside do not count against the limit: claim again for their places.
            while let Some(want) = limit.checked_sub(leases.len() as u32).filter(|w| *w > 0) {
                let rows = Stmt::<D>::new(&Self::sql().claim)
                    .text(owner)
                    .int(duration_ms(lease_for))
                    .int(i64::from(want))
                    .fetch_all(&mut tx)
                    .await?;
                let mut any_set_aside = false;
                for r in &rows {
                    match row::read_id(r) {
                        Ok(saga) => {
                            let lease = Lease {
                                saga,
                                owner: owner.to_string(),
                                epoch: column(saga, "the lease epoch", r.int("lease_epoch"))?,
                            };
                            let claimed = Event::new("claimed").detail(format!("by {owner}"));
                            push_history::<D>(&mut tx, saga, lease.epoch, &claimed).await?;
                            leases.push(lease);
                        }
                        Err(e) => {
                            set_aside::<D>(&mut tx, &r.row_key()?, owner, &e).await?;
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
            super::check_span("lease_for", lease_for)?;
            let mut tx = self.begin().await?;
            let taken = Stmt::<D>::new(&Self::sql().take_over)
                .text(owner)
                .int(duration_ms(lease_for))
                .saga(id)
                .fetch_optional(&mut tx)
                .await?;
            let Some(r) = taken else {
                let exists = Stmt::<D>::new(&Self::sql().exists)
                    .saga(id)
                    .fetch_optional(&mut tx)
                    .await?;
                tx.rollback().await?;
                return Err(match exists {
                    Some(_) => super::epoch_exhausted(id),
                    None => Error::NotFound(id),
                });
            };
            let epoch = r.int("lease_epoch")?;
            let taken_over = Event::new("taken_over").detail(format!("by {owner}"));
            push_history::<D>(&mut tx, id, epoch, &taken_over).await?;
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
            let mut conn = self.acquire().await?;
            let rows = Stmt::<D>::new(&Self::sql().list)
                .opt_text(query.status.map(|s| s.as_str()))
                .int(i64::from(query.limit))
                .opt_text(query.saga_type)
                .fetch_all(&mut conn)
                .await?;
            Ok(rows.iter().map(row::summary).collect())
        })
    }

    fn history(&self, id: SagaId) -> StoreFuture<'_, Vec<HistoryEntry>> {
        Box::pin(async move {
            let mut conn = self.acquire().await?;
            let exists = Stmt::<D>::new(&Self::sql().exists)
                .saga(id)
                .fetch_optional(&mut conn)
                .await?;
            if exists.is_none() {
                return Err(Error::NotFound(id));
            }
            let rows = Stmt::<D>::new(&Self::sql().history)
                .saga(id)
                .fetch_all(&mut conn)
                .await?;
            rows.iter().map(|r| row::history(id, r)).collect()
        })
    }

    fn request_cancel<'a>(&'a self, id: SagaId, reason: &'a str) -> StoreFuture<'a, SagaStatus> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let updated = Stmt::<D>::new(&Self::sql().cancel)
                .text(reason)
                .saga(id)
                .fetch_optional(&mut tx)
                .await?;
            if let Some(r) = updated {
                let status = column(id, "the saga status", r.text("status"))?;
                let epoch = column(id, "the lease epoch", r.int("lease_epoch"))?;
                let requested = Event::new("cancel_requested").detail(reason);
                push_history::<D>(&mut tx, id, epoch, &requested).await?;
                tx.commit().await?;
                return SagaStatus::from_str(&status)
                    .map_err(|e| decode_err(Some(id), "the saga status", e));
            }
            let r = Stmt::<D>::new(&Self::sql().cancel_state)
                .saga(id)
                .fetch_optional(&mut tx)
                .await?
                .ok_or(Error::NotFound(id))?;
            tx.rollback().await?;
            super::cancel_verdict(
                id,
                status_of(id, &r)?,
                column(id, "the compensating flag", r.flag("compensating"))?,
                column(id, "the forward-only flag", r.flag("forward_only"))?,
            )
        })
    }
}

/// The damage the conformance suite does, by hand, to a row (test hook).
#[cfg(feature = "test-hooks")]
impl<D: Dialect> super::conformance::Corrupt for SqlStore<D> {
    fn corrupt(&self, id: SagaId, what: super::conformance::Corruption) -> StoreFuture<'_, bool> {
        use super::conformance::Corruption;
        Box::pin(async move {
            let sql = match what {
                Corruption::InputNotJson => {
                    "UPDATE steadfast_sagas SET input = '{not json' WHERE id = $1"
                }
                Corruption::UnknownStatus => {
                    "UPDATE steadfast_sagas SET status = 'bogus' WHERE id = $1"
                }
                Corruption::UndecodableStatus => match D::FRAGMENTS.undecodable_status {
                    Some(sql) => sql,
                    None => return Ok(false),
                },
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
            };
            let mut conn = self.acquire().await?;
            Ok(Stmt::<D>::new(sql).saga(id).execute(&mut conn).await? > 0)
        })
    }
}
