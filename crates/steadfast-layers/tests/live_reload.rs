//! Settings changed at run time through each layer's handle, on a paused clock: the change
//! applies to calls that start after it, calls in flight are neither dropped nor changed, breaker
//! state is kept, and bad values are refused with the builder's error path and change nothing.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use steadfast_layers::breaker::{BreakDuration, BreakerState, CircuitBreakerLayer, CircuitOpen};
use steadfast_layers::bulkhead::BulkheadLayer;
use steadfast_layers::hedge::{HedgeAny, HedgeDelay, HedgeLayer};
use steadfast_layers::limit::{ConcurrencyLimitLayer, OverloadReason, Overloaded};
use steadfast_layers::rate::RateLimitLayer;
use steadfast_layers::retry::{Backoff, RetryLayer};
use steadfast_layers::{BoxError, Problem};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Lets the spawned tasks run until they wait (the paused clock does not move while any can
/// run).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

// ---- retry ----------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn retry_max_attempts_applies_to_the_next_call_and_not_to_one_in_flight() {
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    let failing = service_fn(move |_: ()| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), BoxError>("unavailable".into()) }
    });
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(ms(10)))
        .no_budget()
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(failing);

    // A call in flight (sleeping its first backoff) when the maximum is raised keeps its own.
    let in_flight = tokio::spawn(svc.clone().oneshot(()));
    settle().await;
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    handle.set_max_attempts(5).unwrap();
    assert!(in_flight.await.unwrap().is_err());
    assert_eq!(attempts.load(Ordering::SeqCst), 3);

    // The next call makes five, and takes the new backoff.
    handle.set_backoff(Backoff::constant(ms(1000))).unwrap();
    let t0 = Instant::now();
    assert!(svc.clone().oneshot(()).await.is_err());
    assert_eq!(attempts.load(Ordering::SeqCst), 3 + 5);
    assert_eq!(t0.elapsed(), ms(4000), "four backoffs of the new 1 s");

    // Lowered: one attempt, no retry.
    handle.set_max_attempts(1).unwrap();
    assert!(svc.clone().oneshot(()).await.is_err());
    assert_eq!(attempts.load(Ordering::SeqCst), 3 + 5 + 1);
    assert_eq!(layer.max_attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_raised_from_one_attempt_retries_the_next_call() {
    // With one attempt the request is not kept for replay; a call made after the change is.
    let attempts = Arc::new(AtomicUsize::new(0));
    let seen = attempts.clone();
    let svc = RetryLayer::builder()
        .max_attempts(1)
        .backoff(Backoff::constant(ms(1)))
        .no_budget()
        .build()
        .unwrap();
    let handle = svc.handle();
    let svc = svc.layer(service_fn(move |_: u8| {
        let n = seen.fetch_add(1, Ordering::SeqCst);
        async move {
            if n == 0 || n == 1 {
                Err::<usize, BoxError>("unavailable".into())
            } else {
                Ok(n)
            }
        }
    }));
    assert!(svc.clone().oneshot(1).await.is_err());
    handle.set_max_attempts(2).unwrap();
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 2);
}

// ---- concurrency limits ---------------------------------------------------------------------

/// An inner service whose calls each wait for one permit of `release`.
fn held(
    release: Arc<Semaphore>,
) -> impl tower::Service<
    (),
    Response = (),
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<(), BoxError>> + Send,
> + Clone {
    service_fn(move |()| {
        let release = release.clone();
        async move {
            release.acquire().await.unwrap().forget();
            Ok::<_, BoxError>(())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn limit_lowered_below_in_flight_drops_none_and_refuses_until_drained() {
    let release = Arc::new(Semaphore::new(0));
    let layer = ConcurrencyLimitLayer::new(3).unwrap();
    let handle = layer.handle();
    let svc = layer.layer(held(release.clone()));
    let calls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(svc.clone().oneshot(())))
        .collect();
    settle().await;
    assert_eq!(layer.in_flight(), 3);

    handle.set_max_in_flight(1).unwrap();
    let refused = |r: Result<(), BoxError>| {
        let e = r.unwrap_err();
        e.downcast_ref::<Overloaded>().unwrap().reason() == OverloadReason::AtCapacity
    };
    assert!(refused(svc.clone().oneshot(()).await));
    // Two finish: one still in flight, the new limit: still refused.
    release.add_permits(2);
    settle().await;
    assert_eq!(layer.in_flight(), 1);
    assert!(refused(svc.clone().oneshot(()).await));
    // Drained below it: admitted again.
    release.add_permits(1);
    settle().await;
    assert_eq!(layer.in_flight(), 0);
    for c in calls {
        c.await.unwrap().unwrap();
    }
    let admitted = tokio::spawn(svc.clone().oneshot(()));
    settle().await;
    assert_eq!(layer.in_flight(), 1);
    assert!(refused(svc.clone().oneshot(()).await));
    release.add_permits(1);
    admitted.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn waiting_limit_lowered_then_raised_serves_waiters_in_turn() {
    let release = Arc::new(Semaphore::new(0));
    let layer = ConcurrencyLimitLayer::builder(2).wait().build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(held(release.clone()));
    let first: Vec<_> = (0..2)
        .map(|_| tokio::spawn(svc.clone().oneshot(())))
        .collect();
    settle().await;
    handle.set_max_in_flight(1).unwrap();
    let waiter = tokio::spawn(svc.clone().oneshot(()));
    settle().await;
    // One of the two finishes: one still in flight, the waiter still waits.
    release.add_permits(1);
    settle().await;
    assert_eq!(layer.in_flight(), 1);
    assert!(!waiter.is_finished());
    // Raised: the waiter is admitted at once.
    handle.set_max_in_flight(4).unwrap();
    settle().await;
    assert_eq!(layer.in_flight(), 2);
    release.add_permits(2);
    for c in first {
        c.await.unwrap().unwrap();
    }
    waiter.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn keyed_limit_change_reaches_every_key_and_later_ones() {
    let release = Arc::new(Semaphore::new(0));
    let layer = ConcurrencyLimitLayer::builder(2)
        .key_by(|k: &u8| *k)
        .build()
        .unwrap();
    let handle = layer.handle();
    let release2 = release.clone();
    let svc = layer.layer(service_fn(move |_: u8| {
        let release = release2.clone();
        async move {
            release.acquire().await.unwrap().forget();
            Ok::<_, BoxError>(())
        }
    }));
    let a = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    handle.set_max_in_flight(1).unwrap();
    // Key 1 (seen before the change) and key 2 (new) both hold one call at most.
    assert!(svc.clone().oneshot(1).await.is_err());
    let b = tokio::spawn(svc.clone().oneshot(2));
    settle().await;
    assert!(svc.clone().oneshot(2).await.is_err());
    release.add_permits(2);
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn bulkhead_lowered_queues_new_calls_until_in_flight_drains() {
    let release = Arc::new(Semaphore::new(0));
    let layer = BulkheadLayer::builder(2)
        .max_queue(4)
        .max_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(held(release.clone()));
    let first: Vec<_> = (0..2)
        .map(|_| tokio::spawn(svc.clone().oneshot(())))
        .collect();
    settle().await;
    handle.set_max_concurrent(1).unwrap();
    let queued = tokio::spawn(svc.clone().oneshot(()));
    settle().await;
    assert_eq!((layer.in_flight(), layer.queued()), (2, 1));
    release.add_permits(1);
    settle().await;
    assert_eq!(
        (layer.in_flight(), layer.queued()),
        (1, 1),
        "at the new maximum"
    );
    release.add_permits(1);
    settle().await;
    assert_eq!(
        (layer.in_flight(), layer.queued()),
        (1, 0),
        "served once drained"
    );
    release.add_permits(1);
    for c in first {
        c.await.unwrap().unwrap();
    }
    queued.await.unwrap().unwrap();
    assert_eq!(layer.max_concurrent(), 1);
}

// ---- circuit breaker ------------------------------------------------------------------------

fn outcome_service() -> impl tower::Service<
    bool,
    Response = (),
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<(), BoxError>> + Send,
> + Clone {
    service_fn(|ok: bool| async move {
        if ok {
            Ok(())
        } else {
            Err::<(), BoxError>("boom".into())
        }
    })
}

#[tokio::test(start_paused = true)]
async fn breaker_threshold_change_keeps_the_window_and_judges_the_next_call() {
    let layer = CircuitBreakerLayer::builder()
        .count_window(10)
        .minimum_calls(10)
        .failure_rate(0.5)
        .break_duration(BreakDuration::constant(Duration::from_secs(30)))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(outcome_service());
    for ok in [true; 7].into_iter().chain([false; 3]) {
        let _ = svc.clone().oneshot(ok).await;
    }
    assert_eq!(handle.state(), BreakerState::Closed, "30 % < 50 %");

    handle.set_failure_rate(0.3).unwrap();
    let m = handle.metrics();
    assert_eq!(
        (m.calls, m.failures, m.state),
        (10, 3, BreakerState::Closed)
    );
    // The next recorded call is judged by the new threshold: 3 of the last 10 is 30 %.
    svc.clone().oneshot(true).await.unwrap();
    assert_eq!(handle.state(), BreakerState::Open);

    // A new break duration applies to the next opening, not to this one.
    handle
        .set_break_duration(BreakDuration::constant(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(
        handle.metrics().open_remaining,
        Some(Duration::from_secs(30))
    );
    let err = svc.clone().oneshot(true).await.unwrap_err();
    assert!(err.downcast_ref::<CircuitOpen>().is_some());
    tokio::time::advance(Duration::from_secs(30)).await;

    // Half-open with the default 10 probes; fewer now: one failed probe in two re-opens it
    // (50 % of 2 probes), for the new 5 s.
    handle.set_half_open_probes(2).unwrap();
    let _ = svc.clone().oneshot(false).await;
    assert_eq!(handle.state(), BreakerState::Open);
    assert_eq!(
        handle.metrics().open_remaining,
        Some(Duration::from_secs(5))
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    svc.clone().oneshot(true).await.unwrap();
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    svc.clone().oneshot(true).await.unwrap();
    assert_eq!(
        handle.state(),
        BreakerState::Closed,
        "two healthy probes of two"
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_minimum_calls_and_consecutive_failures_change() {
    let layer = CircuitBreakerLayer::builder()
        .count_window(20)
        .minimum_calls(20)
        .failure_rate(0.5)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(outcome_service());
    for _ in 0..4 {
        let _ = svc.clone().oneshot(false).await;
    }
    assert_eq!(handle.state(), BreakerState::Closed, "4 calls < 20");
    handle.set_minimum_calls(5).unwrap();
    let _ = svc.clone().oneshot(false).await;
    assert_eq!(handle.state(), BreakerState::Open);

    handle.close();
    handle.set_consecutive_failures(Some(2)).unwrap();
    handle.set_minimum_calls(20).unwrap();
    let _ = svc.clone().oneshot(false).await;
    assert_eq!(handle.state(), BreakerState::Closed);
    let _ = svc.clone().oneshot(false).await;
    assert_eq!(handle.state(), BreakerState::Open, "two in a row");
    assert_eq!(handle.settings().consecutive_failures, Some(2));
}

#[tokio::test(start_paused = true)]
async fn breaker_slow_call_detection_turned_on_at_run_time() {
    let layer = CircuitBreakerLayer::builder()
        .count_window(4)
        .minimum_calls(4)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|d: u64| async move {
        tokio::time::sleep(ms(d)).await;
        Ok::<_, BoxError>(())
    }));
    for _ in 0..4 {
        svc.clone().oneshot(200).await.unwrap();
    }
    assert_eq!(handle.metrics().slow_calls, 0, "off");
    handle.set_slow_call_duration(Some(ms(100))).unwrap();
    handle.set_slow_call_rate(0.5).unwrap();
    svc.clone().oneshot(200).await.unwrap();
    assert_eq!(handle.metrics().slow_calls, 1);
    svc.clone().oneshot(200).await.unwrap();
    assert_eq!(handle.state(), BreakerState::Open, "2 slow calls of 4");
}

#[tokio::test(start_paused = true)]
async fn keyed_breakers_all_take_the_change_and_keep_their_state() {
    let layer = CircuitBreakerLayer::builder()
        .count_window(4)
        .minimum_calls(4)
        .failure_rate(1.0)
        .key_by(|req: &(u8, bool)| req.0)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|(_, ok): (u8, bool)| async move {
        if ok {
            Ok(())
        } else {
            Err::<(), BoxError>("boom".into())
        }
    }));
    for key in [1u8, 2] {
        for ok in [true, true, false, false] {
            let _ = svc.clone().oneshot((key, ok)).await;
        }
    }
    handle.set_failure_rate(0.5).unwrap();
    for key in [1u8, 2] {
        assert_eq!(handle.metrics_of(&key).unwrap().failures, 2, "kept");
        assert_eq!(handle.state_of(&key), Some(BreakerState::Closed));
        let _ = svc.clone().oneshot((key, false)).await;
        assert_eq!(handle.state_of(&key), Some(BreakerState::Open), "key {key}");
    }
}

// ---- hedge ----------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn hedge_fixed_delay_change_applies_to_the_next_call() {
    let sent = Arc::new(AtomicUsize::new(0));
    let seen = sent.clone();
    let layer = HedgeLayer::builder()
        .delay(HedgeDelay::fixed(ms(100)))
        .policy(HedgeAny)
        .no_budget()
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(move |_: u8| {
        seen.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(ms(500)).await;
            Ok::<_, BoxError>(())
        }
    }));
    svc.clone().oneshot(1).await.unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 2, "hedged at 100 ms");

    // A call in flight keeps its delay: started before the change, it hedges at 100 ms.
    let in_flight = tokio::spawn(svc.clone().oneshot(1));
    settle().await;
    handle.set_delay(HedgeDelay::fixed(ms(1000))).unwrap();
    in_flight.await.unwrap().unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 4);

    svc.clone().oneshot(1).await.unwrap();
    assert_eq!(sent.load(Ordering::SeqCst), 5, "not hedged: 500 ms < 1 s");
    assert_eq!(handle.current_delay(), Some(ms(1000)));

    let err = handle.set_delay(HedgeDelay::percentile(90.0)).unwrap_err();
    assert_eq!(err.path(), "delay");
    assert!(matches!(err.problem(), Problem::Conflict(_)));
    assert_eq!(handle.current_delay(), Some(ms(1000)), "unchanged");
}

#[tokio::test(start_paused = true)]
async fn hedge_percentile_change_is_recomputed_from_the_samples_kept() {
    let learned = |p: f64| {
        HedgeDelay::percentile(p)
            .min_samples(20)
            .recompute_every(Duration::from_secs(3), 20)
    };
    let layer = HedgeLayer::builder()
        .delay(learned(50.0))
        .policy(HedgeAny)
        .no_budget()
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|n: u64| async move {
        tokio::time::sleep(ms(if n.is_multiple_of(2) { 10 } else { 100 })).await;
        Ok::<_, BoxError>(())
    }));
    for n in 0..20 {
        svc.clone().oneshot(n).await.unwrap();
    }
    let p50 = layer.current_delay().unwrap();
    assert!(p50 >= ms(10) && p50 <= ms(11), "{p50:?}");
    handle.set_delay(learned(95.0)).unwrap();
    let p95 = layer.current_delay().unwrap();
    assert!(p95 >= ms(100) && p95 <= ms(105), "{p95:?}");

    let err = handle
        .set_delay(learned(95.0).window(Duration::from_secs(60)))
        .unwrap_err();
    assert_eq!(err.path(), "delay.window");
    let err = handle.set_delay(learned(100.0)).unwrap_err();
    assert_eq!(err.path(), "delay.percentile");
}

// ---- rate limit -----------------------------------------------------------------------------

fn retry_after(r: Result<(), BoxError>) -> Option<Duration> {
    r.unwrap_err()
        .downcast_ref::<Overloaded>()
        .unwrap()
        .retry_after()
}

#[tokio::test(start_paused = true)]
async fn rate_change_keeps_what_was_spent_and_counts_the_new_rate_from_it() {
    let layer = RateLimitLayer::builder(1, Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|()| async { Ok::<_, BoxError>(()) }));
    svc.clone().oneshot(()).await.unwrap();
    assert_eq!(retry_after(svc.clone().oneshot(()).await), Some(ms(1000)));

    // Ten a second from 500 ms on, in bursts of one: the cell spent under the old rate is still
    // owed (the bucket is full again at 1 s), then one every 100 ms.
    tokio::time::advance(ms(500)).await;
    handle
        .set_rate(10, Duration::from_secs(1), Some(1))
        .unwrap();
    assert_eq!((layer.interval(), layer.burst()), (ms(100), 1));
    tokio::time::advance(ms(100)).await;
    assert_eq!(retry_after(svc.clone().oneshot(()).await), Some(ms(400)));
    tokio::time::advance(ms(400)).await;
    svc.clone().oneshot(()).await.unwrap();
    assert_eq!(retry_after(svc.clone().oneshot(()).await), Some(ms(100)));
    tokio::time::advance(ms(100)).await;
    svc.clone().oneshot(()).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn rate_lowered_burst_refuses_until_the_spent_time_has_passed() {
    let layer = RateLimitLayer::builder(10, Duration::from_secs(1))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|()| async { Ok::<_, BoxError>(()) }));
    for _ in 0..5 {
        svc.clone().oneshot(()).await.unwrap();
    }
    // Five cells of 100 ms spent: the bucket is full again at 500 ms. One a second, no burst:
    // nothing before 500 ms, then one a second.
    handle.set_rate(1, Duration::from_secs(1), None).unwrap();
    assert_eq!(retry_after(svc.clone().oneshot(()).await), Some(ms(500)));
    tokio::time::advance(ms(500)).await;
    svc.clone().oneshot(()).await.unwrap();
    assert_eq!(retry_after(svc.clone().oneshot(()).await), Some(ms(1000)));
}

#[tokio::test(start_paused = true)]
async fn keyed_rate_change_applies_to_every_key() {
    let layer = RateLimitLayer::builder(1, Duration::from_secs(10))
        .key_by(|k: &u8| *k)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|_: u8| async { Ok::<_, BoxError>(()) }));
    svc.clone().oneshot(1).await.unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    handle.set_rate(1, Duration::from_secs(1), Some(3)).unwrap();
    // Key 1's bucket is full again at 10 s; the new burst's 2 s of slack let it in at 8 s.
    let r = svc.clone().oneshot(1).await.map(|_| ());
    assert_eq!(retry_after(r), Some(Duration::from_secs(6)));
    // Key 2, new: a burst of three.
    for _ in 0..3 {
        svc.clone().oneshot(2).await.unwrap();
    }
    assert!(svc.clone().oneshot(2).await.is_err());
    assert_eq!(layer.keys(), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_takes_its_cell_under_the_new_rate() {
    let layer = RateLimitLayer::builder(1, Duration::from_secs(10))
        .wait()
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|()| async { Ok::<_, BoxError>(()) }));
    svc.clone().oneshot(()).await.unwrap();
    let t0 = Instant::now();
    let waiting = tokio::spawn(svc.clone().oneshot(()));
    settle().await;
    handle.set_rate(1, Duration::from_secs(1), None).unwrap();
    // It sleeps until the 10 s it was told, then finds its cell (no call is dropped).
    waiting.await.unwrap().unwrap();
    assert_eq!(t0.elapsed(), Duration::from_secs(10));
    // The spent time carried over: the next cell is 1 s later.
    let r = svc.clone().oneshot(()).await;
    assert!(r.is_ok());
    assert_eq!(t0.elapsed(), Duration::from_secs(11));
}

// ---- bad values -----------------------------------------------------------------------------

#[test]
fn bad_values_are_refused_with_the_builders_path_and_change_nothing() {
    let breaker = CircuitBreakerLayer::builder()
        .failure_rate(0.4)
        .build()
        .unwrap()
        .handle();
    let before = breaker.settings();
    let errors = [
        breaker.set_failure_rate(1.5).unwrap_err(),
        breaker.set_failure_rate(f64::NAN).unwrap_err(),
        breaker.set_slow_call_rate(-0.1).unwrap_err(),
        breaker
            .set_slow_call_duration(Some(Duration::ZERO))
            .unwrap_err(),
        breaker.set_minimum_calls(0).unwrap_err(),
        breaker.set_consecutive_failures(Some(0)).unwrap_err(),
        breaker.set_half_open_probes(0).unwrap_err(),
        breaker
            .set_break_duration(BreakDuration::constant(Duration::ZERO))
            .unwrap_err(),
    ];
    let paths: Vec<_> = errors.iter().map(|e| e.path().to_owned()).collect();
    assert_eq!(
        paths,
        [
            "failure_rate",
            "failure_rate",
            "slow_call_rate",
            "slow_call_duration",
            "minimum_calls",
            "consecutive_failures",
            "half_open_probes",
            "break_duration",
        ]
    );
    assert_eq!(breaker.settings(), before);
    // The same error as the builder's, for the same value.
    assert_eq!(
        breaker.set_half_open_probes(5000).unwrap_err(),
        CircuitBreakerLayer::builder()
            .half_open_probes(5000)
            .build()
            .unwrap_err()
    );

    let retry = RetryLayer::builder().build().unwrap().handle();
    assert_eq!(
        retry.set_max_attempts(0).unwrap_err().path(),
        "max_attempts"
    );
    assert_eq!(
        retry.set_max_attempts(1000).unwrap_err(),
        RetryLayer::builder()
            .max_attempts(1000)
            .build()
            .unwrap_err()
    );
    let bad = Backoff::exponential(ms(100), ms(10));
    assert_eq!(retry.set_backoff(bad).unwrap_err().path(), "backoff.base");
    assert_eq!(
        (retry.max_attempts(), retry.backoff()),
        (3, Backoff::default())
    );

    let limit = ConcurrencyLimitLayer::new(4).unwrap().handle();
    let e = limit.set_max_in_flight(0).unwrap_err();
    assert_eq!((e.path(), e.problem()), ("max_in_flight", &Problem::Zero));
    assert_eq!(limit.max_in_flight(), 4);
    let bulkhead = BulkheadLayer::builder(4).build().unwrap().handle();
    assert_eq!(
        bulkhead.set_max_concurrent(0).unwrap_err().path(),
        "max_concurrent"
    );
    assert_eq!(bulkhead.max_concurrent(), 4);

    let hedge = HedgeLayer::builder()
        .delay(HedgeDelay::fixed(ms(10)))
        .build()
        .unwrap()
        .handle();
    assert_eq!(
        hedge
            .set_delay(HedgeDelay::fixed(Duration::from_secs(7200)))
            .unwrap_err()
            .path(),
        "delay"
    );
    assert_eq!(hedge.current_delay(), Some(ms(10)));

    let rate = RateLimitLayer::builder(10, Duration::from_secs(1))
        .build()
        .unwrap()
        .handle();
    let paths: Vec<_> = [
        rate.set_rate(0, Duration::from_secs(1), None),
        rate.set_rate(1, Duration::ZERO, None),
        rate.set_rate(10, Duration::from_nanos(5), None),
        rate.set_rate(1, Duration::from_secs(1), Some(0)),
    ]
    .into_iter()
    .map(|r| r.unwrap_err().path().to_owned())
    .collect();
    assert_eq!(paths, ["requests", "per", "requests", "burst"]);
    assert_eq!((rate.interval(), rate.burst()), (ms(100), 10));
}

// ---- under load -----------------------------------------------------------------------------

/// Settings move at random while four tasks on two threads make calls through a retry, a
/// concurrency limit that waits, a breaker and a rate limit: every call ends (with an answer or
/// a typed refusal), and once all have ended no slot is left taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_while_calls_run_lose_no_call_and_no_slot() {
    use steadfast_layers::breaker::CircuitOpen;
    use steadfast_layers::retry::GaveUp;
    use steadfast_layers::rng::{RandomSource, SeededRng};

    const TASKS: u64 = 4;
    const CALLS: u64 = 500;
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .backoff(Backoff::constant(Duration::ZERO))
        .no_budget()
        .build()
        .unwrap();
    let limit = ConcurrencyLimitLayer::builder(4).wait().build().unwrap();
    let breaker = CircuitBreakerLayer::builder()
        .count_window(20)
        .minimum_calls(10)
        .break_duration(BreakDuration::constant(ms(1)))
        .build()
        .unwrap();
    let rate = RateLimitLayer::builder(1_000_000, Duration::from_secs(1))
        .build()
        .unwrap();
    let handles = (
        retry.handle(),
        limit.handle(),
        breaker.handle(),
        rate.handle(),
    );
    let svc = tower::ServiceBuilder::new()
        .layer(retry)
        .layer(limit.clone())
        .layer(breaker)
        .layer(rate)
        .service(service_fn(|n: u64| async move {
            tokio::task::yield_now().await;
            if n.is_multiple_of(3) {
                Err(std::io::Error::other("unavailable"))
            } else {
                Ok(n)
            }
        }));
    let ended = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (svc, ended) = (svc.clone(), ended.clone());
            tokio::spawn(async move {
                for i in 0..CALLS {
                    match svc.clone().oneshot(t * CALLS + i).await {
                        Ok(_) => {}
                        Err(e) => assert!(
                            e.downcast_ref::<GaveUp>().is_some()
                                || e.downcast_ref::<CircuitOpen>().is_some()
                                || e.downcast_ref::<Overloaded>().is_some(),
                            "{e}"
                        ),
                    }
                    ended.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let mover = {
        let (retry, limit_h, breaker, rate) = handles.clone();
        let ended = ended.clone();
        tokio::spawn(async move {
            let rng = SeededRng::new(0x11fe);
            while ended.load(Ordering::SeqCst) < (TASKS * CALLS) as usize {
                let r = rng.next_u64();
                retry.set_max_attempts(1 + (r % 4) as u32).unwrap();
                limit_h
                    .set_max_in_flight(1 + ((r >> 8) % 6) as usize)
                    .unwrap();
                breaker
                    .set_failure_rate(0.2 + ((r >> 16) % 8) as f64 / 10.0)
                    .unwrap();
                breaker
                    .set_half_open_probes(1 + ((r >> 24) % 4) as u32)
                    .unwrap();
                rate.set_rate(
                    500_000 + ((r >> 32) % 1000) as u32,
                    Duration::from_secs(1),
                    None,
                )
                .unwrap();
                tokio::task::yield_now().await;
            }
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    mover.await.unwrap();
    assert_eq!(ended.load(Ordering::SeqCst), (TASKS * CALLS) as usize);
    assert_eq!(limit.in_flight(), 0, "every slot given back");
}
