//! `Orchestrator::cancel` on the in-memory store, on a paused tokio clock: a running, waiting or
//! stuck saga starts no new step and compensates what it completed; after the pivot, cancel is
//! refused with a typed error; an operator tool without definitions hands the saga over.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast_layers::retry::Backoff;
use steadfast_saga::store::{Created, MemoryStore, NewSaga, SagaStore, StepRecord, StepState};
use steadfast_saga::{
    CancelRefusal, CancelRefused, Error, Orchestrator, Phase, RetryPolicy, Saga, SagaDefinition,
    SagaId, SagaStatus, Step, StepContext, StepError,
};
use tokio::sync::Semaphore;

type Ctx = StepContext<u32>;

#[derive(Default)]
struct Log(Mutex<Vec<String>>);
impl Log {
    fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }
    fn get(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

/// A step's behaviour, switchable by the test.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    /// Wait for a permit of the gate (announcing it has begun).
    Gated,
    /// Fail this many times transiently, then succeed.
    Transient(u32),
    /// The outcome is unknown (until switched).
    Unknown,
}

struct Participant {
    name: &'static str,
    mode: Mutex<Mode>,
    gate: Semaphore,
    begun: Semaphore,
    calls: AtomicU32,
    log: Arc<Log>,
}

impl Participant {
    fn new(name: &'static str, mode: Mode, log: &Arc<Log>) -> Arc<Self> {
        Arc::new(Participant {
            name,
            mode: Mutex::new(mode),
            gate: Semaphore::new(0),
            begun: Semaphore::new(0),
            calls: AtomicU32::new(0),
            log: Arc::clone(log),
        })
    }

    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    async fn call(&self) -> Result<String, StepError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mode = *self.mode.lock().unwrap();
        match mode {
            Mode::Ok => {}
            Mode::Gated => {
                self.begun.add_permits(1);
                self.gate.acquire().await.unwrap().forget();
            }
            Mode::Transient(k) if n <= k => {
                self.log.push(format!("{}:busy", self.name));
                return Err(StepError::transient("busy"));
            }
            Mode::Transient(_) => {}
            Mode::Unknown => return Err(StepError::unknown("timeout")),
        }
        self.log.push(format!("{}:do", self.name));
        Ok(format!("{}-out", self.name))
    }
}

fn fast(n: u32) -> RetryPolicy {
    RetryPolicy::attempts(n).backoff(Backoff::constant(Duration::from_millis(50)))
}

/// `a` and `b` compensatable, then the pivot `p`, then `after` (retriable).
fn trip(
    name: &str,
    a: &Arc<Participant>,
    b: &Arc<Participant>,
    p: &Arc<Participant>,
) -> SagaDefinition<u32> {
    let mut s = Saga::builder::<u32>(name);
    for part in [a, b] {
        let (x, y) = (Arc::clone(part), Arc::clone(part));
        s.step(
            Step::compensatable(
                part.name,
                move |_c: Ctx| {
                    let x = Arc::clone(&x);
                    async move { x.call().await }
                },
                move |_c: Ctx, out: String| {
                    let y = Arc::clone(&y);
                    async move {
                        y.log.push(format!("{}:undo:{out}", y.name));
                        Ok::<(), StepError>(())
                    }
                },
            )
            .retry(fast(3)),
        );
    }
    let pp = Arc::clone(p);
    s.step(
        Step::pivot(p.name, move |_c: Ctx| {
            let pp = Arc::clone(&pp);
            async move { pp.call().await }
        })
        .retry(fast(3)),
    );
    s.step(Step::retriable("after", |_c: Ctx| async {
        Ok::<(), StepError>(())
    }));
    s.build().unwrap()
}

fn orch(store: &Arc<MemoryStore>, def: Option<&SagaDefinition<u32>>, owner: &str) -> Orchestrator {
    let mut b = Orchestrator::builder(store.clone() as Arc<dyn SagaStore>)
        .owner(owner)
        .lease(Duration::from_secs(3))
        .poll_interval(Duration::from_millis(100));
    if let Some(d) = def {
        b = b.register(d);
    }
    b.build().unwrap()
}

async fn kinds(o: &Orchestrator, id: SagaId) -> Vec<String> {
    o.history(id)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.kind)
        .collect()
}

fn refusal(r: Result<(), Error>) -> CancelRefusal {
    match r {
        Err(Error::CancelRefused(CancelRefused { refusal, .. })) => refusal,
        other => panic!("expected a refused cancel, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_running_saga_finishes_its_step_then_compensates_instead_of_going_on() {
    let log = Arc::new(Log::default());
    let (a, b, p) = (
        Participant::new("a", Mode::Ok, &log),
        Participant::new("b", Mode::Gated, &log),
        Participant::new("p", Mode::Ok, &log),
    );
    let def = trip("running", &a, &b, &p);
    let store = Arc::new(MemoryStore::new());
    let o = orch(&store, Some(&def), "app");
    let id = o.start(&def, "k", &1).await.unwrap().id;
    b.begun.acquire().await.unwrap().forget(); // b is in flight
    o.cancel(id, "customer changed plans").await.unwrap();
    // Again: the first reason stands.
    o.cancel(id, "again").await.unwrap();
    b.gate.add_permits(1);
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::Compensated);
    assert_eq!(
        log.get(),
        ["a:do", "b:do", "b:undo:b-out", "a:undo:a-out"],
        "b finished, the pivot never started, both were undone in reverse"
    );
    assert_eq!(p.calls.load(Ordering::SeqCst), 0);
    let rec = o.get(id).await.unwrap();
    assert_eq!(
        rec.error.as_deref(),
        Some("cancelled by an operator: customer changed plans")
    );
    assert_eq!(
        rec.cancel_requested.as_deref(),
        Some("customer changed plans")
    );
    assert!(!rec.forward_only);
    let k = kinds(&o, id).await;
    let at = |kind: &str| k.iter().position(|x| x == kind).unwrap();
    assert!(at("cancel_requested") < at("compensation_started"), "{k:?}");
    assert_eq!(k.iter().filter(|x| *x == "cancel_requested").count(), 1);
    assert_eq!(
        refusal(o.cancel(id, "late").await),
        CancelRefusal::Ended(SagaStatus::Compensated)
    );
}

#[tokio::test(start_paused = true)]
async fn a_saga_waiting_between_attempts_finishes_its_step_then_compensates() {
    let log = Arc::new(Log::default());
    let (a, b, p) = (
        Participant::new("a", Mode::Ok, &log),
        Participant::new("b", Mode::Transient(2), &log),
        Participant::new("p", Mode::Ok, &log),
    );
    let def = trip("waiting", &a, &b, &p);
    let store = Arc::new(MemoryStore::new());
    let o = orch(&store, Some(&def), "app");
    let id = o.start(&def, "k", &1).await.unwrap().id;
    // b's first attempt failed; the saga waits out its backoff.
    while b.calls.load(Ordering::SeqCst) < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    o.cancel(id, "no longer needed").await.unwrap();
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::Compensated);
    assert_eq!(
        log.get(),
        [
            "a:do",
            "b:busy",
            "b:busy",
            "b:do",
            "b:undo:b-out",
            "a:undo:a-out"
        ]
    );
    assert_eq!(p.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn an_abandoned_saga_is_compensated_by_whoever_recovers_it() {
    let log = Arc::new(Log::default());
    let (a, b, p) = (
        Participant::new("a", Mode::Ok, &log),
        Participant::new("b", Mode::Ok, &log),
        Participant::new("p", Mode::Ok, &log),
    );
    let def = trip("abandoned", &a, &b, &p);
    let store = Arc::new(MemoryStore::new());
    // A dead orchestrator created the saga and started `a`: its lease is still live.
    let created = store
        .create(
            NewSaga {
                id: SagaId::from_uuid(uuid::Uuid::from_u128(7)),
                saga_type: "abandoned".into(),
                version: 1,
                business_key: "k".into(),
                input: "1".into(),
                deadline: None,
                first_step: Some(StepRecord {
                    step: "a".into(),
                    phase: Phase::Forward,
                    state: StepState::Started,
                    attempts: 1,
                    output: None,
                    error: None,
                }),
                forward_only: false,
            },
            "dead",
            Duration::from_secs(3),
        )
        .await
        .unwrap();
    let Created::New(lease) = created else {
        unreachable!()
    };
    let o = orch(&store, Some(&def), "app");
    o.cancel(lease.saga, "abandoned order").await.unwrap();
    assert_eq!(
        o.recover_once().await.unwrap(),
        0,
        "the dead owner's lease is live"
    );
    let recovery = o.spawn_recovery();
    assert_eq!(o.wait(lease.saga).await.unwrap(), SagaStatus::Compensated);
    recovery.abort();
    // `a` may have been called by the dead owner: it is re-invoked (same key) to learn its
    // outcome, then undone; `b` is never started.
    assert_eq!(log.get(), ["a:do", "a:undo:a-out"]);
    assert_eq!(
        b.calls.load(Ordering::SeqCst) + p.calls.load(Ordering::SeqCst),
        0
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_is_refused_once_the_pivot_has_started() {
    let log = Arc::new(Log::default());
    let (a, b, p) = (
        Participant::new("a", Mode::Ok, &log),
        Participant::new("b", Mode::Ok, &log),
        Participant::new("p", Mode::Gated, &log),
    );
    let def = trip("pivoted", &a, &b, &p);
    let store = Arc::new(MemoryStore::new());
    let o = orch(&store, Some(&def), "app");
    let id = o.start(&def, "k", &1).await.unwrap().id;
    p.begun.acquire().await.unwrap().forget(); // the pivot is in flight
    assert_eq!(
        refusal(o.cancel(id, "too late").await),
        CancelRefusal::PastPivot
    );
    let e = o.cancel(id, "too late").await.unwrap_err().to_string();
    assert!(e.contains("can only go forward"), "{e}");
    p.gate.add_permits(1);
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::Completed);
    let rec = o.get(id).await.unwrap();
    assert!(rec.forward_only && rec.cancel_requested.is_none());
    assert!(!kinds(&o, id)
        .await
        .contains(&"cancel_requested".to_string()));
    assert!(matches!(
        o.cancel(SagaId::nil(), "x").await,
        Err(Error::NotFound(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_saga_waiting_for_an_operator_is_resumed_to_carry_the_cancel_out() {
    let log = Arc::new(Log::default());
    let (a, b, p) = (
        Participant::new("a", Mode::Ok, &log),
        Participant::new("b", Mode::Unknown, &log),
        Participant::new("p", Mode::Ok, &log),
    );
    let def = trip("stuck", &a, &b, &p);
    let store = Arc::new(MemoryStore::new());
    let app = orch(&store, Some(&def), "app");
    let id = app.start(&def, "k", &1).await.unwrap().id;
    assert_eq!(app.wait(id).await.unwrap(), SagaStatus::NeedsAttention);
    b.set(Mode::Ok);
    // An operator tool, with no definitions: it resumes the saga and hands it over.
    let tool = orch(&store, None, "tool");
    tool.cancel(id, "give up").await.unwrap();
    assert_eq!(app.recover_once().await.unwrap(), 1);
    assert_eq!(app.wait(id).await.unwrap(), SagaStatus::Compensated);
    // b's outcome was learned first (same key), then both were undone; the pivot never ran.
    assert_eq!(log.get(), ["a:do", "b:do", "b:undo:b-out", "a:undo:a-out"]);
    assert_eq!(p.calls.load(Ordering::SeqCst), 0);
    let k = kinds(&app, id).await;
    let from = k.iter().position(|x| x == "cancel_requested").unwrap();
    assert_eq!(
        k[from..from + 4],
        [
            "cancel_requested",
            "taken_over",
            "operator_resume",
            "claimed"
        ],
        "{k:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stuck_compensation_cannot_be_cancelled() {
    let log = Arc::new(Log::default());
    let mut s = Saga::builder::<u32>("stuck-undo");
    s.step(
        Step::compensatable(
            "a",
            |_c: Ctx| async { Ok::<u32, StepError>(1) },
            |_c: Ctx, _o: u32| async { Err::<(), _>(StepError::permanent("refund refused")) },
        )
        .compensation_retry(fast(1)),
    );
    s.step(Step::pivot("p", |_c: Ctx| async {
        Err::<(), _>(StepError::permanent("declined"))
    }));
    let def = s.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let o = orch(&store, Some(&def), "app");
    let id = o.start(&def, "k", &1).await.unwrap().id;
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::NeedsAttention);
    assert_eq!(
        refusal(o.cancel(id, "x").await),
        CancelRefusal::CompensationStuck
    );
    let _ = log;
}

#[tokio::test(start_paused = true)]
async fn an_operator_tool_hands_resumed_sagas_to_the_orchestrators_that_run_them() {
    let log = Arc::new(Log::default());
    let (a, b, p) = (
        Participant::new("a", Mode::Ok, &log),
        Participant::new("b", Mode::Unknown, &log),
        Participant::new("p", Mode::Ok, &log),
    );
    let def = trip("handed", &a, &b, &p);
    let store = Arc::new(MemoryStore::new());
    let app = orch(&store, Some(&def), "app");
    let tool = orch(&store, None, "tool");
    let id = app.start(&def, "k", &1).await.unwrap().id;
    assert_eq!(app.wait(id).await.unwrap(), SagaStatus::NeedsAttention);
    b.set(Mode::Ok);
    tool.retry_step(id, "b", Phase::Forward).await.unwrap();
    // The tool did not run it (it cannot): it is running, and free for the next claim.
    assert_eq!(app.get(id).await.unwrap().status, SagaStatus::Running);
    assert_eq!(app.recover_once().await.unwrap(), 1);
    assert_eq!(app.wait(id).await.unwrap(), SagaStatus::Completed);
    assert_eq!(
        p.calls.load(Ordering::SeqCst),
        1,
        "the pivot ran once, after the retry"
    );
}
