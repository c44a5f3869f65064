//! Two orchestrator processes on one PostgreSQL database run 500 sagas while the parent kills
//! one or the other (SIGKILL) at random and restarts it. Both start every saga (the business
//! key dedupes them) and both run the recovery loop. Checked afterwards:
//! - one saga per business key, every saga completed or compensated;
//! - every participant effect applied exactly once;
//! - no saga was ever executed by both at once: participant calls' wall-clock intervals (one
//!   host, one clock) of different orchestrators never overlap on one saga;
//! - every write from a fenced-out owner was rejected: per saga, the log's epochs never go
//!   backwards;
//! - the crashes really caused take-overs (recoveries happened).
//!
//! The detectors themselves are shown to fail: with fencing deliberately broken (the
//! `test-hooks` store handle that skips the lease-epoch check), an orchestrator that stalled
//! past its lease keeps calling and writing after another claimed its sagas, and both detectors
//! report it; with fencing intact, the same run reports nothing.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::Row;
use steadfast_layers::rng::{RandomSource, SeededRng};
use steadfast_saga::store::{Lease, ListQuery, SagaStore, SqliteStore};
use steadfast_saga::{
    Boundary, BoundaryInfo, Orchestrator, Phase, RetryPolicy, Saga, SagaDefinition, SagaHooks,
    SagaId, SagaStatus, Step, StepContext, StepError,
};
use support::{overlapping_calls, stale_writes, Call};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

const CHILD: &str = env!("CARGO_BIN_EXE_saga-crash-child");
const SAGAS: u32 = 500;
const KILLS: u32 = 8;

#[allow(clippy::disallowed_types)]
fn wall_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

fn spawn(schema: &str, inst: &str) -> Child {
    Command::new(CHILD)
        .arg(format!("postgres:{schema}"))
        .arg("soak")
        .arg(SAGAS.to_string())
        .arg(inst)
        .args(["--lease-ms", "1500"])
        .env("DATABASE_URL", support::database_url())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn an orchestrator child")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_500_sagas_random_crashes() {
    let Some(store) = support::pg_store("two_orch").await else {
        return;
    };
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let rng = SeededRng::from_entropy();
    let mut generation = [0u32; 2];
    let name = |slot: usize, gen: u32| format!("{}-{gen}", ["A", "B"][slot]);
    let mut children = [spawn(&schema, &name(0, 0)), spawn(&schema, &name(1, 0))];
    // When each killed instance was dead for sure (its open calls ended before this).
    let mut dead_at: HashMap<String, i64> = HashMap::new();
    for _ in 0..KILLS {
        // Waiting for child processes: the only real-clock sleep here.
        tokio::time::sleep(Duration::from_millis(300 + rng.next_u64() % 1200)).await;
        let slot = (rng.next_u64() % 2) as usize;
        let victim = name(slot, generation[slot]);
        children[slot].kill().await.unwrap();
        dead_at.insert(victim, wall_us());
        generation[slot] += 1;
        children[slot] = spawn(&schema, &name(slot, generation[slot]));
    }
    let finish = async {
        for c in &mut children {
            let status = c.wait().await.unwrap();
            assert!(status.success(), "an orchestrator child failed: {status:?}");
        }
    };
    tokio::time::timeout(Duration::from_secs(240), finish)
        .await
        .expect("both orchestrators finished within 240 s");
    let exited_at = wall_us();

    // One saga per key, all finished.
    let sagas = store.list(ListQuery::new(10_000)).await.unwrap();
    assert_eq!(sagas.len(), SAGAS as usize);
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for s in &sagas {
        *by_status.entry(s.status.to_string()).or_default() += 1;
        let i: u32 = s.business_key.trim_start_matches('s').parse().unwrap();
        let expected = if i % 3 == 2 {
            SagaStatus::Compensated
        } else {
            SagaStatus::Completed
        };
        assert_eq!(s.status, expected, "{s:?}");
    }
    eprintln!("statuses: {by_status:?}");

    // Exactly-once effects.
    let rows = sqlx::query(
        "SELECT saga, step, phase, COUNT(*) FROM crash_effects GROUP BY saga, step, phase",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let mut per_saga: HashMap<String, usize> = HashMap::new();
    for r in &rows {
        let n: i64 = r.get(3);
        assert_eq!(
            n,
            1,
            "effect applied {n} times: {:?}",
            r.get::<String, _>(0)
        );
        *per_saga.entry(r.get::<String, _>(0)).or_default() += 1;
    }
    for s in &sagas {
        let expected = if s.status == SagaStatus::Compensated {
            2
        } else {
            3
        };
        assert_eq!(
            per_saga.get(&s.id.to_string()).copied().unwrap_or(0),
            expected
        );
    }
    let calls: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM crash_calls")
        .fetch_one(store.pool())
        .await
        .unwrap();

    // No saga executed by both at once.
    let rows = sqlx::query("SELECT saga, inst, start_us, end_us FROM soak_calls")
        .fetch_all(store.pool())
        .await
        .unwrap();
    let n_intervals = rows.len();
    let mut open_ends = 0;
    let calls_made: Vec<Call> = rows
        .iter()
        .map(|r| {
            let inst: String = r.get(1);
            let end: Option<i64> = r.get(3);
            let end = end.unwrap_or_else(|| {
                open_ends += 1;
                dead_at.get(&inst).copied().unwrap_or(exited_at)
            });
            Call {
                saga: r.get(0),
                inst,
                start: r.get(2),
                end,
            }
        })
        .collect();
    let overlaps = overlapping_calls(&calls_made);
    assert!(
        overlaps.is_empty(),
        "executed by two orchestrators at once: {overlaps:#?}"
    );

    // Fenced-out writes never landed: epochs never go backwards in any saga's log.
    let rows =
        sqlx::query("SELECT saga_id, epoch FROM steadfast_saga_history ORDER BY saga_id, seq")
            .fetch_all(store.pool())
            .await
            .unwrap();
    let stale = stale_writes(rows.iter().map(|r| (r.get(0), r.get(1))));
    assert!(
        stale.is_empty(),
        "writes from fenced-out owners landed (saga, epoch, after epoch): {stale:?}"
    );
    let recoveries: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(recoveries), 0)::bigint FROM steadfast_sagas")
            .fetch_one(store.pool())
            .await
            .unwrap();
    let owners: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT inst) FROM soak_calls")
        .fetch_one(store.pool())
        .await
        .unwrap();
    eprintln!(
        "{} participant calls ({} intervals, {open_ends} closed by a kill), {recoveries} \
         recoveries, {owners} orchestrator instances did work",
        calls, n_intervals
    );
    store.drop_schema().await.unwrap();
    assert!(recoveries > 0, "the kills caused no take-over");
    assert!(owners >= 3, "work was not spread over restarted instances");
}

// ---------------------------------------------------------------------------------------------
// The detectors can fail: the same checks over two in-process orchestrators, with fencing intact
// and with fencing deliberately broken.

/// Sagas per run.
const SMALL: usize = 50;
/// Short leases: a fenced-out owner learns it at its next heartbeat (a third of this later), or
/// stops on its own when the renewal does not answer (at most 0.9 of this after its last one).
/// The soak children's lease: a run stops on its own when one renewal takes longer than 0.9 of
/// it, and with a hundred runs renewing on one SQLite file while the other tests load both
/// cores, renewals were seen to take longer than the 0.54 s a 600 ms lease allows.
const SHORT_LEASE: Duration = Duration::from_millis(1500);
/// How long the contested step's participant call lasts: B's calls must still be in flight
/// when A's stall ends, 1.5 leases after B called the last saga, and when a broken A, resumed,
/// makes its own call: 8 s leaves 5.75 s for that on a loaded machine (4 s, leaving 1.75 s,
/// once let a broken A on PostgreSQL call only after B's call had ended, at load average 13).
const SLOW_CALL: Duration = Duration::from_millis(8000);

type Calls = Arc<Mutex<Vec<Call>>>;

/// Records a participant call's interval; the end is written on drop, so a call whose future
/// was dropped (its run fenced) still closes.
struct OpenCall {
    calls: Calls,
    index: usize,
    t0: Instant,
}

impl OpenCall {
    fn start(calls: &Calls, t0: Instant, saga: SagaId, inst: &str) -> Self {
        let mut v = calls.lock().unwrap();
        v.push(Call {
            saga: saga.to_string(),
            inst: inst.to_string(),
            start: t0.elapsed().as_micros() as i64,
            end: i64::MAX,
        });
        OpenCall {
            calls: Arc::clone(calls),
            index: v.len() - 1,
            t0,
        }
    }
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        let end = self.t0.elapsed().as_micros() as i64;
        if let Ok(mut v) = self.calls.lock() {
            v[self.index].end = end;
        }
    }
}

/// The same saga type for each orchestrator instance; every participant call is recorded with
/// the instance that made it. `charge` is the slow, contested step.
fn contested(inst: &'static str, calls: &Calls, t0: Instant) -> SagaDefinition<u32> {
    type Ctx = StepContext<u32>;
    let step = |slow: bool| {
        let calls = Arc::clone(calls);
        move |ctx: Ctx| {
            let open = OpenCall::start(&calls, t0, ctx.saga_id(), inst);
            async move {
                if slow {
                    tokio::time::sleep(SLOW_CALL).await;
                }
                drop(open);
                Ok::<_, StepError>(())
            }
        }
    };
    let once = RetryPolicy::attempts(1);
    let mut b = Saga::builder::<u32>("contested").version(1);
    b.step(Step::pivot("reserve", step(false)).retry(once));
    b.step(Step::retriable("charge", step(true)));
    b.step(Step::retriable("notify", step(false)));
    b.build().unwrap()
}

/// Stalls every run at the start of `charge` (after its start is durable, before the call),
/// as a process pause or a slow network would, until the gate opens.
#[derive(Debug)]
struct Stall {
    paused: Arc<Mutex<HashSet<SagaId>>>,
    gate: watch::Receiver<bool>,
}

impl SagaHooks for Stall {
    fn at_boundary(&self, at: &BoundaryInfo<'_>) -> BoxFuture<'static, ()> {
        if at.step != "charge" || at.phase != Phase::Forward || at.boundary != Boundary::BeforeCall
        {
            return Box::pin(async {});
        }
        self.paused.lock().unwrap().insert(at.saga);
        let mut gate = self.gate.clone();
        Box::pin(async move {
            let _ = gate.wait_for(|open| *open).await;
        })
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting until {what}");
}

/// What the detectors found in one run.
struct Found {
    overlaps: Vec<(Call, Call)>,
    stale: Vec<(String, i64, i64)>,
    /// Participant calls orchestrator A started after its stall ended (at the contested step or
    /// later).
    a_after_stall: usize,
}

/// Orchestrator A starts [`SMALL`] sagas and stalls each at the contested step (A recovers any
/// whose lease its run lost before: every saga reaches the stall under A); their leases expire
/// (forced: given up under A's name, as if A's clock had run slow) and orchestrator B claims
/// and runs them; once a fenced-out A must have stopped (more than a lease after its last
/// renewal), A's stall ends. `a_store` is A's handle on the log (the one
/// whose fencing a test may break); `b_store` is B's, on the same log.
async fn stalled_owner_run(a_store: Arc<dyn SagaStore>, b_store: Arc<dyn SagaStore>) -> Found {
    let t0 = Instant::now();
    let calls: Calls = Arc::default();
    let paused = Arc::new(Mutex::new(HashSet::new()));
    let (open, gate) = watch::channel(false);
    let def_a = contested("A", &calls, t0);
    let def_b = contested("B", &calls, t0);
    let a = Orchestrator::builder(a_store)
        .owner("A")
        .register(&def_a)
        .lease(SHORT_LEASE)
        .poll_interval(Duration::from_millis(50))
        .hooks(Arc::new(Stall {
            paused: Arc::clone(&paused),
            gate,
        }))
        .build()
        .unwrap();
    let b = Orchestrator::builder(b_store)
        .owner("B")
        .register(&def_b)
        .lease(SHORT_LEASE)
        .poll_interval(Duration::from_millis(50))
        .build()
        .unwrap();
    // A run that loses its lease before the stall (a renewal slower than the lease allows, on a
    // loaded machine) stops on its own; A claims the saga again and its next run stalls.
    let a_recovery = a.spawn_recovery();
    let mut ids = Vec::new();
    for i in 0..SMALL {
        ids.push(a.start(&def_a, &format!("s{i}"), &0).await.unwrap().id);
    }
    until("A stalled every saga", || {
        paused.lock().unwrap().len() == SMALL
    })
    .await;
    a_recovery.abort();

    // Forced lease expiry: A's leases are given up under A's name, and B claims them (a renewal
    // of A's may slip in between: repeat until B holds every saga).
    let mut unclaimed: HashSet<SagaId> = ids.iter().copied().collect();
    let claims = tokio::time::timeout(Duration::from_secs(60), async {
        while !unclaimed.is_empty() {
            for id in &unclaimed {
                let rec = b.store().load(*id).await.unwrap();
                if rec.owner.as_deref() == Some("A") {
                    let lease = Lease {
                        saga: *id,
                        owner: "A".into(),
                        epoch: rec.epoch,
                    };
                    b.store().release(&lease).await.unwrap();
                }
            }
            b.recover_once().await.unwrap();
            for id in ids.iter() {
                if b.store().load(*id).await.unwrap().owner.as_deref() == Some("B") {
                    unclaimed.remove(id);
                }
            }
        }
    });
    assert!(claims.await.is_ok(), "B did not claim every saga");
    // B picks up any saga whose lease it loses itself (a slow renewal on a loaded machine).
    let b_recovery = b.spawn_recovery();
    let b_charging = |calls: &Calls| {
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.inst == "B")
            .map(|c| c.saga.clone())
            .collect::<HashSet<_>>()
            .len()
    };
    until("B is calling the contested step of every saga", || {
        b_charging(&calls) == SMALL
    })
    .await;
    // A's last renewal was sent before B's claim: a fenced-out A has stopped by now, whether it
    // heard of the claim at its next heartbeat or stopped on its own (0.9 lease after it).
    tokio::time::sleep(SHORT_LEASE + SHORT_LEASE / 2).await;
    let stall_ended = t0.elapsed().as_micros() as i64;
    open.send(true).unwrap();

    let finished = tokio::time::timeout(Duration::from_secs(120), async {
        for id in &ids {
            assert_eq!(b.wait(*id).await.unwrap(), SagaStatus::Completed);
            assert_eq!(a.wait(*id).await.unwrap(), SagaStatus::Completed);
        }
    });
    if finished.await.is_err() {
        // What the log says of every saga still active: who holds it, at which epoch, and how
        // it got there.
        for id in &ids {
            let r = b.store().load(*id).await.unwrap();
            if r.status.is_active() {
                eprintln!(
                    "saga {id}: {} epoch {} owner {:?} recoveries {} steps {:?}",
                    r.status, r.epoch, r.owner, r.recoveries, r.steps
                );
                for h in b.history(*id).await.unwrap() {
                    eprintln!("    {h:?}");
                }
            }
        }
        panic!("the sagas did not finish within 120 s");
    }
    b_recovery.abort();
    let calls = calls.lock().unwrap().clone();
    // Before the stall ended, A called only `reserve` (a run that lost its lease after that call
    // and was recovered may have called it twice).
    let a_after_stall = calls
        .iter()
        .filter(|c| c.inst == "A" && c.start >= stall_ended)
        .count();
    let mut history = Vec::new();
    for id in &ids {
        for h in b.history(*id).await.unwrap() {
            history.push((id.to_string(), h.epoch));
        }
    }
    Found {
        overlaps: overlapping_calls(&calls),
        stale: stale_writes(history),
        a_after_stall,
    }
}

fn check_detectors(fenced: Found, broken: Found) {
    // Fencing intact: A heard at its next heartbeat that B holds the lease and stopped before
    // calling; nothing to report.
    assert!(
        fenced.overlaps.is_empty(),
        "fencing intact: overlaps reported: {:#?}",
        fenced.overlaps
    );
    assert!(
        fenced.stale.is_empty(),
        "fencing intact: stale writes reported: {:?}",
        fenced.stale
    );
    assert_eq!(
        fenced.a_after_stall, 0,
        "a fenced-out A still called the participant"
    );
    // Fencing broken: A kept renewing and writing, called while B's call was in flight, and
    // its epoch-1 outcomes landed after B's epoch-2 writes. Both detectors say so.
    assert!(
        broken.a_after_stall > 0,
        "the broken A never resumed its calls"
    );
    assert!(
        !broken.overlaps.is_empty(),
        "fencing broken, yet the overlap detector reported nothing"
    );
    assert!(
        !broken.stale.is_empty(),
        "fencing broken, yet the fenced-write detector reported nothing"
    );
    eprintln!(
        "fencing broken: {} overlapping call pairs, {} stale writes, {} calls by the stalled A",
        broken.overlaps.len(),
        broken.stale.len(),
        broken.a_after_stall
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_detectors_catch_an_orchestrator_without_fencing() {
    let Some(fenced) = support::pg_store("detector_fenced").await else {
        return;
    };
    let Some(broken) = support::pg_store("detector_broken").await else {
        return;
    };
    let f = stalled_owner_run(Arc::new(fenced.clone()), Arc::new(fenced.clone())).await;
    let b = stalled_owner_run(
        Arc::new(broken.without_fencing_for_tests()),
        Arc::new(broken.clone()),
    )
    .await;
    fenced.drop_schema().await.unwrap();
    broken.drop_schema().await.unwrap();
    check_detectors(f, b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_the_detectors_catch_an_orchestrator_without_fencing() {
    let (db_f, db_b) = (
        support::TempDb::new("detector-fenced"),
        support::TempDb::new("detector-broken"),
    );
    let fenced_a = SqliteStore::open(&db_f.path).await.unwrap();
    let fenced_b = SqliteStore::open(&db_f.path).await.unwrap();
    let f = stalled_owner_run(Arc::new(fenced_a), Arc::new(fenced_b)).await;
    let broken_a = SqliteStore::open(&db_b.path)
        .await
        .unwrap()
        .without_fencing_for_tests();
    let broken_b = SqliteStore::open(&db_b.path).await.unwrap();
    let b = stalled_owner_run(Arc::new(broken_a), Arc::new(broken_b)).await;
    check_detectors(f, b);
}
