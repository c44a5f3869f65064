//! Load shedding rules: a call made while the inner service is not ready is refused without
//! calling it; readiness errors pass through; telemetry.

#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::future::Ready;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use steadfast_layers::shed::{LoadShedLayer, OverloadReason, Overloaded};
use steadfast_layers::telemetry::Telemetry;
use steadfast_layers::BoxError;
use support::{Metrics, Traces};
use tower::{service_fn, Layer, Service, ServiceExt};

/// A service whose readiness is switched from outside; counts calls.
#[derive(Clone, Default)]
struct Switch {
    ready: Arc<AtomicBool>,
    broken: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Service<u32> for Switch {
    type Response = u32;
    type Error = BoxError;
    type Future = Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.broken.load(Ordering::SeqCst) {
            return Poll::Ready(Err("connection lost".into()));
        }
        if self.ready.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, n: u32) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(n))
    }
}

#[tokio::test(start_paused = true)]
async fn sheds_calls_while_the_inner_service_is_not_ready() {
    let metrics = Metrics::new();
    let inner = Switch::default();
    let mut svc = LoadShedLayer::builder()
        .telemetry(Telemetry::new().meter(metrics.meter()).name("search"))
        .build()
        .unwrap()
        .layer(inner.clone());
    // Not ready: shedding makes the layer ready anyway, and the call fails at once.
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    let o = err.downcast_ref::<Overloaded>().unwrap();
    assert_eq!((o.layer(), o.reason()), ("shed", OverloadReason::NotReady));
    assert_eq!(inner.calls.load(Ordering::SeqCst), 0);
    // Ready again: calls go through.
    inner.ready.store(true, Ordering::SeqCst);
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 2);
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        metrics.counter(
            "steadfast.shed.rejected",
            &[
                ("steadfast.reason", "not_ready"),
                ("steadfast.name", "search")
            ]
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_without_poll_ready_is_shed() {
    let inner = Switch::default();
    inner.ready.store(true, Ordering::SeqCst);
    let mut svc = LoadShedLayer::new().layer(inner.clone());
    // Readiness is consumed by a call; a clone starts unknown.
    svc.ready().await.unwrap();
    assert_eq!(svc.call(1).await.unwrap(), 1);
    assert!(svc.call(2).await.unwrap_err().is::<Overloaded>());
    let mut clone = svc.clone();
    assert!(clone.call(3).await.unwrap_err().is::<Overloaded>());
    assert_eq!(inner.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn readiness_errors_pass_through() {
    let inner = Switch::default();
    inner.broken.store(true, Ordering::SeqCst);
    let err = LoadShedLayer::new()
        .layer(inner)
        .ready()
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.to_string(), "connection lost");
}

#[tokio::test(start_paused = true)]
async fn turns_a_concurrency_limit_into_fast_failures() {
    let traces = Traces::default();
    let _guard = traces.install();
    let slow = service_fn(|n: u32| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, Infallible>(n)
    });
    // tower's limit is "not ready" while its permits are out.
    let svc = LoadShedLayer::new().layer(tower::limit::ConcurrencyLimitLayer::new(2).layer(slow));
    let results = futures::future::join_all((0..5).map(|n| svc.clone().oneshot(n))).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 2);
    assert_eq!(
        traces
            .with_message("inner service not ready: call shed")
            .len(),
        3
    );
    // Decisions are instantaneous: events, no spans.
    assert_eq!(
        traces
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| *s == "steadfast.shed")
            .count(),
        0
    );
}
