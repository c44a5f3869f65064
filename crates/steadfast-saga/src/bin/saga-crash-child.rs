//! Test-only child process for the crash and two-orchestrator tests (`tests/crash.rs`,
//! `tests/two_orchestrators.rs`). Not part of the public API.
//!
//! ```text
//! saga-crash-child <store> crash <sagas> [--crash-at K] [--hold-at K --release-file PATH] [--lease-ms L]
//! saga-crash-child <store> soak <sagas> <instance> [--lease-ms L]
//! ```
//!
//! `<store>` is `sqlite:<path>` or `postgres:<schema>` (URL from `DATABASE_URL`).
//!
//! `crash` runs sagas `s0..sN` one after the other (odd ones fail at the pivot and compensate)
//! and prints `BOUNDARY <n> <what>` at every step boundary: before the call, during it (the
//! participant has applied its effect but not answered), after it (before the outcome is
//! written) and after the write. With `--crash-at K` it stops at boundary K and blocks until the
//! parent kills it. Without, it recovers whatever a previous run left and finishes every saga.
//! With `--hold-at K --release-file PATH` it waits at boundary K until PATH exists (the parent
//! acts on the saga meanwhile, e.g. cancels it), then goes on.
//!
//! `soak` starts sagas `s0..sN` concurrently as orchestrator `<instance>`, runs the recovery
//! loop, and records each participant call's wall-clock interval so the parent can check that
//! no saga is ever executed by two orchestrators at once.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use steadfast_layers::retry::Backoff;
use steadfast_layers::rng::{RandomSource, SeededRng};
use steadfast_saga::store::{PostgresStore, SagaStore, SqliteStore};
use steadfast_saga::{
    BoundaryInfo, Orchestrator, RetryPolicy, Saga, SagaDefinition, SagaHooks, SagaStatus, Step,
    StepContext, StepError,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Order {
    n: u32,
    fail_pivot: bool,
}

/// Where participants keep their effects: the same database as the saga log.
#[derive(Clone, Debug)]
enum Db {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

impl Db {
    async fn setup(&self) -> Result<(), sqlx::Error> {
        let stmts = [
            "CREATE TABLE IF NOT EXISTS crash_effects (
                key TEXT PRIMARY KEY, saga TEXT NOT NULL, step TEXT NOT NULL, phase TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS crash_calls (
                saga TEXT NOT NULL, step TEXT NOT NULL, phase TEXT NOT NULL, key TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS soak_calls (
                saga TEXT NOT NULL, inst TEXT NOT NULL, epoch BIGINT NOT NULL, call_id BIGINT NOT NULL,
                start_us BIGINT NOT NULL, end_us BIGINT)",
        ];
        for s in stmts {
            match self {
                Db::Sqlite(p) => {
                    sqlx::query(s).execute(p).await?;
                }
                Db::Pg(p) => {
                    // Two children may create the tables at once.
                    let mut tx = p.begin().await?;
                    sqlx::query("SELECT pg_advisory_xact_lock(42)")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(s).execute(&mut *tx).await?;
                    tx.commit().await?;
                }
            }
        }
        Ok(())
    }

    /// Applies an effect once per key (the participant's deduplication) and logs the call.
    async fn apply(&self, ctx: &StepContext<Order>) -> Result<(), sqlx::Error> {
        let (saga, step, phase, key) = (
            ctx.saga_id().to_string(),
            ctx.step().to_string(),
            ctx.phase().as_str(),
            ctx.key().to_string(),
        );
        match self {
            Db::Sqlite(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("INSERT INTO crash_calls (saga, step, phase, key) VALUES (?, ?, ?, ?)")
                    .bind(&saga)
                    .bind(&step)
                    .bind(phase)
                    .bind(&key)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO crash_effects (key, saga, step, phase) VALUES (?, ?, ?, ?)
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(&key)
                .bind(&saga)
                .bind(&step)
                .bind(phase)
                .execute(&mut *tx)
                .await?;
                tx.commit().await
            }
            Db::Pg(p) => {
                let mut tx = p.begin().await?;
                sqlx::query(
                    "INSERT INTO crash_calls (saga, step, phase, key) VALUES ($1, $2, $3, $4)",
                )
                .bind(&saga)
                .bind(&step)
                .bind(phase)
                .bind(&key)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO crash_effects (key, saga, step, phase) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(&key)
                .bind(&saga)
                .bind(&step)
                .bind(phase)
                .execute(&mut *tx)
                .await?;
                tx.commit().await
            }
        }
    }
}

/// Wall-clock microseconds: the parent compares intervals of several processes on one host.
#[allow(clippy::disallowed_types)]
fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Counts boundaries; prints them; blocks at the one to crash at.
#[derive(Debug)]
struct Boundaries {
    n: AtomicU64,
    crash_at: Option<u64>,
    hold: Option<(u64, std::path::PathBuf)>,
    print: bool,
}

impl Boundaries {
    fn hit(&self, what: String) -> BoxFuture<'static, ()> {
        let n = self.n.fetch_add(1, Ordering::SeqCst) + 1;
        if self.print {
            println!("BOUNDARY {n} {what}");
        }
        if self.crash_at == Some(n) {
            // Wait for the parent's SIGKILL.
            return Box::pin(std::future::pending());
        }
        if let Some((_, file)) = self.hold.as_ref().filter(|(k, _)| *k == n) {
            let file = file.clone();
            return Box::pin(async move {
                while !file.exists() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            });
        }
        Box::pin(async {})
    }
}

impl SagaHooks for Boundaries {
    fn at_boundary(&self, at: &BoundaryInfo<'_>) -> BoxFuture<'static, ()> {
        self.hit(format!(
            "{} {} {} {}",
            at.saga,
            at.step,
            at.phase,
            at.boundary.as_str()
        ))
    }
}

#[derive(Debug)]
struct Soak {
    inst: String,
    calls: AtomicU64,
    rng: SeededRng,
}

/// Closes a participant call's recorded interval, also when the call is cancelled (the
/// orchestrator dropped it on losing its lease): the end is taken when the guard drops.
struct CallGuard {
    pool: sqlx::PgPool,
    inst: String,
    call: i64,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let end = wall_us();
        let (pool, inst, call) = (self.pool.clone(), self.inst.clone(), self.call);
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = sqlx::query(
                    "UPDATE soak_calls SET end_us = $1 WHERE inst = $2 AND call_id = $3",
                )
                .bind(end)
                .bind(inst)
                .bind(call)
                .execute(&pool)
                .await;
            });
        }
    }
}

/// Runs one participant call: records its interval (soak), applies the effect, hits the
/// "during" boundary.
async fn participant(
    db: &Db,
    ctx: &StepContext<Order>,
    boundaries: &Arc<Boundaries>,
    soak: &Option<Arc<Soak>>,
) -> Result<(), StepError> {
    let mut _guard = None;
    if let (Some(s), Db::Pg(p)) = (soak, db) {
        let call = i64::try_from(s.calls.fetch_add(1, Ordering::SeqCst)).unwrap_or(i64::MAX);
        let start = wall_us();
        _guard = Some(CallGuard {
            pool: p.clone(),
            inst: s.inst.clone(),
            call,
        });
        sqlx::query(
            "INSERT INTO soak_calls (saga, inst, epoch, call_id, start_us) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(ctx.saga_id().to_string())
        .bind(&s.inst)
        .bind(ctx.lease_epoch())
        .bind(call)
        .bind(start)
        .execute(p)
        .await
        .map_err(StepError::unknown)?;
        let pause = s.rng.next_u64() % 8;
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    db.apply(ctx).await.map_err(StepError::unknown)?;
    boundaries
        .hit(format!(
            "{} {} {} during",
            ctx.saga_id(),
            ctx.step(),
            ctx.phase()
        ))
        .await;
    Ok(())
}

fn definition(
    db: Db,
    boundaries: Arc<Boundaries>,
    soak: Option<Arc<Soak>>,
) -> Result<SagaDefinition<Order>, steadfast_saga::Error> {
    type Ctx = StepContext<Order>;
    let retry = RetryPolicy::attempts(20)
        .backoff(Backoff::exponential(
            Duration::from_millis(5),
            Duration::from_millis(100),
        ))
        .attempt_timeout(Duration::from_secs(5));
    let mut b = Saga::builder::<Order>("crash-trip").version(1);
    let env = (db, boundaries, soak);
    let e1 = env.clone();
    let e2 = env.clone();
    let e3 = env.clone();
    let e4 = env;
    b.step(
        Step::compensatable(
            "reserve",
            move |ctx: Ctx| {
                let (db, b, s) = e1.clone();
                async move {
                    participant(&db, &ctx, &b, &s).await?;
                    Ok(ctx.input().n)
                }
            },
            move |ctx: Ctx, _n: u32| {
                let (db, b, s) = e2.clone();
                async move { participant(&db, &ctx, &b, &s).await }
            },
        )
        .retry(retry)
        .compensation_retry(retry),
    );
    b.step(
        Step::pivot("charge", move |ctx: Ctx| {
            let (db, b, s) = e3.clone();
            async move {
                if ctx.input().fail_pivot {
                    b.hit(format!("{} charge forward during", ctx.saga_id()))
                        .await;
                    return Err(StepError::permanent("card declined"));
                }
                participant(&db, &ctx, &b, &s).await
            }
        })
        .retry(retry),
    );
    b.step(
        Step::retriable("notify", move |ctx: Ctx| {
            let (db, b, s) = e4.clone();
            async move { participant(&db, &ctx, &b, &s).await }
        })
        .retry(RetryPolicy::forever().backoff(Backoff::exponential(
            Duration::from_millis(5),
            Duration::from_millis(100),
        ))),
    );
    b.build()
}

async fn open(spec: &str) -> Result<(Arc<dyn SagaStore>, Db), String> {
    if let Some(path) = spec.strip_prefix("sqlite:") {
        let s = SqliteStore::open_with(path, false)
            .await
            .map_err(|e| e.to_string())?;
        let db = Db::Sqlite(s.pool().clone());
        Ok((Arc::new(s), db))
    } else if let Some(schema) = spec.strip_prefix("postgres:") {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let s = PostgresStore::connect_with(&url, Some(schema), 6)
            .await
            .map_err(|e| e.to_string())?;
        let db = Db::Pg(s.pool().clone());
        Ok((Arc::new(s), db))
    } else {
        Err(format!("unknown store {spec:?}"))
    }
}

fn flag(args: &[String], name: &str) -> Option<u64> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

async fn run(args: Vec<String>) -> Result<(), String> {
    let usage = "usage: saga-crash-child <store> crash|soak <sagas> [instance] [--crash-at K] \
                 [--hold-at K --release-file PATH] [--lease-ms L]";
    let spec = args.get(1).ok_or(usage)?;
    let mode = args.get(2).ok_or(usage)?.as_str();
    let sagas: u32 = args.get(3).and_then(|s| s.parse().ok()).ok_or(usage)?;
    let lease = Duration::from_millis(flag(&args, "--lease-ms").unwrap_or(300));
    let (store, db) = open(spec).await?;
    db.setup().await.map_err(|e| e.to_string())?;
    let (soak, owner) = if mode == "soak" {
        let inst = args.get(4).ok_or(usage)?.clone();
        (
            Some(Arc::new(Soak {
                inst: inst.clone(),
                calls: AtomicU64::new(0),
                rng: SeededRng::from_entropy(),
            })),
            inst,
        )
    } else {
        (None, format!("crash-child-{}", std::process::id()))
    };
    let boundaries = Arc::new(Boundaries {
        n: AtomicU64::new(0),
        crash_at: flag(&args, "--crash-at"),
        hold: flag(&args, "--hold-at").zip(
            args.iter()
                .position(|a| a == "--release-file")
                .and_then(|i| args.get(i + 1))
                .map(std::path::PathBuf::from),
        ),
        print: mode == "crash",
    });
    let def = definition(db, Arc::clone(&boundaries), soak.clone()).map_err(|e| e.to_string())?;
    let orch = Orchestrator::builder(store)
        .register(&def)
        .owner(owner)
        .lease(lease)
        .poll_interval(Duration::from_millis(50))
        .hooks(boundaries)
        .build()
        .map_err(|e| e.to_string())?;
    let recovery = orch.spawn_recovery();
    let order = |i: u32| Order {
        n: i,
        fail_pivot: if mode == "soak" {
            i % 3 == 2
        } else {
            i % 2 == 1
        },
    };
    let mut ids = Vec::new();
    if mode == "crash" {
        // One after the other, so that boundary numbers are deterministic.
        for i in 0..sagas {
            let s = orch
                .start(&def, &format!("s{i}"), &order(i))
                .await
                .map_err(|e| e.to_string())?;
            orch.wait(s.id).await.map_err(|e| e.to_string())?;
            ids.push(s.id);
        }
    } else {
        for i in 0..sagas {
            let s = orch
                .start(&def, &format!("s{i}"), &order(i))
                .await
                .map_err(|e| e.to_string())?;
            ids.push(s.id);
        }
    }
    let mut ended = Vec::new();
    for id in &ids {
        ended.push(orch.wait(*id).await.map_err(|e| e.to_string())?);
    }
    recovery.abort();
    let done = ended.iter().filter(|s| s.is_terminal()).count();
    let stuck = ended
        .iter()
        .filter(|s| **s == SagaStatus::NeedsAttention)
        .count();
    println!("DONE {done} terminal, {stuck} needs_attention");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("saga-crash-child: {e}");
            ExitCode::FAILURE
        }
    }
}
