//! Heap allocations per admitted call through the backpressure layers: none, for every layer
//! (global and keyed with known keys, fail-fast and waiting modes with capacity to spare) and for
//! a stack of all of them under a deadline and a retry.
//!
//! `allocation-counter` counts this thread's allocations while a current-thread runtime drives
//! the calls (as in `alloc.rs`); a control case proves it counts.
#![allow(missing_docs)]

// Nested so that `cargo test backpressure_alloc` selects every test of this file.
mod backpressure_alloc {
    use std::convert::Infallible;
    use std::fmt::Debug;
    use std::future::ready;
    use std::hint::black_box;
    use std::time::Duration;

    use allocation_counter::AllocationInfo;
    use steadfast_layers::adaptive_limit::{AdaptiveLimitLayer, Aimd, Gradient2};
    use steadfast_layers::adaptive_throttle::ThrottleLayer;
    use steadfast_layers::bulkhead::BulkheadLayer;
    use steadfast_layers::deadline::DeadlineLayer;
    use steadfast_layers::limit::ConcurrencyLimitLayer;
    use steadfast_layers::rate::RateLimitLayer;
    use steadfast_layers::retry::RetryLayer;
    use steadfast_layers::shed::LoadShedLayer;
    use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

    const CALLS: u32 = 1_000;
    const WARM_UP: u32 = 100;

    fn echo() -> impl Service<u32, Response = u32, Error = Infallible> + Clone {
        service_fn(|x: u32| ready(Ok(x)))
    }

    fn boxing() -> impl Service<u32, Response = u32, Error = Infallible> + Clone {
        service_fn(|x: u32| ready(Ok(*black_box(Box::new(x)))))
    }

    async fn drive<S>(svc: &mut S, from: u32, calls: u32)
    where
        S: Service<u32, Response = u32>,
        S::Error: Debug,
    {
        for x in from..from + calls {
            let out = svc
                .ready()
                .await
                .expect("ready")
                .call(x)
                .await
                .expect("call succeeds");
            assert_eq!(out, x);
        }
    }

    fn count<S>(mut svc: S) -> AllocationInfo
    where
        S: Service<u32, Response = u32>,
        S::Error: Debug,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio runtime");
        rt.block_on(drive(&mut svc, 0, WARM_UP));
        let info = allocation_counter::measure(|| rt.block_on(drive(&mut svc, WARM_UP, CALLS)));
        drop(svc);
        drop(rt);
        info
    }

    #[track_caller]
    fn assert_no_allocation(name: &str, info: AllocationInfo) {
        println!(
            "{name}: {} allocations ({} bytes) over {CALLS} calls",
            info.count_total, info.bytes_total
        );
        assert_eq!(
            info.count_total, 0,
            "{name}: {} heap allocations over {CALLS} admitted calls; expected none",
            info.count_total
        );
    }

    fn limit() -> ConcurrencyLimitLayer {
        ConcurrencyLimitLayer::new(8).expect("valid limit")
    }

    fn rate() -> RateLimitLayer {
        RateLimitLayer::builder(1_000_000, Duration::from_secs(1))
            .build()
            .expect("valid rate")
    }

    #[test]
    fn control_boxing_service_under_the_layers_is_seen_allocating() {
        let svc = ServiceBuilder::new()
            .layer(limit())
            .layer(rate())
            .service(boxing());
        let info = count(svc);
        assert!(
            info.count_total >= u64::from(CALLS),
            "the counter does not count"
        );
    }

    #[test]
    fn concurrency_limit_does_not_allocate() {
        assert_no_allocation("limit, fail fast", count(limit().layer(echo())));
        let waiting = ConcurrencyLimitLayer::builder(8)
            .max_wait(Duration::from_secs(1))
            .build()
            .expect("valid limit");
        assert_no_allocation(
            "limit, waiting (free permits)",
            count(waiting.layer(echo())),
        );
        let keyed = ConcurrencyLimitLayer::builder(8)
            .key_by(|x: &u32| x % 4)
            .build()
            .expect("valid limit");
        assert_no_allocation("limit, keyed (known keys)", count(keyed.layer(echo())));
    }

    #[test]
    fn bulkhead_does_not_allocate() {
        let layer = BulkheadLayer::builder(8).build().expect("valid bulkhead");
        assert_no_allocation("bulkhead (free slots)", count(layer.layer(echo())));
    }

    #[test]
    fn rate_limit_does_not_allocate() {
        assert_no_allocation("rate, global", count(rate().layer(echo())));
        let keyed = RateLimitLayer::builder(1_000_000, Duration::from_secs(1))
            .key_by(|x: &u32| x % 4)
            .wait()
            .build()
            .expect("valid rate");
        assert_no_allocation("rate, keyed, waiting mode", count(keyed.layer(echo())));
    }

    #[test]
    fn adaptive_limit_does_not_allocate() {
        let vegas = AdaptiveLimitLayer::builder().build().expect("valid layer");
        assert_no_allocation("adaptive, Vegas, windowed", count(vegas.layer(echo())));
        let aimd = AdaptiveLimitLayer::builder()
            .algorithm(Aimd::default())
            .window(Duration::ZERO)
            .min_samples(1)
            .build()
            .expect("valid layer");
        assert_no_allocation("adaptive, AIMD, per call", count(aimd.layer(echo())));
        let gradient = AdaptiveLimitLayer::builder()
            .algorithm(Gradient2::default())
            .window(Duration::ZERO)
            .min_samples(1)
            .build()
            .expect("valid layer");
        assert_no_allocation(
            "adaptive, Gradient2, per call",
            count(gradient.layer(echo())),
        );
    }

    #[test]
    fn throttle_and_shed_do_not_allocate() {
        let throttle = ThrottleLayer::builder().build().expect("valid throttle");
        assert_no_allocation("throttle", count(throttle.layer(echo())));
        assert_no_allocation("shed", count(LoadShedLayer::new().layer(echo())));
    }

    #[test]
    fn the_whole_stack_does_not_allocate() {
        let svc = ServiceBuilder::new()
            .layer(DeadlineLayer::new(Duration::from_secs(1)).expect("valid deadline"))
            .layer(
                RetryLayer::builder()
                    .max_attempts(3)
                    .build()
                    .expect("valid retry"),
            )
            .layer(ThrottleLayer::builder().build().expect("valid throttle"))
            .layer(LoadShedLayer::new())
            .layer(BulkheadLayer::builder(8).build().expect("valid bulkhead"))
            .layer(rate())
            .layer(AdaptiveLimitLayer::builder().build().expect("valid layer"))
            .layer(limit())
            .service(echo());
        assert_no_allocation(
            "deadline + retry + throttle + shed + bulkhead + rate + adaptive + limit",
            count(svc),
        );
    }

    /// Settings changed through the handles between the warm-up and the counted calls (the
    /// change itself may allocate; the calls that follow it, and see it, may not).
    #[test]
    fn calls_after_a_live_change_do_not_allocate() {
        let retry = RetryLayer::builder()
            .max_attempts(3)
            .build()
            .expect("valid retry");
        let bulkhead = BulkheadLayer::builder(8).build().expect("valid bulkhead");
        let rate = rate();
        let keyed_rate = RateLimitLayer::builder(1_000_000, Duration::from_secs(1))
            .key_by(|x: &u32| *x % 4)
            .build()
            .expect("valid rate");
        let limit = limit();
        let handles = (
            retry.handle(),
            bulkhead.handle(),
            rate.handle(),
            keyed_rate.handle(),
            limit.handle(),
        );
        let mut svc = ServiceBuilder::new()
            .layer(retry)
            .layer(bulkhead)
            .layer(rate)
            .layer(keyed_rate)
            .layer(limit)
            .service(echo());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio runtime");
        rt.block_on(drive(&mut svc, 0, WARM_UP));
        let (retry, bulkhead, rate, keyed_rate, limit) = &handles;
        retry.set_max_attempts(5).expect("valid");
        bulkhead.set_max_concurrent(4).expect("valid");
        rate.set_rate(2_000_000_000, Duration::from_secs(2), None)
            .expect("valid");
        keyed_rate
            .set_rate(2_000_000, Duration::from_secs(1), None)
            .expect("valid");
        limit.set_max_in_flight(4).expect("valid");
        let info = allocation_counter::measure(|| rt.block_on(drive(&mut svc, WARM_UP, CALLS)));
        assert_no_allocation(
            "retry + bulkhead + rate + keyed rate + limit, changed",
            info,
        );
    }
}
