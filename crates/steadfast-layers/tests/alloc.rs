//! Heap allocations per successful call: none, for every layer and for the standard stack.
//!
//! `allocation-counter` installs a counting global allocator for this test binary (no unsafe
//! code here) and counts per thread, so the test harness and tests running in parallel never
//! pollute a measurement. Each case builds its service, warms it up, then counts every heap
//! allocation made on this thread while a current-thread runtime drives `CALLS` successful
//! calls (`ready()` + `call()` + `.await`, request type `u32`). The runtime runs everything on
//! this thread, so nothing the calls do can escape the count.
//!
//! The control cases prove the counter works: an inner service that allocates a `Box` per call
//! must be seen allocating at least once per call, bare and under the layers.

use std::convert::Infallible;
use std::fmt::Debug;
use std::future::ready;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use allocation_counter::AllocationInfo;
use steadfast_layers::deadline::DeadlineLayer;
use steadfast_layers::retry::{RetryLayer, TokenBucket};
use steadfast_layers::timeout::AttemptTimeoutLayer;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

/// Calls counted per case.
const CALLS: u32 = 1_000;
/// Calls made before counting (first-use initialisation is not per-call cost).
const WARM_UP: u32 = 100;
/// The timeout of every timeout and deadline layer: never fires here.
const TIMEOUT: Duration = Duration::from_secs(1);

/// An always-ready inner service that answers at once, allocating nothing.
fn echo() -> impl Service<u32, Response = u32, Error = Infallible> + Clone {
    service_fn(|x: u32| ready(Ok(x)))
}

/// The control: like [`echo`], but it allocates (and frees) one `Box` per call.
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
            .expect("service ready")
            .call(x)
            .await
            .expect("call succeeds");
        assert_eq!(out, x);
    }
}

/// Warms `svc` up, then counts this thread's heap allocations over [`CALLS`] successful calls.
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
        "{name}: {} heap allocations ({} bytes) over {CALLS} successful calls; expected none",
        info.count_total, info.bytes_total
    );
}

#[track_caller]
fn assert_allocates_per_call(name: &str, info: AllocationInfo) {
    println!(
        "{name}: {} allocations ({} bytes) over {CALLS} calls",
        info.count_total, info.bytes_total
    );
    assert!(
        info.count_total >= u64::from(CALLS),
        "{name}: the counter saw {} allocations over {CALLS} calls of a service that allocates \
         a Box per call: it does not count",
        info.count_total
    );
}

fn deadline() -> DeadlineLayer {
    DeadlineLayer::new(TIMEOUT).expect("valid deadline")
}

fn retry_default_budget() -> RetryLayer {
    RetryLayer::builder()
        .max_attempts(3)
        .build()
        .expect("valid retry")
}

#[test]
fn counter_is_installed_and_counts() {
    let info = allocation_counter::measure(|| {
        black_box(Box::new(1_u64));
    });
    assert_eq!(
        info.count_total, 1,
        "the counting allocator is not installed"
    );
}

#[test]
fn control_boxing_service_is_seen_allocating() {
    assert_allocates_per_call("control: bare boxing service", count(boxing()));
}

#[test]
fn control_boxing_service_under_the_stack_is_seen_allocating() {
    let svc = ServiceBuilder::new()
        .layer(deadline())
        .layer(retry_default_budget())
        .service(boxing());
    assert_allocates_per_call("control: deadline + retry over boxing service", count(svc));
}

#[test]
fn bare_service_does_not_allocate() {
    assert_no_allocation("bare service", count(echo()));
}

#[test]
fn deadline_does_not_allocate() {
    assert_no_allocation("DeadlineLayer (1 s)", count(deadline().layer(echo())));
}

#[test]
fn attempt_timeout_does_not_allocate() {
    let layer = AttemptTimeoutLayer::new(TIMEOUT).expect("valid timeout");
    assert_no_allocation("AttemptTimeoutLayer (1 s)", count(layer.layer(echo())));
}

#[test]
fn retry_with_default_budget_does_not_allocate() {
    assert_no_allocation(
        "RetryLayer, default RatioBudget",
        count(retry_default_budget().layer(echo())),
    );
}

#[test]
fn retry_without_budget_does_not_allocate() {
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .no_budget()
        .build()
        .expect("valid retry");
    assert_no_allocation("RetryLayer, no budget", count(layer.layer(echo())));
}

#[test]
fn retry_with_token_bucket_does_not_allocate() {
    let bucket = Arc::new(TokenBucket::builder().build().expect("valid bucket"));
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .budget(bucket)
        .build()
        .expect("valid retry");
    assert_no_allocation("RetryLayer, TokenBucket", count(layer.layer(echo())));
}

#[test]
fn deadline_plus_retry_stack_does_not_allocate() {
    let svc = ServiceBuilder::new()
        .layer(deadline())
        .layer(retry_default_budget())
        .service(echo());
    assert_no_allocation("deadline + retry (RatioBudget)", count(svc));
}

/// An inner service whose call is pending once before it succeeds, so that the layers arm
/// their timers.
fn yielding() -> impl Service<u32, Response = u32, Error = Infallible> + Clone {
    service_fn(|x: u32| async move {
        tokio::task::yield_now().await;
        Ok(x)
    })
}

/// With a call that is pending once, the timers are armed (registered in tokio's timer wheel)
/// and the runtime itself allocates a constant amount per `block_on` (its defer list): the
/// layers must add nothing to what the bare service costs.
#[test]
fn armed_timers_add_no_allocation() {
    let bare = count(yielding());
    println!(
        "bare service, pending once: {} allocations ({} bytes) over {CALLS} calls (the runtime's own)",
        bare.count_total, bare.bytes_total
    );
    assert!(
        bare.count_total < u64::from(CALLS),
        "the runtime allocates per call"
    );
    let cases = [
        (
            "DeadlineLayer, pending once",
            count(deadline().layer(yielding())),
        ),
        (
            "AttemptTimeoutLayer, pending once",
            count(
                AttemptTimeoutLayer::new(TIMEOUT)
                    .expect("valid timeout")
                    .layer(yielding()),
            ),
        ),
        (
            "deadline + retry, pending once",
            count(
                ServiceBuilder::new()
                    .layer(deadline())
                    .layer(retry_default_budget())
                    .service(yielding()),
            ),
        ),
    ];
    for (name, info) in cases {
        let extra = AllocationInfo {
            count_total: info.count_total.saturating_sub(bare.count_total),
            bytes_total: info.bytes_total.saturating_sub(bare.bytes_total),
            ..info
        };
        assert_no_allocation(name, extra);
    }
}
