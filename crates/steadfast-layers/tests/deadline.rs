//! Deadline and per-attempt timeout rules, on a paused clock.

#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use steadfast_layers::deadline::{Deadline, DeadlineExceeded, DeadlineLayer, HttpExtensions};
use steadfast_layers::telemetry::Telemetry;
use steadfast_layers::timeout::{AttemptTimeoutLayer, Elapsed};
use steadfast_layers::ConfigError;
use support::{Metrics, Traces};
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A service that reports the deadline it runs under.
fn seen() -> impl tower::Service<
    (),
    Response = Option<Deadline>,
    Error = Infallible,
    Future = std::future::Ready<Result<Option<Deadline>, Infallible>>,
> + Clone {
    service_fn(|()| std::future::ready(Ok(Deadline::current())))
}

#[tokio::test(start_paused = true)]
async fn sets_a_deadline_when_none_is_inherited() {
    let t0 = Instant::now();
    let svc = DeadlineLayer::new(secs(2)).unwrap().layer(seen());
    assert_eq!(
        svc.oneshot(()).await.unwrap(),
        Some(Deadline::at(t0 + secs(2)))
    );
}

#[tokio::test(start_paused = true)]
async fn shrinks_but_never_extends_an_inherited_deadline() {
    let t0 = Instant::now();
    let svc = DeadlineLayer::new(secs(2)).unwrap().layer(seen());
    // Inherited 1 s is earlier than the layer's 2 s: kept.
    let outer = Deadline::at(t0 + secs(1));
    let got = outer.scope(svc.clone().oneshot(())).await.unwrap();
    assert_eq!(got, Some(outer));
    // Inherited 10 s is later: shrunk to 2 s.
    let outer = Deadline::at(t0 + secs(10));
    let got = outer.scope(svc.oneshot(())).await.unwrap();
    assert_eq!(got, Some(Deadline::at(t0 + secs(2))));
}

#[tokio::test(start_paused = true)]
async fn rejects_an_expired_request_without_calling_the_inner_service() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let inner = service_fn(move |()| {
        c.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok::<_, Infallible>(()))
    });
    let metrics = Metrics::new();
    let layer = DeadlineLayer::builder()
        .timeout(secs(5))
        .telemetry(Telemetry::new().meter(metrics.meter()).name("api"))
        .build()
        .unwrap();
    let svc = layer.layer(inner);
    let past = Deadline::at(Instant::now());
    let err = past.scope(svc.oneshot(())).await.unwrap_err();
    let e = err
        .downcast_ref::<DeadlineExceeded>()
        .expect("DeadlineExceeded");
    assert!(e.on_arrival());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        metrics.counter(
            "steadfast.deadline.exceeded",
            &[("steadfast.reason", "arrival"), ("steadfast.name", "api")]
        ),
        1
    );
}

struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn cancels_the_call_when_the_deadline_passes() {
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let slow = service_fn(move |()| {
        let flag = DropFlag(d.clone());
        async move {
            let _flag = flag;
            tokio::time::sleep(secs(60)).await;
            Ok::<_, Infallible>(())
        }
    });
    let metrics = Metrics::new();
    let layer = DeadlineLayer::builder()
        .timeout(Duration::from_millis(1500))
        .telemetry(Telemetry::new().meter(metrics.meter()))
        .build()
        .unwrap();
    let t0 = Instant::now();
    let err = layer.layer(slow).oneshot(()).await.unwrap_err();
    let e = err
        .downcast_ref::<DeadlineExceeded>()
        .expect("DeadlineExceeded");
    assert!(!e.on_arrival());
    assert_eq!(t0.elapsed(), Duration::from_millis(1500));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the inner call was cancelled"
    );
    assert_eq!(
        metrics.counter(
            "steadfast.deadline.exceeded",
            &[("steadfast.reason", "in_flight")]
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn a_response_ready_at_the_deadline_wins() {
    let svc = service_fn(|()| async {
        tokio::time::sleep(secs(1)).await;
        Ok::<_, Infallible>("done")
    });
    let svc = DeadlineLayer::new(secs(1)).unwrap().layer(svc);
    assert_eq!(svc.oneshot(()).await.unwrap(), "done");
}

#[tokio::test(start_paused = true)]
async fn without_any_deadline_the_layer_passes_through() {
    let svc = service_fn(|()| async {
        tokio::time::sleep(secs(1000)).await;
        Ok::<_, Infallible>(Deadline::current())
    });
    let svc = DeadlineLayer::inherit().layer(svc);
    assert_eq!(svc.oneshot(()).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn http_requests_carry_the_deadline_in_extensions() {
    let t0 = Instant::now();
    let inner = service_fn(|req: http::Request<()>| {
        std::future::ready(Ok::<_, Infallible>(
            req.extensions().get::<Deadline>().copied(),
        ))
    });
    let svc = DeadlineLayer::builder()
        .timeout(secs(3))
        .carrier(HttpExtensions)
        .build()
        .unwrap()
        .layer(inner);
    // No deadline yet: the layer's own is written into the extensions.
    let got = svc.clone().oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(got, Some(Deadline::at(t0 + secs(3))));
    // A deadline already in the extensions (set by a server layer, say) is inherited, without
    // any task-local scope.
    let mut req = http::Request::new(());
    req.extensions_mut().insert(Deadline::at(t0 + secs(1)));
    let got = svc.oneshot(req).await.unwrap();
    assert_eq!(got, Some(Deadline::at(t0 + secs(1))));
}

#[tokio::test(start_paused = true)]
async fn the_scope_follows_the_call_future_to_another_task() {
    let svc = DeadlineLayer::new(secs(2))
        .unwrap()
        .layer(service_fn(|()| async {
            tokio::task::yield_now().await;
            Ok::<_, Infallible>(Deadline::current())
        }));
    let t0 = Instant::now();
    let fut = svc.oneshot(());
    let got = tokio::spawn(fut).await.unwrap().unwrap();
    assert_eq!(got, Some(Deadline::at(t0 + secs(2))));
}

#[tokio::test(start_paused = true)]
async fn an_outbound_call_inherits_the_callers_deadline() {
    // B would take 5 s; A allows 2 s and calls B through an inherit-only layer.
    let b_finished = Arc::new(AtomicBool::new(false));
    let f = b_finished.clone();
    let b = service_fn(move |()| {
        let f = f.clone();
        async move {
            tokio::time::sleep(secs(5)).await;
            f.store(true, Ordering::SeqCst);
            Ok::<_, Infallible>(())
        }
    });
    let to_b = DeadlineLayer::inherit().layer(b);
    let a = service_fn(move |()| {
        let to_b = to_b.clone();
        async move { to_b.oneshot(()).await }
    });
    let a = DeadlineLayer::new(secs(2)).unwrap().layer(a);
    let t0 = Instant::now();
    let err = a.oneshot(()).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_eq!(t0.elapsed(), secs(2));
    tokio::time::advance(secs(10)).await;
    assert!(
        !b_finished.load(Ordering::SeqCst),
        "B stopped with the caller"
    );
}

#[tokio::test(start_paused = true)]
async fn deadline_events_are_traced() {
    let traces = Traces::default();
    let _g = traces.install();
    let svc = DeadlineLayer::new(secs(1))
        .unwrap()
        .layer(service_fn(|()| async {
            tokio::time::sleep(secs(2)).await;
            Ok::<_, Infallible>(())
        }));
    let _ = svc.oneshot(()).await;
    let ev = traces.with_message("deadline exceeded: call cancelled");
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].fields["reason"], "in_flight");
    assert!(traces
        .spans
        .lock()
        .unwrap()
        .iter()
        .any(|s| s == "steadfast.deadline"));
}

#[test]
fn builder_rejects_zero_and_absurd_timeouts() {
    let e: ConfigError = DeadlineLayer::new(Duration::ZERO).unwrap_err();
    assert_eq!(e.path(), "timeout");
    assert!(DeadlineLayer::new(Duration::MAX).is_err());
    assert!(AttemptTimeoutLayer::new(Duration::ZERO).is_err());
    assert!(AttemptTimeoutLayer::new(Duration::MAX).is_err());
}

// ---- per-attempt timeout -------------------------------------------------------------------

fn sleeper(d: Duration) -> impl tower::Service<(), Response = (), Error = Infallible> + Clone {
    service_fn(move |()| async move {
        tokio::time::sleep(d).await;
        Ok::<_, Infallible>(())
    })
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_elapses_at_its_configured_duration() {
    let t0 = Instant::now();
    let svc = AttemptTimeoutLayer::new(Duration::from_millis(300))
        .unwrap()
        .layer(sleeper(secs(1)));
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<Elapsed>().map(Elapsed::timeout),
        Some(Duration::from_millis(300))
    );
    assert_eq!(t0.elapsed(), Duration::from_millis(300));
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_is_capped_by_the_remaining_deadline() {
    let t0 = Instant::now();
    let svc = AttemptTimeoutLayer::new(secs(5))
        .unwrap()
        .layer(sleeper(secs(10)));
    let err = Deadline::at(t0 + secs(1))
        .scope(svc.clone().oneshot(()))
        .await
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(t0.elapsed(), secs(1));
    // With plenty of deadline the attempt timeout fires first, as Elapsed.
    let t1 = Instant::now();
    let err = Deadline::at(t1 + secs(60))
        .scope(svc.oneshot(()))
        .await
        .unwrap_err();
    assert!(err.is::<Elapsed>());
    assert_eq!(t1.elapsed(), secs(5));
}

#[tokio::test(start_paused = true)]
async fn deadline_only_attempts_pass_through_without_a_deadline() {
    let svc = AttemptTimeoutLayer::deadline_only().layer(sleeper(secs(100)));
    svc.oneshot(()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn attempt_timeouts_are_counted() {
    let metrics = Metrics::new();
    let layer = AttemptTimeoutLayer::with_telemetry(
        Some(Duration::from_millis(10)),
        &Telemetry::new().meter(metrics.meter()).name("db"),
    )
    .unwrap();
    let svc = layer.layer(sleeper(secs(1)));
    for _ in 0..3 {
        let _ = svc.clone().oneshot(()).await;
    }
    assert_eq!(
        metrics.counter("steadfast.timeout.elapsed", &[("steadfast.name", "db")]),
        3
    );
}

#[tokio::test(start_paused = true)]
async fn a_lazily_fixed_deadline_never_moves() {
    // The inner future reads the deadline at its first poll and again after 1 s: the same
    // instant both times, and the layer's timer fires at that instant.
    let svc = DeadlineLayer::new(secs(3))
        .unwrap()
        .layer(service_fn(|()| async {
            let first = Deadline::current();
            tokio::time::sleep(secs(1)).await;
            let second = Deadline::current();
            assert_eq!(first, second);
            tokio::time::sleep(secs(10)).await;
            Ok::<_, Infallible>(())
        }));
    let t0 = Instant::now();
    let err = svc.oneshot(()).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_eq!(t0.elapsed(), secs(3));
}

#[tokio::test(start_paused = true)]
async fn the_own_timeout_starts_no_later_than_the_first_poll() {
    let t0 = Instant::now();
    // Read during `call`: fixed at call time.
    let mut svc = DeadlineLayer::new(secs(2)).unwrap().layer(seen());
    let fut = tower::Service::call(&mut svc, ());
    tokio::time::advance(secs(5)).await;
    assert_eq!(fut.await.unwrap(), Some(Deadline::at(t0 + secs(2))));
    // Nothing needs it during `call`: fixed at the first poll.
    let mut svc = DeadlineLayer::new(secs(2))
        .unwrap()
        .layer(service_fn(|()| async {
            Ok::<_, Infallible>(Deadline::current())
        }));
    let fut = tower::Service::call(&mut svc, ());
    tokio::time::advance(secs(5)).await;
    let t1 = Instant::now();
    assert_eq!(fut.await.unwrap(), Some(Deadline::at(t1 + secs(2))));
}

/// Polls `fut` once, in the caller's task (and its deadline scope).
async fn poll_once<F: std::future::Future>(
    mut fut: std::pin::Pin<&mut F>,
) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(fut.as_mut().poll(cx))).await
}

/// A service whose call is pending on its first two polls and reports the deadline each of its
/// three polls saw.
fn pending_twice() -> impl tower::Service<(), Response = Vec<Option<Deadline>>, Error = Infallible>
{
    service_fn(|()| {
        let mut seen = Vec::new();
        std::future::poll_fn(move |cx| {
            seen.push(Deadline::current());
            if seen.len() < 3 {
                cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            std::task::Poll::Ready(Ok::<_, Infallible>(std::mem::take(&mut seen)))
        })
    })
}

#[tokio::test(start_paused = true)]
async fn each_poll_runs_in_the_deadline_and_leaves_the_enclosing_scope_in_place() {
    // Own timeout, nothing inherited: the deadline is fixed at the first pending poll, and the
    // later polls (scope already fixed) see the same one; between polls, no scope is left behind.
    let t0 = Instant::now();
    let svc = DeadlineLayer::new(secs(2)).unwrap().layer(pending_twice());
    let mut fut = std::pin::pin!(svc.oneshot(()));
    for _ in 0..2 {
        assert!(poll_once(fut.as_mut()).await.is_pending());
        assert_eq!(Deadline::current(), None);
        tokio::time::advance(Duration::from_millis(100)).await;
    }
    let seen = fut.await.unwrap();
    assert_eq!(seen, vec![Some(Deadline::at(t0 + secs(2))); 3]);
    assert_eq!(Deadline::current(), None);

    // Inherited from an enclosing scope and shrunk: the enclosing deadline is back after each
    // poll.
    let outer = Deadline::after(secs(60)).unwrap();
    outer
        .scope(async move {
            let t1 = Instant::now();
            let svc = DeadlineLayer::new(secs(2)).unwrap().layer(pending_twice());
            let mut fut = std::pin::pin!(svc.oneshot(()));
            for _ in 0..2 {
                assert!(poll_once(fut.as_mut()).await.is_pending());
                assert_eq!(Deadline::current(), Some(outer));
            }
            let seen = fut.await.unwrap();
            assert_eq!(seen, vec![Some(Deadline::at(t1 + secs(2))); 3]);
            assert_eq!(Deadline::current(), Some(outer));
        })
        .await;
}
