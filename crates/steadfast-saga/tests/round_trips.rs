//! Store round trips per step: a run keeps its saga in memory, so each step costs two durable
//! writes (its start and its outcome) and no read — on a fresh start, through compensation, and
//! after a claim (which reads the saga once). Counted by a store wrapper over the memory store,
//! SQLite and PostgreSQL; nothing here is timed. The reads of `Orchestrator::wait` are counted
//! apart (a task-local marks its calls): a wait for a saga whose run already ended here reads
//! the saga's status once; one that follows the run to its end reads nothing.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use steadfast_layers::rng::SeededRng;
use steadfast_saga::store::{
    Created, HistoryEntry, Lease, ListQuery, MemoryStore, NewSaga, SagaRecord, SagaStore,
    SagaSummary, SqliteStore, StepRecord, StepState, StoreFuture, Transition,
};
use steadfast_saga::{
    Error, Orchestrator, Phase, Saga, SagaDefinition, SagaId, SagaStatus, Step, StepContext,
    StepError,
};
use support::TempDb;

tokio::task_local! {
    /// Set while the test waits for a saga.
    static WAITING: bool;
}

/// `orch.wait(id)`, its reads counted apart.
async fn wait(orch: &Orchestrator, id: SagaId) -> SagaStatus {
    WAITING.scope(true, orch.wait(id)).await.unwrap()
}

/// Calls of each store method.
#[derive(Debug, Default)]
struct Calls {
    creates: AtomicU64,
    records: AtomicU64,
    loads: AtomicU64,
    lists: AtomicU64,
    /// Reads made by `wait` (counted apart from `loads`).
    wait_reads: AtomicU64,
    histories: AtomicU64,
    heartbeats: AtomicU64,
    releases: AtomicU64,
    claims: AtomicU64,
    take_overs: AtomicU64,
    cancels: AtomicU64,
}

/// What a piece of work cost the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cost {
    /// Durable transitions of a saga: `create` and `record`.
    transitions: u64,
    /// `load`, `list` and `history`, except those of `wait`.
    reads: u64,
    /// The reads of `wait`.
    wait_reads: u64,
    /// Claims and take-overs.
    claims: u64,
}

impl Calls {
    fn get(a: &AtomicU64) -> u64 {
        a.load(Ordering::SeqCst)
    }

    fn cost(&self) -> Cost {
        Cost {
            transitions: Self::get(&self.creates) + Self::get(&self.records),
            reads: Self::get(&self.loads) + Self::get(&self.lists) + Self::get(&self.histories),
            claims: Self::get(&self.claims) + Self::get(&self.take_overs),
            wait_reads: Self::get(&self.wait_reads),
        }
    }
}

impl Cost {
    fn since(self, before: Cost) -> Cost {
        Cost {
            transitions: self.transitions - before.transitions,
            reads: self.reads - before.reads,
            claims: self.claims - before.claims,
            wait_reads: self.wait_reads - before.wait_reads,
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::SeqCst);
}

/// More reads than any wait here makes: a wait that reads the store without pause.
const WAIT_READ_CAP: u64 = 10_000;

/// A store that counts every call and delegates.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn SagaStore>,
    calls: Arc<Calls>,
}

impl SagaStore for Counting {
    fn create<'a>(
        &'a self,
        new: NewSaga,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Created> {
        bump(&self.calls.creates);
        self.inner.create(new, owner, lease)
    }
    fn load(&self, id: SagaId) -> StoreFuture<'_, SagaRecord> {
        if WAITING.try_with(|w| *w).unwrap_or(false) {
            // A wait reading without pause fails its test instead of hanging it.
            if self.calls.wait_reads.fetch_add(1, Ordering::SeqCst) >= WAIT_READ_CAP {
                return Box::pin(async { Err(Error::store(std::io::Error::other("wait spins"))) });
            }
        } else {
            bump(&self.calls.loads);
        }
        self.inner.load(id)
    }
    fn record<'a>(&'a self, lease: &'a Lease, transition: Transition) -> StoreFuture<'a, ()> {
        bump(&self.calls.records);
        self.inner.record(lease, transition)
    }
    fn heartbeat<'a>(&'a self, lease: &'a Lease, lease_for: Duration) -> StoreFuture<'a, ()> {
        bump(&self.calls.heartbeats);
        self.inner.heartbeat(lease, lease_for)
    }
    fn release<'a>(&'a self, lease: &'a Lease) -> StoreFuture<'a, ()> {
        bump(&self.calls.releases);
        self.inner.release(lease)
    }
    fn claim_expired<'a>(
        &'a self,
        owner: &'a str,
        lease_for: Duration,
        limit: u32,
    ) -> StoreFuture<'a, Vec<Lease>> {
        bump(&self.calls.claims);
        self.inner.claim_expired(owner, lease_for, limit)
    }
    fn take_over<'a>(
        &'a self,
        id: SagaId,
        owner: &'a str,
        lease_for: Duration,
    ) -> StoreFuture<'a, Lease> {
        bump(&self.calls.take_overs);
        self.inner.take_over(id, owner, lease_for)
    }
    fn list(&self, query: ListQuery) -> StoreFuture<'_, Vec<SagaSummary>> {
        bump(&self.calls.lists);
        self.inner.list(query)
    }
    fn history(&self, id: SagaId) -> StoreFuture<'_, Vec<HistoryEntry>> {
        bump(&self.calls.histories);
        self.inner.history(id)
    }
    fn request_cancel<'a>(&'a self, id: SagaId, reason: &'a str) -> StoreFuture<'a, SagaStatus> {
        bump(&self.calls.cancels);
        self.inner.request_cancel(id, reason)
    }
}

/// Input: whether the pivot declines.
type Ctx = StepContext<bool>;

/// Three steps: `flight` and `hotel` compensatable, `car` the pivot (declines when the input
/// says so).
fn trip() -> SagaDefinition<bool> {
    let mut b = Saga::builder::<bool>("trip");
    for name in ["flight", "hotel"] {
        b.step(Step::compensatable(
            name,
            |_c: Ctx| async { Ok::<_, StepError>(1u32) },
            |_c: Ctx, _out: u32| async { Ok::<_, StepError>(()) },
        ));
    }
    b.step(Step::pivot("car", |c: Ctx| async move {
        if *c.input() {
            Err(StepError::permanent("no cars"))
        } else {
            Ok(())
        }
    }));
    b.build().unwrap()
}

const STEPS: u64 = 3;
const SAGAS: u64 = 5;

async fn check(inner: Arc<dyn SagaStore>) {
    let calls = Arc::new(Calls::default());
    let store: Arc<dyn SagaStore> = Arc::new(Counting {
        inner,
        calls: Arc::clone(&calls),
    });
    let def = trip();
    let orch = Orchestrator::builder(Arc::clone(&store))
        .register(&def)
        .owner("counted")
        .build()
        .unwrap();

    // Fresh sagas that complete: the creation carries the first start and the last outcome
    // the completion, so 2 transitions per step; `start` and `wait` read nothing.
    let before = calls.cost();
    let mut ids = Vec::new();
    for i in 0..SAGAS {
        ids.push(
            orch.start(&def, &format!("ok-{i}"), &false)
                .await
                .unwrap()
                .id,
        );
    }
    for id in &ids {
        assert_eq!(wait(&orch, *id).await, SagaStatus::Completed);
    }
    let cost = calls.cost().since(before);
    assert!(cost.wait_reads <= SAGAS, "{cost:?}");
    assert_eq!(
        cost,
        Cost {
            wait_reads: cost.wait_reads,
            transitions: 2 * STEPS * SAGAS,
            reads: 0,
            claims: 0
        },
        "fresh sagas that complete"
    );

    // Fresh sagas whose pivot declines: 2 per step forward (3 steps), the compensation's start,
    // 2 per compensation (2; the last one also writes `compensated`). Still no read: the
    // compensation works from the run's copy of the step records.
    let before = calls.cost();
    let mut ids = Vec::new();
    for i in 0..SAGAS {
        ids.push(
            orch.start(&def, &format!("no-{i}"), &true)
                .await
                .unwrap()
                .id,
        );
    }
    for id in &ids {
        assert_eq!(wait(&orch, *id).await, SagaStatus::Compensated);
    }
    let cost = calls.cost().since(before);
    assert!(cost.wait_reads <= SAGAS, "{cost:?}");
    assert_eq!(
        cost,
        Cost {
            wait_reads: cost.wait_reads,
            transitions: (2 * STEPS + 1 + 2 * 2) * SAGAS,
            reads: 0,
            claims: 0
        },
        "fresh sagas that compensate"
    );

    // Sagas abandoned right after their creation (first step started, never called): the
    // claim reads each saga once; then 2 transitions per step (the first step's new attempt
    // included), no other read.
    let mut ids = Vec::new();
    for i in 0..SAGAS {
        let new = NewSaga {
            id: SagaId::random(&SeededRng::new(i + 1)),
            saga_type: "trip".into(),
            version: def.version(),
            business_key: format!("abandoned-{i}"),
            input: "false".into(),
            deadline: None,
            first_step: Some(StepRecord {
                step: "flight".into(),
                phase: Phase::Forward,
                state: StepState::Started,
                attempts: 1,
                output: None,
                error: None,
            }),
            forward_only: false,
        };
        let Created::New(lease) = store
            .create(new, "dead", Duration::from_secs(10))
            .await
            .unwrap()
        else {
            panic!("a new business key")
        };
        store.release(&lease).await.unwrap();
        ids.push(lease.saga);
    }
    let before = calls.cost();
    let mut claimed = 0;
    loop {
        let n = orch.recover_once().await.unwrap();
        if n == 0 {
            break;
        }
        claimed += n;
    }
    assert_eq!(claimed as u64, SAGAS);
    for id in &ids {
        assert_eq!(wait(&orch, *id).await, SagaStatus::Completed);
    }
    let cost = calls.cost().since(before);
    assert!(cost.wait_reads <= SAGAS, "{cost:?}");
    assert_eq!(
        cost,
        Cost {
            wait_reads: cost.wait_reads,
            transitions: 2 * STEPS * SAGAS,
            reads: SAGAS,
            claims: 2
        },
        "claimed sagas (claim rounds: one that claims them all, one that finds none)"
    );
}

#[tokio::test(start_paused = true)]
async fn memory_two_writes_and_no_read_per_step() {
    check(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_writes_and_no_read_per_step() {
    let db = TempDb::new("round-trips");
    check(Arc::new(SqliteStore::open(&db.path).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_writes_and_no_read_per_step() {
    let Some(store) = support::pg_store("round-trips").await else {
        return;
    };
    check(Arc::new(store.clone())).await;
    store.drop_schema().await.unwrap();
}

/// A run that panics (a participant's bug) stops, and its waiters go back to the store once a
/// poll interval, not in a loop that reads it without pause; the saga is recovered once its
/// lease expires, and the wait follows the new run to its end.
#[tokio::test(start_paused = true)]
async fn a_run_that_panics_is_waited_for_by_polling() {
    let calls = Arc::new(Calls::default());
    let store: Arc<dyn SagaStore> = Arc::new(Counting {
        inner: Arc::new(MemoryStore::new()),
        calls: Arc::clone(&calls),
    });
    let panicked = Arc::new(AtomicBool::new(false));
    let seen = Arc::clone(&panicked);
    let mut b = Saga::builder::<bool>("panics-once");
    b.step(Step::pivot("call", move |_c: Ctx| {
        let first = !seen.swap(true, Ordering::SeqCst);
        async move {
            assert!(!first, "a participant's bug: panics on its first call");
            Ok::<(), StepError>(())
        }
    }));
    let def = b.build().unwrap();
    let poll = Duration::from_millis(100);
    let orch = Orchestrator::builder(Arc::clone(&store))
        .register(&def)
        .lease(Duration::from_secs(2))
        .poll_interval(poll)
        .build()
        .unwrap();
    let recovery = orch.spawn_recovery();
    let id = orch.start(&def, "k", &false).await.unwrap().id;
    let t0 = tokio::time::Instant::now();
    assert_eq!(wait(&orch, id).await, SagaStatus::Completed);
    let took = t0.elapsed();
    recovery.abort();
    assert!(panicked.load(Ordering::SeqCst), "the first call panicked");
    assert_eq!(orch.get(id).await.unwrap().recoveries, 1, "recovered once");
    let reads = calls.wait_reads.load(Ordering::SeqCst);
    let polls = u64::try_from(took.as_millis() / poll.as_millis()).unwrap();
    assert!(
        reads >= 1,
        "the waiter went back to the store after the panic"
    );
    assert!(
        reads <= polls + 2,
        "{reads} reads of the store in {took:?}: about one a poll interval"
    );
}
