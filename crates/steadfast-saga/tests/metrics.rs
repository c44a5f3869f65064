//! The dashboard's saga metrics, through the OpenTelemetry SDK's in-memory exporter, on a paused
//! tokio clock: the saga duration histogram (from creation, across a recovery), sagas in flight,
//! step outcomes per saga type and step, recoveries, operator take-overs and cancels, each with
//! its unit.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use steadfast_layers::retry::Backoff;
use steadfast_saga::store::{Created, MemoryStore, NewSaga, SagaStore};
use steadfast_saga::telemetry::SagaTelemetry;
use steadfast_saga::{
    Orchestrator, RetryPolicy, Saga, SagaId, SagaStatus, Step, StepContext, StepError,
};
use steadfast_testkit::Metrics;
use tokio::sync::Semaphore;

type Ctx = StepContext<u32>;

/// Inputs: 0 completes, 1 is declined at the pivot, 2's pivot outcome stays unknown (until
/// fixed), 3 holds its first step until the gate opens.
struct Parts {
    gate: Semaphore,
    begun: Semaphore,
    pivot_fixed: AtomicBool,
}

fn definition(parts: &Arc<Parts>) -> steadfast_saga::SagaDefinition<u32> {
    let quick = RetryPolicy::attempts(2).backoff(Backoff::constant(Duration::from_millis(10)));
    let mut b = Saga::builder::<u32>("trip");
    let (p1, p2) = (Arc::clone(parts), Arc::clone(parts));
    b.step(
        Step::compensatable(
            "reserve",
            move |c: Ctx| {
                let p = Arc::clone(&p1);
                async move {
                    if *c.input() == 3 {
                        p.begun.add_permits(1);
                        p.gate.acquire().await.unwrap().forget();
                    }
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Ok::<u32, StepError>(1)
                }
            },
            |_c: Ctx, _o: u32| async { Ok::<(), StepError>(()) },
        )
        .retry(quick.attempt_timeout(Duration::from_secs(3600))),
    );
    b.step(
        Step::pivot("charge", move |c: Ctx| {
            let p = Arc::clone(&p2);
            async move {
                match *c.input() {
                    1 => Err(StepError::permanent("declined")),
                    2 if !p.pivot_fixed.load(Ordering::SeqCst) => {
                        Err(StepError::unknown("no answer"))
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        Ok(())
                    }
                }
            }
        })
        .retry(quick),
    );
    b.step(Step::retriable("notify", |_c: Ctx| async {
        Ok::<(), StepError>(())
    }));
    b.build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn saga_metrics_for_the_dashboard() {
    let m = Metrics::new();
    let parts = Arc::new(Parts {
        gate: Semaphore::new(0),
        begun: Semaphore::new(0),
        pivot_fixed: AtomicBool::new(false),
    });
    let def = definition(&parts);
    let store = Arc::new(MemoryStore::new());
    let o = Orchestrator::builder(store.clone() as Arc<dyn SagaStore>)
        .register(&def)
        .lease(Duration::from_secs(3))
        .telemetry(SagaTelemetry::new().meter(m.meter()).name("orch-a"))
        .build()
        .unwrap();
    let ty = [
        ("steadfast.saga.type", "trip"),
        ("steadfast.name", "orch-a"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = ty.to_vec();
        v.extend_from_slice(extra);
        v
    };

    // Completed: 2 s + 1 s.
    let ok = o.start(&def, "ok", &0).await.unwrap().id;
    assert_eq!(o.wait(ok).await.unwrap(), SagaStatus::Completed);
    let (n, secs) = m.histogram_with(
        "steadfast.saga.duration",
        &with(&[("steadfast.saga.status", "completed")]),
    );
    assert_eq!(n, 1);
    assert!((3.0..3.1).contains(&secs), "{secs}");
    // Compensated: 2 s, then the pivot says no.
    let no = o.start(&def, "declined", &1).await.unwrap().id;
    assert_eq!(o.wait(no).await.unwrap(), SagaStatus::Compensated);
    let (n, secs) = m.histogram_with(
        "steadfast.saga.duration",
        &with(&[("steadfast.saga.status", "compensated")]),
    );
    assert_eq!(n, 1);
    assert!((2.0..2.1).contains(&secs), "{secs}");
    // Needs attention: the pivot's outcome stays unknown.
    let stuck = o.start(&def, "stuck", &2).await.unwrap().id;
    assert_eq!(o.wait(stuck).await.unwrap(), SagaStatus::NeedsAttention);
    let (n, _) = m.histogram_with(
        "steadfast.saga.duration",
        &with(&[("steadfast.saga.status", "needs_attention")]),
    );
    assert_eq!(n, 1);

    // In flight while its first step is held; cancelled, it compensates.
    assert_eq!(m.up_down("steadfast.saga.in_flight", &ty), 0);
    let held = o.start(&def, "held", &3).await.unwrap().id;
    parts.begun.acquire().await.unwrap().forget();
    assert_eq!(m.up_down("steadfast.saga.in_flight", &ty), 1);
    o.cancel(held, "changed plans").await.unwrap();
    parts.gate.add_permits(1);
    assert_eq!(o.wait(held).await.unwrap(), SagaStatus::Compensated);
    assert_eq!(m.up_down("steadfast.saga.in_flight", &ty), 0);
    assert_eq!(m.counter("steadfast.saga.cancelled", &ty), 1);

    // Recovered: abandoned by a dead orchestrator 10 s before its lease expired; its duration
    // counts from its creation, not from the recovery.
    let dead = match store
        .create(
            NewSaga {
                id: SagaId::from_uuid(uuid::Uuid::from_u128(1)),
                saga_type: "trip".into(),
                version: 1,
                business_key: "abandoned".into(),
                input: "0".into(),
                deadline: None,
                first_step: None,
                forward_only: false,
            },
            "dead",
            Duration::from_secs(10),
        )
        .await
        .unwrap()
    {
        Created::New(l) => l.saga,
        Created::Existing(_) => unreachable!(),
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(o.recover_once().await.unwrap(), 1);
    assert_eq!(o.wait(dead).await.unwrap(), SagaStatus::Completed);
    assert_eq!(m.counter("steadfast.saga.recoveries", &ty), 1);
    let (n, secs) = m.histogram_with(
        "steadfast.saga.duration",
        &with(&[("steadfast.saga.status", "completed")]),
    );
    assert_eq!(n, 2);
    assert!((16.0..16.2).contains(&secs), "3 s + (10 s + 3 s): {secs}");

    // An operator's take-over, by action.
    parts.pivot_fixed.store(true, Ordering::SeqCst);
    o.resume(stuck).await.unwrap();
    assert_eq!(o.wait(stuck).await.unwrap(), SagaStatus::Completed);
    assert_eq!(
        m.counter(
            "steadfast.saga.takeovers",
            &with(&[("steadfast.reason", "resume")])
        ),
        1
    );
    assert_eq!(m.counter("steadfast.saga.takeovers", &ty), 1);

    // Step outcomes per saga type, step and phase.
    let steps = |step: &'static str, phase: &'static str, outcome: &'static str| {
        m.counter(
            "steadfast.saga.steps",
            &with(&[
                ("steadfast.saga.step", step),
                ("steadfast.saga.phase", phase),
                ("steadfast.saga.outcome", outcome),
            ]),
        )
    };
    assert_eq!(steps("reserve", "forward", "succeeded"), 5);
    assert_eq!(steps("charge", "forward", "succeeded"), 3);
    assert_eq!(steps("charge", "forward", "failed"), 1);
    assert_eq!(steps("charge", "forward", "stuck"), 1);
    assert_eq!(steps("charge", "forward", "cancelled"), 1);
    assert_eq!(steps("reserve", "compensation", "succeeded"), 2);
    assert_eq!(steps("notify", "forward", "succeeded"), 3);
    assert_eq!(m.counter("steadfast.saga.steps", &ty), 16);

    // Units.
    for (name, unit) in [
        ("steadfast.saga.duration", "s"),
        ("steadfast.saga.step.duration", "s"),
        ("steadfast.saga.in_flight", "{saga}"),
        ("steadfast.saga.steps", "{step}"),
        ("steadfast.saga.started", "{saga}"),
        ("steadfast.saga.completed", "{saga}"),
        ("steadfast.saga.compensated", "{saga}"),
        ("steadfast.saga.needs_attention", "{saga}"),
        ("steadfast.saga.recoveries", "{saga}"),
        ("steadfast.saga.takeovers", "{saga}"),
        ("steadfast.saga.cancelled", "{saga}"),
    ] {
        assert_eq!(m.unit(name).as_deref(), Some(unit), "{name}");
    }
    assert_eq!(m.counter("steadfast.saga.completed", &ty), 3);
    assert_eq!(m.counter("steadfast.saga.compensated", &ty), 2);
    assert_eq!(m.counter("steadfast.saga.needs_attention", &ty), 1);
    assert_eq!(m.counter("steadfast.saga.started", &ty), 4);
}
