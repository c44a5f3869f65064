//! The tracing output documented in `docs/observability.md` (section Sagas): the saga span, the
//! step-attempt spans, and the compensation, retry, recovery, fencing, self-fencing,
//! needs-attention and stopped-run events, each with its level, target and fields, captured by a
//! `tracing_subscriber` layer on the paused tokio clock.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast_layers::retry::Backoff;
use steadfast_saga::store::{
    Created, HistoryEntry, Lease, ListQuery, MemoryStore, NewSaga, SagaRecord, SagaStore,
    SagaSummary, StoreFuture, Transition,
};
use steadfast_saga::{
    Error, Orchestrator, Phase, RetryPolicy, Saga, SagaDefinition, SagaId, SagaStatus, Step,
    StepContext, StepError, StepKey,
};
use tracing::Level;

const TARGET: &str = "steadfast::saga";
type Ctx = StepContext<u32>;

// ---------------------------------------------------------------------------------------------
// Capture

#[derive(Clone, Debug)]
struct SpanRec {
    id: u64,
    name: String,
    level: Level,
    target: String,
    fields: BTreeMap<String, String>,
    parent: Option<String>,
}

#[derive(Clone, Debug)]
struct EventRec {
    level: Level,
    target: String,
    fields: BTreeMap<String, String>,
    /// The enclosing spans, root first, as they were when the event was emitted.
    scope: Vec<SpanRec>,
}

impl EventRec {
    fn message(&self) -> &str {
        self.fields.get("message").map_or("", String::as_str)
    }

    fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }

    /// The saga span this event was emitted in.
    fn saga_span(&self) -> Option<&SpanRec> {
        self.scope.iter().find(|s| s.name == "steadfast.saga")
    }
}

/// Captures every span (with fields recorded later) and event, with their scope.
#[derive(Clone, Default)]
struct Traces {
    spans: Arc<Mutex<Vec<SpanRec>>>,
    events: Arc<Mutex<Vec<EventRec>>>,
}

impl Traces {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        use tracing_subscriber::layer::SubscriberExt;
        // tracing-core caches each callsite's interest globally, computed when the callsite is
        // first hit. While at most one dispatcher is registered, it asks only the registering
        // thread's subscriber, so a callsite first hit on another test's thread (no subscriber)
        // would be cached as disabled for this one too. Two dispatchers kept alive for the whole
        // test binary make every registration consult all live dispatchers.
        static KEEP: std::sync::OnceLock<[tracing::Dispatch; 2]> = std::sync::OnceLock::new();
        KEEP.get_or_init(|| {
            [
                tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()),
                tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()),
            ]
        });
        let subscriber = tracing_subscriber::registry().with(self.clone());
        tracing::subscriber::set_default(subscriber)
    }

    fn spans(&self, name: &str) -> Vec<SpanRec> {
        let v = self.spans.lock().unwrap();
        v.iter().filter(|s| s.name == name).cloned().collect()
    }

    fn events(&self, message: &str) -> Vec<EventRec> {
        let v = self.events.lock().unwrap();
        v.iter()
            .filter(|e| e.message() == message)
            .cloned()
            .collect()
    }

    /// The only event with this message about this saga.
    fn event(&self, message: &str, saga: SagaId) -> EventRec {
        let mine: Vec<EventRec> = self
            .events(message)
            .into_iter()
            .filter(|e| e.field("saga") == saga.to_string())
            .collect();
        assert_eq!(mine.len(), 1, "{message:?} for saga {saga}: {mine:#?}");
        mine.into_iter().next().unwrap()
    }
}

struct Visitor<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Visitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    // `%value` fields arrive here and print with Display.
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

impl<S> tracing_subscriber::Layer<S> for Traces
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Visitor(&mut fields));
        let parent = ctx
            .span(id)
            .and_then(|s| s.parent())
            .map(|p| p.name().to_string());
        let m = attrs.metadata();
        self.spans.lock().unwrap().push(SpanRec {
            id: id.into_u64(),
            name: m.name().to_string(),
            level: *m.level(),
            target: m.target().to_string(),
            fields,
            parent,
        });
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        // Span ids are reused once a span closes: the latest one with this id is the live one.
        let mut spans = self.spans.lock().unwrap();
        if let Some(s) = spans.iter_mut().rev().find(|s| s.id == id.into_u64()) {
            values.record(&mut Visitor(&mut s.fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Visitor(&mut fields));
        let ids: Vec<u64> = ctx
            .event_scope(event)
            .map(|scope| scope.from_root().map(|s| s.id().into_u64()).collect())
            .unwrap_or_default();
        let scope = {
            let spans = self.spans.lock().unwrap();
            ids.iter()
                .filter_map(|id| spans.iter().rev().find(|s| s.id == *id).cloned())
                .collect()
        };
        let m = event.metadata();
        self.events.lock().unwrap().push(EventRec {
            level: *m.level(),
            target: m.target().to_string(),
            fields,
            scope,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// A store whose heartbeats can hang and whose writes can fail

#[derive(Debug, Default)]
struct Faulty {
    inner: MemoryStore,
    hang_heartbeats: AtomicBool,
    fail_records: AtomicBool,
}

impl SagaStore for Faulty {
    fn create<'a>(
        &'a self,
        new: NewSaga,
        owner: &'a str,
        lease: Duration,
    ) -> StoreFuture<'a, Created> {
        self.inner.create(new, owner, lease)
    }
    fn load(&self, id: SagaId) -> StoreFuture<'_, SagaRecord> {
        self.inner.load(id)
    }
    fn record<'a>(&'a self, lease: &'a Lease, t: Transition) -> StoreFuture<'a, ()> {
        if self.fail_records.load(Ordering::SeqCst) {
            return Box::pin(async { Err(Error::store(std::io::Error::other("disk on fire"))) });
        }
        self.inner.record(lease, t)
    }
    fn heartbeat<'a>(&'a self, lease: &'a Lease, lease_for: Duration) -> StoreFuture<'a, ()> {
        if self.hang_heartbeats.load(Ordering::SeqCst) {
            return Box::pin(std::future::pending());
        }
        self.inner.heartbeat(lease, lease_for)
    }
    fn release<'a>(&'a self, lease: &'a Lease) -> StoreFuture<'a, ()> {
        self.inner.release(lease)
    }
    fn claim_expired<'a>(
        &'a self,
        owner: &'a str,
        lease_for: Duration,
        limit: u32,
    ) -> StoreFuture<'a, Vec<Lease>> {
        self.inner.claim_expired(owner, lease_for, limit)
    }
    fn take_over<'a>(
        &'a self,
        id: SagaId,
        owner: &'a str,
        lease_for: Duration,
    ) -> StoreFuture<'a, Lease> {
        self.inner.take_over(id, owner, lease_for)
    }
    fn list(&self, query: ListQuery) -> StoreFuture<'_, Vec<SagaSummary>> {
        self.inner.list(query)
    }
    fn history(&self, id: SagaId) -> StoreFuture<'_, Vec<HistoryEntry>> {
        self.inner.history(id)
    }

    fn request_cancel<'a>(&'a self, id: SagaId, reason: &'a str) -> StoreFuture<'a, SagaStatus> {
        self.inner.request_cancel(id, reason)
    }
}

// ---------------------------------------------------------------------------------------------
// Sagas

fn fast(n: u32) -> RetryPolicy {
    RetryPolicy::attempts(n).backoff(Backoff::constant(Duration::from_millis(10)))
}

/// `reserve` (compensatable), then `charge` (the pivot): not now, then no.
fn declined() -> SagaDefinition<u32> {
    let tries = Arc::new(Mutex::new(0u32));
    let mut b = Saga::builder::<u32>("traced");
    b.step(
        Step::compensatable(
            "reserve",
            |_c: Ctx| async { Ok::<u32, StepError>(7) },
            |_c: Ctx, _units: u32| async { Ok::<(), StepError>(()) },
        )
        .retry(fast(3))
        .compensation_retry(fast(3)),
    );
    b.step(
        Step::pivot("charge", move |_c: Ctx| {
            let tries = Arc::clone(&tries);
            async move {
                let n = {
                    let mut t = tries.lock().unwrap();
                    *t += 1;
                    *t
                };
                if n == 1 {
                    Err::<(), _>(StepError::transient("card network busy"))
                } else {
                    Err(StepError::permanent("card declined"))
                }
            }
        })
        .retry(fast(3)),
    );
    b.build().unwrap()
}

/// One pivot step that takes `secs` (seconds on the paused clock).
fn slow(name: &str, secs: u64) -> SagaDefinition<u32> {
    let mut b = Saga::builder::<u32>(name);
    b.step(
        Step::pivot("slow", move |_c: Ctx| async move {
            tokio::time::sleep(Duration::from_secs(secs)).await;
            Ok::<(), StepError>(())
        })
        .retry(fast(1).attempt_timeout(Duration::from_secs(120))),
    );
    b.build().unwrap()
}

fn orchestrator(store: Arc<dyn SagaStore>, defs: &[&SagaDefinition<u32>]) -> Orchestrator {
    let mut b = Orchestrator::builder(store)
        .owner("orch-traced")
        .lease(Duration::from_secs(3))
        .poll_interval(Duration::from_millis(100));
    for d in defs {
        b = b.register(*d);
    }
    b.build().unwrap()
}

fn new_saga(id: u128, saga_type: &str) -> NewSaga {
    NewSaga {
        id: SagaId::from_uuid(uuid::Uuid::from_u128(id)),
        saga_type: saga_type.into(),
        version: 1,
        business_key: format!("k{id}"),
        input: "0".into(),
        deadline: None,
        first_step: None,
        forward_only: false,
    }
}

fn assert_fields(what: &str, fields: &BTreeMap<String, String>, expected: &[(&str, &str)]) {
    for (k, v) in expected {
        assert_eq!(
            fields.get(*k).map(String::as_str),
            Some(*v),
            "{what}: field {k} in {fields:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(start_paused = true)]
async fn saga_and_step_spans_carry_their_fields_and_retries_and_compensation_are_events() {
    let traces = Traces::default();
    let _guard = traces.install();
    let def = declined();
    let o = orchestrator(Arc::new(MemoryStore::new()), &[&def]);
    let id = o.start(&def, "order-1", &0).await.unwrap().id;
    assert_eq!(o.wait(id).await.unwrap(), SagaStatus::Compensated);
    let saga = id.to_string();

    // One saga span (INFO) for the run, with the type recorded once the row is loaded.
    let runs = traces.spans("steadfast.saga");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = &runs[0];
    assert_eq!((run.level, run.target.as_str()), (Level::INFO, TARGET));
    assert_fields(
        "saga span",
        &run.fields,
        &[
            ("saga", &saga),
            ("saga_type", "traced"),
            ("epoch", "1"),
            ("owner", "orch-traced"),
        ],
    );

    // One step span (DEBUG) per attempt, inside the saga span, with the stable key.
    let steps = traces.spans("steadfast.saga.step");
    let got: Vec<(String, String, String, String)> = steps
        .iter()
        .map(|s| {
            assert_eq!((s.level, s.target.as_str()), (Level::DEBUG, TARGET));
            assert_eq!(s.parent.as_deref(), Some("steadfast.saga"), "{s:?}");
            let f = |k: &str| s.fields.get(k).cloned().unwrap_or_default();
            (f("step"), f("phase"), f("attempt"), f("key"))
        })
        .collect();
    let key = |step: &str, phase| StepKey::new(id, step, phase).to_string();
    let expected: Vec<(String, String, String, String)> = [
        ("reserve", Phase::Forward, "1"),
        ("charge", Phase::Forward, "1"),
        ("charge", Phase::Forward, "2"),
        ("reserve", Phase::Compensation, "1"),
    ]
    .into_iter()
    .map(|(step, phase, attempt)| {
        (
            step.to_string(),
            phase.as_str().to_string(),
            attempt.to_string(),
            key(step, phase),
        )
    })
    .collect();
    assert_eq!(got, expected);

    // The retry (DEBUG), with the same key next time.
    let retry = traces.event("step attempt failed; retrying with the same key", id);
    assert_eq!((retry.level, retry.target.as_str()), (Level::DEBUG, TARGET));
    assert_fields(
        "retry",
        &retry.fields,
        &[
            ("step", "charge"),
            ("phase", "forward"),
            ("attempt", "1"),
            ("error", "transient: card network busy"),
            ("delay_ms", "10.0"),
        ],
    );
    assert_eq!(retry.saga_span().map(|s| s.id), Some(run.id));

    // Compensation starts (INFO) with the reason.
    let comp = traces.event("compensating", id);
    assert_eq!((comp.level, comp.target.as_str()), (Level::INFO, TARGET));
    assert!(
        comp.field("reason").contains("permanent: card declined"),
        "{comp:?}"
    );
    assert_eq!(comp.saga_span().map(|s| s.id), Some(run.id));
}

#[tokio::test(start_paused = true)]
async fn a_recovery_is_an_event_and_its_run_a_span_under_the_new_epoch() {
    let traces = Traces::default();
    let _guard = traces.install();
    let def = slow("traced-recovery", 1);
    let store = Arc::new(MemoryStore::new());
    let o = orchestrator(store.clone(), &[&def]);
    let dead = match store
        .create(
            new_saga(1, "traced-recovery"),
            "dead",
            Duration::from_secs(3),
        )
        .await
        .unwrap()
    {
        Created::New(l) => l,
        Created::Existing(_) => unreachable!(),
    };
    store.release(&dead).await.unwrap();
    assert_eq!(o.recover_once().await.unwrap(), 1);
    assert_eq!(o.wait(dead.saga).await.unwrap(), SagaStatus::Completed);

    let ev = traces.event("recovering an abandoned saga", dead.saga);
    assert_eq!((ev.level, ev.target.as_str()), (Level::INFO, TARGET));
    assert_fields(
        "recovery",
        &ev.fields,
        &[
            ("saga_type", "traced-recovery"),
            ("recoveries", "1"),
            ("epoch", "2"),
        ],
    );
    let run = ev
        .saga_span()
        .expect("the recovery event is inside the saga span");
    assert_fields(
        "recovered run",
        &run.fields,
        &[
            ("saga", &dead.saga.to_string()),
            ("saga_type", "traced-recovery"),
            ("epoch", "2"),
            ("owner", "orch-traced"),
        ],
    );
}

#[tokio::test(start_paused = true)]
async fn fencing_and_self_fencing_are_warnings_naming_the_saga_and_epoch() {
    let traces = Traces::default();
    let _guard = traces.install();
    let def = slow("traced-fence", 20);
    let store = Arc::new(Faulty::default());
    let o = orchestrator(store.clone(), &[&def]);

    // Taken over: the run's next heartbeat is refused.
    let taken = o.start(&def, "taken", &0).await.unwrap().id;
    tokio::time::sleep(Duration::from_millis(100)).await;
    store
        .take_over(taken, "thief", Duration::from_secs(600))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ev = traces.event(
        "lease taken over by another orchestrator: stopped working on the saga",
        taken,
    );
    assert_eq!((ev.level, ev.target.as_str()), (Level::WARN, TARGET));
    assert_fields("fenced", &ev.fields, &[("epoch", "1")]);
    assert!(ev.saga_span().is_some(), "{ev:?}");

    // Lease lost: renewals stop answering; the run stops on its own before the lease expires.
    store.hang_heartbeats.store(true, Ordering::SeqCst);
    let lost = o.start(&def, "lost", &0).await.unwrap().id;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ev = traces.event("lease lost: stopping work on the saga", lost);
    assert_eq!((ev.level, ev.target.as_str()), (Level::WARN, TARGET));
    assert_fields(
        "lease lost",
        &ev.fields,
        &[
            ("epoch", "1"),
            ("reason", "the lease renewal did not answer in time"),
        ],
    );
    assert!(ev.saga_span().is_some(), "{ev:?}");
}

#[tokio::test(start_paused = true)]
async fn needs_attention_and_a_stopped_run_are_warnings_with_the_error() {
    let traces = Traces::default();
    let _guard = traces.install();
    let def = slow("traced-known", 1);
    let store = Arc::new(Faulty::default());
    let o = orchestrator(store.clone(), &[&def]);

    // An unknown saga type needs attention.
    let dead = match store
        .create(new_saga(2, "traced-nobody"), "dead", Duration::from_secs(3))
        .await
        .unwrap()
    {
        Created::New(l) => l,
        Created::Existing(_) => unreachable!(),
    };
    store.release(&dead).await.unwrap();
    o.recover_once().await.unwrap();
    assert_eq!(o.wait(dead.saga).await.unwrap(), SagaStatus::NeedsAttention);
    let ev = traces.event("saga needs attention", dead.saga);
    assert_eq!((ev.level, ev.target.as_str()), (Level::WARN, TARGET));
    assert_fields(
        "needs attention",
        &ev.fields,
        &[
            ("saga_type", "traced-nobody"),
            (
                "error",
                "no definition registered for saga type \"traced-nobody\"",
            ),
        ],
    );

    // A store error stops the run; recovery will pick the saga up.
    // (The step's start is written with the saga: the first failing write is its outcome, after
    // the one-second step.)
    store.fail_records.store(true, Ordering::SeqCst);
    let id = o.start(&def, "stopped", &0).await.unwrap().id;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ev = traces.event(
        "saga run stopped; it will be recovered when its lease expires",
        id,
    );
    assert_eq!((ev.level, ev.target.as_str()), (Level::WARN, TARGET));
    assert!(ev.field("error").contains("disk on fire"), "{ev:?}");
}
