//! Orchestrator behaviour on the in-memory store, on a paused tokio clock.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::metrics::MeterProvider;
use opentelemetry_sdk::metrics::{
    data::{AggregatedMetrics, MetricData},
    InMemoryMetricExporter, PeriodicReader, SdkMeterProvider,
};
use steadfast_layers::retry::Backoff;
use steadfast_saga::store::{ListQuery, MemoryStore, SagaStore, StepState};
use steadfast_saga::telemetry::SagaTelemetry;
use steadfast_saga::{
    Error, Orchestrator, Phase, Resolution, RetryPolicy, Saga, SagaDefinition, SagaStatus, Step,
    StepContext, StepError, StepKey,
};

type Ctx = StepContext<u32>;

fn fast(n: u32) -> RetryPolicy {
    RetryPolicy::attempts(n).backoff(Backoff::constant(Duration::from_millis(10)))
}

fn orch(store: &Arc<MemoryStore>, defs: &[&SagaDefinition<u32>]) -> Orchestrator {
    let mut b = Orchestrator::builder(store.clone() as Arc<dyn SagaStore>)
        .poll_interval(Duration::from_millis(100))
        .lease(Duration::from_secs(3));
    for d in defs {
        b = b.register(*d);
    }
    b.build().unwrap()
}

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

fn comp_step(name: &'static str, log: &Arc<Log>, fail: bool) -> Step<u32, String> {
    let (l1, l2) = (Arc::clone(log), Arc::clone(log));
    Step::compensatable(
        name,
        move |_c: Ctx| {
            let l = Arc::clone(&l1);
            async move {
                if fail {
                    l.push(format!("{name}:fail"));
                    return Err(StepError::permanent("no"));
                }
                l.push(format!("{name}:do"));
                Ok(format!("{name}-out"))
            }
        },
        move |_c: Ctx, out: String| {
            let l = Arc::clone(&l2);
            async move {
                l.push(format!("{name}:undo:{out}"));
                Ok(())
            }
        },
    )
    .retry(fast(3))
    .compensation_retry(fast(3))
}

#[test]
fn phases_are_enforced_at_build_time() {
    let ok = |_c: Ctx| async { Ok::<u32, StepError>(1) };
    let undo = |_c: Ctx, _o: u32| async { Ok::<(), StepError>(()) };
    // Compensatable after the pivot.
    let mut b = Saga::builder::<u32>("bad1");
    b.step(Step::pivot("p", ok));
    b.step(Step::compensatable("c", ok, undo));
    let e = b.build().unwrap_err().to_string();
    assert!(
        e.contains("compensatable step \"c\" comes after a pivot"),
        "{e}"
    );
    // Two pivots.
    let mut b = Saga::builder::<u32>("bad2");
    b.step(Step::pivot("p1", ok));
    b.step(Step::pivot("p2", ok));
    assert!(b
        .build()
        .unwrap_err()
        .to_string()
        .contains("at most one pivot"));
    // Pivot in a group; duplicate names; bounded retriable; empty saga.
    let mut b = Saga::builder::<u32>("bad3");
    b.parallel(|g| {
        g.step(Step::pivot("p", ok));
        g.step(Step::pivot("p", ok));
    });
    let e = b.build().unwrap_err().to_string();
    assert!(e.contains("cannot be part of a parallel group"), "{e}");
    assert!(e.contains("used twice"), "{e}");
    let mut b = Saga::builder::<u32>("bad4");
    b.step(Step::retriable("r", ok).retry(RetryPolicy::attempts(3)));
    assert!(b
        .build()
        .unwrap_err()
        .to_string()
        .contains("until it succeeds"));
    assert!(Saga::builder::<u32>("empty").build().is_err());
    // Bad backoff is reported, not panicked on.
    let mut b = Saga::builder::<u32>("bad5");
    b.step(
        Step::pivot("p", ok).retry(RetryPolicy::attempts(2).backoff(Backoff::exponential(
            Duration::from_secs(2),
            Duration::from_secs(1),
        ))),
    );
    assert!(b.build().unwrap_err().to_string().contains("backoff"));
}

#[tokio::test(start_paused = true)]
async fn failure_compensates_completed_steps_in_reverse_order() {
    let log = Arc::new(Log::default());
    let mut b = Saga::builder::<u32>("reverse");
    b.step(comp_step("a", &log, false));
    b.parallel(|g| {
        g.step(comp_step("b1", &log, false));
        g.step(comp_step("b2", &log, false));
    });
    b.step(comp_step("c", &log, false));
    b.step(comp_step("d", &log, true));
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let o = orch(&store, &[&def]);
    let id = o.start(&def, "k", &1).await.unwrap().id;
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::Compensated);
    let l = log.get();
    let pos = |s: &str| {
        l.iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} in {l:?}"))
    };
    assert!(pos("c:undo:c-out") < pos("b1:undo:b1-out"));
    assert!(pos("c:undo:c-out") < pos("b2:undo:b2-out"));
    assert!(pos("b1:undo:b1-out") < pos("a:undo:a-out"));
    assert!(pos("b2:undo:b2-out") < pos("a:undo:a-out"));
    assert!(
        !l.iter().any(|x| x.starts_with("d:undo")),
        "the failed step is not compensated"
    );
    let r = o.get(id).await.unwrap();
    assert!(r.compensating);
    assert!(r.error.unwrap().contains("permanent: no"));
}

#[tokio::test(start_paused = true)]
async fn unknown_outcomes_are_retried_with_the_same_key_never_assumed_failed() {
    let keys = Arc::new(Mutex::new(Vec::new()));
    let calls = Arc::new(AtomicU32::new(0));
    let compensations = Arc::new(AtomicU32::new(0));
    let (k1, c1, u1) = (keys.clone(), calls.clone(), compensations.clone());
    let mut b = Saga::builder::<u32>("unknown");
    b.step(
        Step::compensatable(
            "slow",
            move |ctx: Ctx| {
                let (k, c) = (k1.clone(), c1.clone());
                async move {
                    k.lock().unwrap().push(ctx.key());
                    // Attempts 1 and 2 hang (timeout: outcome unknown), the third answers.
                    if c.fetch_add(1, Ordering::SeqCst) < 2 {
                        std::future::pending::<()>().await;
                    }
                    Ok::<u32, StepError>(7)
                }
            },
            move |_c: Ctx, _o: u32| {
                let u = u1.clone();
                async move {
                    u.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), StepError>(())
                }
            },
        )
        .retry(fast(3).attempt_timeout(Duration::from_secs(1))),
    );
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let o = orch(&store, &[&def]);
    let id = o.start(&def, "k", &0).await.unwrap().id;
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::Completed);
    let keys = keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 3);
    assert!(keys
        .iter()
        .all(|k| *k == StepKey::new(id, "slow", Phase::Forward)));
    assert_eq!(compensations.load(Ordering::SeqCst), 0);
    let hist = o.history(id).await.unwrap();
    assert_eq!(
        hist.iter().filter(|h| h.kind == "attempt_failed").count(),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn an_outcome_that_stays_unknown_needs_attention_and_an_operator_resolves_it() {
    let mut b = Saga::builder::<u32>("stays-unknown");
    b.step(
        Step::compensatable(
            "hang",
            |_c: Ctx| async {
                std::future::pending::<()>().await;
                Ok::<u32, StepError>(1)
            },
            |_c: Ctx, _o: u32| async { Ok::<(), StepError>(()) },
        )
        .retry(fast(2).attempt_timeout(Duration::from_millis(500))),
    );
    b.step(Step::pivot("after", |c: Ctx| async move {
        Ok::<u32, StepError>(*c.input())
    }));
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let o = orch(&store, &[&def]);
    let id = o.start(&def, "k", &5).await.unwrap().id;
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::NeedsAttention);
    let r = o.get(id).await.unwrap();
    assert!(r
        .error
        .as_deref()
        .unwrap()
        .contains("outcome still unknown after 2 attempts"));
    let step = r.steps.iter().find(|s| s.step == "hang").unwrap();
    assert_eq!(step.state, StepState::Unknown, "never recorded as failed");
    let stuck = o
        .list(ListQuery::new(10).status(SagaStatus::NeedsAttention))
        .await
        .unwrap();
    assert_eq!(stuck.len(), 1);
    // The operator checked with the participant: it was applied, with output 42.
    o.mark_resolved(
        id,
        "hang",
        Phase::Forward,
        Resolution::Succeeded(42.into()),
        "checked with the participant, OPS-7",
    )
    .await
    .unwrap();
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::Completed);
    let r = o.get(id).await.unwrap();
    assert_eq!(r.recoveries, 0);
    assert!(r.error.is_none());
    let h = o.history(id).await.unwrap();
    let resolved = h.iter().find(|e| e.kind == "operator_resolved").unwrap();
    assert_eq!(
        resolved.detail.as_deref(),
        Some("done by hand, output 42; note: checked with the participant, OPS-7")
    );
}

#[tokio::test(start_paused = true)]
async fn a_compensation_that_keeps_failing_keeps_its_error_and_can_be_resumed() {
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let b2 = broken.clone();
    let mut b = Saga::builder::<u32>("stuck-comp");
    b.step(
        Step::compensatable(
            "refundable",
            |_c: Ctx| async { Ok::<u32, StepError>(1) },
            move |_c: Ctx, _o: u32| {
                let broken = b2.clone();
                async move {
                    if broken.load(Ordering::SeqCst) {
                        Err(StepError::transient("refund service down"))
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .compensation_retry(fast(4)),
    );
    b.step(Step::pivot("charge", |_c: Ctx| async {
        Err::<(), _>(StepError::permanent("declined"))
    }));
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let o = orch(&store, &[&def]);
    let id = o.start(&def, "k", &0).await.unwrap().id;
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::NeedsAttention);
    let r = o.get(id).await.unwrap();
    let err = r.error.unwrap();
    assert!(
        err.contains("compensation keeps failing (4 attempts)"),
        "{err}"
    );
    assert!(err.contains("refund service down"), "{err}");
    assert!(r.compensating);
    broken.store(false, Ordering::SeqCst);
    o.resume(id).await.unwrap();
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::Compensated);
    // Resume is for NeedsAttention only.
    assert!(matches!(
        o.resume(id).await,
        Err(Error::InvalidOperation(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn retriable_steps_are_retried_until_they_succeed() {
    let n = Arc::new(AtomicU32::new(0));
    let n2 = n.clone();
    let mut b = Saga::builder::<u32>("retriable");
    b.step(Step::pivot("p", |_c: Ctx| async {
        Ok::<(), StepError>(())
    }));
    b.step(
        Step::retriable("email", move |_c: Ctx| {
            let n = n2.clone();
            async move {
                if n.fetch_add(1, Ordering::SeqCst) < 30 {
                    Err(StepError::transient("smtp down"))
                } else {
                    Ok(())
                }
            }
        })
        .retry(RetryPolicy::forever().backoff(Backoff::exponential(
            Duration::from_millis(10),
            Duration::from_secs(1),
        ))),
    );
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let o = orch(&store, &[&def]);
    let id = o.start(&def, "k", &0).await.unwrap().id;
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::Completed);
    assert_eq!(n.load(Ordering::SeqCst), 31);
}

#[tokio::test(start_paused = true)]
async fn the_saga_deadline_stops_forward_progress_and_compensates() {
    let log = Arc::new(Log::default());
    let mut b = Saga::builder::<u32>("deadline").deadline(Duration::from_secs(5));
    b.step(comp_step("a", &log, false));
    b.step(
        Step::compensatable(
            "slow",
            |_c: Ctx| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Ok::<u32, StepError>(1)
            },
            |_c: Ctx, _o: u32| async { Ok::<(), StepError>(()) },
        )
        .retry(fast(1)),
    );
    b.step(comp_step("never", &log, false));
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let o = orch(&store, &[&def]);
    let id = o.start(&def, "k", &0).await.unwrap().id;
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::Compensated);
    let l = log.get();
    assert!(!l.iter().any(|s| s.starts_with("never")), "{l:?}");
    assert!(l.contains(&"a:undo:a-out".to_string()));
    assert!(o.get(id).await.unwrap().error.unwrap().contains("deadline"));
}

#[tokio::test(start_paused = true)]
async fn a_changed_definition_is_refused_clearly() {
    let mk = |v: u32| {
        let mut b = Saga::builder::<u32>("versioned").version(v);
        b.step(Step::pivot("p", |_c: Ctx| async {
            std::future::pending::<()>().await;
            Ok::<(), StepError>(())
        }));
        b.build().unwrap()
    };
    let (v1, v2) = (mk(1), mk(2));
    let store = Arc::new(MemoryStore::new());
    let old = orch(&store, &[&v1]);
    let id = old.start(&v1, "k", &0).await.unwrap().id;
    // The v1 orchestrator "dies"; a v2 orchestrator claims the saga.
    let lease = store.take_over(id, "dead", Duration::ZERO).await.unwrap();
    store.release(&lease).await.unwrap();
    let new = orch(&store, &[&v2]);
    assert!(matches!(
        new.start(&v1, "other", &0).await,
        Err(Error::DefinitionChanged(_))
    ));
    assert_eq!(new.recover_once().await.unwrap(), 1);
    assert_eq!(new.wait(id).await.unwrap(), SagaStatus::NeedsAttention);
    let e = new.get(id).await.unwrap().error.unwrap();
    assert!(
        e.contains("definition version 1 but version 2 is registered"),
        "{e}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_taken_over_run_is_fenced_and_stops() {
    let calls = Arc::new(AtomicU32::new(0));
    let c2 = calls.clone();
    let mut b = Saga::builder::<u32>("fence");
    b.step(
        Step::pivot("slow", move |_c: Ctx| {
            let c = c2.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                Ok::<(), StepError>(())
            }
        })
        .retry(fast(1)),
    );
    b.step(Step::retriable("next", |_c: Ctx| async {
        Ok::<(), StepError>(())
    }));
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let a = orch(&store, &[&def]);
    let id = a.start(&def, "k", &0).await.unwrap().id;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let thief = store
        .take_over(id, "thief", Duration::from_secs(600))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The old run's outcome write was refused: the log shows only the start under epoch 1.
    let r = store.load(id).await.unwrap();
    assert_eq!(r.status, SagaStatus::Running);
    assert_eq!(r.steps[0].state, StepState::Started);
    let h = store.history(id).await.unwrap();
    assert!(
        h.iter().all(|e| e.epoch == 1 || e.kind == "taken_over"),
        "{h:?}"
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the fenced run made no further calls"
    );
    // The thief hands it back; recovery re-invokes the started step with the same key.
    store.release(&thief).await.unwrap();
    a.recover_once().await.unwrap();
    assert_eq!(a.wait(id).await.unwrap(), SagaStatus::Completed);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn heartbeats_keep_a_long_step_from_being_claimed() {
    let mut b = Saga::builder::<u32>("long");
    b.step(
        Step::pivot("long", |_c: Ctx| async {
            tokio::time::sleep(Duration::from_secs(20)).await;
            Ok::<(), StepError>(())
        })
        .retry(fast(1).attempt_timeout(Duration::from_secs(60))),
    );
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let a = orch(&store, &[&def]);
    let other = orch(&store, &[&def]);
    let id = a.start(&def, "k", &0).await.unwrap().id;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            other.recover_once().await.unwrap(),
            0,
            "the live lease was claimed"
        );
    }
    assert_eq!(a.wait(id).await.unwrap(), SagaStatus::Completed);
}

#[tokio::test(start_paused = true)]
async fn too_many_recoveries_need_attention() {
    let mut b = Saga::builder::<u32>("crashy");
    b.step(Step::pivot("p", |_c: Ctx| async {
        std::future::pending::<()>().await;
        Ok::<(), StepError>(())
    }));
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    // The default cap: the issue's "after 100 recoveries of one saga".
    assert_eq!(steadfast_saga::DEFAULT_MAX_RECOVERIES, 100);
    let o = Orchestrator::builder(store.clone() as Arc<dyn SagaStore>)
        .register(&def)
        .build()
        .unwrap();
    let id = o.start(&def, "k", &0).await.unwrap().id;
    // 99 orchestrators crash with the saga; the 100th recovery stops it.
    for _ in 0..99 {
        let l = store
            .take_over(id, "crasher", Duration::ZERO)
            .await
            .unwrap();
        store.release(&l).await.unwrap();
        // Count a recovery the way a claim does.
        let claimed = store
            .claim_expired("crasher", Duration::ZERO, 10)
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
    }
    assert_eq!(o.recover_once().await.unwrap(), 1);
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::NeedsAttention);
    assert!(o
        .get(id)
        .await
        .unwrap()
        .error
        .unwrap()
        .contains("recovered 100 times (limit 100)"));
}

#[tokio::test(start_paused = true)]
async fn metrics_count_sagas_by_outcome() {
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let log = Arc::new(Log::default());
    let mut ok = Saga::builder::<u32>("m-ok");
    ok.step(comp_step("a", &log, false));
    let ok = ok.build().unwrap();
    let mut bad = Saga::builder::<u32>("m-bad");
    bad.step(comp_step("a", &log, false));
    bad.step(comp_step("b", &log, true));
    let bad = bad.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let o = Orchestrator::builder(store as Arc<dyn SagaStore>)
        .register(&ok)
        .register(&bad)
        .telemetry(
            SagaTelemetry::new()
                .meter(provider.meter("t"))
                .name("orch-a"),
        )
        .build()
        .unwrap();
    let a = o.start(&ok, "1", &0).await.unwrap().id;
    let b = o.start(&bad, "1", &0).await.unwrap().id;
    o.wait(a).await.unwrap();
    o.wait(b).await.unwrap();
    provider.force_flush().unwrap();
    let mut seen = HashSet::new();
    for rm in exporter.get_finished_metrics().unwrap() {
        for sm in rm.scope_metrics() {
            for m in sm.metrics() {
                if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                    for p in sum.data_points() {
                        let ty = p
                            .attributes()
                            .find(|kv| kv.key.as_str() == "steadfast.saga.type")
                            .map(|kv| kv.value.to_string())
                            .unwrap_or_default();
                        seen.insert((m.name().to_string(), ty, p.value()));
                    }
                }
                if m.name() == "steadfast.saga.step.duration" {
                    seen.insert((m.name().to_string(), String::new(), 0));
                }
            }
        }
    }
    for expected in [
        ("steadfast.saga.started", "m-ok", 1),
        ("steadfast.saga.started", "m-bad", 1),
        ("steadfast.saga.completed", "m-ok", 1),
        ("steadfast.saga.compensated", "m-bad", 1),
        ("steadfast.saga.step.duration", "", 0),
    ] {
        assert!(
            seen.contains(&(expected.0.to_string(), expected.1.to_string(), expected.2)),
            "{expected:?} not in {seen:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn parallel_compensation_undoes_every_step_at_once() {
    // Each compensation waits until all three have started: only a concurrent run finishes.
    let barrier = Arc::new(tokio::sync::Barrier::new(3));
    let mut b = Saga::builder::<u32>("par-comp").parallel_compensation(true);
    for name in ["a", "b", "c"] {
        let bar = barrier.clone();
        b.step(
            Step::compensatable(
                name,
                |_c: Ctx| async { Ok::<u32, StepError>(1) },
                move |_c: Ctx, _o: u32| {
                    let bar = bar.clone();
                    async move {
                        bar.wait().await;
                        Ok::<(), StepError>(())
                    }
                },
            )
            .compensation_retry(fast(1).attempt_timeout(Duration::from_secs(5))),
        );
    }
    b.step(Step::pivot("p", |_c: Ctx| async {
        Err::<(), _>(StepError::permanent("no"))
    }));
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let o = orch(&store, &[&def]);
    let id = o.start(&def, "k", &0).await.unwrap().id;
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::Compensated);
}

#[tokio::test(start_paused = true)]
async fn a_retriable_step_that_fails_permanently_waits_for_an_operator_retry() {
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let b2 = broken.clone();
    let mut b = Saga::builder::<u32>("retry-op");
    b.step(Step::pivot("p", |_c: Ctx| async {
        Ok::<(), StepError>(())
    }));
    b.step(Step::retriable("email", move |_c: Ctx| {
        let broken = b2.clone();
        async move {
            if broken.load(Ordering::SeqCst) {
                Err(StepError::permanent("mailbox does not exist"))
            } else {
                Ok(())
            }
        }
    }));
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let o = orch(&store, &[&def]);
    let id = o.start(&def, "k", &0).await.unwrap().id;
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::NeedsAttention);
    let e = o.get(id).await.unwrap().error.unwrap();
    assert!(e.contains("step after the pivot failed permanently"), "{e}");
    assert!(matches!(
        o.retry_step(id, "nope", Phase::Forward).await,
        Err(Error::InvalidOperation(_))
    ));
    broken.store(false, Ordering::SeqCst);
    o.retry_step(id, "email", Phase::Forward).await.unwrap();
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::Completed);
    let kinds: Vec<String> = o
        .history(id)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.kind)
        .collect();
    assert!(kinds.contains(&"operator_retry".to_string()), "{kinds:?}");
}

#[tokio::test(start_paused = true)]
async fn with_the_defaults_an_abandoned_saga_resumes_within_15_s() {
    let mut b = Saga::builder::<u32>("abandoned");
    b.step(Step::pivot("p", |_c: Ctx| async {
        Ok::<(), StepError>(())
    }));
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    // An orchestrator created the saga (default lease) and died right after its last heartbeat.
    let created = store
        .create(
            steadfast_saga::store::NewSaga {
                id: steadfast_saga::SagaId::from_uuid(uuid::Uuid::from_u128(9)),
                saga_type: "abandoned".into(),
                version: 1,
                business_key: "k".into(),
                input: "0".into(),
                deadline: None,
                first_step: None,
                forward_only: false,
            },
            "dead",
            steadfast_saga::DEFAULT_LEASE,
        )
        .await
        .unwrap();
    let t0 = tokio::time::Instant::now();
    let o = Orchestrator::builder(store.clone() as Arc<dyn SagaStore>)
        .register(&def)
        .build()
        .unwrap();
    let recovery = o.spawn_recovery();
    assert_eq!(o.wait(created.id()).await.unwrap(), SagaStatus::Completed);
    let took = t0.elapsed();
    recovery.abort();
    assert!(took <= Duration::from_secs(15), "resumed after {took:?}");
    assert!(
        took >= steadfast_saga::DEFAULT_LEASE,
        "claimed a live lease after {took:?}"
    );
}

/// Two durable writes per step: the saga is created with its first step started, and the last
/// step's success (or the last compensation's) ends the saga in the same transaction. One
/// history entry per transaction.
#[tokio::test(start_paused = true)]
async fn a_saga_costs_two_writes_per_step() {
    let mut b = Saga::builder::<u32>("two-per-step");
    for name in ["flight", "hotel"] {
        b.step(Step::compensatable(
            name,
            |_c: Ctx| async { Ok::<(), StepError>(()) },
            |_c: Ctx, _o: ()| async { Ok::<(), StepError>(()) },
        ));
    }
    b.step(Step::pivot("car", |c: Ctx| async move {
        if *c.input() == 0 {
            Ok(())
        } else {
            Err(StepError::permanent("no car"))
        }
    }));
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let o = orch(&store, &[&def]);
    let entries = |id| {
        let o = o.clone();
        async move {
            o.history(id)
                .await
                .unwrap()
                .into_iter()
                .map(|h| format!("{} {}", h.kind, h.step.unwrap_or_default()))
                .collect::<Vec<_>>()
        }
    };

    let id = o.start(&def, "ok", &0).await.unwrap().id;
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::Completed);
    assert_eq!(
        entries(id).await,
        [
            "created flight",
            "step_succeeded flight",
            "step_started hotel",
            "step_succeeded hotel",
            "step_started car",
            "completed car",
        ]
    );
    let rec = o.get(id).await.unwrap();
    assert_eq!(rec.cursor, 3);
    assert!(rec
        .steps
        .iter()
        .all(|s| s.state == StepState::Succeeded && s.attempts == 1));

    let id = o.start(&def, "no-car", &1).await.unwrap().id;
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::Compensated);
    let h = entries(id).await;
    assert_eq!(h.first().map(String::as_str), Some("created flight"));
    assert_eq!(h.last().map(String::as_str), Some("compensated flight"));
    let rec = o.get(id).await.unwrap();
    assert!(rec.steps.iter().any(|s| s.step == "flight"
        && s.phase == Phase::Compensation
        && s.state == StepState::Succeeded));
}

/// Damaged sagas abandoned first (the oldest leases) beside healthy ones: with the defaults,
/// every healthy saga still resumes within 15 s, and each damaged one needs attention.
#[tokio::test(start_paused = true)]
async fn damaged_sagas_do_not_delay_the_recovery_of_healthy_ones() {
    use steadfast_saga::store::conformance::{Corrupt, Corruption};
    use steadfast_saga::store::{Created, NewSaga};
    let mut b = Saga::builder::<u32>("beside-poison");
    b.step(Step::pivot("p", |_c: Ctx| async {
        Ok::<(), StepError>(())
    }));
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let mut n = 0u128;
    let mut abandon = |key: &str, saga_type: &str| {
        n += 1;
        let store = store.clone();
        let new = NewSaga {
            id: steadfast_saga::SagaId::from_uuid(uuid::Uuid::from_u128(n)),
            saga_type: saga_type.into(),
            version: 1,
            business_key: key.into(),
            input: "0".into(),
            deadline: None,
            first_step: None,
            forward_only: false,
        };
        async move {
            match store
                .create(new, "dead", steadfast_saga::DEFAULT_LEASE)
                .await
                .unwrap()
            {
                Created::New(l) => l.saga,
                Created::Existing(_) => unreachable!(),
            }
        }
    };
    let mut damaged = Vec::new();
    for (key, what) in [
        ("input", Some(Corruption::InputNotJson)),
        ("epoch", Some(Corruption::EpochExhausted)),
        ("recoveries", Some(Corruption::RecoveriesExhausted)),
        ("type", None),
    ] {
        let id = abandon(
            key,
            if what.is_some() {
                "beside-poison"
            } else {
                "gone"
            },
        )
        .await;
        if let Some(w) = what {
            assert!(store.corrupt(id, w).await.unwrap());
        }
        damaged.push(id);
    }
    let mut healthy = Vec::new();
    for i in 0..20 {
        healthy.push(abandon(&format!("h{i}"), "beside-poison").await);
    }
    let t0 = tokio::time::Instant::now();
    let o = Orchestrator::builder(store.clone() as Arc<dyn SagaStore>)
        .register(&def)
        .build()
        .unwrap();
    let recovery = o.spawn_recovery();
    for id in &healthy {
        assert_eq!(o.wait(*id).await.unwrap(), SagaStatus::Completed);
    }
    let took = t0.elapsed();
    for id in &damaged {
        assert_eq!(o.wait(*id).await.unwrap(), SagaStatus::NeedsAttention);
    }
    recovery.abort();
    assert!(took <= Duration::from_secs(15), "resumed after {took:?}");
}

/// Serialises as text but reads back only from a number: JSON that does not round-trip.
#[derive(Debug)]
struct OneWay;

impl serde::Serialize for OneWay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("one way")
    }
}

impl<'de> serde::Deserialize<'de> for OneWay {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u32::deserialize(d).map(|_| OneWay)
    }
}

#[tokio::test(start_paused = true)]
async fn an_input_that_does_not_read_back_is_refused_before_anything_is_written() {
    // The run works on the input as read back from its stored JSON, as every later run will:
    // an input whose JSON does not read back would leave a saga no recovery can run.
    let mut b = Saga::builder::<OneWay>("one-way");
    b.step(Step::retriable("s", |_c: StepContext<OneWay>| async {
        Ok::<_, StepError>(())
    }));
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let o = Orchestrator::builder(store.clone() as Arc<dyn SagaStore>)
        .register(&def)
        .build()
        .unwrap();
    let e = o.start(&def, "k", &OneWay).await.unwrap_err();
    assert!(matches!(e, Error::Encode(_)), "{e}");
    assert!(e.to_string().contains("does not read back"), "{e}");
    assert!(store.list(ListQuery::new(10)).await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_definition_registered_with_another_input_type_is_refused() {
    let mut a = Saga::builder::<u32>("same-name");
    a.step(Step::retriable("s", |_c: Ctx| async {
        Ok::<_, StepError>(())
    }));
    let registered = a.build().unwrap();
    let mut b = Saga::builder::<String>("same-name");
    b.step(Step::retriable("s", |_c: StepContext<String>| async {
        Ok::<_, StepError>(())
    }));
    let other = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let o = orch(&store, &[&registered]);
    let e = o.start(&other, "k", &"x".to_string()).await.unwrap_err();
    assert!(matches!(e, Error::InvalidOperation(_)), "{e}");
    assert!(store.list(ListQuery::new(10)).await.unwrap().is_empty());
}
