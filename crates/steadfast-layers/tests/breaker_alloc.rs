//! Heap allocations per call through a circuit breaker: none on the closed path, in every
//! configuration (count and time windows, slow-call detection, consecutive failures, per-key
//! breakers with a known key, metrics-only mode), failures included.
//!
//! `allocation-counter` counts this thread's allocations while a current-thread runtime drives
//! the calls; a control case proves it counts.
#![allow(missing_docs)]

// Nested so that `cargo test breaker` selects every test of this file.
mod breaker_alloc {
    use std::fmt::Debug;
    use std::future::ready;
    use std::hint::black_box;
    use std::time::Duration;

    use allocation_counter::AllocationInfo;
    use steadfast_layers::breaker::CircuitBreakerLayer;
    use tower::{service_fn, Layer, Service, ServiceExt};

    const CALLS: u32 = 1_000;
    const WARM_UP: u32 = 100;

    /// Answers at once; every third call fails (an `io::Error` built without allocating).
    fn peer() -> impl Service<u32, Response = u32, Error = std::io::Error> + Clone {
        service_fn(|x: u32| {
            ready(if x.is_multiple_of(3) {
                Err(std::io::ErrorKind::ConnectionReset.into())
            } else {
                Ok(x)
            })
        })
    }

    async fn drive<S>(svc: &mut S, from: u32, calls: u32)
    where
        S: Service<u32, Response = u32>,
        S::Error: Debug,
    {
        for x in from..from + calls {
            let out = svc.ready().await.expect("ready").call(x).await;
            if x % 3 != 0 {
                assert_eq!(out.expect("call succeeds"), x);
            }
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

    /// The failures this peer produces are boxed into `BoxError` by every layer: count only what
    /// the breaker itself adds, by subtracting one allocation per failed call.
    #[track_caller]
    fn assert_breaker_allocates_nothing(name: &str, info: AllocationInfo) {
        let failures = u64::from((WARM_UP..WARM_UP + CALLS).filter(|x| x % 3 == 0).count() as u32);
        println!(
            "{name}: {} allocations over {CALLS} calls ({failures} failures boxed)",
            info.count_total
        );
        assert_eq!(
            info.count_total, failures,
            "{name}: the breaker allocated on the closed path"
        );
    }

    fn builder() -> steadfast_layers::breaker::CircuitBreakerLayerBuilder {
        // Thresholds that a one-in-three failure rate never reaches.
        CircuitBreakerLayer::builder().failure_rate(0.9)
    }

    #[test]
    fn control_boxing_is_counted() {
        let svc = service_fn(|x: u32| ready(Ok::<_, std::io::Error>(*black_box(Box::new(x)))));
        let info = count(builder().build().expect("valid").layer(svc));
        assert!(info.count_total >= u64::from(CALLS), "{info:?}");
    }

    #[test]
    fn count_window_does_not_allocate() {
        let svc = builder().build().expect("valid").layer(peer());
        assert_breaker_allocates_nothing("count window", count(svc));
    }

    #[test]
    fn time_window_with_slow_calls_and_consecutive_failures_does_not_allocate() {
        let svc = builder()
            .time_window(Duration::from_secs(10))
            .slow_call_duration(Duration::from_secs(1))
            .consecutive_failures(5)
            .build()
            .expect("valid")
            .layer(peer());
        assert_breaker_allocates_nothing("time window + slow calls", count(svc));
    }

    #[test]
    fn per_key_with_a_known_key_does_not_allocate() {
        let svc = builder()
            .key_by(|x: &u32| x % 4)
            .max_keys(16)
            .build()
            .expect("valid")
            .layer(peer());
        assert_breaker_allocates_nothing("per key", count(svc));
    }

    #[test]
    fn metrics_only_does_not_allocate() {
        let layer = builder().build().expect("valid");
        layer.handle().metrics_only();
        assert_breaker_allocates_nothing("metrics only", count(layer.layer(peer())));
    }
}
