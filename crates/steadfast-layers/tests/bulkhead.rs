//! Bulkhead rules, on a paused clock (and on a multi-thread runtime for the hammering test):
//! slots, the bounded queue, the maximum wait, cancellation, sharing across clones, telemetry,
//! configuration errors.

#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use steadfast_layers::bulkhead::{BulkheadLayer, OverloadReason, Overloaded};
use steadfast_layers::telemetry::Telemetry;
use steadfast_layers::BoxError;
use support::{Metrics, Traces};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Clone, Default)]
struct InFlight {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl InFlight {
    fn enter(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
    }

    fn exit(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

fn sleeper(
    g: &InFlight,
    d: Duration,
) -> impl Service<u32, Response = u32, Error = Infallible, Future = impl Send> + Clone + Send {
    let g = g.clone();
    service_fn(move |n: u32| {
        let g = g.clone();
        async move {
            g.enter();
            tokio::time::sleep(d).await;
            g.exit();
            Ok::<_, Infallible>(n)
        }
    })
}

fn reason(err: &BoxError) -> OverloadReason {
    let o = err
        .downcast_ref::<Overloaded>()
        .unwrap_or_else(|| panic!("expected Overloaded, got {err}"));
    assert_eq!(o.layer(), "bulkhead");
    o.reason()
}

#[tokio::test(start_paused = true)]
async fn slots_then_queue_then_refusal() {
    let g = InFlight::default();
    let layer = BulkheadLayer::builder(2)
        .max_queue(2)
        .max_wait(ms(1_000))
        .build()
        .unwrap();
    let mut svc = layer.clone().layer(sleeper(&g, ms(100)));
    let t0 = Instant::now();
    let calls: Vec<_> = (0..5u32)
        .map(|n| {
            let svc = svc.clone();
            tokio::spawn(async move { (svc.oneshot(n).await, t0.elapsed()) })
        })
        .collect();
    tokio::task::yield_now().await;
    assert_eq!((layer.in_flight(), layer.queued()), (2, 2));
    let mut out = Vec::new();
    for c in calls {
        out.push(c.await.unwrap());
    }
    // Two at once, two queued (served as the first finish), the fifth refused at once.
    assert_eq!(out[0].0.as_ref().unwrap(), &0);
    assert_eq!(out[1].0.as_ref().unwrap(), &1);
    assert_eq!((out[2].1, out[3].1), (ms(200), ms(200)));
    assert_eq!(
        reason(out[4].0.as_ref().unwrap_err()),
        OverloadReason::QueueFull
    );
    assert_eq!(out[4].1, Duration::ZERO);
    assert_eq!(g.max.load(Ordering::SeqCst), 2);
    assert_eq!(g.calls.load(Ordering::SeqCst), 4);
    assert_eq!((svc.in_flight(), svc.queued()), (0, 0));
    assert_eq!(svc.ready().await.unwrap().call(9).await.unwrap(), 9);
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_gives_up_after_max_wait() {
    let metrics = Metrics::new();
    let g = InFlight::default();
    let mut svc = BulkheadLayer::builder(1)
        .max_queue(5)
        .max_wait(ms(30))
        .telemetry(
            Telemetry::new()
                .meter(metrics.meter())
                .name("payments")
                .record_duration(true),
        )
        .build()
        .unwrap()
        .layer(sleeper(&g, ms(100)));
    let first = svc.ready().await.unwrap().call(1);
    let t0 = Instant::now();
    let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(t0.elapsed(), ms(30));
    assert_eq!(reason(&err), OverloadReason::WaitTimeout);
    assert_eq!(svc.queued(), 0, "a timed-out call leaves the queue");
    assert_eq!(first.await.unwrap(), 1);
    assert_eq!(
        metrics.counter(
            "steadfast.bulkhead.rejected",
            &[
                ("steadfast.reason", "wait_timeout"),
                ("steadfast.name", "payments")
            ]
        ),
        1
    );
    assert_eq!(metrics.histogram_count("steadfast.bulkhead.wait"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_queued_call_frees_its_place() {
    let g = InFlight::default();
    let mut svc = BulkheadLayer::builder(1)
        .max_queue(1)
        .build()
        .unwrap()
        .layer(sleeper(&g, ms(100)));
    let first = svc.ready().await.unwrap().call(1);
    let mut queued = Box::pin(svc.ready().await.unwrap().call(2));
    assert!(queued
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending());
    assert_eq!(svc.queued(), 1);
    // The queue is full...
    let err = svc.ready().await.unwrap().call(3).await.unwrap_err();
    assert_eq!(reason(&err), OverloadReason::QueueFull);
    // ...until the queued call is cancelled.
    drop(queued);
    assert_eq!(svc.queued(), 0);
    let fourth = svc.ready().await.unwrap().call(4);
    assert_eq!((first.await.unwrap(), fourth.await.unwrap()), (1, 4));
    assert_eq!(g.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn without_a_queue_a_full_bulkhead_refuses_at_once() {
    let g = InFlight::default();
    let mut svc = BulkheadLayer::builder(1)
        .max_queue(0)
        .build()
        .unwrap()
        .layer(sleeper(&g, ms(100)));
    let _first = svc.ready().await.unwrap().call(1);
    let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(reason(&err), OverloadReason::QueueFull);
}

#[tokio::test(start_paused = true)]
async fn every_clone_shares_one_bulkhead() {
    let g = InFlight::default();
    let layer = BulkheadLayer::builder(1).max_queue(0).build().unwrap();
    let mut a = layer.clone().layer(sleeper(&g, ms(100)));
    let mut b = layer.layer(sleeper(&g, ms(100)));
    let _held = a.ready().await.unwrap().call(1);
    let err = b.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(reason(&err), OverloadReason::QueueFull);
    assert_eq!(b.clone().in_flight(), 1);
}

#[tokio::test(start_paused = true)]
async fn telemetry_counts_traces_and_gauges() {
    let metrics = Metrics::new();
    let traces = Traces::default();
    let _guard = traces.install();
    let g = InFlight::default();
    let mut svc = BulkheadLayer::builder(1)
        .max_queue(1)
        .max_wait(ms(500))
        .telemetry(Telemetry::new().meter(metrics.meter()))
        .build()
        .unwrap()
        .layer(sleeper(&g, ms(100)));
    let first = svc.ready().await.unwrap().call(1);
    let mut second = Box::pin(svc.ready().await.unwrap().call(2));
    assert!(second
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending());
    assert!(svc.ready().await.unwrap().call(3).await.is_err());
    assert_eq!(
        metrics.gauge_with("steadfast.bulkhead.in_flight", &[]),
        Some(1.0)
    );
    assert_eq!(
        metrics.gauge_with("steadfast.bulkhead.queued", &[]),
        Some(1.0)
    );
    assert_eq!((first.await.unwrap(), second.await.unwrap()), (1, 2));
    assert_eq!(
        metrics.gauge_with("steadfast.bulkhead.queued", &[]),
        Some(0.0)
    );
    assert_eq!(
        metrics.counter(
            "steadfast.bulkhead.rejected",
            &[("steadfast.reason", "queue_full")]
        ),
        1
    );
    assert_eq!(traces.with_message("bulkhead full: call queued").len(), 1);
    let rejected = traces.with_message("bulkhead full: call rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].fields["reason"], "queue_full");
    assert_eq!(rejected[0].target, "steadfast::bulkhead");
    assert!(traces
        .spans
        .lock()
        .unwrap()
        .iter()
        .any(|s| s == "steadfast.bulkhead"));
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let cases = [
        (BulkheadLayer::builder(0).build(), "max_concurrent"),
        (BulkheadLayer::builder(usize::MAX).build(), "max_concurrent"),
        (
            BulkheadLayer::builder(1).max_queue(usize::MAX).build(),
            "max_queue",
        ),
        (
            BulkheadLayer::builder(1).max_wait(Duration::ZERO).build(),
            "max_wait",
        ),
        (
            BulkheadLayer::builder(1)
                .max_wait(Duration::from_secs(u64::MAX))
                .build(),
            "max_wait",
        ),
    ];
    for (result, field) in cases {
        assert_eq!(result.unwrap_err().path(), field);
    }
    // A zero wait is meaningless only when calls can wait.
    assert!(BulkheadLayer::builder(1)
        .max_queue(0)
        .max_wait(Duration::ZERO)
        .build()
        .is_ok());
}

/// Many tasks on several threads through clones of one bulkhead: never more than
/// `max_concurrent` in flight, never more than `max_queue` waiting, every call accounted for.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_threads_never_exceed_the_bulkhead() {
    const MAX: usize = 4;
    const QUEUE: usize = 8;
    let g = InFlight::default();
    let inner = {
        let g = g.clone();
        service_fn(move |n: u32| {
            let g = g.clone();
            async move {
                g.enter();
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                g.exit();
                Ok::<_, Infallible>(n)
            }
        })
    };
    // A wait long enough never to expire on the real clock: only the queue bound refuses.
    let layer = BulkheadLayer::builder(MAX)
        .max_queue(QUEUE)
        .max_wait(Duration::from_secs(3600))
        .build()
        .unwrap();
    let svc = layer.clone().layer(inner);
    let most_queued = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..48u32)
        .map(|t| {
            let svc = svc.clone();
            let layer = layer.clone();
            let (most_queued, refused) = (most_queued.clone(), refused.clone());
            tokio::spawn(async move {
                for i in 0..200u32 {
                    most_queued.fetch_max(layer.queued(), Ordering::SeqCst);
                    match svc.clone().oneshot(t * 200 + i).await {
                        Ok(_) => {}
                        Err(e) => {
                            assert_eq!(reason(&e), OverloadReason::QueueFull);
                            refused.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(g.max.load(Ordering::SeqCst) <= MAX);
    assert!(most_queued.load(Ordering::SeqCst) <= QUEUE);
    assert_eq!(
        g.calls.load(Ordering::SeqCst) + refused.load(Ordering::SeqCst),
        48 * 200
    );
    assert_eq!((layer.in_flight(), layer.queued()), (0, 0));
}
