//! Rate limit rules, on a paused clock through `TokioClock` (and on a multi-thread runtime for
//! the hammering test): GCRA bursts and pacing, retry-after, waiting, max wait, sharing across
//! clones, per-key isolation, the bounded key table, telemetry, configuration errors.

#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};
use std::time::Duration;

use governor::clock::Clock;
use steadfast_layers::rate::{OverloadReason, Overloaded, RateLimitLayer, TokioClock};
use steadfast_layers::telemetry::Telemetry;
use steadfast_layers::BoxError;
use support::{Metrics, Traces};
use tokio::time::{advance, Instant};
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn echo(
    calls: &Arc<AtomicUsize>,
) -> impl Service<u32, Response = u32, Error = Infallible, Future = impl Send> + Clone + Send {
    let calls = calls.clone();
    service_fn(move |n: u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, Infallible>(n) }
    })
}

fn refusal(err: &BoxError) -> &Overloaded {
    let o = err
        .downcast_ref::<Overloaded>()
        .unwrap_or_else(|| panic!("expected Overloaded, got {err}"));
    assert_eq!(o.layer(), "rate");
    o
}

#[tokio::test(start_paused = true)]
async fn a_burst_then_one_cell_per_interval_with_retry_after() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = RateLimitLayer::builder(5, Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(echo(&calls));
    for n in 0..5 {
        assert_eq!(svc.ready().await.unwrap().call(n).await.unwrap(), n);
    }
    let err = svc.ready().await.unwrap().call(5).await.unwrap_err();
    let o = refusal(&err);
    assert_eq!(o.reason(), OverloadReason::RateLimited);
    assert_eq!(o.retry_after(), Some(ms(200)));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        5,
        "a refused call never reaches the service"
    );
    advance(ms(150)).await;
    let err = svc.ready().await.unwrap().call(6).await.unwrap_err();
    assert_eq!(refusal(&err).retry_after(), Some(ms(50)));
    advance(ms(50)).await;
    assert_eq!(svc.ready().await.unwrap().call(7).await.unwrap(), 7);
    // After a quiet second the whole burst is back.
    advance(Duration::from_secs(1)).await;
    for n in 0..5 {
        svc.ready().await.unwrap().call(n).await.unwrap();
    }
    assert!(svc.ready().await.unwrap().call(9).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn every_clone_draws_on_the_same_cells() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = RateLimitLayer::builder(2, Duration::from_secs(1))
        .build()
        .unwrap();
    let mut a = layer.clone().layer(echo(&calls));
    let mut b = layer.layer(echo(&calls));
    let mut c = b.clone();
    a.ready().await.unwrap().call(1).await.unwrap();
    b.ready().await.unwrap().call(2).await.unwrap();
    assert!(c.ready().await.unwrap().call(3).await.is_err());
    // Another layer has its own cells.
    let mut other = RateLimitLayer::builder(2, Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(echo(&calls));
    assert!(other.ready().await.unwrap().call(4).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn waiting_paces_calls() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = RateLimitLayer::builder(10, Duration::from_secs(1))
        .burst(2)
        .wait()
        .build()
        .unwrap()
        .layer(echo(&calls));
    let t0 = Instant::now();
    let done = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..6u32)
        .map(|n| {
            let (svc, done) = (svc.clone(), done.clone());
            tokio::spawn(async move {
                svc.oneshot(n).await.unwrap();
                done.lock().unwrap().push(t0.elapsed());
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let mut at = done.lock().unwrap().clone();
    at.sort();
    // A burst of two, then one every 100 ms.
    assert_eq!(at, vec![ms(0), ms(0), ms(100), ms(200), ms(300), ms(400)]);
}

#[tokio::test(start_paused = true)]
async fn max_wait_refuses_a_cell_too_far_away_at_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = RateLimitLayer::builder(1, Duration::from_secs(1))
        .max_wait(ms(300))
        .build()
        .unwrap()
        .layer(echo(&calls));
    svc.ready().await.unwrap().call(1).await.unwrap();
    let t0 = Instant::now();
    let err = svc.ready().await.unwrap().call(2).await.unwrap_err();
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "no point waiting: refused at once"
    );
    assert_eq!(refusal(&err).retry_after(), Some(Duration::from_secs(1)));
    // Within the bound, the call waits for its cell.
    advance(ms(800)).await;
    let t1 = Instant::now();
    assert_eq!(svc.ready().await.unwrap().call(3).await.unwrap(), 3);
    assert_eq!(t1.elapsed(), ms(200));
}

#[tokio::test(start_paused = true)]
async fn a_waiter_overtaken_for_its_cell_checks_again_within_its_bound() {
    for (bound, served_at) in [(ms(150), None), (ms(250), Some(ms(200)))] {
        let calls = Arc::new(AtomicUsize::new(0));
        let mut svc = RateLimitLayer::builder(10, Duration::from_secs(1))
            .burst(1)
            .max_wait(bound)
            .build()
            .unwrap()
            .layer(echo(&calls));
        svc.ready().await.unwrap().call(0).await.unwrap();
        let t0 = Instant::now();
        // The next cell is 100 ms away: the call sleeps until then.
        let mut waiter = Box::pin(svc.ready().await.unwrap().call(1));
        assert!(waiter
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
            .is_pending());
        // At 100 ms another caller takes that cell before the waiter wakes.
        advance(ms(100)).await;
        let mut other = svc.clone();
        assert_eq!(other.ready().await.unwrap().call(2).await.unwrap(), 2);
        // The waiter checks again: the next cell is at 200 ms.
        let result = waiter.await;
        match served_at {
            None => {
                let err = result.unwrap_err();
                assert_eq!(refusal(&err).retry_after(), Some(ms(100)));
                assert_eq!(t0.elapsed(), ms(100));
            }
            Some(at) => {
                assert_eq!(result.unwrap(), 1);
                assert_eq!(t0.elapsed(), at);
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn keys_have_their_own_cells() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = RateLimitLayer::builder(1, Duration::from_secs(1))
        .key_by(|n: &u32| n % 10)
        .build()
        .unwrap()
        .layer(echo(&calls));
    svc.ready().await.unwrap().call(1).await.unwrap();
    let err = svc.ready().await.unwrap().call(11).await.unwrap_err();
    assert_eq!(refusal(&err).retry_after(), Some(Duration::from_secs(1)));
    for n in 2..10 {
        svc.ready().await.unwrap().call(n).await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn the_key_table_is_bounded_and_sweeps_refilled_keys() {
    let metrics = Metrics::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = RateLimitLayer::builder(1, Duration::from_secs(10))
        .key_by(|n: &u32| *n)
        .max_keys(2)
        .telemetry(Telemetry::new().meter(metrics.meter()))
        .build()
        .unwrap();
    let mut svc = layer.clone().layer(echo(&calls));
    svc.ready().await.unwrap().call(1).await.unwrap();
    svc.ready().await.unwrap().call(2).await.unwrap();
    assert_eq!(layer.keys(), Some(2));
    // Both buckets are empty: a third key has no room.
    let err = svc.ready().await.unwrap().call(3).await.unwrap_err();
    let o = refusal(&err);
    assert_eq!(o.reason(), OverloadReason::TooManyKeys);
    assert_eq!(o.retry_after(), None);
    // Known keys are still rate limited as usual.
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(refusal(&err).reason(), OverloadReason::RateLimited);
    // Ten seconds on, both buckets have refilled: they are swept out, the new key fits.
    advance(Duration::from_secs(10)).await;
    svc.ready().await.unwrap().call(3).await.unwrap();
    assert!(layer.keys().unwrap() <= 2);
    assert_eq!(
        metrics.gauge_with("steadfast.rate.keys", &[]),
        Some(layer.keys().unwrap() as f64)
    );
    assert_eq!(
        metrics.counter(
            "steadfast.rate.rejected",
            &[("steadfast.reason", "too_many_keys")]
        ),
        1
    );
    assert_eq!(
        metrics.counter(
            "steadfast.rate.rejected",
            &[("steadfast.reason", "rate_limited")]
        ),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn telemetry_counts_and_traces() {
    let metrics = Metrics::new();
    let traces = Traces::default();
    let _guard = traces.install();
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = RateLimitLayer::builder(1, Duration::from_secs(2))
        .max_wait(ms(1500))
        .telemetry(
            Telemetry::new()
                .meter(metrics.meter())
                .name("api")
                .record_duration(true),
        )
        .build()
        .unwrap()
        .layer(echo(&calls));
    svc.ready().await.unwrap().call(1).await.unwrap();
    let err = svc.ready().await.unwrap().call(2).await.unwrap_err(); // needs 2 s > 1.5 s
    assert_eq!(refusal(&err).retry_after(), Some(Duration::from_secs(2)));
    advance(Duration::from_secs(1)).await;
    svc.ready().await.unwrap().call(3).await.unwrap(); // waits 1 s
    let waiting = traces.with_message("rate limited: waiting for a cell");
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].fields["wait_ms"], "1000.0");
    let rejected = traces.with_message("rate limit: call rejected");
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].fields["reason"], "rate_limited");
    assert_eq!(rejected[0].fields["retry_after_ms"], "2000.0");
    assert_eq!(rejected[0].target, "steadfast::rate");
    assert_eq!(
        metrics.counter(
            "steadfast.rate.rejected",
            &[
                ("steadfast.reason", "rate_limited"),
                ("steadfast.name", "api")
            ]
        ),
        1
    );
    assert_eq!(metrics.histogram_count("steadfast.rate.wait"), 1);
    // A span only for the call that waited.
    assert_eq!(
        traces
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| *s == "steadfast.rate")
            .count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn the_tokio_clock_follows_paused_time() {
    let clock = TokioClock::new();
    let t0 = clock.now();
    advance(Duration::from_secs(3)).await;
    assert_eq!(
        Duration::from(clock.now()) - Duration::from(t0),
        Duration::from_secs(3)
    );
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let s = Duration::from_secs(1);
    let cases = [
        (RateLimitLayer::builder(0, s).build(), "requests"),
        (RateLimitLayer::builder(1, Duration::ZERO).build(), "per"),
        (
            RateLimitLayer::builder(1, Duration::from_secs(367 * 86_400)).build(),
            "per",
        ),
        (
            RateLimitLayer::builder(10, Duration::from_nanos(5)).build(),
            "requests",
        ),
        (RateLimitLayer::builder(1, s).burst(0).build(), "burst"),
        (
            RateLimitLayer::builder(1, Duration::from_secs(86_400))
                .burst(u32::MAX)
                .build(),
            "burst",
        ),
        (
            RateLimitLayer::builder(1, s)
                .max_wait(Duration::ZERO)
                .build(),
            "max_wait",
        ),
        (
            RateLimitLayer::builder(1, s).max_keys(0).build(),
            "max_keys",
        ),
    ];
    for (result, field) in cases {
        assert_eq!(result.unwrap_err().path(), field);
    }
}

/// Many tasks on several threads through clones of one rate limit: exactly the burst gets
/// through (the next cell is an hour away), the rest are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_threads_share_one_bucket() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = RateLimitLayer::builder(1, Duration::from_secs(3600))
        .burst(50)
        .build()
        .unwrap()
        .layer(echo(&calls));
    let refused = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..32u32)
        .map(|t| {
            let (svc, refused) = (svc.clone(), refused.clone());
            tokio::spawn(async move {
                for i in 0..100u32 {
                    if let Err(e) = svc.clone().oneshot(t * 100 + i).await {
                        assert_eq!(refusal(&e).reason(), OverloadReason::RateLimited);
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 50);
    assert_eq!(refused.load(Ordering::SeqCst), 3200 - 50);
}

/// Calls `svc` until one is refused; returns how many got through.
async fn admitted_until_refused<S>(svc: &mut S) -> usize
where
    S: Service<u32, Response = u32, Error = BoxError>,
{
    let mut n = 0;
    while svc.ready().await.unwrap().call(0).await.is_ok() {
        n += 1;
        assert!(n < 1_000_000, "the limit never refused");
    }
    n
}

/// A fast global limit claims `precision`'s worth of cells per clock read, and still lets
/// exactly its burst through at once and exactly its rate over time.
#[tokio::test(start_paused = true)]
async fn a_fast_limit_claims_cells_in_batches_and_stays_exact_under_load() {
    let calls = Arc::new(AtomicUsize::new(0));
    // One cell per µs, burst 1,000: 100 cells per 100 µs claim.
    let layer = RateLimitLayer::builder(1_000_000, Duration::from_secs(1))
        .burst(1_000)
        .build()
        .unwrap();
    assert_eq!(layer.cells_per_clock_read(), 100);
    let mut svc = layer.layer(echo(&calls));
    assert_eq!(admitted_until_refused(&mut svc).await, 1_000);
    // Each millisecond brings 1,000 cells, and no more get through.
    for _ in 0..5 {
        advance(ms(1)).await;
        assert_eq!(admitted_until_refused(&mut svc).await, 1_000);
    }
    // 7 µs bring 7 cells: fewer than a batch, claimed one at a time.
    advance(Duration::from_micros(7)).await;
    assert_eq!(admitted_until_refused(&mut svc).await, 7);
    assert_eq!(calls.load(Ordering::SeqCst), 6_007);
}

/// The one inexactness of batches, bounded: cells claimed before a quiet period and unused add
/// to the refilled burst, at most one batch less the call that claimed it, once.
#[tokio::test(start_paused = true)]
async fn after_a_quiet_period_a_batched_limit_exceeds_its_burst_by_less_than_one_batch() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut svc = RateLimitLayer::builder(1_000_000, Duration::from_secs(1))
        .burst(1_000)
        .build()
        .unwrap()
        .layer(echo(&calls));
    // One call claims 100 cells and uses one.
    svc.ready().await.unwrap().call(0).await.unwrap();
    advance(ms(10)).await;
    // The burst has refilled; the 99 claimed cells come on top.
    assert_eq!(admitted_until_refused(&mut svc).await, 1_000 + 99);
    advance(ms(10)).await;
    assert_eq!(admitted_until_refused(&mut svc).await, 1_000);

    // Without batches, exactly the burst.
    let mut exact = RateLimitLayer::builder(1_000_000, Duration::from_secs(1))
        .burst(1_000)
        .precision(Duration::ZERO)
        .build()
        .unwrap()
        .layer(echo(&calls));
    exact.ready().await.unwrap().call(0).await.unwrap();
    advance(ms(10)).await;
    assert_eq!(admitted_until_refused(&mut exact).await, 1_000);
}

/// Slow limits, keyed limits and small bursts never batch; a bad precision is a typed error.
#[test]
fn batches_only_where_they_cannot_matter_much() {
    let per_sec = |n| RateLimitLayer::builder(n, Duration::from_secs(1));
    assert_eq!(per_sec(10_000).build().unwrap().cells_per_clock_read(), 1);
    assert_eq!(per_sec(50_000).build().unwrap().cells_per_clock_read(), 5);
    assert_eq!(
        per_sec(1_000_000_000)
            .build()
            .unwrap()
            .cells_per_clock_read(),
        1_024
    );
    assert_eq!(
        per_sec(1_000_000)
            .burst(8)
            .build()
            .unwrap()
            .cells_per_clock_read(),
        8
    );
    let keyed = per_sec(1_000_000).key_by(|n: &u32| *n).build().unwrap();
    assert_eq!(keyed.cells_per_clock_read(), 1);
    let err = per_sec(10)
        .precision(Duration::from_millis(1_001))
        .build()
        .unwrap_err();
    assert_eq!(err.path(), "precision");
}

/// Many tasks on several threads through one batched limit: no more than the burst gets
/// through at once, whichever thread claims or spends the batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_threads_share_one_batched_bucket() {
    let calls = Arc::new(AtomicUsize::new(0));
    // Ten cells a second (so a real-clock moment brings next to none), claimed ten at a time.
    let t0 = tokio::time::Instant::now();
    let svc = RateLimitLayer::builder(36_000, Duration::from_secs(3_600))
        .burst(500)
        .precision(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(svc.cells_per_clock_read(), 10);
    let svc = svc.layer(echo(&calls));
    let tasks: Vec<_> = (0..32u32)
        .map(|t| {
            let svc = svc.clone();
            tokio::spawn(async move {
                for i in 0..100u32 {
                    let _ = svc.clone().oneshot(t * 100 + i).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // The burst, plus the cells the real clock brought meanwhile (one per 100 ms, claimed ten
    // at a time): however long the run took, never more.
    let n = calls.load(Ordering::SeqCst);
    let brought = usize::try_from(t0.elapsed().as_millis() / 100).unwrap();
    let most = 500 + brought + 10;
    assert!(
        (500..=most).contains(&n),
        "{n} calls got through, at most {most}"
    );
}
