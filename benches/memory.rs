//! Memory per layer instance: the bytes each steadfast layer and preset holds when built, after a
//! warm-up of 10,000 calls with the lab's `tail` latencies (paused clock), and per key, beside
//! tower's and `tower-resilience`'s equivalents; then the scale check: 1,000
//! `HedgingClientLayer` stacks, one per route, and the process's resident memory before and after
//! their warm-up of 1,000 calls each, on the real clock (about 20 s: the latencies are slept for
//! real, so that every hedge histogram meets the spread a real process gives it). The `memory`
//! test asserts the same rows' targets; `docs/memory.md` holds the table.
//!
//! ```text
//! cargo bench -p steadfast-benches --features memory --bench memory
//! ```
//!
//! Nothing here is timed: the numbers are byte counts, and the resident set size, which depends
//! on the allocator, the machine and (through the real clock's jitter) the load, for the scale
//! check only.

use std::time::Duration;

use steadfast_benches::memory::{self, Clock, Footprint, Meter, Row};
use steadfast_benches::TpsBudgetPolicy;
use tower::limit::{ConcurrencyLimit, RateLimit};
use tower::load_shed::LoadShed;
use tower::timeout::Timeout;
use tower::Layer;

/// Routes in the scale check.
const ROUTES: usize = 1_000;
/// Warm-up calls per route in the scale check.
const CALLS_PER_ROUTE: u32 = 1_000;

fn measure(f: &mut dyn FnMut()) -> i64 {
    allocation_counter::measure(f).bytes_current
}

fn peer_row(name: &str, footprint: Footprint) -> Row {
    Row {
        name: name.to_owned(),
        footprint,
        keyed: None,
        target: None,
    }
}

/// tower's hedge policy that hedges every request, by copy (as `HedgeAny`).
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

/// The peers' rows: tower's and `tower-resilience`'s equivalents of the steadfast
/// layers, in the same configurations where they have one.
fn peer_rows(meter: &Meter) -> Vec<Row> {
    let p = memory::peer;
    let id = |i: u32| i;
    let secs = Duration::from_secs;
    vec![
        peer_row(
            "tower Timeout (3 s)",
            meter.footprint(|| Timeout::new(p(), secs(3)), id),
        ),
        peer_row(
            "tower Retry (TpsBudget)",
            meter.footprint(
                || tower::retry::Retry::new(TpsBudgetPolicy::finagle(), p()),
                id,
            ),
        ),
        peer_row(
            "tower Hedge (p95, 10 samples, 30 s)",
            meter.footprint(
                || tower::hedge::Hedge::new::<u32>(p(), HedgeEvery, 10, 0.95, secs(30)),
                id,
            ),
        ),
        peer_row(
            "tower ConcurrencyLimit (25)",
            meter.footprint(|| ConcurrencyLimit::new(p(), 25), id),
        ),
        peer_row(
            "tower RateLimit (1,000/s)",
            meter.footprint(
                || RateLimit::new(p(), tower::limit::rate::Rate::new(1_000, secs(1))),
                id,
            ),
        ),
        peer_row("tower LoadShed", meter.footprint(|| LoadShed::new(p()), id)),
        peer_row(
            "tower-resilience CircuitBreaker (defaults)",
            meter.footprint(
                || {
                    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
                        .build()
                        .expect("valid breaker")
                        .layer(p())
                },
                id,
            ),
        ),
        peer_row(
            "tower-resilience Bulkhead (25)",
            meter.footprint(
                || {
                    tower_resilience::bulkhead::BulkheadLayer::builder()
                        .max_concurrent_calls(25)
                        .build()
                        .expect("valid bulkhead")
                        .layer(p())
                },
                id,
            ),
        ),
    ]
}

fn main() {
    // `cargo bench` passes `--bench`; criterion's list and test modes (`--list`, `--test`) have
    // nothing to run here.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list" || a == "--test") {
        return;
    }
    let meter = Meter::new(measure).expect("tokio runtime");
    let rows = memory::steadfast_rows(&meter);
    println!("steadfast (targets checked by `cargo test -p steadfast-benches --features memory --test memory`):\n");
    println!("{}", memory::table(&rows));
    for miss in rows.iter().flat_map(|r| r.misses()) {
        println!("MISSED: {miss}");
    }
    println!("Peers, same peer and warm-up (reported only):\n");
    println!("{}", memory::table(&peer_rows(&meter)));
    println!("Scale check:\n");
    let scale =
        memory::scale(measure, Clock::Real, ROUTES, CALLS_PER_ROUTE).expect("tokio runtime");
    println!("{scale}");
}
