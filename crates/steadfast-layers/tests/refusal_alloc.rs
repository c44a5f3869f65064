//! Heap allocations per refused call, on every refusal path: an open circuit breaker (reading the
//! clock, or with its break timer armed), a breaker forced open, a concurrency limit, an adaptive
//! limit and a bulkhead at capacity, a rate limit out of cells, load shedding, an adaptive
//! throttle rejecting locally, and a deadline already passed on arrival.
//!
//! Each refusal allocates exactly one thing: the box of its noun error (`CircuitOpen`,
//! `Overloaded`, `DeadlineExceeded`), which every layer returns as a `BoxError` (ADR 0001). The
//! tests pin that: one allocation per refusal, of the noun's size, and nothing else (no span, no
//! attribute set, no waker, no string). ADR 0008 says why the box stays and what removing it
//! would take.
//!
//! A layer given an error type that holds the refusal inline (`with_error::<E>()`, ADR 0008)
//! allocates nothing at all when it refuses: pinned below for the open breaker (clock or timer),
//! the forced-open one, the concurrency limit, the adaptive limit, the bulkhead, the rate limit,
//! load shedding, the adaptive throttle, and the deadline (passed on arrival, or in flight). The
//! attempt timeout's two ends of an attempt (its own timeout, the deadline) are pinned the same
//! way, boxed and inline, on a paused clock.
//!
//! `allocation-counter` counts this thread's allocations while a current-thread runtime drives
//! the calls.
#![allow(missing_docs)]

mod refusal_alloc {
    use std::convert::Infallible;
    use std::fmt::Debug;
    use std::future::{pending, ready, Pending};
    use std::task::{Context, Poll};
    use std::time::Duration;

    use allocation_counter::AllocationInfo;
    use steadfast_layers::adaptive_limit::{AdaptiveLimitLayer, Vegas};
    use steadfast_layers::adaptive_throttle::ThrottleLayer;
    use steadfast_layers::breaker::{
        BreakDuration, BreakTimer, BreakerState, CircuitBreakerLayer, CircuitOpen,
    };
    use steadfast_layers::bulkhead::BulkheadLayer;
    use steadfast_layers::classify::AsErrorRef;
    use steadfast_layers::deadline::{Deadline, DeadlineExceeded, DeadlineLayer};
    use steadfast_layers::limit::ConcurrencyLimitLayer;
    use steadfast_layers::overload::{OverloadReason, Overloaded};
    use steadfast_layers::rate::RateLimitLayer;
    use steadfast_layers::shed::LoadShedLayer;
    use steadfast_layers::timeout::{AttemptTimeoutLayer, Elapsed};
    use tower::{service_fn, Layer, Service, ServiceExt};

    const CALLS: u64 = 1_000;
    const WARM_UP: u64 = 100;
    const LONG: Duration = Duration::from_secs(3_600);

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio runtime")
    }

    async fn refuse<S, E>(svc: &mut S, calls: u64)
    where
        S: Service<u32, Error = steadfast_layers::BoxError>,
        S::Response: Debug,
        E: std::error::Error + 'static,
    {
        for x in 0..calls {
            let err = svc
                .ready()
                .await
                .expect("ready")
                .call(x as u32)
                .await
                .expect_err("the call is refused");
            assert!(err.is::<E>(), "refused with {err}");
        }
    }

    /// Takes the one slot of `svc` (a limit, a bulkhead) with a call that never ends: the
    /// returned future holds it for as long as the caller keeps it.
    fn occupy<S>(rt: &tokio::runtime::Runtime, svc: &mut S) -> S::Future
    where
        S: Service<u32>,
        S::Error: Debug,
    {
        #[allow(clippy::async_yields_async)]
        rt.block_on(async { svc.ready().await.expect("ready").call(0) })
    }

    /// Refuses `CALLS` calls on `svc` (after a warm-up) and returns what they allocated.
    fn count<S, E>(rt: &tokio::runtime::Runtime, svc: &mut S) -> AllocationInfo
    where
        S: Service<u32, Error = steadfast_layers::BoxError>,
        S::Response: Debug,
        E: std::error::Error + 'static,
    {
        rt.block_on(refuse::<S, E>(svc, WARM_UP));
        allocation_counter::measure(|| rt.block_on(refuse::<S, E>(svc, CALLS)))
    }

    /// One allocation per refusal, the size of the noun `E`: its box, nothing else.
    #[track_caller]
    fn assert_only_the_box<E>(name: &str, info: AllocationInfo) {
        println!(
            "{name}: {} allocations, {} bytes over {CALLS} refusals",
            info.count_total, info.bytes_total
        );
        assert_eq!(info.count_total, CALLS, "{name}: allocations per refusal");
        assert_eq!(
            info.bytes_total,
            CALLS * std::mem::size_of::<E>() as u64,
            "{name}: bytes per refusal (the box of {})",
            std::any::type_name::<E>()
        );
    }

    /// Fails every call at once (an `io::Error` built without allocating).
    fn failing() -> impl Service<u32, Response = u32, Error = std::io::Error> + Clone {
        service_fn(|_: u32| ready(Err::<u32, _>(std::io::ErrorKind::ConnectionReset.into())))
    }

    /// Never answers.
    fn stuck() -> impl Service<u32, Response = u32, Error = Infallible> + Clone {
        service_fn(|_: u32| pending::<Result<u32, Infallible>>())
    }

    /// Never ready.
    #[derive(Clone, Debug)]
    struct NeverReady;

    impl Service<u32> for NeverReady {
        type Response = u32;
        type Error = Infallible;
        type Future = Pending<Result<u32, Infallible>>;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Pending
        }

        fn call(&mut self, _req: u32) -> Self::Future {
            pending()
        }
    }

    fn tripped(
        timer: BreakTimer,
        rt: &tokio::runtime::Runtime,
    ) -> impl Service<u32, Response = u32, Error = steadfast_layers::BoxError> {
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .break_duration(BreakDuration::constant(LONG))
            .break_timer(timer)
            .build()
            .expect("valid breaker");
        let mut svc = layer.layer(failing());
        rt.block_on(async {
            let first = svc.ready().await.expect("ready").call(0).await;
            assert!(first.is_err());
        });
        assert_eq!(layer.handle().state(), BreakerState::Open);
        svc
    }

    #[test]
    fn an_open_breaker_reading_the_clock_allocates_only_its_error() {
        let rt = runtime();
        let mut svc = tripped(BreakTimer::Off, &rt);
        let info = count::<_, CircuitOpen>(&rt, &mut svc);
        assert_only_the_box::<CircuitOpen>("breaker open, clock", info);
    }

    #[test]
    fn an_open_breaker_with_its_timer_armed_allocates_only_its_error() {
        let rt = runtime();
        // The timer task is spawned (allocated) on `rt` when the breaker opens, in `tripped`.
        let mut svc = tripped(BreakTimer::Always, &rt);
        let info = count::<_, CircuitOpen>(&rt, &mut svc);
        assert_only_the_box::<CircuitOpen>("breaker open, timer armed", info);
    }

    #[test]
    fn a_breaker_forced_open_allocates_only_its_error() {
        let rt = runtime();
        let layer = CircuitBreakerLayer::builder()
            .build()
            .expect("valid breaker");
        layer.handle().force_open();
        let mut svc = layer.layer(failing());
        let info = count::<_, CircuitOpen>(&rt, &mut svc);
        assert_only_the_box::<CircuitOpen>("breaker forced open", info);
    }

    #[test]
    fn a_full_concurrency_limit_allocates_only_its_error() {
        let rt = runtime();
        let mut svc = ConcurrencyLimitLayer::new(1)
            .expect("valid limit")
            .layer(stuck());
        let _in_flight = occupy(&rt, &mut svc);
        let info = count::<_, Overloaded>(&rt, &mut svc);
        assert_only_the_box::<Overloaded>("limit at capacity", info);
    }

    /// An adaptive limit of one call (no call completes, so it stays one).
    fn adaptive_limit_of_one() -> AdaptiveLimitLayer {
        AdaptiveLimitLayer::builder()
            .algorithm(
                Vegas::builder()
                    .initial_limit(1)
                    .build()
                    .expect("valid vegas"),
            )
            .build()
            .expect("valid adaptive limit")
    }

    #[test]
    fn a_full_adaptive_limit_allocates_only_its_error() {
        let rt = runtime();
        let layer = adaptive_limit_of_one();
        let handle = layer.handle();
        let mut svc = layer.layer(stuck());
        let _in_flight = occupy(&rt, &mut svc);
        let info = count::<_, Overloaded>(&rt, &mut svc);
        assert_eq!((handle.limit(), handle.in_flight()), (1, 1));
        assert_only_the_box::<Overloaded>("adaptive limit at capacity", info);
    }

    #[test]
    fn a_full_bulkhead_allocates_only_its_error() {
        let rt = runtime();
        let mut svc = BulkheadLayer::builder(1)
            .max_queue(0)
            .build()
            .expect("valid bulkhead")
            .layer(stuck());
        let _in_flight = occupy(&rt, &mut svc);
        let info = count::<_, Overloaded>(&rt, &mut svc);
        assert_only_the_box::<Overloaded>("bulkhead full", info);
    }

    #[test]
    fn a_rate_limit_out_of_cells_allocates_only_its_error() {
        let rt = runtime();
        let mut svc = RateLimitLayer::builder(1, LONG)
            .build()
            .expect("valid rate")
            .layer(service_fn(|x: u32| ready(Ok::<_, Infallible>(x))));
        rt.block_on(async {
            svc.ready()
                .await
                .expect("ready")
                .call(0)
                .await
                .expect("the one cell");
        });
        let info = count::<_, Overloaded>(&rt, &mut svc);
        assert_only_the_box::<Overloaded>("rate limited", info);
    }

    #[test]
    fn load_shedding_allocates_only_its_error() {
        let rt = runtime();
        let mut svc = LoadShedLayer::new().layer(NeverReady);
        let info = count::<_, Overloaded>(&rt, &mut svc);
        assert_only_the_box::<Overloaded>("shed", info);
    }

    #[test]
    fn a_deadline_passed_on_arrival_allocates_only_its_error() {
        let rt = runtime();
        let mut svc = DeadlineLayer::new(LONG)
            .expect("valid deadline")
            .layer(service_fn(|x: u32| ready(Ok::<_, Infallible>(x))));
        let passed = Deadline::at(tokio::time::Instant::now());
        rt.block_on(passed.scope(refuse::<_, DeadlineExceeded>(&mut svc, WARM_UP)));
        let info = allocation_counter::measure(|| {
            rt.block_on(passed.scope(refuse::<_, DeadlineExceeded>(&mut svc, CALLS)))
        });
        assert_only_the_box::<DeadlineExceeded>("deadline passed on arrival", info);
    }

    /// An error that holds the breaker's refusals inline, as `failsafe::Error<E>` does.
    #[derive(Debug)]
    #[allow(dead_code)] // Payloads read through `Debug` only.
    enum CallError {
        Open(CircuitOpen),
        Overloaded(Overloaded),
        Deadline(DeadlineExceeded),
        Elapsed(Elapsed),
        Io(std::io::Error),
    }

    impl From<DeadlineExceeded> for CallError {
        fn from(e: DeadlineExceeded) -> Self {
            CallError::Deadline(e)
        }
    }

    impl From<Elapsed> for CallError {
        fn from(e: Elapsed) -> Self {
            CallError::Elapsed(e)
        }
    }

    impl From<CircuitOpen> for CallError {
        fn from(e: CircuitOpen) -> Self {
            CallError::Open(e)
        }
    }

    impl From<Overloaded> for CallError {
        fn from(e: Overloaded) -> Self {
            CallError::Overloaded(e)
        }
    }

    impl From<std::io::Error> for CallError {
        fn from(e: std::io::Error) -> Self {
            CallError::Io(e)
        }
    }

    impl From<Infallible> for CallError {
        fn from(e: Infallible) -> Self {
            match e {}
        }
    }

    /// What the adaptive limit reads to tell a spent deadline (`AsErrorRef`, as the classifiers).
    impl AsErrorRef for CallError {
        fn as_error_ref(&self) -> Option<&(dyn std::error::Error + 'static)> {
            match self {
                CallError::Open(e) => Some(e),
                CallError::Overloaded(e) => Some(e),
                CallError::Deadline(e) => Some(e),
                CallError::Elapsed(e) => Some(e),
                CallError::Io(e) => Some(e),
            }
        }
    }

    async fn refuse_inline<S>(svc: &mut S, calls: u64, state: BreakerState)
    where
        S: Service<u32, Error = CallError>,
        S::Response: Debug,
    {
        for x in 0..calls {
            match svc.ready().await.expect("ready").call(x as u32).await {
                Err(CallError::Open(open)) => assert_eq!(open.state(), state),
                other => panic!("expected a refusal in {state:?}, got {other:?}"),
            }
        }
    }

    fn tripped_inline(
        timer: BreakTimer,
        rt: &tokio::runtime::Runtime,
    ) -> impl Service<u32, Response = u32, Error = CallError> {
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .break_duration(BreakDuration::constant(LONG))
            .break_timer(timer)
            .build()
            .expect("valid breaker")
            .with_error::<CallError>();
        let mut svc = layer.layer(failing());
        rt.block_on(async {
            let first = svc.ready().await.expect("ready").call(0).await;
            assert!(matches!(first, Err(CallError::Io(_))), "{first:?}");
        });
        assert_eq!(layer.handle().state(), BreakerState::Open);
        svc
    }

    #[track_caller]
    fn assert_nothing(name: &str, info: AllocationInfo) {
        println!(
            "{name}: {} allocations, {} bytes over {CALLS} refusals",
            info.count_total, info.bytes_total
        );
        assert_eq!(info.count_total, 0, "{name}: allocations");
        assert_eq!(info.bytes_total, 0, "{name}: bytes");
    }

    #[test]
    fn an_open_breaker_with_an_inline_error_allocates_nothing() {
        let rt = runtime();
        for timer in [BreakTimer::Off, BreakTimer::Always] {
            let mut svc = tripped_inline(timer, &rt);
            rt.block_on(refuse_inline(&mut svc, WARM_UP, BreakerState::Open));
            let info = allocation_counter::measure(|| {
                rt.block_on(refuse_inline(&mut svc, CALLS, BreakerState::Open))
            });
            assert_nothing(&format!("breaker open, inline error, {timer:?}"), info);
        }
    }

    #[test]
    fn a_breaker_forced_open_with_an_inline_error_allocates_nothing() {
        let rt = runtime();
        let layer = CircuitBreakerLayer::builder()
            .build()
            .expect("valid breaker")
            .with_error::<CallError>();
        layer.handle().force_open();
        let mut svc = layer.layer(failing());
        rt.block_on(refuse_inline(&mut svc, WARM_UP, BreakerState::ForcedOpen));
        let info = allocation_counter::measure(|| {
            rt.block_on(refuse_inline(&mut svc, CALLS, BreakerState::ForcedOpen))
        });
        assert_nothing("breaker forced open, inline error", info);
    }

    /// Refuses `calls` calls on `svc`, each with an inline `Overloaded` of `reason` from `layer`.
    async fn refuse_overloaded<S>(svc: &mut S, calls: u64, layer: &str, reason: OverloadReason)
    where
        S: Service<u32, Error = CallError>,
        S::Response: Debug,
    {
        for x in 0..calls {
            match svc.ready().await.expect("ready").call(x as u32).await {
                Err(CallError::Overloaded(o)) => {
                    assert_eq!((o.layer(), o.reason()), (layer, reason));
                }
                other => panic!("expected {layer} to refuse with {reason:?}, got {other:?}"),
            }
        }
    }

    /// Refuses `CALLS` calls on `svc` (after a warm-up), as `refuse_overloaded`, and asserts
    /// they allocated nothing.
    #[track_caller]
    fn assert_overloaded_allocates_nothing<S>(
        name: &str,
        rt: &tokio::runtime::Runtime,
        svc: &mut S,
        layer: &str,
        reason: OverloadReason,
    ) where
        S: Service<u32, Error = CallError>,
        S::Response: Debug,
    {
        rt.block_on(refuse_overloaded(svc, WARM_UP, layer, reason));
        let info = allocation_counter::measure(|| {
            rt.block_on(refuse_overloaded(svc, CALLS, layer, reason))
        });
        assert_nothing(name, info);
    }

    #[test]
    fn a_full_concurrency_limit_with_an_inline_error_allocates_nothing() {
        let rt = runtime();
        let mut svc = ConcurrencyLimitLayer::new(1)
            .expect("valid limit")
            .with_error::<CallError>()
            .layer(stuck());
        let _in_flight = occupy(&rt, &mut svc);
        assert_overloaded_allocates_nothing(
            "limit at capacity, inline error",
            &rt,
            &mut svc,
            "limit",
            OverloadReason::AtCapacity,
        );
    }

    #[test]
    fn a_full_adaptive_limit_with_an_inline_error_allocates_nothing() {
        let rt = runtime();
        let layer = adaptive_limit_of_one().with_error::<CallError>();
        let handle = layer.handle();
        let mut svc = layer.layer(stuck());
        let _in_flight = occupy(&rt, &mut svc);
        assert_overloaded_allocates_nothing(
            "adaptive limit at capacity, inline error",
            &rt,
            &mut svc,
            "adaptive_limit",
            OverloadReason::AtCapacity,
        );
        assert_eq!((handle.limit(), handle.in_flight()), (1, 1));
    }

    #[test]
    fn a_full_bulkhead_with_an_inline_error_allocates_nothing() {
        let rt = runtime();
        let mut svc = BulkheadLayer::builder(1)
            .max_queue(0)
            .build()
            .expect("valid bulkhead")
            .with_error::<CallError>()
            .layer(stuck());
        let _in_flight = occupy(&rt, &mut svc);
        assert_overloaded_allocates_nothing(
            "bulkhead full, inline error",
            &rt,
            &mut svc,
            "bulkhead",
            OverloadReason::QueueFull,
        );
    }

    #[test]
    fn a_rate_limit_out_of_cells_with_an_inline_error_allocates_nothing() {
        let rt = runtime();
        let mut svc = RateLimitLayer::builder(1, LONG)
            .build()
            .expect("valid rate")
            .with_error::<CallError>()
            .layer(service_fn(|x: u32| ready(Ok::<_, Infallible>(x))));
        rt.block_on(async {
            svc.ready()
                .await
                .expect("ready")
                .call(0)
                .await
                .expect("the one cell");
        });
        assert_overloaded_allocates_nothing(
            "rate limited, inline error",
            &rt,
            &mut svc,
            "rate",
            OverloadReason::RateLimited,
        );
    }

    #[test]
    fn load_shedding_with_an_inline_error_allocates_nothing() {
        let rt = runtime();
        let mut svc = LoadShedLayer::new()
            .with_error::<CallError>()
            .layer(NeverReady);
        assert_overloaded_allocates_nothing(
            "shed, inline error",
            &rt,
            &mut svc,
            "shed",
            OverloadReason::NotReady,
        );
    }

    #[test]
    fn a_throttle_rejecting_locally_allocates_only_its_error() {
        let rt = runtime();
        // As below, boxed: every call's error is one box, a rejection's the size of `Overloaded`,
        // the backend's the size of `io::Error`.
        let mut svc = ThrottleLayer::builder()
            .seed(1)
            .build()
            .expect("valid throttle")
            .layer(failing());
        async fn drive<S>(svc: &mut S, calls: u64) -> u64
        where
            S: Service<u32, Response = u32, Error = steadfast_layers::BoxError>,
        {
            let mut local = 0;
            for x in 0..calls {
                let err = svc
                    .ready()
                    .await
                    .expect("ready")
                    .call(x as u32)
                    .await
                    .expect_err("the backend refuses everything");
                if err.is::<Overloaded>() {
                    local += 1;
                } else {
                    assert!(err.is::<std::io::Error>(), "{err}");
                }
            }
            local
        }
        rt.block_on(drive(&mut svc, WARM_UP));
        let mut local = 0;
        let info = allocation_counter::measure(|| local = rt.block_on(drive(&mut svc, CALLS)));
        assert!(
            local >= CALLS * 9 / 10,
            "{local} of {CALLS} rejected locally"
        );
        assert_eq!(info.count_total, CALLS, "throttle: one box per call");
        let size = |n: u64, of: usize| n * of as u64;
        assert_eq!(
            info.bytes_total,
            size(local, std::mem::size_of::<Overloaded>())
                + size(CALLS - local, std::mem::size_of::<std::io::Error>()),
            "throttle: bytes"
        );
    }

    #[test]
    fn a_throttle_rejecting_locally_with_an_inline_error_allocates_nothing() {
        let rt = runtime();
        // A backend refusing everything (without allocating): with no accepts in the window the
        // rejection probability climbs towards 1, and a few calls still reach the backend.
        let mut svc = ThrottleLayer::builder()
            .seed(1)
            .build()
            .expect("valid throttle")
            .with_error::<CallError>()
            .layer(failing());
        async fn drive<S>(svc: &mut S, calls: u64) -> u64
        where
            S: Service<u32, Response = u32, Error = CallError>,
        {
            let mut local = 0;
            for x in 0..calls {
                match svc.ready().await.expect("ready").call(x as u32).await {
                    Err(CallError::Overloaded(o)) => {
                        assert_eq!(
                            (o.layer(), o.reason()),
                            ("adaptive_throttle", OverloadReason::Throttled)
                        );
                        local += 1;
                    }
                    Err(CallError::Io(_)) => {}
                    other => panic!("expected a rejection or the backend's error, got {other:?}"),
                }
            }
            local
        }
        rt.block_on(drive(&mut svc, WARM_UP));
        let mut local = 0;
        let info = allocation_counter::measure(|| local = rt.block_on(drive(&mut svc, CALLS)));
        assert!(
            local >= CALLS * 9 / 10,
            "{local} of {CALLS} rejected locally"
        );
        assert_nothing("throttle, inline error", info);
    }

    /// A current-thread runtime on a paused clock: a timer fires as soon as every task waits.
    fn paused() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("tokio runtime")
    }

    /// Calls `svc` `calls` times; each call must end with an error that `check` accepts.
    async fn fail_each<S>(svc: &mut S, calls: u64, check: fn(&S::Error) -> bool)
    where
        S: Service<u32>,
        S::Response: Debug,
        S::Error: Debug,
    {
        for x in 0..calls {
            let out = svc.ready().await.expect("ready").call(x as u32).await;
            match out {
                Err(e) if check(&e) => {}
                other => panic!("unexpected outcome {other:?}"),
            }
        }
    }

    /// Fails `CALLS` calls on `svc` on `rt` (after a warm-up), inside `deadline`'s scope if
    /// any, and returns what they allocated.
    fn count_failures<S>(
        rt: &tokio::runtime::Runtime,
        svc: &mut S,
        deadline: Option<Deadline>,
        check: fn(&S::Error) -> bool,
    ) -> AllocationInfo
    where
        S: Service<u32>,
        S::Response: Debug,
        S::Error: Debug,
    {
        let mut run = |calls| match deadline {
            Some(d) => rt.block_on(d.scope(fail_each(svc, calls, check))),
            None => rt.block_on(fail_each(svc, calls, check)),
        };
        run(WARM_UP);
        allocation_counter::measure(|| run(CALLS))
    }

    #[test]
    fn a_deadline_passed_on_arrival_with_an_inline_error_allocates_nothing() {
        let rt = runtime();
        let mut svc = DeadlineLayer::new(LONG)
            .expect("valid deadline")
            .with_error::<CallError>()
            .layer(service_fn(|x: u32| ready(Ok::<_, Infallible>(x))));
        let passed = Deadline::at(tokio::time::Instant::now());
        let info = count_failures(
            &rt,
            &mut svc,
            Some(passed),
            |e| matches!(e, CallError::Deadline(d) if d.on_arrival()),
        );
        assert_nothing("deadline passed on arrival, inline error", info);
    }

    #[test]
    fn a_deadline_passed_in_flight_allocates_only_its_error() {
        let rt = paused();
        let mut svc = rt.block_on(async {
            DeadlineLayer::new(Duration::from_millis(5))
                .expect("valid deadline")
                .layer(stuck())
        });
        let info = count_failures(&rt, &mut svc, None, |e| e.is::<DeadlineExceeded>());
        assert_only_the_box::<DeadlineExceeded>("deadline passed in flight", info);
    }

    #[test]
    fn a_deadline_passed_in_flight_with_an_inline_error_allocates_nothing() {
        let rt = paused();
        let mut svc = rt.block_on(async {
            DeadlineLayer::new(Duration::from_millis(5))
                .expect("valid deadline")
                .with_error::<CallError>()
                .layer(stuck())
        });
        let info = count_failures(
            &rt,
            &mut svc,
            None,
            |e| matches!(e, CallError::Deadline(d) if !d.on_arrival()),
        );
        assert_nothing("deadline passed in flight, inline error", info);
    }

    #[test]
    fn an_attempt_cut_off_allocates_only_its_error() {
        let rt = paused();
        // By its own timeout.
        let mut svc = rt.block_on(async {
            AttemptTimeoutLayer::new(Duration::from_millis(5))
                .expect("valid timeout")
                .layer(stuck())
        });
        let info = count_failures(&rt, &mut svc, None, |e| e.is::<Elapsed>());
        assert_only_the_box::<Elapsed>("attempt timed out", info);
        // By the deadline above it, which ends first (its own timer stands for the deadline's).
        let mut svc = rt.block_on(async {
            tower::ServiceBuilder::new()
                .layer(DeadlineLayer::new(Duration::from_millis(5)).expect("valid deadline"))
                .layer(AttemptTimeoutLayer::new(LONG).expect("valid timeout"))
                .service(stuck())
        });
        let info = count_failures(&rt, &mut svc, None, |e| e.is::<DeadlineExceeded>());
        assert_only_the_box::<DeadlineExceeded>("attempt cut by the deadline", info);
    }

    #[test]
    fn an_attempt_cut_off_with_an_inline_error_allocates_nothing() {
        let rt = paused();
        let mut svc = rt.block_on(async {
            AttemptTimeoutLayer::new(Duration::from_millis(5))
                .expect("valid timeout")
                .with_error::<CallError>()
                .layer(stuck())
        });
        let info = count_failures(&rt, &mut svc, None, |e| matches!(e, CallError::Elapsed(_)));
        assert_nothing("attempt timed out, inline error", info);
        let mut svc = rt.block_on(async {
            tower::ServiceBuilder::new()
                .layer(
                    DeadlineLayer::new(Duration::from_millis(5))
                        .expect("valid deadline")
                        .with_error::<CallError>(),
                )
                .layer(
                    AttemptTimeoutLayer::new(LONG)
                        .expect("valid timeout")
                        .with_error::<CallError>(),
                )
                .service(stuck())
        });
        let info = count_failures(
            &rt,
            &mut svc,
            None,
            |e| matches!(e, CallError::Deadline(d) if !d.on_arrival()),
        );
        assert_nothing("attempt cut by the deadline, inline error", info);
    }
}
