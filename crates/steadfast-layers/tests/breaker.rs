//! Circuit breaker behaviour, one test per rule, on a paused clock.
#![allow(missing_docs, clippy::unwrap_used)]

// Nested so that `cargo test breaker` selects every test of this file.
mod breaker {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use futures::FutureExt;
    use opentelemetry::metrics::MeterProvider;
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
    use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
    use steadfast_layers::breaker::{
        BreakDuration, BreakerState, CircuitBreakerLayer, CircuitOpen, Mode, SlidingWindow,
        Transition, TransitionReason,
    };
    use steadfast_layers::classify::Outcome;
    use steadfast_layers::overload::{OverloadReason, Overloaded};
    use steadfast_layers::rng::{RandomSource, SeededRng};
    use steadfast_layers::telemetry::Telemetry;
    use steadfast_layers::{BoxError, Problem};
    use tokio::time::{advance, Instant};
    use tower::util::BoxCloneService;
    use tower::{service_fn, Layer, Service, ServiceExt};

    // ---------------------------------------------------------------------------------------------
    // Helpers

    /// What the peer does with a request.
    #[derive(Clone, Copy, Debug)]
    enum Act {
        Ok,
        Fail,
        /// Sleeps, then answers 200.
        Slow(Duration),
        /// Answers with this status.
        Status(u16),
    }

    type Peer = BoxCloneService<Act, u16, BoxError>;

    fn peer(calls: &Arc<AtomicUsize>) -> Peer {
        let calls = calls.clone();
        BoxCloneService::new(service_fn(move |act: Act| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match act {
                    Act::Ok => Ok(200),
                    Act::Fail => Err(BoxError::from("boom")),
                    Act::Slow(d) => {
                        tokio::time::sleep(d).await;
                        Ok(200)
                    }
                    Act::Status(s) => Ok(s),
                }
            }
        }))
    }

    async fn call<S>(svc: &mut S, act: Act) -> Result<u16, BoxError>
    where
        S: Service<Act, Response = u16, Error = BoxError>,
    {
        svc.ready().await?.call(act).await
    }

    /// Runs `acts` one after the other, ignoring results.
    async fn run<S>(svc: &mut S, acts: &[Act])
    where
        S: Service<Act, Response = u16, Error = BoxError>,
    {
        for a in acts {
            let _ = call(svc, *a).await;
        }
    }

    fn open_err(e: &BoxError) -> CircuitOpen {
        *e.downcast_ref::<CircuitOpen>()
            .unwrap_or_else(|| panic!("expected CircuitOpen, got {e}"))
    }

    /// Records every transition.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<Transition>>>);

    impl Seen {
        fn callback(&self) -> impl Fn(&Transition) + Send + Sync + 'static {
            let s = self.0.clone();
            move |t: &Transition| s.lock().unwrap().push(t.clone())
        }
        fn pairs(&self) -> Vec<(BreakerState, BreakerState)> {
            self.0
                .lock()
                .unwrap()
                .iter()
                .map(|t| (t.from, t.to))
                .collect()
        }
        fn reasons(&self) -> Vec<TransitionReason> {
            self.0.lock().unwrap().iter().map(|t| t.reason).collect()
        }
    }

    use BreakerState::{Closed, HalfOpen, Open};

    // ---------------------------------------------------------------------------------------------
    // Configuration

    #[test]
    fn bad_configuration_is_a_typed_error_never_a_panic() {
        let b = CircuitBreakerLayer::builder;
        let field = |r: Result<_, steadfast_layers::ConfigError>| {
            r.map(|_: CircuitBreakerLayer| ())
                .unwrap_err()
                .path()
                .to_owned()
        };
        assert_eq!(field(b().failure_rate(f64::NAN).build()), "failure_rate");
        assert_eq!(field(b().failure_rate(-0.01).build()), "failure_rate");
        assert_eq!(field(b().failure_rate(1.01).build()), "failure_rate");
        assert_eq!(
            field(b().slow_call_rate(f64::INFINITY).build()),
            "slow_call_rate"
        );
        assert_eq!(field(b().slow_call_rate(2.0).build()), "slow_call_rate");
        assert_eq!(
            field(b().slow_call_duration(Duration::ZERO).build()),
            "slow_call_duration"
        );
        assert_eq!(field(b().count_window(0).build()), "count_window");
        assert_eq!(field(b().count_window(2_000_000).build()), "count_window");
        assert_eq!(
            field(b().time_window(Duration::ZERO).build()),
            "time_window"
        );
        assert_eq!(
            field(
                b().window(SlidingWindow::time_with_buckets(Duration::from_secs(1), 0))
                    .build()
            ),
            "time_window.buckets"
        );
        assert_eq!(
            field(
                b().window(SlidingWindow::time_with_buckets(
                    Duration::from_millis(5),
                    10
                ))
                .build()
            ),
            "time_window.buckets"
        );
        assert_eq!(field(b().minimum_calls(0).build()), "minimum_calls");
        assert_eq!(field(b().half_open_probes(0).build()), "half_open_probes");
        assert_eq!(
            field(b().half_open_probes(5000).build()),
            "half_open_probes"
        );
        assert_eq!(
            field(b().consecutive_failures(0).build()),
            "consecutive_failures"
        );
        assert_eq!(
            field(
                b().break_duration(BreakDuration::constant(Duration::ZERO))
                    .build()
            ),
            "break_duration"
        );
        let below = BreakDuration::exponential(Duration::from_secs(10), Duration::from_secs(5));
        let err = b().break_duration(below).build().unwrap_err();
        assert_eq!(err.path(), "break_duration.cap");
        assert!(matches!(err.problem(), Problem::Conflict(_)));
        let nan = BreakDuration::exponential(Duration::from_secs(1), Duration::from_secs(5))
            .multiplier(f64::NAN);
        assert_eq!(
            field(b().break_duration(nan).build()),
            "break_duration.multiplier"
        );
        let jitter = BreakDuration::constant(Duration::from_secs(1)).jitter(1.5);
        assert_eq!(
            field(b().break_duration(jitter).build()),
            "break_duration.jitter"
        );

        let keyed = b().key_by(|r: &(u8, Act)| r.0).max_keys(0).build();
        assert_eq!(keyed.unwrap_err().path(), "max_keys");
        let keyed = b().max_keys(10_000_001).key_by(|r: &(u8, Act)| r.0).build();
        assert_eq!(keyed.unwrap_err().path(), "max_keys");
        let readiness = b()
            .mode(Mode::Readiness)
            .key_by(|r: &(u8, Act)| r.0)
            .build()
            .unwrap_err();
        assert_eq!(readiness.path(), "mode");
        assert!(readiness.to_string().contains("readiness"));

        // The edges are accepted.
        assert!(b().failure_rate(0.0).slow_call_rate(1.0).build().is_ok());
        assert!(b()
            .half_open_probes(1000)
            .count_window(1)
            .minimum_calls(1)
            .build()
            .is_ok());
    }

    // ---------------------------------------------------------------------------------------------
    // Closed: failure rate, minimum calls, windows

    #[tokio::test(start_paused = true)]
    async fn failure_rate_trips_only_after_minimum_calls() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(10)
            .minimum_calls(5)
            .failure_rate(0.5)
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));

        // Four failures: a 100 % failure rate, but below the minimum number of calls.
        run(&mut svc, &[Act::Fail, Act::Fail, Act::Fail, Act::Fail]).await;
        assert_eq!(h.state(), Closed);
        assert_eq!(h.metrics().failures, 4);
        // The fifth call reaches the minimum: open.
        run(&mut svc, &[Act::Fail]).await;
        assert_eq!(h.state(), Open);
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        // Refused without reaching the peer.
        let err = call(&mut svc, Act::Ok).await.unwrap_err();
        assert_eq!(open_err(&err).state(), Open);
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        assert_eq!(h.metrics().rejected, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_that_reaches_the_minimum_can_trip() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(10)
            .minimum_calls(4)
            .failure_rate(0.75)
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        run(&mut svc, &[Act::Fail, Act::Fail, Act::Fail]).await;
        assert_eq!(h.state(), Closed);
        run(&mut svc, &[Act::Ok]).await; // 3 of 4 failed: 75 %
        assert_eq!(h.state(), Open);
    }

    #[tokio::test(start_paused = true)]
    async fn below_the_threshold_the_breaker_stays_closed() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(10)
            .minimum_calls(10)
            .failure_rate(0.5)
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        for _ in 0..10 {
            run(&mut svc, &[Act::Fail, Act::Ok, Act::Ok]).await;
        }
        let m = h.metrics();
        assert_eq!(h.state(), Closed);
        assert_eq!(m.calls, 10);
        assert!(m.failure_rate < 0.5, "{m:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_count_window_forgets_older_calls() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(4)
            .minimum_calls(4)
            .failure_rate(0.75)
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        run(
            &mut svc,
            &[Act::Fail, Act::Fail, Act::Ok, Act::Ok, Act::Ok, Act::Ok],
        )
        .await;
        assert_eq!(h.metrics().failures, 0, "the two failures slid out");
        run(&mut svc, &[Act::Fail, Act::Fail]).await; // [ok ok F F] = 50 %
        assert_eq!(h.state(), Closed);
        run(&mut svc, &[Act::Fail]).await; // [ok F F F] = 75 %
        assert_eq!(h.state(), Open);
    }

    #[tokio::test(start_paused = true)]
    async fn the_minimum_is_capped_at_the_count_window() {
        let calls = Arc::new(AtomicUsize::new(0));
        // Default minimum 100, window 3: the window's size is the minimum (as in resilience4j).
        let layer = CircuitBreakerLayer::builder()
            .count_window(3)
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        run(&mut svc, &[Act::Fail, Act::Fail, Act::Fail]).await;
        assert_eq!(h.state(), Open);
    }

    #[tokio::test(start_paused = true)]
    async fn the_time_window_expires_old_outcomes() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .time_window(Duration::from_secs(10)) // ten 1 s buckets
            .minimum_calls(4)
            .failure_rate(0.5)
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));

        run(&mut svc, &[Act::Fail, Act::Fail, Act::Fail]).await;
        advance(Duration::from_millis(9_999)).await;
        assert_eq!(h.metrics().calls, 3, "still inside the window");
        advance(Duration::from_millis(1)).await; // t = 10 s: bucket 0 has slid out
        assert_eq!(h.metrics().calls, 0);

        // One more failure: 1 call, below the minimum.
        run(&mut svc, &[Act::Fail]).await;
        assert_eq!(h.state(), Closed);
        assert_eq!(h.metrics().calls, 1);

        // Within one window, four failures trip it.
        advance(Duration::from_secs(4)).await;
        run(&mut svc, &[Act::Ok, Act::Fail]).await;
        assert_eq!(h.state(), Closed); // 3 calls
        run(&mut svc, &[Act::Fail]).await; // 4 calls, 3 failed
        assert_eq!(h.state(), Open);
    }

    /// A success still trips a time window whose failures it brings to the minimum number of
    /// calls, and a success after the failures have slid out of the window does not (a healthy
    /// time window skips summing its buckets on success: this pins that the skip changes no
    /// decision).
    #[tokio::test(start_paused = true)]
    async fn a_success_reaching_the_minimum_trips_a_time_window_holding_failures() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .time_window(Duration::from_secs(10)) // ten 1 s buckets
            .minimum_calls(4)
            .failure_rate(0.5)
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));

        // Failures that slide out, then successes only: never a verdict.
        run(&mut svc, &[Act::Fail, Act::Fail, Act::Fail]).await;
        advance(Duration::from_secs(10)).await;
        run(&mut svc, &[Act::Ok, Act::Ok, Act::Ok, Act::Ok]).await;
        assert_eq!(h.state(), Closed);
        assert_eq!((h.metrics().calls, h.metrics().failures), (4, 0));

        // Nine seconds on, two failures: 6 calls, 2 failed (33 %). One second later the four
        // successes slide out: 2 calls, both failed, below the minimum. A success makes 3
        // calls; the next makes 4 with 2 failed: 50 %, the threshold, and trips.
        advance(Duration::from_secs(9)).await;
        run(&mut svc, &[Act::Fail, Act::Fail]).await;
        assert_eq!(h.state(), Closed);
        advance(Duration::from_secs(1)).await;
        assert_eq!(h.metrics().calls, 2);
        run(&mut svc, &[Act::Ok]).await;
        assert_eq!(h.state(), Closed, "3 calls: below the minimum");
        run(&mut svc, &[Act::Ok]).await;
        assert_eq!(h.state(), Open, "the success made 4 calls, 2 failed: 50 %");
    }

    // ---------------------------------------------------------------------------------------------
    // Slow calls, consecutive failures, classification

    #[tokio::test(start_paused = true)]
    async fn slow_calls_trip_the_breaker() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Seen::default();
        let layer = CircuitBreakerLayer::builder()
            .count_window(4)
            .minimum_calls(4)
            .slow_call_duration(Duration::from_secs(1))
            .slow_call_rate(0.5)
            .on_transition(seen.callback())
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        run(
            &mut svc,
            &[
                Act::Slow(Duration::from_millis(999)),
                Act::Ok,
                Act::Slow(Duration::from_secs(1)),
            ],
        )
        .await;
        assert_eq!(h.metrics().slow_calls, 1, "999 ms is not slow, 1 s is");
        assert_eq!(h.state(), Closed);
        run(&mut svc, &[Act::Slow(Duration::from_secs(3))]).await; // 2 of 4 slow
        assert_eq!(h.state(), Open);
        assert_eq!(seen.reasons(), [TransitionReason::SlowCallRate]);
        let t = seen.0.lock().unwrap()[0].clone();
        assert_eq!(t.slow_call_rate, 0.5);
        assert_eq!(t.failure_rate, 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_calls_are_ignored_unless_configured() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(2)
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        run(
            &mut svc,
            &[
                Act::Slow(Duration::from_secs(120)),
                Act::Slow(Duration::from_secs(120)),
            ],
        )
        .await;
        assert_eq!(h.state(), Closed);
        assert_eq!(h.metrics().slow_calls, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_trip_before_the_minimum() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Seen::default();
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(3)
            .on_transition(seen.callback())
            .build()
            .unwrap(); // minimum 100 calls: the rate cannot trip
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        run(
            &mut svc,
            &[Act::Fail, Act::Fail, Act::Ok, Act::Fail, Act::Fail],
        )
        .await;
        assert_eq!(h.state(), Closed, "a success broke the run");
        assert_eq!(h.metrics().consecutive_failures, 2);
        run(&mut svc, &[Act::Fail]).await;
        assert_eq!(h.state(), Open);
        assert_eq!(seen.reasons(), [TransitionReason::ConsecutiveFailures]);
    }

    #[tokio::test(start_paused = true)]
    async fn responses_classified_as_failures_trip_it() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(4)
            .classifier(|r: &Result<u16, BoxError>| match r {
                Ok(s) if *s >= 500 => Outcome::retryable("server_error"),
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::retryable("error"),
            })
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        for _ in 0..3 {
            assert_eq!(
                call(&mut svc, Act::Status(503)).await.unwrap(),
                503,
                "responses pass through"
            );
        }
        assert_eq!(h.metrics().failures, 3);
        let _ = call(&mut svc, Act::Status(200)).await;
        assert_eq!(h.state(), Open); // 3 of 4 >= 50 %
    }

    #[tokio::test(start_paused = true)]
    async fn the_default_classifier_counts_errors_not_responses() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(2)
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        run(
            &mut svc,
            &[Act::Status(503), Act::Status(503), Act::Status(500)],
        )
        .await;
        assert_eq!(h.state(), Closed);
        run(&mut svc, &[Act::Fail]).await;
        assert_eq!(h.state(), Open);
    }

    // ---------------------------------------------------------------------------------------------
    // Open: fail fast, readiness, break growth

    #[tokio::test(start_paused = true)]
    async fn fail_fast_error_carries_the_remaining_time() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(1)
            .break_duration(BreakDuration::constant(Duration::from_secs(60)))
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        advance(Duration::from_millis(1234)).await;
        run(&mut svc, &[Act::Fail]).await;
        assert_eq!(h.metrics().open_remaining, Some(Duration::from_secs(60)));

        advance(Duration::from_secs(15)).await;
        let err = call(&mut svc, Act::Ok).await.unwrap_err();
        let open = open_err(&err);
        assert_eq!(open.state(), Open);
        assert_eq!(open.remaining(), Some(Duration::from_secs(45)));
        assert_eq!(err.to_string(), "circuit open: next probe allowed in 45s");

        advance(Duration::from_millis(44_999)).await;
        let err = call(&mut svc, Act::Ok).await.unwrap_err();
        assert_eq!(open_err(&err).remaining(), Some(Duration::from_millis(1)));
        advance(Duration::from_millis(1)).await;
        assert_eq!(
            call(&mut svc, Act::Ok).await.unwrap(),
            200,
            "the break is over: a probe"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_mode_is_pending_while_open_then_ready_after_the_break() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(1)
            .half_open_probes(1)
            .mode(Mode::Readiness)
            .break_duration(BreakDuration::constant(Duration::from_secs(30)))
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        run(&mut svc, &[Act::Fail]).await;
        assert_eq!(h.state(), Open);

        let t0 = Instant::now();
        assert!(futures::future::poll_fn(|cx| svc.poll_ready(cx))
            .now_or_never()
            .is_none());
        // The paused clock jumps to the end of the break, where the service becomes ready.
        svc.ready().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(30));
        assert_eq!(h.state(), HalfOpen);
        assert_eq!(
            h.metrics().probes_in_flight,
            1,
            "the ready service holds the probe permit"
        );

        // Another clone cannot get ready while the only probe is taken...
        let mut other = svc.clone();
        let mut other_ready = Box::pin(async move {
            other.ready().await.unwrap();
            other
        });
        assert!((&mut other_ready).now_or_never().is_none());
        // ...until the probe succeeds and closes the breaker, which wakes it.
        assert_eq!(svc.call(Act::Ok).await.unwrap(), 200);
        assert_eq!(h.state(), Closed);
        let mut other = tokio::time::timeout(Duration::from_secs(1), other_ready)
            .await
            .unwrap();
        assert_eq!(
            t0.elapsed(),
            Duration::from_secs(30),
            "woken, not timed out"
        );
        assert_eq!(other.call(Act::Ok).await.unwrap(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_mode_wakes_when_the_handle_lifts_a_forced_open() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .mode(Mode::Readiness)
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        h.force_open();
        let waiting = tokio::spawn(async move {
            svc.ready().await.unwrap();
            svc
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        h.close();
        let mut svc = waiting.await.unwrap();
        assert_eq!(call(&mut svc, Act::Ok).await.unwrap(), 200);
    }

    #[tokio::test(start_paused = true)]
    async fn break_duration_grows_with_jitter_up_to_the_cap() {
        let calls = Arc::new(AtomicUsize::new(0));
        let policy =
            BreakDuration::exponential(Duration::from_secs(1), Duration::from_secs(8)).jitter(0.5);
        let layer = CircuitBreakerLayer::builder()
            .count_window(1)
            .half_open_probes(1)
            .break_duration(policy)
            .seed(7)
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));

        // The same seed draws the same jitter, in the same order.
        let replay = SeededRng::new(7);
        let mut breaks = Vec::new();
        run(&mut svc, &[Act::Fail]).await; // trip 1
        for opens in 1..=6u32 {
            let m = h.metrics();
            assert_eq!(m.consecutive_opens, opens);
            let remaining = m.open_remaining.unwrap();
            let un_jittered = Duration::from_secs(1 << (opens - 1).min(3)); // 1, 2, 4, 8, 8, 8 s
            let u = replay.next_f64();
            let expected = un_jittered.mul_f64(1.0 - 0.5 * u);
            let expected_ms = Duration::from_millis(expected.as_nanos().div_ceil(1_000_000) as u64);
            assert_eq!(remaining, expected_ms, "break #{opens}");
            assert!(
                remaining >= un_jittered / 2 && remaining <= un_jittered,
                "break #{opens}: {remaining:?}"
            );
            breaks.push(remaining);
            advance(remaining).await;
            // The probe fails: re-open for a longer break.
            run(&mut svc, &[Act::Fail]).await;
            assert_eq!(h.state(), Open);
        }
        assert!(breaks[3] > breaks[0] && breaks[3] <= Duration::from_secs(8));

        // A successful probe closes the breaker and the growth starts over.
        advance(h.metrics().open_remaining.unwrap()).await;
        run(&mut svc, &[Act::Ok]).await;
        assert_eq!(h.state(), Closed);
        run(&mut svc, &[Act::Fail]).await;
        let m = h.metrics();
        assert_eq!(m.consecutive_opens, 1);
        assert!(m.open_remaining.unwrap() <= Duration::from_secs(1));
    }

    // ---------------------------------------------------------------------------------------------
    // Half-open

    async fn tripped(probes: u32, progressive: bool, seen: &Seen) -> (CircuitBreakerLayer, Peer) {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(1)
            .half_open_probes(probes)
            .progressive_half_open(progressive)
            .failure_rate(0.5)
            .break_duration(BreakDuration::constant(Duration::from_secs(5)))
            .on_transition(seen.callback())
            .build()
            .unwrap();
        let mut svc = layer.layer(peer(&calls));
        run(&mut svc, &[Act::Fail]).await;
        assert_eq!(layer.handle().state(), Open);
        advance(Duration::from_secs(5)).await;
        (layer, peer(&calls))
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_only_the_configured_probes_then_closes() {
        let seen = Seen::default();
        let (layer, p) = tripped(3, false, &seen).await;
        let h = layer.handle();
        let mut svc = layer.layer(p);

        // Calls are admitted when made: three un-awaited calls hold the three permits.
        let probes: Vec<_> = (0..3).map(|_| svc.call(Act::Ok)).collect();
        assert_eq!(h.state(), HalfOpen);
        assert_eq!(h.metrics().probes_in_flight, 3);
        let err = svc.call(Act::Ok).await.unwrap_err();
        let open = open_err(&err);
        assert_eq!(open.state(), HalfOpen);
        assert_eq!(open.remaining(), None);

        for p in probes {
            assert_eq!(p.await.unwrap(), 200);
        }
        assert_eq!(h.state(), Closed);
        assert_eq!(h.metrics().calls, 0, "closing starts an empty window");
        assert_eq!(
            seen.pairs(),
            [(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed)]
        );
        assert_eq!(
            seen.reasons(),
            [
                TransitionReason::FailureRate,
                TransitionReason::BreakElapsed,
                TransitionReason::ProbesPassed
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_reopens_as_soon_as_the_probes_fail_enough() {
        let seen = Seen::default();
        let (layer, p) = tripped(4, false, &seen).await;
        let h = layer.handle();
        let mut svc = layer.layer(p);
        run(&mut svc, &[Act::Ok, Act::Fail]).await;
        assert_eq!(h.state(), HalfOpen, "1 of 4 failed: 25 %");
        run(&mut svc, &[Act::Fail]).await; // 2 of 4: 50 %, decided before the 4th probe
        assert_eq!(h.state(), Open);
        assert_eq!(h.metrics().consecutive_opens, 2);
        let last = seen.0.lock().unwrap().last().cloned().unwrap();
        assert_eq!(
            (last.from, last.to, last.reason),
            (HalfOpen, Open, TransitionReason::FailureRate)
        );
        assert_eq!(last.failure_rate, 0.5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_probe_gives_its_permit_back() {
        let seen = Seen::default();
        let (layer, p) = tripped(1, false, &seen).await;
        let h = layer.handle();
        let mut svc = layer.layer(p);
        let probe = svc.call(Act::Slow(Duration::from_secs(10)));
        assert!(svc.call(Act::Ok).await.is_err(), "the only permit is taken");
        drop(probe);
        assert_eq!(h.metrics().probes_in_flight, 0);
        assert_eq!(svc.call(Act::Ok).await.unwrap(), 200);
        assert_eq!(h.state(), Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn progressive_half_open_ramps_the_probes_up() {
        let seen = Seen::default();
        let (layer, p) = tripped(8, true, &seen).await;
        let h = layer.handle();
        let mut svc = layer.layer(p);

        // Each wave takes every permit currently allowed (a refusal is counted when the call is
        // made), then lets them all finish.
        let mut waves = Vec::new();
        while h.state() != Closed && waves.len() < 10 {
            let mut wave = Vec::new();
            loop {
                let before = h.metrics().rejected;
                let f = svc.call(Act::Slow(Duration::from_millis(1)));
                if h.metrics().rejected > before {
                    break;
                }
                wave.push(f);
            }
            waves.push(wave.len());
            for r in futures::future::join_all(wave).await {
                assert_eq!(r.unwrap(), 200);
            }
        }
        assert_eq!(
            waves,
            [1, 1, 2, 4],
            "1 probe, then twice as many as have finished, up to 8"
        );
        assert_eq!(h.state(), Closed);
    }

    // ---------------------------------------------------------------------------------------------
    // Control handle

    #[tokio::test(start_paused = true)]
    async fn forced_open_refuses_everything_without_a_deadline() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Seen::default();
        let layer = CircuitBreakerLayer::builder()
            .on_transition(seen.callback())
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        h.force_open();
        assert_eq!(h.state(), BreakerState::ForcedOpen);
        advance(Duration::from_secs(3600)).await;
        let err = call(&mut svc, Act::Ok).await.unwrap_err();
        let open = open_err(&err);
        assert_eq!(
            (open.state(), open.remaining()),
            (BreakerState::ForcedOpen, None)
        );
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        h.close();
        assert_eq!(call(&mut svc, Act::Ok).await.unwrap(), 200);
        assert_eq!(
            seen.pairs(),
            [
                (Closed, BreakerState::ForcedOpen),
                (BreakerState::ForcedOpen, Closed)
            ]
        );
        assert!(seen
            .reasons()
            .iter()
            .all(|r| *r == TransitionReason::Manual));
    }

    #[tokio::test(start_paused = true)]
    async fn disabled_lets_everything_through_and_records_nothing() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(2)
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        h.disable();
        for _ in 0..10 {
            assert!(call(&mut svc, Act::Fail).await.is_err());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 10);
        assert_eq!(h.state(), BreakerState::Disabled);
        assert_eq!(h.metrics().calls, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn metrics_only_records_but_never_opens() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Seen::default();
        let layer = CircuitBreakerLayer::builder()
            .count_window(10)
            .on_transition(seen.callback())
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        // An open breaker is reset by the mode change.
        run(&mut svc, &[Act::Fail; 10]).await;
        assert_eq!(h.state(), Open);
        h.metrics_only();
        assert_eq!(h.state(), BreakerState::MetricsOnly);
        run(&mut svc, &[Act::Fail; 9]).await;
        let m = h.metrics();
        assert_eq!((m.calls, m.failures), (9, 9));
        run(&mut svc, &[Act::Fail; 21]).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            40,
            "every call reached the peer"
        );
        assert_eq!(h.state(), BreakerState::MetricsOnly);
        assert_eq!(
            seen.pairs(),
            [(Closed, Open), (Open, BreakerState::MetricsOnly)]
        );
        h.close();
        assert_eq!(h.state(), Closed);
        assert_eq!(h.metrics().calls, 0);
    }

    // ---------------------------------------------------------------------------------------------
    // Per key

    type KeyedPeer = BoxCloneService<(&'static str, Act), u16, BoxError>;

    fn keyed_peer(calls: &Arc<AtomicUsize>) -> KeyedPeer {
        let inner = peer(calls);
        BoxCloneService::new(service_fn(move |(_, act): (&'static str, Act)| {
            inner.clone().oneshot(act)
        }))
    }

    async fn kcall<S>(svc: &mut S, key: &'static str, act: Act) -> Result<u16, BoxError>
    where
        S: Service<(&'static str, Act), Response = u16, Error = BoxError>,
    {
        svc.ready().await?.call((key, act)).await
    }

    #[tokio::test(start_paused = true)]
    async fn per_key_breakers_are_isolated() {
        let calls = Arc::new(AtomicUsize::new(0));
        let seen = Seen::default();
        let layer = CircuitBreakerLayer::builder()
            .count_window(2)
            .on_transition(seen.callback())
            .key_by(|req: &(&'static str, Act)| req.0.to_string())
            .max_keys(16)
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(keyed_peer(&calls));
        for _ in 0..2 {
            let _ = kcall(&mut svc, "db-1", Act::Fail).await;
            let _ = kcall(&mut svc, "db-2", Act::Ok).await;
        }
        assert_eq!(h.state_of(&"db-1".to_string()), Some(Open));
        // Found by hash: a `&str` finds a `String` key.
        assert_eq!(h.state_of("db-2"), Some(Closed));
        assert_eq!(h.state_of("db-3"), None);
        assert_eq!(h.breakers(), 2);
        assert!(kcall(&mut svc, "db-1", Act::Ok)
            .await
            .unwrap_err()
            .is::<CircuitOpen>());
        assert_eq!(kcall(&mut svc, "db-2", Act::Ok).await.unwrap(), 200);
        assert_eq!(h.metrics_of(&"db-1".to_string()).unwrap().rejected, 1);
        let t = &seen.0.lock().unwrap()[0];
        assert_eq!(t.key.as_deref(), Some("\"db-1\""));
    }

    /// An inner service whose `call` panics (before it returns a future) for `Act::Status(0)`.
    fn panicking_keyed_peer(calls: &Arc<AtomicUsize>) -> KeyedPeer {
        let inner = peer(calls);
        BoxCloneService::new(service_fn(move |(_, act): (&'static str, Act)| {
            assert!(!matches!(act, Act::Status(0)), "the inner call panics");
            inner.clone().oneshot(act)
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_whose_inner_call_panics_gives_its_slot_back() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .half_open_probes(1)
            .break_duration(BreakDuration::constant(Duration::from_secs(10)))
            .key_by(|req: &(&'static str, Act)| req.0.to_string())
            .max_keys(16)
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(panicking_keyed_peer(&calls));
        assert!(kcall(&mut svc, "db", Act::Fail).await.is_err());
        assert_eq!(h.state_of("db"), Some(Open));
        advance(Duration::from_secs(10)).await;
        // The one probe's inner `call` panics; a runtime that catches the panic goes on using
        // the same breaker for the key.
        let ready = svc.ready().await.unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drop(ready.call(("db", Act::Status(0))));
        }));
        assert!(panicked.is_err());
        // The probe's slot came back: the next call is the probe, and it closes the breaker.
        assert_eq!(kcall(&mut svc, "db", Act::Ok).await.unwrap(), 200);
        assert_eq!(h.state_of("db"), Some(Closed));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_called_without_readiness_whose_inner_call_panics_gives_its_slot_back() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .half_open_probes(1)
            .break_duration(BreakDuration::constant(Duration::from_secs(10)))
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(panicking_keyed_peer(&calls));
        assert!(kcall(&mut svc, "db", Act::Fail).await.is_err());
        assert_eq!(h.state(), Open);
        advance(Duration::from_secs(10)).await;
        // Called without `ready()`: no readiness pass, so the call is admitted in `call`.
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drop(svc.call(("db", Act::Status(0))));
        }));
        assert!(panicked.is_err());
        assert_eq!(kcall(&mut svc, "db", Act::Ok).await.unwrap(), 200);
        assert_eq!(h.state(), Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn per_key_breakers_are_bounded_sweep_idle_ones_and_refuse_new_keys_when_all_are_busy() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(1)
            .key_by(|req: &(&'static str, Act)| req.0)
            .max_keys(2)
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(keyed_peer(&calls));

        // Two closed breakers with nothing in flight are idle: a third key sweeps them out.
        let _ = kcall(&mut svc, "a", Act::Ok).await;
        let _ = kcall(&mut svc, "b", Act::Ok).await;
        assert_eq!(h.breakers(), 2);
        let _ = kcall(&mut svc, "c", Act::Ok).await;
        assert_eq!(h.breakers(), 1);
        assert_eq!(h.state_of("a"), None, "a was swept out");
        assert_eq!(h.state_of("b"), None, "b was swept out");
        assert_eq!(h.state_of("c"), Some(Closed));

        // An open breaker is never swept out: its memory of the failure matters.
        let _ = kcall(&mut svc, "a", Act::Fail).await; // a opens
        assert_eq!(h.state_of("a"), Some(Open));
        let _ = kcall(&mut svc, "d", Act::Ok).await; // c (closed) is swept out
        assert_eq!(h.state_of("a"), Some(Open));
        assert_eq!(h.state_of("c"), None);
        assert_eq!(h.state_of("d"), Some(Closed));
        for i in 0..100 {
            let key: &'static str = Box::leak(format!("k{i}").into_boxed_str());
            let _ = kcall(&mut svc, key, Act::Ok).await;
            assert!(h.breakers() <= 2);
            assert_eq!(h.state_of("a"), Some(Open));
        }

        // Full of busy breakers (both open): a new key is refused before reaching the peer.
        let last = Box::leak(format!("k{}", 99).into_boxed_str());
        let _ = kcall(&mut svc, last, Act::Fail).await; // the other one opens too
        assert_eq!(h.state_of(last), Some(Open));
        let before = calls.load(Ordering::SeqCst);
        let err = kcall(&mut svc, "new", Act::Ok).await.unwrap_err();
        let o = err.downcast_ref::<Overloaded>().expect("overloaded");
        assert_eq!(o.reason(), OverloadReason::TooManyKeys);
        assert_eq!(o.layer(), "breaker");
        assert_eq!(calls.load(Ordering::SeqCst), before);
        assert_eq!(h.state_of("new"), None);
    }

    // ---------------------------------------------------------------------------------------------
    // Epochs

    #[tokio::test(start_paused = true)]
    async fn a_call_admitted_before_a_transition_does_not_count_after_it() {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(2)
            .half_open_probes(1)
            .break_duration(BreakDuration::constant(Duration::from_secs(1)))
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        let straggler = svc.call(Act::Fail); // admitted while closed, not yet run
        run(&mut svc, &[Act::Fail, Act::Fail]).await;
        assert_eq!(h.state(), Open);
        advance(Duration::from_secs(1)).await;
        run(&mut svc, &[Act::Ok]).await; // the probe closes it
        assert_eq!(h.state(), Closed);
        assert!(straggler.await.is_err());
        assert_eq!(
            h.metrics().calls,
            0,
            "the straggler's failure belongs to an older epoch"
        );
        assert_eq!(h.state(), Closed);
    }

    // ---------------------------------------------------------------------------------------------
    // Telemetry

    struct Metrics {
        provider: SdkMeterProvider,
        exporter: InMemoryMetricExporter,
    }

    impl Metrics {
        fn new() -> Self {
            let exporter = InMemoryMetricExporter::default();
            let provider = SdkMeterProvider::builder()
                .with_reader(PeriodicReader::builder(exporter.clone()).build())
                .build();
            Self { provider, exporter }
        }

        /// Every data point of `name` in the last export: (attributes, value).
        fn points(&self, name: &str) -> Vec<(BTreeMap<String, String>, u64)> {
            self.provider.force_flush().unwrap();
            let all = self.exporter.get_finished_metrics().unwrap();
            let mut out = Vec::new();
            let Some(last) = all.last() else { return out };
            let attrs = |it: &mut dyn Iterator<Item = &opentelemetry::KeyValue>| {
                it.map(|kv| (kv.key.to_string(), kv.value.to_string()))
                    .collect::<BTreeMap<_, _>>()
            };
            for scope in last.scope_metrics() {
                for m in scope.metrics().filter(|m| m.name() == name) {
                    match m.data() {
                        AggregatedMetrics::U64(MetricData::Sum(sum)) => {
                            for p in sum.data_points() {
                                out.push((attrs(&mut p.attributes()), p.value()));
                            }
                        }
                        AggregatedMetrics::U64(MetricData::Gauge(g)) => {
                            for p in g.data_points() {
                                out.push((attrs(&mut p.attributes()), p.value()));
                            }
                        }
                        other => panic!("unexpected data for {name}: {other:?}"),
                    }
                }
            }
            out
        }

        fn value(&self, name: &str, want: &[(&str, &str)]) -> u64 {
            self.points(name)
                .into_iter()
                .filter(|(kv, _)| {
                    want.iter()
                        .all(|(k, v)| kv.get(*k).map(String::as_str) == Some(*v))
                })
                .map(|(_, v)| v)
                .sum()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transitions_rejections_and_states_are_exported_as_metrics() {
        let metrics = Metrics::new();
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(2)
            .half_open_probes(1)
            .break_duration(BreakDuration::constant(Duration::from_secs(1)))
            .telemetry(
                Telemetry::new()
                    .meter(metrics.provider.meter("test"))
                    .name("payments"),
            )
            .build()
            .unwrap();
        let h = layer.handle();
        let mut svc = layer.layer(peer(&calls));
        let name = ("steadfast.name", "payments");

        assert_eq!(
            metrics.value(
                "steadfast.breaker.state",
                &[name, ("steadfast.breaker.state", "closed")]
            ),
            1
        );
        run(&mut svc, &[Act::Fail, Act::Fail]).await;
        run(&mut svc, &[Act::Ok, Act::Ok, Act::Ok]).await; // refused
        assert_eq!(
            metrics.value(
                "steadfast.breaker.state",
                &[("steadfast.breaker.state", "open")]
            ),
            1
        );
        assert_eq!(
            metrics.value(
                "steadfast.breaker.state",
                &[("steadfast.breaker.state", "closed")]
            ),
            0
        );
        advance(Duration::from_secs(1)).await;
        run(&mut svc, &[Act::Fail]).await; // probe fails: re-open
        advance(Duration::from_secs(1)).await;
        run(&mut svc, &[Act::Ok]).await; // probe passes: close
        h.force_open();
        run(&mut svc, &[Act::Ok]).await; // refused
        assert_eq!(
            metrics.value(
                "steadfast.breaker.state",
                &[("steadfast.breaker.state", "forced_open")]
            ),
            1
        );

        let t = |from: &str, to: &str| {
            metrics.value(
                "steadfast.breaker.transitions",
                &[
                    name,
                    ("steadfast.breaker.from", from),
                    ("steadfast.breaker.to", to),
                ],
            )
        };
        assert_eq!(t("closed", "open"), 1);
        assert_eq!(t("open", "half_open"), 2);
        assert_eq!(t("half_open", "open"), 1);
        assert_eq!(t("half_open", "closed"), 1);
        assert_eq!(t("closed", "forced_open"), 1);
        assert_eq!(metrics.value("steadfast.breaker.transitions", &[]), 6);
        assert_eq!(
            metrics.value(
                "steadfast.breaker.rejected",
                &[name, ("steadfast.breaker.state", "open")]
            ),
            3
        );
        assert_eq!(
            metrics.value(
                "steadfast.breaker.rejected",
                &[("steadfast.breaker.state", "forced_open")]
            ),
            1
        );
    }

    type Fields = BTreeMap<String, String>;

    /// Captures events on the current thread while installed.
    ///
    /// The subscriber is global (installed once) and forwards to a thread-local sink: a scoped
    /// `set_default` subscriber races with other test threads registering the same callsites
    /// while no subscriber is set, which can cache the callsite as never enabled.
    #[derive(Clone, Default)]
    struct Events(Arc<Mutex<Vec<(String, Fields)>>>);

    thread_local! {
        static SINK: std::cell::RefCell<Option<Events>> = const { std::cell::RefCell::new(None) };
    }

    struct Capture;

    impl Events {
        fn install(&self) -> SinkGuard {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                use tracing_subscriber::layer::SubscriberExt;
                tracing::subscriber::set_global_default(
                    tracing_subscriber::registry().with(Capture),
                )
                .unwrap();
            });
            SINK.with(|s| *s.borrow_mut() = Some(self.clone()));
            SinkGuard
        }
    }

    struct SinkGuard;

    impl Drop for SinkGuard {
        fn drop(&mut self) {
            SINK.with(|s| *s.borrow_mut() = None);
        }
    }

    struct Visitor<'a>(&'a mut BTreeMap<String, String>);

    impl tracing::field::Visit for Visitor<'_> {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.insert(
                field.name().to_string(),
                format!("{value:?}").trim_matches('"').to_string(),
            );
        }
        fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
            self.0.insert(field.name().to_string(), value.to_string());
        }
    }

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            SINK.with(|s| {
                if let Some(events) = &*s.borrow() {
                    let mut fields = BTreeMap::new();
                    event.record(&mut Visitor(&mut fields));
                    events
                        .0
                        .lock()
                        .unwrap()
                        .push((event.metadata().target().to_string(), fields));
                }
            });
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_transition_is_a_tracing_event() {
        let events = Events::default();
        let _guard = events.install();

        let calls = Arc::new(AtomicUsize::new(0));
        let layer = CircuitBreakerLayer::builder()
            .count_window(4)
            .half_open_probes(1)
            .break_duration(BreakDuration::constant(Duration::from_secs(1)))
            .telemetry(Telemetry::new().name("users"))
            .build()
            .unwrap();
        let mut svc = layer.layer(peer(&calls));
        run(&mut svc, &[Act::Ok, Act::Fail, Act::Fail, Act::Fail]).await;
        advance(Duration::from_secs(1)).await;
        run(&mut svc, &[Act::Ok]).await;

        let transitions: Vec<_> = events
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(target, f)| {
                target == "steadfast::breaker"
                    && f.get("message").map(String::as_str) == Some("circuit breaker transition")
            })
            .map(|(_, f)| f.clone())
            .collect();
        assert_eq!(transitions.len(), 3);
        let first = &transitions[0];
        assert_eq!(first["from"], "closed");
        assert_eq!(first["to"], "open");
        assert_eq!(first["reason"], "failure_rate");
        assert_eq!(first["failure_rate"], "0.75");
        assert_eq!(first["slow_rate"], "0");
        assert_eq!(first["instance"], "users");
        assert_eq!(
            transitions
                .iter()
                .map(|f| (f["from"].as_str(), f["to"].as_str()))
                .collect::<Vec<_>>(),
            [
                ("closed", "open"),
                ("open", "half_open"),
                ("half_open", "closed")
            ]
        );
    }
}
