//! The trace trees a user sees in Jaeger or Tempo, checked as OpenTelemetry exports them: the
//! layers' `tracing` spans bridged by `tracing-opentelemetry` into the OpenTelemetry SDK, whose
//! in-memory exporter keeps every finished span (parent, start and end, attributes, events,
//! status).
//!
//! - a retried call: one `steadfast.retry` span, one `steadfast.retry.attempt` child per attempt
//!   in order (attempt number, `http.request.resend_count` on re-sends, the reason for the retry,
//!   the backoff slept as an event, the outcome), the transport's own span under each attempt;
//! - a budget refusal and an open breaker's refusal: events on the span they end;
//! - a deadline expiry: an event on the `steadfast.deadline` span it ends;
//! - a hedged call: the original and the hedge as children of `steadfast.hedge`, the winner
//!   marked, the loser marked cancelled;
//! - a compensated saga: the forward steps, the failed step, then the compensation, each a
//!   `steadfast.saga.step` under the `steadfast.saga` span, in order.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::trace::{Status, TracerProvider as _};
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use steadfast::layers::classify::{error_outcome, Outcome};
use steadfast::layers::retry::{Backoff, RatioBudget, RetryLayer};
use steadfast::layers::BoxError;
use tower::{service_fn, Layer, ServiceExt};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

/// The SDK's in-memory exporter behind a `tracing-opentelemetry` layer, the thread's default
/// subscriber while it lives.
struct Otel {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Otel {
    fn install() -> Otel {
        // tracing-core caches each callsite's interest globally, computed when the callsite is
        // first hit; while at most one dispatcher is registered it asks only the registering
        // thread's subscriber, so a callsite first hit by another test's thread (which has no
        // subscriber) would stay disabled for this one. Two dispatchers kept alive for the
        // whole test binary make every registration consult all live dispatchers.
        static KEEP: std::sync::OnceLock<[tracing::Dispatch; 2]> = std::sync::OnceLock::new();
        KEEP.get_or_init(|| {
            [
                tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()),
                tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()),
            ]
        });
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let tracer = provider.tracer("steadfast-tests");
        let subscriber =
            tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(tracer));
        Otel {
            exporter,
            provider,
            _guard: tracing::subscriber::set_default(subscriber),
        }
    }

    /// Every span finished so far.
    fn spans(&self) -> Vec<SpanData> {
        self.provider.force_flush().unwrap();
        self.exporter.get_finished_spans().unwrap()
    }
}

fn attr(span: &SpanData, key: &str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.clone())
}

/// An integer attribute, exported as an integer (as OpenTelemetry's conventions want).
fn int(span: &SpanData, key: &str) -> Option<i64> {
    match attr(span, key) {
        Some(Value::I64(n)) => Some(n),
        _ => None,
    }
}

/// An integer field of a span outside this change's layers (`tracing-opentelemetry` exports
/// unsigned fields as their text, signed ones as integers: both read here).
fn number(span: &SpanData, key: &str) -> Option<i64> {
    attr(span, key).and_then(|v| v.as_str().parse().ok())
}

fn text(span: &SpanData, key: &str) -> Option<String> {
    match attr(span, key) {
        Some(Value::String(s)) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn flag(span: &SpanData, key: &str) -> Option<bool> {
    match attr(span, key) {
        Some(Value::Bool(b)) => Some(b),
        _ => None,
    }
}

/// An event's attribute, as text (numbers too: `20` for 20.0).
fn event_attr(event: &opentelemetry::trace::Event, key: &str) -> Option<String> {
    event
        .attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// The one span called `name`.
fn one<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    let found: Vec<&SpanData> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name} span: {:#?}", names(spans));
    found[0]
}

/// `parent`'s children called `name`, in the order they started.
fn children<'a>(spans: &'a [SpanData], parent: &SpanData, name: &str) -> Vec<&'a SpanData> {
    let mut found: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == name && s.parent_span_id == parent.span_context.span_id())
        .collect();
    found.sort_by_key(|s| s.start_time);
    found
}

fn names(spans: &[SpanData]) -> Vec<String> {
    spans.iter().map(|s| s.name.to_string()).collect()
}

fn events<'a>(span: &'a SpanData, name: &str) -> Vec<&'a opentelemetry::trace::Event> {
    span.events.iter().filter(|e| e.name == name).collect()
}

/// A peer answering `503` to its first `failures` calls, each call in its own `peer` span.
fn flaky_peer(
    failures: u32,
) -> impl tower::Service<
    &'static str,
    Response = u16,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<u16, BoxError>>,
> + Clone {
    let calls = Arc::new(AtomicU32::new(0));
    service_fn(move |_req: &'static str| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<u16, BoxError>(if n < failures { 503 } else { 200 }) }
            .instrument(tracing::info_span!("peer", call = n))
    })
}

/// `503` is retryable; errors as steadfast's one error table says.
fn http_classifier(r: &Result<u16, BoxError>) -> Outcome {
    match r {
        Ok(503) => Outcome::retryable("unavailable"),
        Ok(_) => Outcome::Success,
        Err(e) => error_outcome(&**e).unwrap_or(Outcome::retryable("error")),
    }
}

#[tokio::test(start_paused = true)]
async fn a_retried_call_has_a_span_per_attempt() {
    let otel = Otel::install();
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::from_millis(20)))
        .no_budget()
        .classifier(http_classifier)
        .build()
        .unwrap();
    let status = layer
        .layer(flaky_peer(2))
        .oneshot("GET /")
        .instrument(tracing::info_span!("request"))
        .await
        .unwrap();
    assert_eq!(status, 200);

    let spans = otel.spans();
    let request = one(&spans, "request");
    let retry = one(&spans, "steadfast.retry");
    assert_eq!(retry.parent_span_id, request.span_context.span_id());
    let attempts = children(&spans, retry, "steadfast.retry.attempt");
    assert_eq!(attempts.len(), 3, "{:#?}", names(&spans));
    for (i, a) in attempts.iter().enumerate() {
        let n = i as i64 + 1;
        assert_eq!(int(a, "steadfast.retry.attempt"), Some(n));
        assert_eq!(flag(a, "steadfast.retry.transparent"), Some(false));
        // OpenTelemetry's HTTP conventions: set on re-sends only.
        let resends = if n == 1 { None } else { Some(n - 1) };
        assert_eq!(int(a, "http.request.resend_count"), resends, "attempt {n}");
        // The transport's own span nests under the attempt.
        let peer = children(&spans, a, "peer");
        assert_eq!(peer.len(), 1, "attempt {n} has its peer span");
        assert_eq!(number(peer[0], "call"), Some(n - 1));
        if n > 1 {
            // Attempts follow one another, each after the previous one's end.
            assert!(attempts[i - 1].end_time <= a.start_time, "attempt order");
            assert_eq!(
                text(a, "steadfast.retry.reason").as_deref(),
                Some("unavailable")
            );
            let backoff = events(a, "backoff slept");
            assert_eq!(backoff.len(), 1, "attempt {n}: {:?}", a.events);
            assert_eq!(event_attr(backoff[0], "backoff_ms"), Some("20".to_owned()));
        } else {
            assert_eq!(text(a, "steadfast.retry.reason"), None);
            assert!(events(a, "backoff slept").is_empty());
        }
    }
    for a in &attempts[..2] {
        assert_eq!(text(a, "steadfast.outcome").as_deref(), Some("unavailable"));
        assert_eq!(text(a, "error.type").as_deref(), Some("unavailable"));
        assert!(matches!(a.status, Status::Error { .. }), "{:?}", a.status);
    }
    assert_eq!(
        text(attempts[2], "steadfast.outcome").as_deref(),
        Some("success")
    );
    assert_eq!(text(attempts[2], "error.type"), None);
    assert_eq!(attempts[2].status, Status::Unset);
    // The decisions between attempts are the call's.
    let scheduled = events(retry, "retry scheduled");
    assert_eq!(scheduled.len(), 2);
    assert_eq!(event_attr(scheduled[0], "attempt"), Some("1".to_owned()));
    assert_eq!(event_attr(scheduled[1], "attempt"), Some("2".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn a_budget_refusal_is_an_event_on_the_retry_span_it_ends() {
    let otel = Otel::install();
    let budget = Arc::new(
        RatioBudget::builder()
            .ratio(0.0)
            .min_retries_per_sec(0)
            .build()
            .unwrap(),
    );
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .budget(budget)
        .classifier(http_classifier)
        .build()
        .unwrap();
    let status = layer.layer(flaky_peer(5)).oneshot("GET /").await.unwrap();
    assert_eq!(status, 503);

    let spans = otel.spans();
    let retry = one(&spans, "steadfast.retry");
    assert_eq!(
        children(&spans, retry, "steadfast.retry.attempt").len(),
        1,
        "the refused retry was never sent"
    );
    let gave_up = events(retry, "retry gave up");
    assert_eq!(gave_up.len(), 1, "{:?}", retry.events);
    assert_eq!(
        event_attr(gave_up[0], "reason"),
        Some("budget_exhausted".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn an_open_breakers_refusal_is_an_event_on_the_attempt_it_ends() {
    use steadfast::layers::breaker::CircuitBreakerLayer;
    let otel = Otel::install();
    let breaker = CircuitBreakerLayer::builder().build().unwrap();
    breaker.handle().force_open();
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .no_budget()
        .classifier(http_classifier)
        .build()
        .unwrap();
    let svc = retry.layer(breaker.layer(flaky_peer(0)));
    let err = svc.oneshot("GET /").await.unwrap_err();
    assert!(err.to_string().contains("circuit"), "{err}");

    let spans = otel.spans();
    let retry = one(&spans, "steadfast.retry");
    let attempts = children(&spans, retry, "steadfast.retry.attempt");
    assert_eq!(attempts.len(), 1, "forced open: no retry");
    let rejected = events(attempts[0], "call rejected");
    assert_eq!(rejected.len(), 1, "{:?}", attempts[0].events);
    assert_eq!(
        event_attr(rejected[0], "state"),
        Some("forced_open".to_owned())
    );
    assert_eq!(
        text(attempts[0], "error.type").as_deref(),
        Some("circuit_open")
    );
    assert!(spans.iter().all(|s| s.name != "peer"), "nothing was sent");
}

#[tokio::test(start_paused = true)]
async fn a_deadline_expiry_is_an_event_on_the_deadline_span_it_ends() {
    use steadfast::layers::deadline::DeadlineLayer;
    let otel = Otel::install();
    let slow = service_fn(|_req: &'static str| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok::<u16, BoxError>(200)
    });
    let svc = DeadlineLayer::new(Duration::from_millis(50))
        .unwrap()
        .layer(slow);
    assert!(svc.oneshot("GET /").await.is_err());

    let spans = otel.spans();
    let deadline = one(&spans, "steadfast.deadline");
    let expired = events(deadline, "deadline exceeded: call cancelled");
    assert_eq!(expired.len(), 1, "{:?}", deadline.events);
    assert_eq!(
        event_attr(expired[0], "reason"),
        Some("in_flight".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn a_hedged_call_marks_its_winner_and_cancels_the_loser() {
    use steadfast::layers::hedge::{HedgeDelay, HedgeLayer, Idempotent};
    let otel = Otel::install();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    // The first replica asked is stuck; the hedge is answered in 10 ms.
    let replicas = service_fn(move |_req: http::Request<()>| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            let wait = if n == 0 { 5_000 } else { 10 };
            tokio::time::sleep(Duration::from_millis(wait)).await;
            Ok::<_, BoxError>(n)
        }
        .instrument(tracing::info_span!("peer", call = n))
    });
    let layer = HedgeLayer::builder()
        .delay(HedgeDelay::fixed(Duration::from_millis(20)))
        .max_hedges(1)
        .no_budget()
        .build()
        .unwrap();
    let req = http::Request::get("/users/7")
        .extension(Idempotent)
        .body(())
        .unwrap();
    let answered_by = layer
        .layer(replicas)
        .oneshot(req)
        .instrument(tracing::info_span!("request"))
        .await
        .unwrap();
    assert_eq!(answered_by, 1, "the hedge won");

    let spans = otel.spans();
    let request = one(&spans, "request");
    let hedge = one(&spans, "steadfast.hedge");
    assert_eq!(hedge.parent_span_id, request.span_context.span_id());
    let attempts = children(&spans, hedge, "steadfast.hedge.attempt");
    assert_eq!(attempts.len(), 2, "{:#?}", names(&spans));
    let (original, copy) = (attempts[0], attempts[1]);
    assert_eq!(int(original, "steadfast.hedge.attempt"), Some(0));
    assert_eq!(
        text(original, "steadfast.hedge.role").as_deref(),
        Some("original")
    );
    assert_eq!(int(original, "http.request.resend_count"), None);
    assert_eq!(int(copy, "steadfast.hedge.attempt"), Some(1));
    assert_eq!(text(copy, "steadfast.hedge.role").as_deref(), Some("hedge"));
    assert_eq!(int(copy, "http.request.resend_count"), Some(1));
    // The winner is marked; the loser is cancelled, with an event saying so.
    assert_eq!(flag(copy, "steadfast.hedge.winner"), Some(true));
    assert_eq!(text(copy, "steadfast.outcome").as_deref(), Some("success"));
    assert_eq!(flag(copy, "steadfast.hedge.cancelled"), None);
    assert_eq!(flag(original, "steadfast.hedge.cancelled"), Some(true));
    assert_eq!(flag(original, "steadfast.hedge.winner"), None);
    assert_eq!(
        events(original, "attempt cancelled: another attempt won").len(),
        1
    );
    // Each attempt's transport span nests under it.
    assert_eq!(
        number(children(&spans, original, "peer")[0], "call"),
        Some(0)
    );
    assert_eq!(number(children(&spans, copy, "peer")[0], "call"), Some(1));
    assert_eq!(events(hedge, "hedge sent").len(), 1);
}

#[cfg(feature = "saga")]
#[tokio::test(start_paused = true)]
async fn a_compensated_saga_shows_its_steps_then_the_compensation() {
    use steadfast::saga::store::{MemoryStore, SagaStore};
    use steadfast::saga::{
        Orchestrator, RetryPolicy, Saga, SagaStatus, Step, StepContext, StepError,
    };
    type Ctx = StepContext<u32>;
    let otel = Otel::install();
    let once = || RetryPolicy::attempts(1);
    let mut b = Saga::builder::<u32>("trip");
    b.step(
        Step::compensatable(
            "flight",
            |_c: Ctx| async { Ok::<u32, StepError>(7) },
            |_c: Ctx, _booked: u32| async { Ok::<(), StepError>(()) },
        )
        .retry(once())
        .compensation_retry(once()),
    );
    b.step(
        Step::pivot("car", |_c: Ctx| async {
            Err::<u32, StepError>(StepError::permanent("no car"))
        })
        .retry(once()),
    );
    let def = b.build().unwrap();
    let store = Arc::new(MemoryStore::new());
    let orchestrator = Orchestrator::builder(store as Arc<dyn SagaStore>)
        .register(&def)
        .build()
        .unwrap();
    let id = orchestrator.start(&def, "trip-1", &1).await.unwrap().id;
    assert_eq!(
        orchestrator.wait(id).await.unwrap(),
        SagaStatus::Compensated
    );

    let spans = otel.spans();
    let saga = one(&spans, "steadfast.saga");
    let steps = children(&spans, saga, "steadfast.saga.step");
    let shown: Vec<(String, String)> = steps
        .iter()
        .map(|s| {
            (
                text(s, "step").unwrap_or_default(),
                text(s, "phase").unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [
            ("flight".to_owned(), "forward".to_owned()),
            ("car".to_owned(), "forward".to_owned()),
            ("flight".to_owned(), "compensation".to_owned()),
        ],
        "{:#?}",
        names(&spans)
    );
    for pair in steps.windows(2) {
        assert!(pair[0].end_time <= pair[1].start_time, "steps in order");
    }
    assert!(steps.iter().all(|s| number(s, "attempt") == Some(1)));
}
