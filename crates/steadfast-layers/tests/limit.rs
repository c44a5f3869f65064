//! Concurrency limit rules, on a paused clock (and on a multi-thread runtime for the hammering
//! tests): fail fast, wait, max wait, release on completion and on drop, sharing across clones,
//! per-key isolation, the bounded key table, telemetry, configuration errors.

#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use steadfast_layers::limit::{ConcurrencyLimitLayer, OverloadReason, Overloaded};
use steadfast_layers::rng::{RandomSource, SeededRng};
use steadfast_layers::telemetry::Telemetry;
use steadfast_layers::{BoxError, Problem};
use support::{Metrics, Traces};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Counts calls in flight inside the inner service and the most seen at once.
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

    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Enters, and exits when the guard is dropped (also when the call is cancelled).
    fn entered(&self) -> Exit {
        self.enter();
        Exit(self.clone())
    }
}

struct Exit(InFlight);

impl Drop for Exit {
    fn drop(&mut self) {
        self.0.exit();
    }
}

/// A service taking `d` per call (on the paused clock), tracked by `g`.
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

fn overloaded(err: &BoxError) -> &Overloaded {
    err.downcast_ref::<Overloaded>()
        .unwrap_or_else(|| panic!("expected Overloaded, got {err}"))
}

#[tokio::test(start_paused = true)]
async fn fail_fast_rejects_beyond_the_limit_without_calling_inner() {
    let g = InFlight::default();
    let mut svc = ConcurrencyLimitLayer::new(2)
        .unwrap()
        .layer(sleeper(&g, ms(100)));
    // The permit is taken by `call`: two futures hold both.
    let a = svc.ready().await.unwrap().call(1);
    let b = svc.ready().await.unwrap().call(2);
    let err = svc.ready().await.unwrap().call(3).await.unwrap_err();
    let o = overloaded(&err);
    assert_eq!(o.reason(), OverloadReason::AtCapacity);
    assert_eq!(o.layer(), "limit");
    assert_eq!(o.retry_after(), None);
    assert_eq!(svc.in_flight(), 2);
    assert_eq!((a.await.unwrap(), b.await.unwrap()), (1, 2));
    assert_eq!(
        g.calls(),
        2,
        "the refused call never reached the inner service"
    );
    assert_eq!(svc.in_flight(), 0);
    assert_eq!(svc.ready().await.unwrap().call(4).await.unwrap(), 4);
}

#[tokio::test(start_paused = true)]
async fn permit_is_released_when_the_future_is_dropped() {
    let g = InFlight::default();
    let mut svc = ConcurrencyLimitLayer::new(1)
        .unwrap()
        .layer(sleeper(&g, ms(100)));
    let pending = svc.ready().await.unwrap().call(1);
    assert!(svc.ready().await.unwrap().call(2).await.is_err());
    drop(pending);
    assert_eq!(svc.in_flight(), 0);
    assert_eq!(svc.ready().await.unwrap().call(3).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_limit_is_shared_by_every_clone_of_the_layer_and_its_services() {
    let g = InFlight::default();
    let layer = ConcurrencyLimitLayer::new(2).unwrap();
    let mut one = layer.clone().layer(sleeper(&g, ms(100)));
    let mut two = layer.layer(sleeper(&g, ms(100)));
    let mut three = two.clone();
    let _a = one.ready().await.unwrap().call(1);
    let _b = two.ready().await.unwrap().call(2);
    let err = three.ready().await.unwrap().call(3).await.unwrap_err();
    assert_eq!(overloaded(&err).reason(), OverloadReason::AtCapacity);
    assert_eq!(one.in_flight(), 2);

    // A separately built layer has its own permits.
    let mut other = ConcurrencyLimitLayer::new(2)
        .unwrap()
        .layer(sleeper(&g, ms(1)));
    assert_eq!(other.ready().await.unwrap().call(4).await.unwrap(), 4);
}

#[tokio::test(start_paused = true)]
async fn waiting_calls_are_served_in_arrival_order() {
    let g = InFlight::default();
    let svc = ConcurrencyLimitLayer::builder(1)
        .wait()
        .build()
        .unwrap()
        .layer(sleeper(&g, ms(100)));
    let t0 = Instant::now();
    let done = Arc::new(std::sync::Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..4)
        .map(|n| {
            let svc = svc.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let out = svc.oneshot(n).await.unwrap();
                done.lock().unwrap().push((out, t0.elapsed()));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        *done.lock().unwrap(),
        vec![(0, ms(100)), (1, ms(200)), (2, ms(300)), (3, ms(400))]
    );
    assert_eq!(g.max(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_wait_bounds_the_wait() {
    let metrics = Metrics::new();
    let g = InFlight::default();
    let mut svc = ConcurrencyLimitLayer::builder(1)
        .max_wait(ms(50))
        .telemetry(
            Telemetry::new()
                .meter(metrics.meter())
                .name("db")
                .record_duration(true),
        )
        .build()
        .unwrap()
        .layer(sleeper(&g, ms(1000)));
    let first = svc.ready().await.unwrap().call(1);
    let t0 = Instant::now();
    let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(t0.elapsed(), ms(50));
    assert_eq!(overloaded(&err).reason(), OverloadReason::WaitTimeout);
    assert_eq!(first.await.unwrap(), 1);
    assert_eq!(g.calls(), 1);
    assert_eq!(
        metrics.counter(
            "steadfast.limit.rejected",
            &[
                ("steadfast.reason", "wait_timeout"),
                ("steadfast.name", "db")
            ]
        ),
        1
    );
    assert_eq!(metrics.histogram_count("steadfast.limit.wait"), 1);

    // A call whose permit comes within the bound waits for it.
    let first = svc.ready().await.unwrap().call(3);
    let late = tokio::spawn({
        let mut svc = svc.clone();
        async move { svc.ready().await.unwrap().call(4).await }
    });
    tokio::time::advance(ms(990)).await; // `first` finishes at 1000 ms; the bound is 50 ms
    assert_eq!(first.await.unwrap(), 3);
    assert_eq!(
        overloaded(&late.await.unwrap().unwrap_err()).reason(),
        OverloadReason::WaitTimeout
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_gets_the_permit_as_soon_as_it_is_released() {
    let g = InFlight::default();
    let mut svc = ConcurrencyLimitLayer::builder(1)
        .max_wait(ms(500))
        .build()
        .unwrap()
        .layer(sleeper(&g, ms(200)));
    let t0 = Instant::now();
    let first = tokio::spawn(svc.ready().await.unwrap().call(1));
    let second = svc.ready().await.unwrap().call(2);
    assert_eq!(second.await.unwrap(), 2);
    assert_eq!(t0.elapsed(), ms(400));
    assert_eq!(first.await.unwrap().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_leaves_the_queue() {
    let g = InFlight::default();
    let mut svc = ConcurrencyLimitLayer::builder(1)
        .wait()
        .build()
        .unwrap()
        .layer(sleeper(&g, ms(100)));
    let first = svc.ready().await.unwrap().call(1);
    let waiter = svc.ready().await.unwrap().call(2);
    // Poll the waiter once so it queues, then cancel it.
    let mut waiter = Box::pin(waiter);
    assert!(waiter
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending());
    drop(waiter);
    let third = svc.ready().await.unwrap().call(3);
    let t0 = Instant::now();
    assert_eq!(first.await.unwrap(), 1);
    assert_eq!(third.await.unwrap(), 3);
    assert_eq!(t0.elapsed(), ms(200));
    assert_eq!(g.calls(), 2, "the cancelled call never ran");
}

#[tokio::test(start_paused = true)]
async fn keys_are_limited_separately() {
    let g = InFlight::default();
    let mut svc = ConcurrencyLimitLayer::builder(1)
        .key_by(|n: &u32| n % 10)
        .build()
        .unwrap()
        .layer(sleeper(&g, ms(100)));
    let a = svc.ready().await.unwrap().call(1);
    // Same key (1 % 10 == 11 % 10): refused.
    let err = svc.ready().await.unwrap().call(11).await.unwrap_err();
    assert_eq!(overloaded(&err).reason(), OverloadReason::AtCapacity);
    // Other keys are not held up.
    let b = svc.ready().await.unwrap().call(2);
    let c = svc.ready().await.unwrap().call(3);
    assert_eq!(svc.in_flight(), 3);
    assert_eq!(
        (a.await.unwrap(), b.await.unwrap(), c.await.unwrap()),
        (1, 2, 3)
    );
    assert_eq!(svc.ready().await.unwrap().call(21).await.unwrap(), 21);
}

#[tokio::test(start_paused = true)]
async fn the_key_table_is_bounded_and_sweeps_idle_keys() {
    let metrics = Metrics::new();
    let g = InFlight::default();
    let mut svc = ConcurrencyLimitLayer::builder(1)
        .key_by(|n: &u32| *n)
        .max_keys(2)
        .telemetry(Telemetry::new().meter(metrics.meter()))
        .build()
        .unwrap()
        .layer(sleeper(&g, ms(100)));
    let a = svc.ready().await.unwrap().call(1);
    let b = svc.ready().await.unwrap().call(2);
    // Two busy keys: a third key cannot be tracked.
    let err = svc.ready().await.unwrap().call(3).await.unwrap_err();
    assert_eq!(overloaded(&err).reason(), OverloadReason::TooManyKeys);
    assert_eq!(metrics.gauge_with("steadfast.limit.keys", &[]), Some(2.0));
    assert_eq!(a.await.unwrap(), 1);
    // Key 1 is idle now: it is swept out to make room.
    let c = svc.ready().await.unwrap().call(3);
    assert_eq!(metrics.gauge_with("steadfast.limit.keys", &[]), Some(2.0));
    assert_eq!(
        metrics.gauge_with("steadfast.limit.in_flight", &[]),
        Some(2.0)
    );
    assert_eq!((b.await.unwrap(), c.await.unwrap()), (2, 3));
    assert_eq!(
        metrics.counter(
            "steadfast.limit.rejected",
            &[("steadfast.reason", "too_many_keys")]
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn telemetry_counts_traces_and_gauges() {
    let metrics = Metrics::new();
    let traces = Traces::default();
    let _guard = traces.install();
    let g = InFlight::default();
    let mut svc = ConcurrencyLimitLayer::builder(2)
        .telemetry(Telemetry::new().meter(metrics.meter()).name("db"))
        .build()
        .unwrap()
        .layer(sleeper(&g, ms(100)));
    let a = svc.ready().await.unwrap().call(1);
    let b = svc.ready().await.unwrap().call(2);
    assert_eq!(
        metrics.gauge_with("steadfast.limit.in_flight", &[("steadfast.name", "db")]),
        Some(2.0)
    );
    for n in 0..3 {
        assert!(svc.ready().await.unwrap().call(n).await.is_err());
    }
    a.await.unwrap();
    b.await.unwrap();
    assert_eq!(
        metrics.counter(
            "steadfast.limit.rejected",
            &[
                ("steadfast.reason", "at_capacity"),
                ("steadfast.name", "db")
            ]
        ),
        3
    );
    assert_eq!(
        metrics.gauge_with("steadfast.limit.in_flight", &[]),
        Some(0.0)
    );
    // Durations are off by default.
    assert_eq!(metrics.histogram_count("steadfast.limit.wait"), 0);
    let rejected = traces.with_message("concurrency limit: call rejected");
    assert_eq!(rejected.len(), 3);
    assert_eq!(rejected[0].target, "steadfast::limit");
    assert_eq!(rejected[0].fields["reason"], "at_capacity");
    assert_eq!(rejected[0].fields["instance"], "db");
    // Spans only for calls that wait: admissions and refusals make none.
    assert_eq!(
        traces
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| *s == "steadfast.limit")
            .count(),
        0
    );
    // The success path emits no event.
    assert_eq!(traces.events.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn waiting_is_traced() {
    let traces = Traces::default();
    let _guard = traces.install();
    let g = InFlight::default();
    let mut svc = ConcurrencyLimitLayer::builder(1)
        .max_wait(ms(10))
        .build()
        .unwrap()
        .layer(sleeper(&g, ms(100)));
    let _a = svc.ready().await.unwrap().call(1);
    assert!(svc.ready().await.unwrap().call(2).await.is_err());
    let waiting = traces.with_message("concurrency limit reached: waiting for a permit");
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].fields["max_wait_ms"], "10.0");
    let rejected = traces.with_message("concurrency limit: call rejected");
    assert_eq!(rejected[0].fields["reason"], "wait_timeout");
    assert_eq!(
        *traces.spans.lock().unwrap(),
        vec!["steadfast.limit".to_string()],
        "one span, for the call that waited"
    );
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let cases = [
        (ConcurrencyLimitLayer::builder(0).build(), "max_in_flight"),
        (
            ConcurrencyLimitLayer::builder(usize::MAX).build(),
            "max_in_flight",
        ),
        (
            ConcurrencyLimitLayer::builder(1)
                .max_wait(Duration::ZERO)
                .build(),
            "max_wait",
        ),
        (
            ConcurrencyLimitLayer::builder(1)
                .max_wait(Duration::from_secs(u64::MAX))
                .build(),
            "max_wait",
        ),
        (
            ConcurrencyLimitLayer::builder(1).max_keys(0).build(),
            "max_keys",
        ),
        (
            ConcurrencyLimitLayer::builder(1)
                .max_keys(usize::MAX)
                .build(),
            "max_keys",
        ),
    ];
    for (result, field) in cases {
        let err = result.unwrap_err();
        assert_eq!(err.path(), field, "{err}");
    }
    assert_eq!(
        ConcurrencyLimitLayer::builder(0)
            .build()
            .unwrap_err()
            .problem(),
        &Problem::Zero
    );
}

/// Many tasks on several threads hammer one limit through clones: never more in flight than the
/// limit, and every call is served (waiting) or accounted for (fail fast).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_threads_never_exceed_the_limit() {
    const LIMIT: usize = 8;
    const TASKS: usize = 64;
    const CALLS: usize = 200;
    for wait in [true, false] {
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
        let builder = ConcurrencyLimitLayer::builder(LIMIT);
        let builder = if wait { builder.wait() } else { builder };
        let svc = builder.build().unwrap().layer(inner);
        let rejected = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..TASKS)
            .map(|t| {
                let svc = svc.clone();
                let rejected = rejected.clone();
                tokio::spawn(async move {
                    for i in 0..CALLS {
                        match svc.clone().oneshot((t * CALLS + i) as u32).await {
                            Ok(_) => {}
                            Err(e) => {
                                assert!(!wait, "waiting calls are all served: {e}");
                                assert!(e.is::<Overloaded>());
                                rejected.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(g.max() <= LIMIT, "wait={wait}: {} in flight", g.max());
        assert!(
            g.max() >= 2,
            "wait={wait}: the test must produce concurrency"
        );
        assert_eq!(
            g.calls() + rejected.load(Ordering::SeqCst),
            TASKS * CALLS,
            "wait={wait}"
        );
        assert_eq!(svc.in_flight(), 0);
    }
}

/// The same with per-key limits: never more than the limit in flight for any key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_threads_never_exceed_a_keys_limit() {
    const LIMIT: usize = 3;
    const KEYS: u32 = 4;
    let per_key: Arc<Vec<InFlight>> = Arc::new((0..KEYS).map(|_| InFlight::default()).collect());
    let inner = {
        let per_key = per_key.clone();
        service_fn(move |n: u32| {
            let g = per_key[(n % KEYS) as usize].clone();
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
    let svc = ConcurrencyLimitLayer::builder(LIMIT)
        .key_by(|n: &u32| n % KEYS)
        .wait()
        .build()
        .unwrap()
        .layer(inner);
    let tasks: Vec<_> = (0..32u32)
        .map(|t| {
            let svc = svc.clone();
            tokio::spawn(async move {
                for i in 0..100u32 {
                    svc.clone().oneshot(t * 100 + i).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    for (k, g) in per_key.iter().enumerate() {
        assert!(g.max() <= LIMIT, "key {k}: {} in flight", g.max());
    }
    assert_eq!(per_key.iter().map(InFlight::calls).sum::<usize>(), 3200);
}

/// Waiting calls on two threads, a few more tasks than permits, many cancelled at random
/// (dropped while running, while waiting, or queued and then left unpolled while a permit may be
/// handed to them): never more than the limit in flight, and no permit is lost: at the end
/// nothing is in flight and `LIMIT` new calls are admitted at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_threads_cancelling_waiters_never_exceed_the_limit_nor_lose_a_permit() {
    const LIMIT: usize = 4;
    const TASKS: u64 = 6;
    const CALLS: usize = 2_000;
    let g = InFlight::default();
    let inner = {
        let g = g.clone();
        service_fn(move |n: u32| {
            let g = g.clone();
            async move {
                let _in = g.entered();
                for _ in 0..n % 4 {
                    tokio::task::yield_now().await;
                }
                Ok::<_, Infallible>(n)
            }
        })
    };
    let svc = ConcurrencyLimitLayer::builder(LIMIT)
        .wait()
        .build()
        .unwrap()
        .layer(inner);
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let rng = SeededRng::new(0x1157 + t);
                for _ in 0..CALLS {
                    let roll = rng.next_u64();
                    let call = svc.clone().oneshot((roll >> 8) as u32);
                    let yields = (roll >> 16) % 12;
                    match roll % 3 {
                        0 => {
                            call.await.unwrap();
                        }
                        1 => {
                            let give_up = async {
                                for _ in 0..yields {
                                    tokio::task::yield_now().await;
                                }
                            };
                            tokio::select! {
                                r = call => { r.unwrap(); }
                                () = give_up => {}
                            }
                        }
                        _ => {
                            let mut call = std::pin::pin!(call);
                            let once = std::future::poll_fn(|cx| {
                                std::task::Poll::Ready(call.as_mut().poll(cx))
                            })
                            .await;
                            if once.is_pending() {
                                for _ in 0..yields {
                                    tokio::task::yield_now().await;
                                }
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert!(g.max() <= LIMIT, "{} in flight", g.max());
    assert!(g.max() >= 2, "the test must produce concurrency");
    assert_eq!(svc.in_flight(), 0);
    // Every permit is back: `LIMIT` calls are admitted when made, the next one waits.
    let mut svc = svc;
    let mut admitted = Vec::new();
    for n in 0..LIMIT as u32 {
        admitted.push(svc.ready().await.unwrap().call(n));
    }
    assert_eq!(svc.in_flight(), LIMIT);
    let mut next = Box::pin(svc.ready().await.unwrap().call(9));
    assert!(next
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending());
    drop(admitted);
    assert_eq!(next.await.unwrap(), 9);
    assert_eq!(svc.in_flight(), 0);
}
