//! Per-call cost of each steadfast layer beside its nearest peer, in the same run.
//!
//! Every benchmark makes one `ready()` + `call()` + `.await` per iteration on an always-ready
//! inner service that answers at once ([`Echo`]; [`Refuse`] to trip a breaker), on a
//! current-thread runtime. Peers: `tower-resilience`'s and `failsafe`'s circuit breakers
//! (failsafe through a small tower adapter, `harness::Failsafe`), tower's `ConcurrencyLimit`, `Hedge`,
//! `RateLimit` and `LoadShed`, and `tower-resilience`'s bulkhead. After the criterion groups it
//! measures each pair again in alternation (the interleaved A/B cross-check) and prints a table
//! of steadfast / peer ratios with their targets.
//!
//! ```text
//! cargo bench -p steadfast-benches --bench layers
//! STEADFAST_BENCH_QUICK=1 cargo bench -p steadfast-benches --bench layers   # short run
//! ```

use std::time::Duration;

use criterion::Criterion;
use steadfast_benches::{
    comparison_table, criterion_dir, quick_mode, read_median_ns, run_calls, runtime, Comparison,
    Echo, FileTime, Refuse, Target, BARE_GROUP, BARE_ID,
};
use steadfast_layers::breaker::{BreakDuration, BreakTimer, BreakerState, CircuitBreakerLayer};
use steadfast_layers::bulkhead::BulkheadLayer;
use steadfast_layers::hedge::{HedgeAny, HedgeDelay, HedgeLayer};
use steadfast_layers::limit::ConcurrencyLimitLayer;
use steadfast_layers::rate::RateLimitLayer;
use steadfast_layers::shed::LoadShedLayer;
use tokio::runtime::Runtime;
use tower::limit::{ConcurrencyLimit, RateLimit};
use tower::load_shed::LoadShed;
use tower::Layer;

#[path = "harness.rs"]
mod harness;
use harness::{
    calls, failsafe_default, find, group, rejections, trip, tripped_failsafe, Cross, LONG_BREAK,
};

/// Benchmark id of `tower-resilience` in a group.
const RESILIENCE: &str = "tower-resilience";
/// Benchmark id of `failsafe` in a group.
const FAILSAFE: &str = "failsafe";
/// Benchmark id of tower in a group.
const TOWER: &str = "tower";

/// Calls every concurrency limit and bulkhead admits at once, on both sides (one is ever used).
const MAX_IN_FLIGHT: usize = 25;

/// Every row of the table, in order.
const ROWS: &[Comparison] = &[
    Comparison {
        group: "breaker_closed",
        peer: Some(RESILIENCE),
        label: "CircuitBreaker closed vs tower-resilience",
        target: Target::Below(1.0),
    },
    Comparison {
        group: "breaker_closed",
        peer: Some(FAILSAFE),
        label: "CircuitBreaker closed vs failsafe",
        target: Target::Below(1.0),
    },
    Comparison {
        group: "breaker_open",
        peer: Some(RESILIENCE),
        label: "CircuitBreaker open (rejects) vs tower-resilience",
        // Third-party peers: strictly below, as the issue asks.
        target: Target::Below(1.0),
    },
    Comparison {
        group: "breaker_open",
        peer: Some(FAILSAFE),
        label: "CircuitBreaker open (rejects) vs failsafe",
        // Third-party peers: strictly below, as the issue asks.
        target: Target::Below(1.0),
    },
    Comparison {
        group: "breaker_open_clock",
        peer: Some(FAILSAFE),
        label: "CircuitBreaker open, no break timer, vs failsafe",
        target: Target::Report,
    },
    Comparison {
        group: "breaker_forced_open",
        peer: None,
        label: "CircuitBreaker forced open (rejects), alone",
        target: Target::Report,
    },
    Comparison {
        group: "limit",
        peer: Some(TOWER),
        label: "ConcurrencyLimit (fail fast) vs tower ConcurrencyLimit",
        target: Target::AtMost(1.0),
    },
    Comparison {
        group: "limit_wait",
        peer: Some(TOWER),
        label: "ConcurrencyLimit (waits) vs tower ConcurrencyLimit",
        target: Target::AtMost(1.0),
    },
    Comparison {
        group: "hedge",
        peer: Some(TOWER),
        label: "Hedge (primary wins) vs tower Hedge",
        target: Target::AtMost(1.0),
    },
    Comparison {
        group: "rate",
        peer: Some(TOWER),
        label: "RateLimit (not limiting) vs tower RateLimit",
        target: Target::AtMost(1.0),
    },
    Comparison {
        group: "shed",
        peer: Some(TOWER),
        label: "LoadShed vs tower LoadShed",
        target: Target::AtMost(1.0),
    },
    Comparison {
        group: "bulkhead",
        peer: Some(RESILIENCE),
        label: "Bulkhead vs tower-resilience Bulkhead",
        target: Target::Report,
    },
];

/// tower's hedge policy that hedges every request, by copy.
#[derive(Clone, Copy, Debug)]
struct HedgeEvery;

impl tower::hedge::Policy<u32> for HedgeEvery {
    fn clone_request(&self, req: &u32) -> Option<u32> {
        Some(*req)
    }

    fn can_retry(&self, _req: &u32) -> bool {
        true
    }
}

fn breakers(c: &mut Criterion, rt: &Runtime, cross: &mut Cross) {
    // Closed: default configurations.
    let ours = CircuitBreakerLayer::builder()
        .build()
        .expect("valid breaker")
        .layer(Echo);
    let resilience = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .build()
        .expect("valid breaker")
        .layer(Echo);
    group(
        c,
        cross,
        "breaker_closed",
        calls(rt, ours),
        vec![
            (RESILIENCE, calls(rt, resilience)),
            (FAILSAFE, calls(rt, failsafe_default(Echo))),
        ],
    );

    // Open: tripped by 100 failures out of 100 calls (the default thresholds: 50 % of at least
    // 100 calls), with a break far longer than the run. Ours trips on a multi-thread runtime,
    // where the default `BreakTimer::Auto` arms a break timer, so that refusals read no clock;
    // the runtime lives until the end of the run (its timer would otherwise be dropped, which
    // disarms the breaker).
    let timers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .expect("multi-thread runtime");
    let layer = CircuitBreakerLayer::builder()
        .break_duration(BreakDuration::constant(LONG_BREAK))
        .build()
        .expect("valid breaker");
    let mut ours = layer.layer(Refuse);
    trip(&timers, &mut ours, 100);
    assert_eq!(layer.handle().state(), BreakerState::Open);
    let mut resilience = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .wait_duration_in_open(LONG_BREAK)
        .build()
        .expect("valid breaker")
        .layer(Refuse);
    trip(rt, &mut resilience, 100);
    assert!(resilience.is_open());
    group(
        c,
        cross,
        "breaker_open",
        rejections(rt, ours),
        vec![
            (RESILIENCE, rejections(rt, resilience)),
            (FAILSAFE, rejections(rt, tripped_failsafe(rt))),
        ],
    );

    // Open with no break timer (`BreakTimer::Off`): every refusal reads the clock, as
    // failsafe's does.
    let layer = CircuitBreakerLayer::builder()
        .break_duration(BreakDuration::constant(LONG_BREAK))
        .break_timer(BreakTimer::Off)
        .build()
        .expect("valid breaker");
    let mut ours = layer.layer(Refuse);
    trip(rt, &mut ours, 100);
    assert_eq!(layer.handle().state(), BreakerState::Open);
    group(
        c,
        cross,
        "breaker_open_clock",
        rejections(rt, ours),
        vec![(FAILSAFE, rejections(rt, tripped_failsafe(rt)))],
    );
    drop(timers);

    // Forced open through the handle: steadfast only.
    let layer = CircuitBreakerLayer::builder()
        .build()
        .expect("valid breaker");
    layer.handle().force_open();
    group(
        c,
        cross,
        "breaker_forced_open",
        rejections(rt, layer.layer(Echo)),
        Vec::new(),
    );
}

fn backpressure(c: &mut Criterion, rt: &Runtime, cross: &mut Cross) {
    group(
        c,
        cross,
        "limit",
        calls(
            rt,
            ConcurrencyLimitLayer::new(MAX_IN_FLIGHT)
                .expect("valid limit")
                .layer(Echo),
        ),
        vec![(TOWER, calls(rt, ConcurrencyLimit::new(Echo, MAX_IN_FLIGHT)))],
    );
    group(
        c,
        cross,
        "limit_wait",
        calls(
            rt,
            ConcurrencyLimitLayer::builder(MAX_IN_FLIGHT)
                .wait()
                .build()
                .expect("valid limit")
                .layer(Echo),
        ),
        vec![(TOWER, calls(rt, ConcurrencyLimit::new(Echo, MAX_IN_FLIGHT)))],
    );

    let ours = HedgeLayer::builder()
        .delay(HedgeDelay::fixed(Duration::from_millis(10)))
        .policy(HedgeAny)
        .build()
        .expect("valid hedge")
        .layer(Echo);
    // tower's hedge: after 10 recorded latencies, hedge at their 90th percentile.
    let theirs =
        tower::hedge::Hedge::new::<u32>(Echo, HedgeEvery, 10, 0.9, Duration::from_secs(10));
    group(
        c,
        cross,
        "hedge",
        calls(rt, ours),
        vec![(TOWER, calls(rt, theirs))],
    );

    // A billion calls per second (one per nanosecond, bursts of a billion) never limits here.
    let ours = RateLimitLayer::builder(1_000_000_000, Duration::from_secs(1))
        .build()
        .expect("valid rate")
        .layer(Echo);
    let theirs = RateLimit::new(
        Echo,
        tower::limit::rate::Rate::new(u64::MAX, Duration::from_secs(1)),
    );
    group(
        c,
        cross,
        "rate",
        calls(rt, ours),
        vec![(TOWER, calls(rt, theirs))],
    );

    group(
        c,
        cross,
        "shed",
        calls(rt, LoadShedLayer::new().layer(Echo)),
        vec![(TOWER, calls(rt, LoadShed::new(Echo)))],
    );

    let ours = BulkheadLayer::builder(MAX_IN_FLIGHT)
        .build()
        .expect("valid bulkhead")
        .layer(Echo);
    let theirs = tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(MAX_IN_FLIGHT)
        .build()
        .expect("valid bulkhead")
        .layer(Echo);
    group(
        c,
        cross,
        "bulkhead",
        calls(rt, ours),
        vec![(RESILIENCE, calls(rt, theirs))],
    );
}

fn main() {
    let dir = criterion_dir();
    let started = FileTime::now_in(&dir);
    let mut c = Criterion::default().output_directory(&dir);
    if quick_mode() {
        c = c
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(20);
    }
    let mut c = c.configure_from_args();
    let rt = runtime().expect("tokio runtime");
    // tower's `RateLimit::new` creates its timer at once: it needs the runtime's context.
    let _context = rt.enter();

    let mut bare = Echo;
    c.benchmark_group(BARE_GROUP).bench_function(BARE_ID, |b| {
        b.iter_custom(|iters| rt.block_on(run_calls(&mut bare, iters)))
    });
    let mut cross = Cross::new();
    breakers(&mut c, &rt, &mut cross);
    backpressure(&mut c, &rt, &mut cross);
    c.final_summary();

    print!(
        "{}",
        comparison_table(
            "steadfast / peer, median ns per call (ready + call + await, current-thread runtime)",
            ROWS,
            |group, id| read_median_ns(&dir, group, id, started),
            |group, peer| find(&cross, group, peer),
        )
    );
}
