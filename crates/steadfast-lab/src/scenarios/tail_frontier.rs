//! `tail_frontier`: `tail` with fixed hedge delays around tower's, to show the curve both
//! hedgers sit on.
//!
//! Same server, traffic and warm-up as [`tail`](super::tail) (its docs describe them), at half
//! its arrival rate, [`RATE`] (seven variants at once then cost about the CPU of `tail`'s
//! three; with no capacity limit, the rate does not change a request's latency), with
//! `tower_hedge` and our `hedge` beside five variants of ours that hedge after a fixed delay,
//! half a millisecond apart around the top of the fast mode, with no budget: `fixed_20ms` ...
//! `fixed_22ms`. All seven run side by side on the same arrivals and the same injected
//! latencies. (Half a millisecond, although tokio's timer ticks every millisecond: a delay fires
//! at the first tick after it, so a later delay fires later on average.)
//!
//! With one hedge after a delay `d`, a request's latency is its first attempt's, or `d` plus a
//! second attempt's, whichever comes first. The 1 % slowest requests are slow first attempts
//! rescued by a hedge, so p99 is `d` plus a fast attempt; the extra load is the share of
//! attempts slower than `d`. A later delay costs p99 one for one; an earlier one costs extra
//! load, steeply inside the fast mode. No choice of delay lowers both: the fixed delays trace
//! that curve, and a percentile hedger (tower's, ours) lands on it wherever its percentile
//! falls. The issue asks `tail`'s `hedge` to *beat* `tower_hedge` on p99 at equal or lower
//! extra load; this scenario measures why no hedger that waits before it hedges can, in a
//! steady tail. (Where the tail is not steady, the budget does beat it:
//! [`tail_shift`](super::tail_shift).)
//!
//! Targets: along the fixed delays, p99 rises and extra load falls (no step back beyond noise);
//! and neither percentile hedger lies below that curve (by more than [`MARGIN_MS`] of p99 at its
//! extra load, the curve drawn straight between the fixed delays). Where a percentile hedger
//! lies *on* the curve, nothing beats it at equal load; where it lies above (its delay learned
//! from a disturbed warm-up, say), a fixed delay does.

use std::time::Duration;

use super::ms;
use super::tail::{latency, side_by_side_of, Hedger, WARMUP};
use crate::report::{value, Findings, Target};
use crate::server::ServerConfig;
use crate::{BoxError, Options};

pub(crate) const SUMMARY: &str =
    "the tail scenario with fixed hedge delays around tower's: is there a delay that beats tower's hedge on p99 at equal extra load?";

/// The variants: the two percentile hedgers and ours at fixed delays, 0.5 ms apart around the
/// top of the fast mode (10-20 ms, plus the timer's millisecond and the round trip), where
/// the extra load falls steeply.
const VARIANTS: [(&str, Hedger); 7] = [
    ("tower_hedge", Hedger::Tower),
    ("hedge", Hedger::Learned),
    ("fixed_20ms", Hedger::Fixed(Duration::from_micros(20_000))),
    ("fixed_20.5ms", Hedger::Fixed(Duration::from_micros(20_500))),
    ("fixed_21ms", Hedger::Fixed(Duration::from_micros(21_000))),
    ("fixed_21.5ms", Hedger::Fixed(Duration::from_micros(21_500))),
    ("fixed_22ms", Hedger::Fixed(Duration::from_micros(22_000))),
];
/// Arrivals per second: half of `tail`'s.
const RATE: f64 = 300.0;
/// How far below the curve a percentile hedger's p99 would have to be to count as below it:
/// more than the noise of the p99s it is drawn from (in a quick run, the 18th slowest of about
/// 1,800 requests).
const MARGIN_MS: f64 = 0.75;
/// How much extra load may rise from one fixed delay to the next later one and still count as
/// not rising, and how far two extra loads may be apart and still count as the same (the noise
/// of a few calls).
const LOAD_NOISE: f64 = 0.002;
/// How much p99 may fall from one fixed delay to the next later one and still count as not
/// falling: a p99 is one request's latency, and in a quick run delays half a millisecond apart
/// can swap places by a few tenths.
const P99_NOISE: f64 = 0.5;

pub(crate) async fn run(opts: Options) -> Result<Findings, BoxError> {
    let measured = Duration::from_millis(if opts.quick { 6_000 } else { 24_000 });
    let reports = side_by_side_of("tail_frontier", &VARIANTS, RATE, opts, measured, || {
        ServerConfig::new("tail_frontier", opts.seed).latency(latency())
    })
    .await?;

    let get = |variant: &str, key: &str| value(&reports, variant, key);
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let fixed: Vec<(&str, f64, f64)> = VARIANTS[2..]
        .iter()
        .map(|(name, _)| (*name, get(name, "p99_ms"), get(name, "extra_load")))
        .collect();
    let curve = fixed
        .iter()
        .map(|(name, p99, load)| format!("{name} {p99:.1} ms at {}", pct(*load)))
        .collect::<Vec<_>>()
        .join(", ");
    let steps_hold = fixed
        .windows(2)
        .all(|w| w[1].1 >= w[0].1 - P99_NOISE && w[1].2 <= w[0].2 + LOAD_NOISE);
    let monotone = match (fixed.first(), fixed.last()) {
        (Some(first), Some(last)) => steps_hold && last.1 > first.1 && last.2 < first.2,
        _ => false,
    };
    let points: Vec<(f64, f64)> = fixed.iter().map(|(_, p99, load)| (*load, *p99)).collect();
    let mut placed = Vec::new();
    let mut below = Vec::new();
    for name in ["tower_hedge", "hedge"] {
        let (p99, load) = (get(name, "p99_ms"), get(name, "extra_load"));
        // The curve at the same extra load, give or take the noise of a few calls.
        let bound = curve_p99(&points, load + LOAD_NOISE);
        placed.push(format!(
            "{name} {p99:.1} ms at {} (curve: {bound:.1} ms)",
            pct(load)
        ));
        if p99 < bound - MARGIN_MS {
            below.push(name);
        }
    }
    let targets = vec![
        Target::new(
            monotone,
            format!(
                "the later the fixed delay, the higher the p99 and the lower the extra load (no step back by more than {P99_NOISE:.1} ms or {:.1} points): {curve}",
                LOAD_NOISE * 100.0
            ),
        ),
        Target::new(
            below.is_empty(),
            format!(
                "neither percentile hedger beats the curve (p99 more than {MARGIN_MS:.2} ms below it at the same extra load, within {:.1} points): {}{}",
                LOAD_NOISE * 100.0,
                placed.join("; "),
                if below.is_empty() {
                    String::new()
                } else {
                    format!("; below: {}", below.join(", "))
                }
            ),
        ),
    ];

    Ok(Findings {
        config: vec![
            (
                "server",
                format!(
                    "as in tail: {} (drawn per attempt), no capacity limit",
                    latency().describe()
                ),
            ),
            (
                "load",
                format!(
                    "as in tail, at half the rate: Poisson arrivals at {RATE:.0} requests/s, open loop, the seven variants side by side, {} of warm-up, then {} measured",
                    ms(WARMUP),
                    ms(measured)
                ),
            ),
            (
                "variants",
                "tower_hedge and hedge as in tail; fixed_N: ours, one hedge after a fixed N ms, no budget".to_owned(),
            ),
            (
                "columns",
                "as in tail; delay = the hedge delay ours used at the end (learned or fixed)".to_owned(),
            ),
        ],
        variants: reports,
        targets,
    })
}

/// The curve's p99 at `load`: the fixed delays' `(extra load, p99)` points that no other point
/// beats on both (the lower envelope), joined by straight lines; beyond the last point on a
/// side, that point's p99 (lower loads need later delays, so the curve only rises there).
fn curve_p99(points: &[(f64, f64)], load: f64) -> f64 {
    let mut sorted = points.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    let mut envelope: Vec<(f64, f64)> = Vec::new();
    for p in sorted {
        if envelope.last().is_none_or(|last| p.1 < last.1) {
            envelope.push(p);
        }
    }
    let (Some(first), Some(last)) = (envelope.first(), envelope.last()) else {
        return f64::NAN;
    };
    if load <= first.0 {
        return first.1;
    }
    if load >= last.0 {
        return last.1;
    }
    envelope
        .windows(2)
        .find(|w| load <= w[1].0)
        .map_or(f64::NAN, |w| {
            let ((l0, p0), (l1, p1)) = (w[0], w[1]);
            p0 + (p1 - p0) * (load - l0) / (l1 - l0)
        })
}

#[cfg(test)]
mod tests {
    use super::curve_p99;

    #[test]
    fn the_curve_is_straight_between_points_and_flat_beyond() {
        // (extra load, p99): fixed delays 23, 22, 21, 20 ms of a full run.
        let points = [(0.021, 40.6), (0.021, 39.9), (0.027, 38.8), (0.085, 37.7)];
        // On a point, between two, and beyond either end.
        assert!((curve_p99(&points, 0.027) - 38.8).abs() < 1e-9);
        assert!((curve_p99(&points, 0.056) - 38.25).abs() < 1e-9);
        assert!((curve_p99(&points, 0.024) - 39.35).abs() < 1e-9);
        assert!((curve_p99(&points, 0.010) - 39.9).abs() < 1e-9);
        assert!((curve_p99(&points, 0.200) - 37.7).abs() < 1e-9);
        assert!(curve_p99(&[], 0.02).is_nan());
    }
}
