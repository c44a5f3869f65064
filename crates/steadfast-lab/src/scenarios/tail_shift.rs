//! `tail_shift`: the `tail` scenario's server, with a capacity and a slowdown in the middle of
//! the run; what the hedge budget is for.
//!
//! Same traffic, same latencies and the same three variants as [`tail`](super::tail) (its docs
//! describe them), with two changes to the server:
//!
//! - **capacity**: [`WORKERS`] calls are worked on at once and the rest queue (FIFO), as on a
//!   real server with a thread pool: extra calls now cost everyone time;
//! - **slowdown**: for the middle third of the measured run every latency is multiplied by
//!   [`FACTOR`] (a noisy neighbour, a garbage-collection storm: the whole server is slower for a
//!   while, not just its tail).
//!
//! A hedger whose delay was learned before the slowdown finds nearly every call slower than it.
//! tower's hedge, with no budget, then hedges nearly every call until its histogram rotates: the
//! copies are just as slow (the slowness belongs to the server, not to the attempt), and they
//! double the work of a server that is already short of workers, so calls queue. Ours may hedge
//! at most [`BUDGET_RATIO`](super::tail::BUDGET_RATIO) of the requests (burst
//! [`BUDGET_BURST`](super::tail::BUDGET_BURST)), so the
//! server keeps up. This is the case "The Tail at Scale" and Finagle's backup requests cap their
//! extra load for, and where the "beat tower_hedge on p99 at equal or lower extra load"
//! can be measured; in the steady tail of `tail` both hedgers sit at the same point.

use std::time::Duration;

use super::ms;
use super::tail::{latency, side_by_side, BUDGET_BURST, BUDGET_RATIO, RATE, WARMUP};
use crate::report::{value, Findings, Target};
use crate::server::{Capacity, ServerConfig, Slowdown};
use crate::{BoxError, Options};

pub(crate) const SUMMARY: &str =
    "the tail scenario on a server with a capacity that slows down 3x for a while: does the hedge budget keep hedges from making it worse?";

/// Calls the server works on at once; the rest queue.
const WORKERS: usize = 64;
/// What every latency is multiplied by during the slowdown.
const FACTOR: f64 = 3.0;

pub(crate) async fn run(opts: Options) -> Result<Findings, BoxError> {
    let measured = Duration::from_millis(if opts.quick { 6_000 } else { 12_000 });
    let slowdown = Slowdown {
        start: WARMUP + measured / 3,
        duration: measured / 3,
        factor: FACTOR,
    };
    let server = || {
        ServerConfig::new("tail_shift", opts.seed)
            .latency(latency())
            .capacity(Capacity {
                limit: WORKERS,
                queue: usize::MAX / 2,
                reject_cost: Duration::ZERO,
            })
            .slowdown(slowdown)
    };
    let reports = side_by_side("tail_shift", opts, measured, server).await?;

    let get = |variant: &str, key: &str| value(&reports, variant, key);
    let requests = get("hedge", "requests");
    let none_p99 = get("none", "p99_ms");
    let ours_p99 = get("hedge", "p99_ms");
    let ours_load = get("hedge", "extra_load");
    let tower_p99 = get("tower_hedge", "p99_ms");
    let tower_load = get("tower_hedge", "extra_load");
    let cap = BUDGET_RATIO + f64::from(BUDGET_BURST) / requests;
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let targets = vec![
        Target::new(
            ours_load <= cap,
            format!(
                "hedge stays within its budget ({:.0}% of requests + a burst of {BUDGET_BURST}): extra load <= {}, got {}",
                BUDGET_RATIO * 100.0,
                pct(cap),
                pct(ours_load)
            ),
        ),
        Target::new(
            ours_p99 <= none_p99,
            format!(
                "hedge does not make the tail worse than none, slowdown included: p99 {ours_p99:.1} vs {none_p99:.1} ms"
            ),
        ),
        Target::new(
            ours_p99 < tower_p99 && ours_load <= tower_load,
            format!(
                "hedge beats tower_hedge on p99 at lower extra load: {ours_p99:.1} vs {tower_p99:.1} ms, extra load {} vs {}",
                pct(ours_load),
                pct(tower_load)
            ),
        ),
    ];

    Ok(Findings {
        config: vec![
            (
                "server",
                format!(
                    "{} (drawn per attempt); {WORKERS} workers, FIFO queue; every latency x{FACTOR:.0} from {} to {} after the start (the middle third of the measured run)",
                    latency().describe(),
                    ms(slowdown.start),
                    ms(slowdown.start + slowdown.duration)
                ),
            ),
            (
                "load",
                format!(
                    "as in tail: Poisson arrivals at {RATE:.0} requests/s, open loop, the three variants side by side, {} of warm-up, then {} measured",
                    ms(WARMUP),
                    ms(measured)
                ),
            ),
            (
                "variants",
                "as in tail: none; tower_hedge (tower::hedge at p95, 1 s rotation, no budget); hedge (ours, learned p95, budget 5%)".to_owned(),
            ),
        ],
        variants: reports,
        targets,
    })
}
