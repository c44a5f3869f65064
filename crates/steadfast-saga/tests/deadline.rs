//! A saga past its deadline when it is recovered: a step recorded `started` with no outcome may
//! have had its effect (the dead orchestrator's call may have reached the participant). Like
//! any recovery, the run settles it first — attempts it again with the same key until its
//! outcome is known — and only then compensates, so an effect that happened is undone; a pivot
//! that turns out to have succeeded takes the saga forward instead. No new step starts.
//!
//! The crash is the state a dead orchestrator leaves in the log (written through the store,
//! lease given up), on the memory store (paused clock) and on real SQLite and PostgreSQL files.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast_layers::rng::SeededRng;
use steadfast_saga::store::{
    Created, Event, Lease, MemoryStore, NewSaga, SagaStore, SqliteStore, StepRecord, StepState,
    Transition,
};
use steadfast_saga::{
    Orchestrator, Phase, Saga, SagaDefinition, SagaId, SagaStatus, Step, StepContext, StepError,
    StepKey,
};
use support::TempDb;

/// What the participants did, by step key: effects applied (deduplicated by key), and undone.
#[derive(Debug, Default)]
struct Ledger {
    applied: HashMap<StepKey, String>,
    undone: HashSet<StepKey>,
    /// Forward calls per step name.
    calls: BTreeMap<String, u32>,
}

type Shared = Arc<Mutex<Ledger>>;
type Ctx = StepContext<()>;

fn lock(l: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    l.lock().unwrap()
}

/// An idempotent participant action: the first call with a key applies the effect, later ones
/// return the same result.
async fn act(ledger: Shared, ctx: Ctx) -> Result<String, StepError> {
    let mut l = lock(&ledger);
    *l.calls.entry(ctx.step().to_string()).or_default() += 1;
    let out = format!("{}-done", ctx.step());
    Ok(l.applied.entry(ctx.key()).or_insert(out).clone())
}

/// `flight` and `hotel` (compensatable), `car` (the pivot), `email` (retriable).
fn trip(ledger: &Shared) -> SagaDefinition<()> {
    let mut b = Saga::builder::<()>("deadline-trip");
    for name in ["flight", "hotel"] {
        let (a, c) = (Arc::clone(ledger), Arc::clone(ledger));
        b.step(Step::compensatable(
            name,
            move |ctx: Ctx| act(Arc::clone(&a), ctx),
            move |ctx: Ctx, out: String| {
                let c = Arc::clone(&c);
                async move {
                    let forward = StepKey::new(ctx.saga_id(), ctx.step(), Phase::Forward);
                    let mut l = lock(&c);
                    assert_eq!(l.applied.get(&forward), Some(&out), "undoes what was done");
                    l.undone.insert(forward);
                    Ok::<_, StepError>(())
                }
            },
        ));
    }
    let a = Arc::clone(ledger);
    b.step(Step::pivot("car", move |ctx: Ctx| act(Arc::clone(&a), ctx)));
    let a = Arc::clone(ledger);
    b.step(Step::retriable("email", move |ctx: Ctx| {
        act(Arc::clone(&a), ctx)
    }));
    b.build().unwrap()
}

fn record(step: &str, state: StepState, output: Option<&str>) -> StepRecord {
    StepRecord {
        step: step.into(),
        phase: Phase::Forward,
        state,
        attempts: 1,
        output: output.map(|o| serde_json::to_string(o).unwrap()),
        error: None,
    }
}

/// What a dead orchestrator left: a saga past its deadline whose steps `done` succeeded and
/// whose step `started` was started (its call reached the participant: the effect is applied)
/// with no outcome; its lease given up.
async fn abandoned(
    store: &dyn SagaStore,
    ledger: &Shared,
    key: &str,
    done: &[&str],
    started: &str,
) -> SagaId {
    let id = SagaId::random(&SeededRng::from_entropy());
    let new = NewSaga {
        id,
        saga_type: "deadline-trip".into(),
        version: 1,
        business_key: key.into(),
        input: "null".into(),
        deadline: Some(Duration::ZERO),
        first_step: Some(record("flight", StepState::Started, None)),
        forward_only: false,
    };
    let Created::New(lease): Created = store
        .create(new, "dead", Duration::from_secs(10))
        .await
        .unwrap()
    else {
        panic!("a new business key")
    };
    let write = |t: Transition, lease: &Lease| {
        let lease = lease.clone();
        async move { store.record(&lease, t).await.unwrap() }
    };
    for (i, step) in done.iter().enumerate() {
        let out = format!("{step}-done");
        let ok = Transition::new(Event::new("step_succeeded").step(*step, Phase::Forward))
            .step(record(step, StepState::Succeeded, Some(&out)))
            .cursor(i as i64 + 1);
        write(ok, &lease).await;
        lock(ledger)
            .applied
            .insert(StepKey::new(id, step, Phase::Forward), out);
    }
    if started != "flight" {
        let mut t = Transition::new(Event::new("step_started").step(started, Phase::Forward))
            .step(record(started, StepState::Started, None));
        if started == "car" {
            t = t.forward_only();
        }
        write(t, &lease).await;
    }
    // The dead orchestrator's call reached the participant.
    lock(ledger).applied.insert(
        StepKey::new(id, started, Phase::Forward),
        format!("{started}-done"),
    );
    store.release(&lease).await.unwrap();
    id
}

async fn check(store: Arc<dyn SagaStore>) {
    let ledger = Shared::default();
    let def = trip(&ledger);
    let orch = Orchestrator::builder(Arc::clone(&store))
        .register(&def)
        .owner("recoverer")
        .build()
        .unwrap();
    // Died during the first step, during the second, and during the pivot.
    let first = abandoned(&*store, &ledger, "first", &[], "flight").await;
    let second = abandoned(&*store, &ledger, "second", &["flight"], "hotel").await;
    let pivot = abandoned(&*store, &ledger, "pivot", &["flight", "hotel"], "car").await;
    while orch.recover_once().await.unwrap() > 0 {}

    let key = |id, step| StepKey::new(id, step, Phase::Forward);
    assert_eq!(orch.wait(first).await.unwrap(), SagaStatus::Compensated);
    assert_eq!(orch.wait(second).await.unwrap(), SagaStatus::Compensated);
    // The pivot had succeeded: past the point of no return the saga can only go forward.
    assert_eq!(orch.wait(pivot).await.unwrap(), SagaStatus::Completed);

    {
        let l = lock(&ledger);
        // Every effect of a compensated saga is undone, the started step's included.
        for (id, steps) in [(first, &["flight"][..]), (second, &["flight", "hotel"][..])] {
            for step in steps {
                assert!(
                    l.undone.contains(&key(id, step)),
                    "{step} of {id} applied and not undone: {l:?}"
                );
            }
            // No new step started past the deadline.
            for step in ["hotel", "car", "email"]
                .iter()
                .filter(|s| !steps.contains(s))
            {
                assert!(
                    !l.applied.contains_key(&key(id, step)),
                    "{step} started late"
                );
            }
        }
        // The settled pivot is kept; the retriable step after it ran; nothing was undone.
        assert!(l.applied.contains_key(&key(pivot, "email")));
        for step in ["flight", "hotel"] {
            assert!(!l.undone.contains(&key(pivot, step)));
        }
        // Each started step was settled by one more call with its key; flight once more for
        // `first`, hotel for `second`, car for `pivot`: 1 each (plus email's one call).
        assert_eq!(l.calls.get("flight"), Some(&1));
        assert_eq!(l.calls.get("hotel"), Some(&1));
        assert_eq!(l.calls.get("car"), Some(&1));
        assert_eq!(l.calls.get("email"), Some(&1));
    }

    let h = orch.history(second).await.unwrap();
    let kinds: Vec<(&str, Option<&str>)> = h
        .iter()
        .map(|e| (e.kind.as_str(), e.step.as_deref()))
        .collect();
    assert!(
        kinds
            .iter()
            .position(|k| *k == ("step_succeeded", Some("hotel")))
            < kinds.iter().position(|k| k.0 == "compensation_started"),
        "the started step is settled before the compensation starts: {kinds:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn memory_started_steps_are_settled_before_a_late_saga_compensates() {
    check(Arc::new(MemoryStore::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_started_steps_are_settled_before_a_late_saga_compensates() {
    let db = TempDb::new("deadline");
    check(Arc::new(SqliteStore::open(&db.path).await.unwrap())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_started_steps_are_settled_before_a_late_saga_compensates() {
    let Some(store) = support::pg_store("deadline").await else {
        return;
    };
    check(Arc::new(store.clone())).await;
    store.drop_schema().await.unwrap();
}
