//! Fallback rules, on a paused clock: it triggers on the chosen failures only (by error type, by
//! classifier, or both), sync and async, says when it fails itself, and is traced and counted.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast_layers::chaos::ChaosLayer;
use steadfast_layers::classify::{Outcome, RetryOnError};
use steadfast_layers::deadline::{DeadlineExceeded, DeadlineLayer};
use steadfast_layers::fallback::{
    error_reason, Failure, FallbackFailed, FallbackLayer, OnError, OnFailure, Or,
};
use steadfast_layers::telemetry::Telemetry;
use steadfast_layers::timeout::Elapsed;
use steadfast_layers::BoxError;
use support::{chain, Metrics, Script, Step, Traces};
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A service failing with the given noun error.
fn failing(
    err: fn() -> BoxError,
) -> impl tower::Service<u32, Response = u16, Error = BoxError, Future = impl Send> + Clone {
    service_fn(move |_: u32| async move { Err::<u16, _>(err()) })
}

fn deadline() -> BoxError {
    Box::new(DeadlineExceeded::new())
}

fn elapsed() -> BoxError {
    Box::new(Elapsed::new(ms(5)))
}

fn reset() -> BoxError {
    "connection reset".into()
}

fn by_status(r: &Result<u16, BoxError>) -> Outcome {
    match r {
        Ok(503) => Outcome::retryable("unavailable"),
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::retryable("error"),
    }
}

#[tokio::test(start_paused = true)]
async fn triggers_only_on_the_chosen_errors() {
    let layer = FallbackLayer::from_fn(|_f: Failure<u16>| 299)
        .on_error(|e: &BoxError| e.is::<DeadlineExceeded>())
        .build()
        .unwrap();
    assert_eq!(
        layer.layer(failing(deadline)).oneshot(1).await.unwrap(),
        299
    );
    let err = layer.layer(failing(elapsed)).oneshot(1).await.unwrap_err();
    assert!(err.is::<Elapsed>(), "{err}");
    let err = layer.layer(failing(reset)).oneshot(1).await.unwrap_err();
    assert_eq!(err.to_string(), "connection reset");
    // Responses pass through.
    let script = Script::default();
    assert_eq!(
        layer
            .layer(script.service(vec![Step::Ok(503)]))
            .oneshot(1)
            .await
            .unwrap(),
        503
    );
}

#[tokio::test(start_paused = true)]
async fn by_default_every_error_and_no_response_falls_back() {
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let r = reasons.clone();
    let layer = FallbackLayer::from_fn(move |f: Failure<u16>| {
        r.lock().unwrap().push(f.reason());
        0
    })
    .build()
    .unwrap();
    for err in [deadline, elapsed, reset] {
        assert_eq!(layer.layer(failing(err)).oneshot(1).await.unwrap(), 0);
    }
    let script = Script::default();
    assert_eq!(
        layer
            .layer(script.service(vec![Step::Ok(503)]))
            .oneshot(1)
            .await
            .unwrap(),
        503
    );
    assert_eq!(*reasons.lock().unwrap(), ["deadline", "timeout", "error"]);
}

#[tokio::test(start_paused = true)]
async fn a_classifier_chooses_failed_responses_too() {
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let layer = FallbackLayer::from_fn(move |f: Failure<u16>| {
        *s.lock().unwrap() = f.response().copied();
        200
    })
    .on_failure(by_status)
    .build()
    .unwrap();
    let script = Script::default();
    let svc = layer.layer(script.service(vec![Step::Ok(503), Step::Ok(201)]));
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 200);
    // The fallback saw the failed response it replaced.
    assert_eq!(*seen.lock().unwrap(), Some(503));
    assert_eq!(svc.oneshot(1).await.unwrap(), 201);
}

#[tokio::test(start_paused = true)]
async fn policies_combine() {
    let layer = FallbackLayer::from_fn(|f: Failure<u16>| match f.reason() {
        "deadline" => 1,
        "unavailable" => 2,
        _ => 3,
    })
    .policy(Or(
        OnError(|e: &BoxError| e.is::<DeadlineExceeded>()),
        OnFailure(|r: &Result<u16, BoxError>| match r {
            Ok(503) => Outcome::retryable("unavailable"),
            _ => Outcome::Success,
        }),
    ))
    .build()
    .unwrap();
    assert_eq!(layer.layer(failing(deadline)).oneshot(1).await.unwrap(), 1);
    let script = Script::default();
    assert_eq!(
        layer
            .layer(script.service(vec![Step::Ok(503)]))
            .oneshot(1)
            .await
            .unwrap(),
        2
    );
    assert!(layer.layer(failing(reset)).oneshot(1).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn falls_back_when_the_deadline_layer_inside_gives_up() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let slow = service_fn(move |_: u32| {
        c.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<u16, BoxError>(200)
        }
    });
    let svc = ServiceBuilder::new()
        .layer(
            FallbackLayer::from_async_fn(|f: Failure<u16>| async move {
                assert_eq!(f.reason(), "deadline");
                tokio::time::sleep(ms(5)).await; // the secondary takes 5 ms
                Ok::<_, BoxError>(203)
            })
            .on_error(|e: &BoxError| e.is::<DeadlineExceeded>())
            .build()
            .unwrap(),
        )
        .layer(DeadlineLayer::new(ms(100)).unwrap())
        .service(slow);
    let t0 = Instant::now();
    assert_eq!(svc.oneshot(1).await.unwrap(), 203);
    assert_eq!(t0.elapsed(), ms(105));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failing_fallback_says_so_and_keeps_its_error() {
    let metrics = Metrics::new();
    let layer = FallbackLayer::from_async_fn(|_f: Failure<u16>| async {
        Err::<u16, BoxError>("the cache is down too".into())
    })
    .telemetry(Telemetry::new().meter(metrics.meter()))
    .build()
    .unwrap();
    let err = layer.layer(failing(reset)).oneshot(1).await.unwrap_err();
    let failed = err.downcast_ref::<FallbackFailed>().unwrap();
    assert_eq!(failed.reason(), "error");
    assert_eq!(
        chain(&*err),
        [
            "fallback failed (it ran on: error)",
            "the cache is down too"
        ]
    );
    assert_eq!(
        metrics.counter("steadfast.fallback.invoked", &[("error.type", "error")]),
        1
    );
    assert_eq!(
        metrics.counter("steadfast.fallback.failed", &[("error.type", "error")]),
        1
    );
}

async fn three_timeouts_a_deadline_and_a_success(telemetry: Telemetry) {
    let layer = FallbackLayer::from_fn(|_f: Failure<u16>| 0)
        .on_failure(RetryOnError)
        .telemetry(telemetry)
        .build()
        .unwrap();
    for _ in 0..3 {
        layer.layer(failing(elapsed)).oneshot(1).await.unwrap();
    }
    layer.layer(failing(deadline)).oneshot(1).await.unwrap();
    let script = Script::default();
    layer
        .layer(script.service(vec![Step::Ok(200)]))
        .oneshot(1)
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn fallbacks_are_counted_and_traced_by_reason() {
    let metrics = Metrics::new();
    let traces = Traces::default();
    let _g = traces.install();
    three_timeouts_a_deadline_and_a_success(Telemetry::new().meter(metrics.meter()).name("prices"))
        .await;
    assert_eq!(
        metrics.counter(
            "steadfast.fallback.invoked",
            &[("error.type", "timeout"), ("steadfast.name", "prices")]
        ),
        3
    );
    // RetryOnError calls a deadline fatal, labelled "deadline_exceeded".
    assert_eq!(
        metrics.counter(
            "steadfast.fallback.invoked",
            &[("error.type", "deadline_exceeded")]
        ),
        1
    );
    assert_eq!(metrics.counter("steadfast.fallback.invoked", &[]), 4);
    let events = traces.with_message("fallback invoked");
    assert_eq!(events.len(), 4);
    assert_eq!(events[0].target, "steadfast::fallback");
    assert_eq!(events[0].fields["reason"], "timeout");
    assert_eq!(events[0].fields["error"], "attempt timed out after 5ms");
    let spans = traces.spans.lock().unwrap();
    assert_eq!(
        spans.iter().filter(|s| *s == "steadfast.fallback").count(),
        4
    );
}

#[tokio::test(start_paused = true)]
async fn injected_faults_are_recognised() {
    let echo = service_fn(|x: u32| async move { Ok::<u16, BoxError>(x as u16) });
    let svc = ServiceBuilder::new()
        .layer(
            FallbackLayer::from_fn(|f: Failure<u16>| {
                assert_eq!(f.reason(), "injected");
                0
            })
            .build()
            .unwrap(),
        )
        .layer(ChaosLayer::builder().error(1.0).seed(3).build().unwrap())
        .service(echo);
    assert_eq!(svc.oneshot(9).await.unwrap(), 0);
    let e: BoxError = Box::new(steadfast_layers::chaos::InjectedFault::new(
        steadfast_layers::chaos::FaultKind::Abort,
    ));
    assert_eq!(error_reason(&e), "injected");
}

/// A service that refuses readiness with `Open` (like a breaker in readiness mode), or with
/// another error.
#[derive(Clone)]
struct Refusing {
    open: bool,
    calls: Arc<AtomicU32>,
}

#[derive(Debug)]
struct Open;

impl std::fmt::Display for Open {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("circuit open")
    }
}

impl std::error::Error for Open {}

impl tower::Service<u32> for Refusing {
    type Response = u16;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u16, BoxError>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Err(if self.open {
            Box::new(Open)
        } else {
            "worker gone".into()
        }))
    }

    fn call(&mut self, _req: u32) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(200))
    }
}

#[tokio::test(start_paused = true)]
async fn a_chosen_readiness_failure_is_answered_by_the_fallback() {
    let calls = Arc::new(AtomicU32::new(0));
    let layer = FallbackLayer::from_fn(|f: Failure<u16>| {
        assert_eq!(f.error().unwrap().to_string(), "circuit open");
        503
    })
    .on_error(|e: &BoxError| e.is::<Open>())
    .build()
    .unwrap();
    let svc = layer.layer(Refusing {
        open: true,
        calls: calls.clone(),
    });
    for _ in 0..3 {
        assert_eq!(svc.clone().oneshot(1).await.unwrap(), 503);
    }
    // The inner service was never called.
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // A readiness failure the policy does not choose is the caller's.
    let svc = layer.layer(Refusing {
        open: false,
        calls: calls.clone(),
    });
    assert_eq!(svc.oneshot(1).await.unwrap_err().to_string(), "worker gone");
}
