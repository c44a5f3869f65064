//! Many tasks on a multi-thread runtime hammering one shared breaker.
//!
//! These run on the real clock (tokio's paused clock needs a current-thread runtime) but never
//! sleep: a 1 ms break elapses while the tasks keep calling.
#![allow(missing_docs, clippy::unwrap_used)]

// Nested so that `cargo test breaker` selects every test of this file.
mod breaker_concurrency {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use futures::FutureExt;
    use steadfast_layers::breaker::{BreakDuration, BreakerState, CircuitBreakerLayer, Transition};
    use tokio::time::Instant;
    use tower::{service_fn, Layer, Service, ServiceExt};

    /// Counts calls in flight inside the peer, even when a call is dropped half-way.
    struct InFlight(Arc<AtomicUsize>);

    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[derive(Default)]
    struct Counters {
        in_flight: Arc<AtomicUsize>,
        max_in_flight: AtomicUsize,
        admitted: AtomicUsize,
        half_opens: AtomicUsize,
        reopens: AtomicUsize,
        closes: AtomicUsize,
    }

    async fn probes_stay_within_the_limit(probes: u32, progressive: bool) {
        let c = Arc::new(Counters::default());
        let cb = c.clone();
        let layer = CircuitBreakerLayer::builder()
            .count_window(4)
            .minimum_calls(4)
            // Probes re-open the breaker only when all of them have failed: every half-open period
            // ends after its last probe, so periods never overlap.
            .failure_rate(1.0)
            .half_open_probes(probes)
            .progressive_half_open(progressive)
            .break_duration(BreakDuration::constant(Duration::from_millis(1)))
            .on_transition(move |t: &Transition| match (t.from, t.to) {
                (BreakerState::Open, BreakerState::HalfOpen) => {
                    cb.half_opens.fetch_add(1, Ordering::SeqCst);
                }
                (BreakerState::HalfOpen, BreakerState::Open) => {
                    cb.reopens.fetch_add(1, Ordering::SeqCst);
                }
                (BreakerState::HalfOpen, BreakerState::Closed) => {
                    cb.closes.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            })
            .build()
            .unwrap();
        let h = layer.handle();
        let tracking = Arc::new(AtomicBool::new(false));
        let (c2, tr) = (c.clone(), tracking.clone());
        let svc = layer.layer(service_fn(move |()| {
            if tr.load(Ordering::SeqCst) {
                let n = c2.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                c2.max_in_flight.fetch_max(n, Ordering::SeqCst);
                c2.admitted.fetch_add(1, Ordering::SeqCst);
            }
            let guard = tr
                .load(Ordering::SeqCst)
                .then(|| InFlight(c2.in_flight.clone()));
            async move {
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                drop(guard);
                Err::<(), std::io::Error>(std::io::Error::other("down"))
            }
        }));

        // Trip it, with nothing else in flight.
        for _ in 0..4 {
            let _ = svc.clone().oneshot(()).await;
        }
        assert_eq!(h.state(), BreakerState::Open);
        // From now on the peer is down and the breaker never closes: every admitted call is a probe.
        tracking.store(true, Ordering::SeqCst);

        let give_up = Instant::now() + Duration::from_secs(20);
        let mut tasks = Vec::new();
        for task in 0..8 {
            let (svc, c) = (svc.clone(), c.clone());
            tasks.push(tokio::spawn(async move {
                let mut i = 0u64;
                while c.half_opens.load(Ordering::SeqCst) < 40 && Instant::now() < give_up {
                    let mut s = svc.clone();
                    let fut = s.ready().await.unwrap().call(());
                    i += 1;
                    if (task + i).is_multiple_of(5) {
                        // Abandon some calls half-way: their probe permits must come back.
                        let mut fut = Box::pin(fut);
                        let _ = (&mut fut).now_or_never();
                    } else {
                        let _ = fut.await;
                    }
                    tokio::task::yield_now().await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }

        let half_opens = c.half_opens.load(Ordering::SeqCst);
        let admitted = c.admitted.load(Ordering::SeqCst);
        let max = c.max_in_flight.load(Ordering::SeqCst);
        assert!(
            half_opens >= 40,
            "only {half_opens} half-open periods in 20 s"
        );
        assert!(
            max <= probes as usize,
            "{max} probes in flight, {probes} permitted"
        );
        assert!(max >= 1);
        assert_eq!(c.closes.load(Ordering::SeqCst), 0);
        // Each half-open period lets at most `probes` calls through (cancelled ones give their
        // permit back, so may be replaced: count only completed periods' failures).
        let reopens = c.reopens.load(Ordering::SeqCst);
        assert!(reopens + 1 >= half_opens && reopens <= half_opens);
        assert!(
            admitted >= reopens * probes as usize,
            "{admitted} admitted, {reopens} re-opens"
        );
        assert_eq!(c.in_flight.load(Ordering::SeqCst), 0);
        let m = h.metrics();
        assert!(m.probes_in_flight <= probes);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn half_open_never_admits_more_probes_than_permitted() {
        probes_stay_within_the_limit(3, false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn progressive_half_open_never_admits_more_probes_than_permitted() {
        probes_stay_within_the_limit(6, true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn exactly_one_caller_makes_each_transition() {
        let opens = Arc::new(AtomicUsize::new(0));
        let o = opens.clone();
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(50)
            .minimum_calls(50)
            .break_duration(BreakDuration::constant(Duration::from_secs(3600)))
            .on_transition(move |t: &Transition| {
                assert_eq!((t.from, t.to), (BreakerState::Closed, BreakerState::Open));
                o.fetch_add(1, Ordering::SeqCst);
            })
            .build()
            .unwrap();
        let h = layer.handle();
        let k = calls.clone();
        let svc = layer.layer(service_fn(move |()| {
            k.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), std::io::Error>(std::io::Error::other("down")) }
        }));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let svc = svc.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..500 {
                    let _ = svc.clone().oneshot(()).await;
                    tokio::task::yield_now().await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(opens.load(Ordering::SeqCst), 1);
        assert_eq!(h.state(), BreakerState::Open);
        let m = h.metrics();
        let calls = calls.load(Ordering::SeqCst) as u64;
        assert!(calls >= 50);
        assert_eq!(
            calls + m.rejected,
            8 * 500,
            "every call was either sent or refused"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn window_totals_do_not_drift_under_contention() {
        const N: u64 = 64;
        let layer = CircuitBreakerLayer::builder()
            .count_window(N as u32)
            .failure_rate(1.0) // needs 64 failures in a row: impossible with 8 alternating tasks
            .build()
            .unwrap();
        let h = layer.handle();
        let svc = layer.layer(service_fn(|fail: bool| async move {
            if fail {
                Err::<(), std::io::Error>(std::io::Error::other("x"))
            } else {
                Ok(())
            }
        }));
        let mut tasks = Vec::new();
        for task in 0..8u64 {
            let (svc, h) = (svc.clone(), h.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..4000u64 {
                    let _ = svc.clone().oneshot((i + task) % 2 == 0).await;
                    if i % 97 == 0 {
                        let m = h.metrics();
                        assert!(m.failures <= m.calls && m.calls <= N, "{m:?}");
                    }
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let m = h.metrics();
        assert_eq!(m.state, BreakerState::Closed);
        assert_eq!(m.calls, N);
        assert!(m.failures > 0 && m.failures < N, "{m:?}");
        // Overwrite the whole ring with successes: a drifted total would show here.
        for _ in 0..N {
            svc.clone().oneshot(false).await.unwrap();
        }
        let m = h.metrics();
        assert_eq!((m.calls, m.failures), (N, 0));
    }
}
