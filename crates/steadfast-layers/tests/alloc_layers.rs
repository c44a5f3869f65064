//! Heap allocations per call in exactly the configurations `benches/layers.rs` measures: a
//! closed circuit breaker with the default configuration, a fail-fast and a waiting concurrency
//! limit of 25, and a rate limit of a billion calls per second (never limiting), each on an
//! always-ready service that answers at once. None allocates.
//!
//! `breaker_alloc.rs` and `backpressure_alloc.rs` cover the other configurations (failures,
//! time windows, keys, bulkheads, adaptive limits); this file pins the benchmarked ones.
#![allow(missing_docs)]

// Nested so that `cargo test alloc_layers` selects every test of this file.
mod alloc_layers {
    use std::convert::Infallible;
    use std::fmt::Debug;
    use std::future::ready;
    use std::hint::black_box;
    use std::time::Duration;

    use allocation_counter::AllocationInfo;
    use steadfast_layers::breaker::{BreakerState, CircuitBreakerLayer};
    use steadfast_layers::limit::ConcurrencyLimitLayer;
    use steadfast_layers::rate::RateLimitLayer;
    use tower::{service_fn, Layer, Service, ServiceExt};

    const CALLS: u32 = 1_000;
    const WARM_UP: u32 = 100;

    fn echo() -> impl Service<u32, Response = u32, Error = Infallible> + Clone {
        service_fn(|x: u32| ready(Ok::<_, Infallible>(x)))
    }

    async fn drive<S>(svc: &mut S, from: u32, calls: u32)
    where
        S: Service<u32, Response = u32>,
        S::Error: Debug,
    {
        for x in from..from + calls {
            let out = svc.ready().await.expect("ready").call(x).await;
            assert_eq!(out.expect("call succeeds"), x);
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
            "{name}: {} heap allocations over {CALLS} calls; expected none",
            info.count_total
        );
    }

    #[test]
    fn control_a_boxing_service_is_seen_allocating() {
        let boxing = service_fn(|x: u32| ready(Ok::<_, Infallible>(*black_box(Box::new(x)))));
        let layer = CircuitBreakerLayer::builder()
            .build()
            .expect("valid breaker");
        let info = count(layer.layer(boxing));
        assert!(info.count_total >= u64::from(CALLS), "{info:?}");
    }

    #[test]
    fn closed_breaker_with_default_configuration_does_not_allocate() {
        let layer = CircuitBreakerLayer::builder()
            .build()
            .expect("valid breaker");
        let info = count(layer.layer(echo()));
        assert_eq!(layer.handle().state(), BreakerState::Closed);
        assert_no_allocation("breaker, default, closed", info);
    }

    #[test]
    fn concurrency_limit_of_25_does_not_allocate() {
        let fail_fast = ConcurrencyLimitLayer::new(25).expect("valid limit");
        assert_no_allocation("limit 25, fail fast", count(fail_fast.layer(echo())));
        let waiting = ConcurrencyLimitLayer::builder(25)
            .wait()
            .build()
            .expect("valid limit");
        assert_no_allocation("limit 25, waits", count(waiting.layer(echo())));
    }

    #[test]
    fn rate_limit_of_a_billion_per_second_does_not_allocate() {
        let layer = RateLimitLayer::builder(1_000_000_000, Duration::from_secs(1))
            .build()
            .expect("valid rate");
        assert_no_allocation("rate 1e9/s", count(layer.layer(echo())));
    }
}
