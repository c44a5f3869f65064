//! Sagas per second on each saga store, beside that store's raw rate of single-row
//! transactions in the same run (the physical limit), and the durable writes each step costs.
//!
//! The saga has three steps whose actions do nothing (`flight` and `hotel` compensatable, `car`
//! the pivot), so all it measures is the orchestrator and its log. Stores: `MemoryStore`,
//! `SqliteStore` in a temporary directory (WAL; `synchronous=FULL`, the default of
//! `SqliteStore::open`, and `synchronous=NORMAL`, `open_with(.., false)`), and `PostgresStore`
//! (`DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/test`, in a schema of its own
//! dropped at the end) when it answers; when it does not, the bench says so loudly and goes on.
//!
//! Sagas run 16 at a time (`start` then `wait`, on a current-thread runtime). The raw rate is
//! the same number of transactions, at the same concurrency, on the store's own connection pool,
//! each `BEGIN` (SQLite: `BEGIN IMMEDIATE`, as the store does) + one `INSERT` of one row into a
//! scratch table + `COMMIT`; for the memory store, one `HashMap` insert under a mutex. That is
//! the aim's baseline (`ratio`), unchanged since the bench was written. Since the stores write
//! differently (SQLite: one write transaction at a time in the process, no busy waiting on the
//! write lock, and the creations and transitions that arrive while one runs committed together
//! in one transaction, group commit; PostgreSQL: each creation and transition one statement
//! outside an explicit transaction, one round trip where the raw transaction takes three), a
//! second baseline is measured beside it, the best single-row write the database offers for a
//! write like the store's ([`Raw::best`], `ratio2`, one transaction per row): so that a ratio
//! above 1 is read for what it is, a store write cheaper than the first baseline's transaction
//! (on SQLite, several saga writes sharing one commit), not a saga faster than its log.
//!
//! Store round trips are counted by wrapping the store ([`Counting`]): every call of a method that
//! writes (`create`, `record`, `heartbeat`, `release`, `claim_expired`, `take_over`) is one
//! transaction, and every `load`, `list` and `history` one read. The target, in steady state: 2
//! durable writes and no read per step (a run keeps its saga in memory; `wait` follows the run
//! here). The write count is cross-checked against the log itself: `create` and every `record`
//! append exactly one row to the saga history, so the history's rows must equal the counted
//! creates and records.
//!
//! After the criterion groups (`saga_<store>/three_steps`, per saga, and
//! `saga_<store>/raw_txn`, per transaction) it measures every store again in alternating rounds
//! (N sagas, then as many raw transactions as those sagas wrote) and prints a table.
//!
//! ```text
//! cargo bench -p steadfast-benches --bench saga
//! STEADFAST_BENCH_QUICK=1 cargo bench -p steadfast-benches --bench saga   # short run
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput};
use sqlx::{PgPool, SqlitePool};
use steadfast_benches::{criterion_dir, quick_mode, read_median_ns, FileTime};
use steadfast_saga::store::{
    Created, HistoryEntry, Lease, ListQuery, MemoryStore, NewSaga, PostgresStore, SagaRecord,
    SagaStore, SagaSummary, SqliteStore, StoreFuture, Transition,
};
use steadfast_saga::{
    Orchestrator, Saga, SagaDefinition, SagaId, SagaStatus, Step, StepContext, StepError,
};
use tokio::runtime::Runtime;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Sagas (and raw transactions) in flight at once.
const CONCURRENCY: usize = 16;
/// Steps per saga.
const STEPS: u64 = 3;
/// The target: durable writes per step.
const WRITES_PER_STEP_TARGET: f64 = 2.0;
/// The aim: sagas/s at least this share of the store's limit (raw txn/s / writes per saga).
const RATIO_AIM: f64 = 0.7;
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Counts of the store's writing calls.
#[derive(Debug, Default)]
struct Counts {
    creates: AtomicU64,
    records: AtomicU64,
    /// Records that upsert a step record (a step started or ended).
    step_records: AtomicU64,
    heartbeats: AtomicU64,
    releases: AtomicU64,
    claims: AtomicU64,
    take_overs: AtomicU64,
    /// `load`, `list`, `history`.
    reads: AtomicU64,
}

/// A snapshot of [`Counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Writes {
    creates: u64,
    records: u64,
    step_records: u64,
    other: u64,
    reads: u64,
}

impl Writes {
    fn total(&self) -> u64 {
        self.creates + self.records + self.other
    }

    fn since(self, before: Writes) -> Writes {
        Writes {
            creates: self.creates - before.creates,
            records: self.records - before.records,
            step_records: self.step_records - before.step_records,
            other: self.other - before.other,
            reads: self.reads - before.reads,
        }
    }
}

impl Counts {
    fn snapshot(&self) -> Writes {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Writes {
            creates: get(&self.creates),
            records: get(&self.records),
            step_records: get(&self.step_records),
            other: get(&self.heartbeats)
                + get(&self.releases)
                + get(&self.claims)
                + get(&self.take_overs),
            reads: get(&self.reads),
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

/// A store that counts its writing calls (each one transaction) and delegates.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn SagaStore>,
    counts: Arc<Counts>,
}

impl SagaStore for Counting {
    fn create<'a>(
        &'a self,
        new: NewSaga,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Created> {
        bump(&self.counts.creates);
        self.inner.create(new, owner, lease)
    }

    fn load(&self, id: SagaId) -> StoreFuture<'_, SagaRecord> {
        bump(&self.counts.reads);
        self.inner.load(id)
    }

    fn record<'a>(&'a self, lease: &'a Lease, transition: Transition) -> StoreFuture<'a, ()> {
        bump(&self.counts.records);
        if transition.step.is_some() {
            bump(&self.counts.step_records);
        }
        self.inner.record(lease, transition)
    }

    fn heartbeat<'a>(&'a self, lease: &'a Lease, lease_for: Duration) -> StoreFuture<'a, ()> {
        bump(&self.counts.heartbeats);
        self.inner.heartbeat(lease, lease_for)
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> StoreFuture<'a, ()> {
        bump(&self.counts.releases);
        self.inner.release(lease)
    }

    fn claim_expired<'a>(
        &'a self,
        owner: &'a str,
        lease_for: Duration,
        limit: u32,
    ) -> StoreFuture<'a, Vec<Lease>> {
        bump(&self.counts.claims);
        self.inner.claim_expired(owner, lease_for, limit)
    }

    fn take_over<'a>(
        &'a self,
        id: SagaId,
        owner: &'a str,
        lease_for: Duration,
    ) -> StoreFuture<'a, Lease> {
        bump(&self.counts.take_overs);
        self.inner.take_over(id, owner, lease_for)
    }

    fn list(&self, query: ListQuery) -> StoreFuture<'_, Vec<SagaSummary>> {
        bump(&self.counts.reads);
        self.inner.list(query)
    }

    fn history(&self, id: SagaId) -> StoreFuture<'_, Vec<HistoryEntry>> {
        bump(&self.counts.reads);
        self.inner.history(id)
    }

    fn request_cancel<'a>(&'a self, id: SagaId, reason: &'a str) -> StoreFuture<'a, SagaStatus> {
        self.inner.request_cancel(id, reason)
    }
}

/// The store's own way of committing one single-row transaction.
#[derive(Debug)]
enum Raw {
    Memory(Mutex<HashMap<u64, String>>),
    /// The pool, and the turn of the "one writer at a time" baseline.
    Sqlite(SqlitePool, tokio::sync::Mutex<()>),
    Postgres(PgPool),
}

impl Raw {
    async fn setup(&self) -> Result<(), sqlx::Error> {
        let ddl =
            "CREATE TABLE IF NOT EXISTS bench_scratch (id BIGINT PRIMARY KEY, v TEXT NOT NULL)";
        match self {
            Raw::Memory(_) => {}
            Raw::Sqlite(p, _) => {
                sqlx::query(ddl).execute(p).await?;
            }
            Raw::Postgres(p) => {
                sqlx::query(ddl).execute(p).await?;
            }
        }
        Ok(())
    }

    /// The best single-row write the store's database offers for a write like the store's
    /// (the second baseline): SQLite, the same transaction with one writer at a time in the
    /// process (as `SqliteStore` writes: no busy waiting on the write lock; one row per
    /// transaction, where the store commits the writes that queued up together); PostgreSQL, one
    /// `INSERT` outside any explicit transaction (one round trip, as `PostgresStore` now writes
    /// a transition); the memory store, the same insert as [`Raw::txn`].
    async fn best(&self, row: u64) -> Result<(), sqlx::Error> {
        match self {
            Raw::Memory(_) => self.txn(row).await,
            Raw::Sqlite(_, turn) => {
                let _turn = turn.lock().await;
                self.txn(row).await
            }
            Raw::Postgres(p) => {
                let id = i64::try_from(row).unwrap_or(i64::MAX);
                sqlx::query("INSERT INTO bench_scratch (id, v) VALUES ($1, $2)")
                    .bind(id)
                    .bind(format!("row {id}"))
                    .execute(p)
                    .await?;
                Ok(())
            }
        }
    }

    async fn txn(&self, row: u64) -> Result<(), sqlx::Error> {
        let id = i64::try_from(row).unwrap_or(i64::MAX);
        match self {
            Raw::Memory(m) => {
                let mut map = m.lock().unwrap_or_else(|p| p.into_inner());
                map.insert(row, format!("row {id}"));
            }
            Raw::Sqlite(p, _) => {
                let mut tx = p.begin_with("BEGIN IMMEDIATE").await?;
                sqlx::query("INSERT INTO bench_scratch (id, v) VALUES (?, ?)")
                    .bind(id)
                    .bind(format!("row {id}"))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Raw::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("INSERT INTO bench_scratch (id, v) VALUES ($1, $2)")
                    .bind(id)
                    .bind(format!("row {id}"))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Rows in the saga history (the cross-check of the counted writes).
    async fn history_rows(&self, store: &dyn SagaStore) -> Option<u64> {
        let sql = "SELECT count(*) FROM steadfast_saga_history";
        let n: i64 = match self {
            Raw::Memory(_) => {
                let mut n = 0;
                for s in store.list(ListQuery::new(u32::MAX)).await.ok()? {
                    n += store.history(s.id).await.ok()?.len() as i64;
                }
                n
            }
            Raw::Sqlite(p, _) => sqlx::query_scalar(sql).fetch_one(p).await.ok()?,
            Raw::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.ok()?,
        };
        u64::try_from(n).ok()
    }
}

/// One store under test.
struct Subject {
    name: &'static str,
    describe: String,
    store: Arc<dyn SagaStore>,
    orch: Orchestrator,
    def: SagaDefinition<u64>,
    counts: Arc<Counts>,
    raw: Arc<Raw>,
    next_key: AtomicU64,
    next_row: AtomicU64,
    cleanup: Cleanup,
}

enum Cleanup {
    None,
    Dir(PathBuf),
    Schema(PostgresStore),
}

fn definition() -> SagaDefinition<u64> {
    type Ctx = StepContext<u64>;
    let mut b = Saga::builder::<u64>("bench-trip").version(1);
    for name in ["flight", "hotel"] {
        b.step(Step::compensatable(
            name,
            |_ctx: Ctx| async { Ok::<_, StepError>(()) },
            |_ctx: Ctx, _out: ()| async { Ok::<_, StepError>(()) },
        ));
    }
    b.step(Step::pivot("car", |_ctx: Ctx| async {
        Ok::<_, StepError>(())
    }));
    b.build().expect("a valid saga definition")
}

impl Subject {
    fn new(
        name: &'static str,
        describe: String,
        inner: Arc<dyn SagaStore>,
        raw: Raw,
        cleanup: Cleanup,
    ) -> Self {
        let counts = Arc::new(Counts::default());
        let store: Arc<dyn SagaStore> = Arc::new(Counting {
            inner,
            counts: Arc::clone(&counts),
        });
        let def = definition();
        let orch = Orchestrator::builder(Arc::clone(&store))
            .register(&def)
            .owner(format!("bench-{name}"))
            .build()
            .expect("a valid orchestrator");
        Subject {
            name,
            describe,
            store,
            orch,
            def,
            counts,
            raw: Arc::new(raw),
            next_key: AtomicU64::new(0),
            next_row: AtomicU64::new(0),
            cleanup,
        }
    }

    /// Runs `n` sagas, [`CONCURRENCY`] at a time, each `start` + `wait` until completed.
    async fn sagas(&self, n: u64) -> Duration {
        let gate = Arc::new(Semaphore::new(CONCURRENCY));
        let mut tasks = JoinSet::new();
        let started = Instant::now();
        for _ in 0..n {
            let permit = Arc::clone(&gate)
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let key = self.next_key.fetch_add(1, Ordering::Relaxed);
            let (orch, def) = (self.orch.clone(), self.def.clone());
            tasks.spawn(async move {
                let _permit = permit;
                let s = orch
                    .start(&def, &format!("b{key}"), &key)
                    .await
                    .expect("start");
                let status = orch.wait(s.id).await.expect("wait");
                assert_eq!(status, SagaStatus::Completed);
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a saga task");
        }
        started.elapsed()
    }

    /// Commits `n` single-row transactions, [`CONCURRENCY`] at a time (`best`: the second
    /// baseline's, [`Raw::best`]).
    async fn raw(&self, n: u64, best: bool) -> Duration {
        let mut tasks = JoinSet::new();
        let started = Instant::now();
        let per_task = n / CONCURRENCY as u64;
        let extra = n % CONCURRENCY as u64;
        for t in 0..CONCURRENCY as u64 {
            let count = per_task + u64::from(t < extra);
            let first = self.next_row.fetch_add(count, Ordering::Relaxed);
            let raw = Arc::clone(&self.raw);
            tasks.spawn(async move {
                for id in first..first + count {
                    let done = match best {
                        false => raw.txn(id).await,
                        true => raw.best(id).await,
                    };
                    done.expect("a raw transaction");
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("a raw task");
        }
        started.elapsed()
    }

    async fn close(self) {
        match self.cleanup {
            Cleanup::None => {}
            Cleanup::Dir(dir) => {
                if let Raw::Sqlite(p, _) = &*self.raw {
                    p.close().await;
                }
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Schema(store) => {
                if let Err(e) = store.drop_schema().await {
                    println!("could not drop the bench schema: {e}");
                }
            }
        }
    }
}

async fn subjects() -> (Vec<Subject>, Vec<String>) {
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    out.push(Subject::new(
        "memory",
        "MemoryStore (one mutex)".to_owned(),
        Arc::new(MemoryStore::new()),
        Raw::Memory(Mutex::new(HashMap::new())),
        Cleanup::None,
    ));
    for (name, durable) in [("sqlite", true), ("sqlite_normal", false)] {
        let dir = std::env::temp_dir().join(format!(
            "steadfast-bench-saga-{}-{name}",
            std::process::id()
        ));
        let opened = async {
            std::fs::create_dir_all(&dir)?;
            let store = SqliteStore::open_with(dir.join("saga.db"), durable).await?;
            let raw = Raw::Sqlite(store.pool().clone(), tokio::sync::Mutex::new(()));
            raw.setup().await?;
            Ok::<_, Box<dyn std::error::Error>>((store, raw))
        };
        match opened.await {
            Ok((store, raw)) => out.push(Subject::new(
                name,
                format!(
                    "SqliteStore, WAL, synchronous={}, temp dir",
                    if durable { "FULL" } else { "NORMAL" }
                ),
                Arc::new(store),
                raw,
                Cleanup::Dir(dir),
            )),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                skipped.push(format!("{name}: {e}"));
            }
        }
    }
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned());
    let schema = format!("steadfast_bench_saga_{}", std::process::id());
    let opened = async {
        let store = tokio::time::timeout(
            Duration::from_secs(5),
            PostgresStore::connect_with(&url, Some(&schema), 8),
        )
        .await
        .map_err(|_| "could not connect within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
        let raw = Raw::Postgres(store.pool().clone());
        raw.setup().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((store, raw))
    };
    match opened.await {
        Ok((store, raw)) => {
            let host = url.rsplit('@').next().unwrap_or(&url).to_owned();
            out.push(Subject::new(
                "postgres",
                format!("PostgresStore {host}, schema {schema}, pool 8"),
                Arc::new(store.clone()),
                raw,
                Cleanup::Schema(store),
            ))
        }
        Err(e) => skipped.push(format!("postgres ({url}): {e}")),
    }
    for s in &skipped {
        eprintln!("\n!!! SKIPPED {s}\n");
    }
    (out, skipped)
}

/// Whether criterion runs in bench mode (`cargo bench`), not test or list mode.
fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// One store's interleaved measurement.
#[derive(Debug)]
struct Row {
    name: &'static str,
    describe: String,
    sagas_per_s: f64,
    raw_per_s: f64,
    /// The second baseline ([`Raw::best`]).
    best_per_s: f64,
    writes: Writes,
    sagas: u64,
    history_rows: Option<u64>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `rounds` rounds of `n` sagas then as many raw transactions as those sagas wrote, then as
/// many of the second baseline's.
fn interleaved(rt: &Runtime, s: &Subject, rounds: usize, n: u64) -> Row {
    let before = s.counts.snapshot();
    let keys_before = s.next_key.load(Ordering::Relaxed);
    let mut sagas = Vec::new();
    let mut raws = Vec::new();
    let mut bests = Vec::new();
    for _ in 0..rounds {
        let w0 = s.counts.snapshot();
        let took = rt.block_on(s.sagas(n));
        let wrote = s.counts.snapshot().since(w0).total();
        sagas.push(n as f64 / took.as_secs_f64());
        let took = rt.block_on(s.raw(wrote, false));
        raws.push(wrote as f64 / took.as_secs_f64());
        let took = rt.block_on(s.raw(wrote, true));
        bests.push(wrote as f64 / took.as_secs_f64());
    }
    let writes = s.counts.snapshot().since(before);
    let ran = s.next_key.load(Ordering::Relaxed) - keys_before;
    Row {
        name: s.name,
        describe: s.describe.clone(),
        sagas_per_s: median(&mut sagas),
        raw_per_s: median(&mut raws),
        best_per_s: median(&mut bests),
        writes,
        sagas: ran,
        history_rows: None,
    }
}

fn table(
    rows: &[Row],
    skipped: &[String],
    criterion: impl Fn(&str, &str) -> Option<f64>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nsagas/s of a three-step no-op saga ({CONCURRENCY} in flight) beside the store's raw single-row transactions/s (same count, same concurrency, alternating rounds; medians)"
    );
    let _ = writeln!(
        out,
        "{:<14} {:>9} {:>10} {:>9} {:>11} {:>11} {:>6} {:>10} {:>6} {:>11} {:>13} {:>10} {:>9}  writes/step <= 2, reads/step 0, ratio >= {RATIO_AIM}",
        "store",
        "sagas/s",
        "raw txn/s",
        "txn/saga",
        "writes/saga",
        "limit sag/s",
        "ratio",
        "best raw/s",
        "ratio2",
        "writes/step",
        "step rec/step",
        "reads/step",
        "crit. ms",
    );
    for r in rows {
        let per_saga = r.writes.total() as f64 / r.sagas.max(1) as f64;
        let per_step = per_saga / STEPS as f64;
        let step_records = r.writes.step_records as f64 / (r.sagas.max(1) * STEPS) as f64;
        let reads = r.writes.reads as f64 / (r.sagas.max(1) * STEPS) as f64;
        let limit = r.raw_per_s / per_saga;
        let ratio = r.sagas_per_s / limit;
        let ratio2 = r.sagas_per_s / (r.best_per_s / per_saga);
        let crit = criterion(&format!("saga_{}", r.name), "three_steps")
            .map_or_else(|| "-".to_owned(), |ns| format!("{:.3}", ns / 1e6));
        let writes = if per_step <= WRITES_PER_STEP_TARGET {
            "writes ok"
        } else if step_records <= WRITES_PER_STEP_TARGET {
            "writes MISSED counting create + completed (step records alone: ok)"
        } else {
            "writes MISSED"
        };
        let verdict = format!(
            "{writes}; {}; {}",
            if r.writes.reads == 0 {
                "reads ok"
            } else {
                "reads MISSED"
            },
            if ratio >= RATIO_AIM {
                "ratio ok"
            } else {
                "ratio below the aim"
            }
        );
        let _ = writeln!(
            out,
            "{:<14} {:>9.0} {:>10.0} {:>9.1} {:>11.2} {:>11.0} {:>6.2} {:>10.0} {:>6.2} {:>11.2} {:>13.2} {:>10.3} {:>9}  {}",
            r.name,
            r.sagas_per_s,
            r.raw_per_s,
            r.raw_per_s / r.sagas_per_s,
            per_saga,
            limit,
            ratio,
            r.best_per_s,
            ratio2,
            per_step,
            step_records,
            reads,
            crit,
            verdict
        );
    }
    let _ = writeln!(out, "\nstores:");
    for r in rows {
        let check = match r.history_rows {
            Some(h) if h == r.writes.creates + r.writes.records => "equal".to_owned(),
            Some(h) => format!("DIFFERENT: {h} rows"),
            None => "not read".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {:<14} {}; {} sagas: {} creates + {} records ({} of them step records) + {} other writes (heartbeats, releases, claims), {} reads; history rows vs creates + records: {check}",
            r.name,
            r.describe,
            r.sagas,
            r.writes.creates,
            r.writes.records,
            r.writes.step_records,
            r.writes.other,
            r.writes.reads
        );
    }
    let _ = writeln!(
        out,
        "txn/saga = raw txn/s / sagas/s (a saga costs the time of that many single-row transactions); limit sag/s = raw txn/s / writes per saga (the rate if its writes were all a saga cost); ratio = sagas/s / limit (the aim's); best raw/s = the second baseline, the best single-row write the database offers for a write like the store's (SQLite: the same transaction, one writer at a time in the process, as SqliteStore writes, but one row per transaction where the store commits the writes queued behind one another together; PostgreSQL: one INSERT outside an explicit transaction, one round trip, as PostgresStore writes a transition; memory: the same insert), ratio2 = sagas/s / (best raw/s / writes per saga); reads/step = loads, lists and histories per step (a run keeps its saga in memory: none); crit. ms = criterion's median per saga.\nEach step writes `step_started` before the call and its outcome after (2 per step); the saga's creation carries the first step's start and the last step's outcome carries its completion, so a three-step saga costs 6 writes: 2.00 per step."
    );
    for s in skipped {
        let _ = writeln!(out, "!!! SKIPPED {s}");
    }
    out
}

fn main() {
    let dir = criterion_dir();
    let started = FileTime::now_in(&dir);
    let quick = quick_mode();
    let mut c = Criterion::default().output_directory(&dir);
    c = if quick {
        c.warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(10)
    } else {
        c.warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(5))
            .sample_size(10)
    };
    let mut c = c.configure_from_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (subjects, skipped) = rt.block_on(subjects());

    let mut ran = Vec::new();
    for s in &subjects {
        let mut ran_this = false;
        let mut g = c.benchmark_group(format!("saga_{}", s.name));
        g.sampling_mode(SamplingMode::Flat)
            .throughput(Throughput::Elements(1));
        g.bench_function("three_steps", |b| {
            ran_this = true;
            b.iter_custom(|iters| rt.block_on(s.sagas(iters)))
        });
        g.bench_function("raw_txn", |b| {
            b.iter_custom(|iters| rt.block_on(s.raw(iters, false)))
        });
        g.finish();
        ran.push(ran_this);
    }
    c.final_summary();

    let mut rows = Vec::new();
    if bench_mode() {
        let (rounds, n) = if quick { (3, 50) } else { (7, 200) };
        for (s, ran) in subjects.iter().zip(ran) {
            if !ran {
                continue;
            }
            let mut row = interleaved(&rt, s, rounds, n);
            // Over everything this subject ran, criterion's groups included.
            row.writes = s.counts.snapshot();
            row.sagas = s.next_key.load(Ordering::Relaxed);
            row.history_rows = rt.block_on(s.raw.history_rows(&*s.store));
            rows.push(row);
        }
    }
    for s in subjects {
        rt.block_on(s.close());
    }
    if bench_mode() {
        print!(
            "{}",
            table(&rows, &skipped, |group, id| read_median_ns(
                &dir, group, id, started
            ))
        );
    }
}
