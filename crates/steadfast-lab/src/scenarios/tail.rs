//! `tail`: 2 % of responses are 50 times slower than the rest; hedging cuts the tail.
//!
//! The server answers in 10-20 ms, except for 2 % of calls, drawn independently for every attempt,
//! which take 500-1000 ms (a GC pause, a cold cache, a noisy neighbour: the slowness belongs to
//! the attempt, so a second attempt is usually fast). Its capacity is not limited: the extra
//! calls cost load but do not slow the others down, the setting of Dean and Barroso's "The Tail
//! at Scale".
//!
//! **Load.** Requests arrive as a Poisson process at [`RATE`] per second, open loop: each
//! request's latency is its own, not delayed by the slow requests before it (a closed loop would
//! send fewer requests while callers wait on slow ones and understate the tail). The run is
//! bounded by time. The three variants run side by side, each with its own server and client,
//! on the same arrival times and the same injected latencies: a scheduling stall on a shared
//! machine then hits all three alike, instead of whichever variant happened to run at the time.
//!
//! **Warm-up.** Both hedgers learn their delay from latencies. Every variant first sends
//! [`WARMUP`] of traffic (about 600 requests, the same in every variant) that is not measured;
//! the measured arrivals follow without a gap. Both hedgers have thus learned from the same
//! traffic before the measurement; the warm-up is one period of tower's rotating histogram, so
//! tower's read half holds the warm-up's latencies when the measurement starts, as ours holds
//! them in its 30 s window. Warm-up and measured requests have distinct ids, so every measured
//! request meets the same injected latency in every variant, and the server counts the calls of
//! the measured requests apart.
//!
//! - `none`: no hedging.
//! - `tower_hedge`: `tower::hedge::Hedge` at the 95th percentile, at least 100 data points, a
//!   1 s rotation period; it has no budget. `Hedge` is not `Clone`, so one instance is shared by
//!   the callers behind a mutex (its inner services are always ready, so readiness cannot be
//!   stolen between `poll_ready` and `call`).
//! - `hedge`: steadfast's hedging preset ([`HedgingClientLayer`], as a user builds it) with a
//!   learned 95th-percentile delay (at least 100 samples), one hedge per call, and a 5 % budget.
//!
//! Both hedge only idempotent requests (every lab request is a `GET`) and copy them the same way.
//! `extra_load` = (server calls - requests) / requests, over the measured requests.
//!
//! **What to expect.** With a steady tail, both hedgers send a hedge once a call has waited about
//! the 95th percentile, so both land on the same point of one curve: p99 is that delay plus a
//! fast attempt (the top 1 % of requests are all hedged slow ones), and the extra load is the
//! share of attempts slower than that delay (the 2 % slow ones plus the few fast ones above it,
//! not 5 %: the fast mode ends near the percentile). Which of the two is a little faster and
//! which sends a little more depends only on how each rounds the percentile (tower: up to the
//! next whole millisecond; ours: up to a 1/256 histogram bucket), less than a millisecond here,
//! and on scheduling noise. So the scenario checks parity with tower, not a win: the differences
//! between the two (our budget caps hedges when latency shifts, several hedges per call, the
//! first *success* wins, losers' elapsed time kept in the histogram) do not show in a steady
//! tail with no errors. Under CPU contention from other processes, a scheduling stall delays
//! every call in flight past the delay at once: tower hedges them all, ours spends its budget's
//! burst (10) on them and may then leave a few slow calls unhedged until the budget refills
//! (`slow` above 0, a higher p99.9). [`tail_frontier`](super::tail_frontier) measures the curve
//! both hedgers sit on, with fixed delays beside them; [`tail_shift`](super::tail_shift) runs the
//! same variants on a server with a capacity that slows down for a while, where the budget does
//! show.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use steadfast_http::preset::HedgingClientLayer;
use steadfast_layers::hedge::HedgeDelay;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{Layer, Service};

use super::ms;
use crate::client::{clone_request, LabRequest, LabResponse};
use crate::load::{open_loop_from, Summary};
use crate::timeline::Timeline;
use crate::progress::{Counter, Progress, Total};
use crate::report::{value, Findings, Target, Value, VariantReport};
use crate::server::{Latency, Server, ServerConfig};
use crate::{BoxError, Options};

pub(crate) const SUMMARY: &str =
    "2% of responses are 50x slower than the rest: how much of the tail does hedging cut, for how much extra load?";

/// Arrivals per second.
pub(super) const RATE: f64 = 600.0;
/// Unmeasured traffic before the measured run: one tower rotation period.
pub(super) const WARMUP: Duration = Duration::from_secs(1);
/// The latency percentile both hedgers hedge at.
const PERCENTILE: f64 = 95.0;
/// Latency samples both hedgers need before they hedge.
const MIN_SAMPLES: u64 = 100;
/// tower's histogram rotation period.
const TOWER_PERIOD: Duration = Duration::from_secs(1);
/// Our hedge budget, as a fraction of requests (0.05 = 5 %).
pub(super) const BUDGET_RATIO: f64 = 0.05;
/// Our hedge budget's burst, in hedges (the layer's default, set here so that the lab's caps
/// are computed from what the client uses).
pub(super) const BUDGET_BURST: u32 = 10;
/// How far above tower_hedge's p99 ours may be and still count as parity: both p99s are the
/// hedge delay plus a fast attempt, and the delays differ by their rounding (tower's to the
/// millisecond above, ours to a 1/256 histogram bucket above) and by scheduling noise on a shared
/// machine.
const PARITY: f64 = 1.25;
/// A request at least this slow met the slow mode (500-1000 ms) and was not rescued by a hedge.
const SLOW_REQUEST: Duration = Duration::from_millis(200);
/// Ids of measured requests start here; the warm-up's are below.
const MEASURED_IDS: u64 = 1 << 32;

pub(super) fn latency() -> Latency {
    let ms = Duration::from_millis;
    Latency::Bimodal {
        fast: (ms(10), ms(20)),
        slow: (ms(500), ms(1000)),
        p_slow: 0.02,
    }
}

/// Which lab requests may be sent twice: the idempotent methods (every lab request is a `GET`).
fn idempotent(req: &LabRequest) -> bool {
    req.method().is_idempotent()
}

/// tower's hedge policy with the same rule and the same copy as ours.
#[derive(Clone, Copy, Debug)]
struct TowerPolicy;

impl tower::hedge::Policy<LabRequest> for TowerPolicy {
    fn clone_request(&self, req: &LabRequest) -> Option<LabRequest> {
        idempotent(req).then(|| clone_request(req))
    }

    fn can_retry(&self, req: &LabRequest) -> bool {
        idempotent(req)
    }
}

/// One service shared by clones behind a mutex, for services that are not `Clone` (tower's
/// `Hedge`). Only for services that are always ready: a clone's `poll_ready` and `call` take the
/// lock separately, so another clone could use the readiness in between.
#[derive(Debug)]
struct Shared<S>(Arc<Mutex<S>>);

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared(Arc::clone(&self.0))
    }
}

impl<S, Req> Service<Req> for Shared<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).call(req)
    }
}

type LabBoxService = BoxCloneService<LabRequest, LabResponse, BoxError>;

/// A variant's hedger.
#[derive(Clone, Copy, Debug)]
pub(super) enum Hedger {
    /// No hedging (`none`).
    Off,
    /// tower's hedge at the percentile (`tower_hedge`).
    Tower,
    /// Ours, with the learned percentile delay and the budget (`hedge`).
    Learned,
    /// Ours, after a fixed delay, with no budget: a point of the delay/extra-load curve.
    Fixed(Duration),
}

/// The variants' clients, and for ours a way to read the delay.
fn client(
    hedger: Hedger,
    opts: &Options,
) -> Result<(LabBoxService, Option<LearnedDelay>), BoxError> {
    Ok(match hedger {
        Hedger::Tower => {
            let hedge = tower::hedge::Hedge::new(
                opts.http_client()?,
                TowerPolicy,
                MIN_SAMPLES,
                (PERCENTILE / 100.0) as f32,
                TOWER_PERIOD,
            );
            (
                BoxCloneService::new(Shared(Arc::new(Mutex::new(hedge)))),
                None,
            )
        }
        Hedger::Learned | Hedger::Fixed(_) => {
            // Ours is steadfast's hedging preset, as a user builds it: its classifier, body
            // replay and eligibility rule (every lab request is a `GET`, so every one may be
            // hedged); only the hedge's delay and budget are the scenario's.
            let layer = HedgingClientLayer::builder()
                .hedge(|h| {
                    let h = match hedger {
                        Hedger::Fixed(d) => h.delay(HedgeDelay::fixed(d)).no_budget(),
                        _ => h
                            .delay(HedgeDelay::percentile(PERCENTILE).min_samples(MIN_SAMPLES))
                            .budget_ratio(BUDGET_RATIO)
                            .budget_burst(BUDGET_BURST),
                    };
                    h.max_hedges(1)
                })
                .build()?;
            let svc = layer.layer(opts.http_client()?);
            (
                BoxCloneService::new(svc),
                Some(Box::new(move || layer.current_delay())),
            )
        }
        Hedger::Off => (BoxCloneService::new(opts.http_client()?), None),
    })
}

type LearnedDelay = Box<dyn Fn() -> Option<Duration>>;

/// Runs one variant: its own server (`server`), its client, the warm-up, then the measured run
/// starting [`WARMUP`] after `t0` (all variants share `t0`, so their phases line up).
async fn run_variant(
    (name, hedger): (&'static str, Hedger),
    rate: f64,
    opts: Options,
    t0: Instant,
    measured: Duration,
    done: Counter,
    server: ServerConfig,
) -> Result<VariantReport, BoxError> {
    let server = Server::start(server).await?;
    let (svc, learned) = client(hedger, &opts)?;
    let uri = server.uri().clone();
    // The warm-up's arrivals end when the measured run's begin; its slow requests may still be
    // in flight then, as they would be in a continuous stream. Same arrivals in every variant.
    let warmup = open_loop_from(
        0,
        svc.clone(),
        uri.clone(),
        rate,
        WARMUP.saturating_sub(t0.elapsed()),
        opts.seed ^ 0x7761_726d,
        None,
        done.clone(),
    );
    let measure = async {
        tokio::time::sleep_until(t0 + WARMUP).await;
        let delay_at_start = learned.as_ref().and_then(|d| d());
        let records = open_loop_from(
            MEASURED_IDS,
            svc.clone(),
            uri.clone(),
            rate,
            measured,
            opts.seed,
            None,
            done.clone(),
        )
        .await;
        (delay_at_start, records)
    };
    let (warmup, (delay_at_start, records)) = tokio::join!(warmup, measure);
    let warmup = warmup?;
    let records = records?;
    // Every measured request has finished, so every attempt has been sent; a moment lets the
    // last ones arrive. (The server finishes the cancelled losers in the background: they are
    // counted on arrival, so the run does not wait for them.)
    tokio::time::sleep(Duration::from_millis(50)).await;
    let calls = server.calls_for(MEASURED_IDS..);
    let summary = Summary::of(&records);
    // Requests that still took the slow mode's time: not hedged, or hedged into another slow
    // attempt.
    let slow = records
        .iter()
        .filter(|r| r.latency >= SLOW_REQUEST)
        .count() as u64;
    let extra = calls.saturating_sub(summary.requests);
    let extra_load = if summary.requests == 0 {
        0.0
    } else {
        extra as f64 / summary.requests as f64
    };
    // Over time: the warm-up too (its calls are on the server's count), but the latency plot,
    // like the table, shows the measured requests only.
    let mut timeline = server.timeline(&[warmup, records.clone()].concat());
    timeline.latencies_ms = Timeline::from_records(server.started(), &records).latencies_ms;
    let mut report = VariantReport::new(name, &summary, calls)
        .timeline(timeline)
        .metric("extra_load", "extra load", Value::Ratio(extra_load))
        .metric("extra_calls", "extra calls", Value::Count(extra))
        .metric("slow_requests", "slow (>= 200 ms)", Value::Count(slow));
    if let Some(d) = learned.as_ref().and_then(|d| d()) {
        report = report.metric(
            "hedge_delay_ms",
            "delay ms",
            Value::Number(d.as_secs_f64() * 1e3, 2),
        );
    }
    if let Some(d) = delay_at_start {
        report = report.json_metric(
            "hedge_delay_after_warmup_ms",
            Value::Number(d.as_secs_f64() * 1e3, 2),
        );
    }
    Ok(report)
}

/// `tail`'s variants.
const VARIANTS: [(&str, Hedger); 3] = [
    ("none", Hedger::Off),
    ("tower_hedge", Hedger::Tower),
    ("hedge", Hedger::Learned),
];

/// Runs `none`, `tower_hedge` and `hedge` side by side (see [`side_by_side_of`]).
pub(super) async fn side_by_side(
    scenario: &str,
    opts: Options,
    measured: Duration,
    server: impl Fn() -> ServerConfig,
) -> Result<Vec<VariantReport>, BoxError> {
    side_by_side_of(scenario, &VARIANTS, RATE, opts, measured, server).await
}

/// Runs `variants` side by side, each against its own `server()`, on the same arrivals (`rate`
/// per second): a scheduling stall on this shared machine then hits all of them alike instead of
/// whichever ran at the time.
pub(super) async fn side_by_side_of(
    scenario: &str,
    variants: &[(&'static str, Hedger)],
    rate: f64,
    opts: Options,
    measured: Duration,
    server: impl Fn() -> ServerConfig,
) -> Result<Vec<VariantReport>, BoxError> {
    let names: Vec<&str> = variants.iter().map(|(name, _)| *name).collect();
    let progress = Progress::start(
        format!("{scenario} ({} side by side)", names.join(", ")),
        Total::Time(WARMUP + measured),
        opts.progress,
    );
    let t0 = Instant::now();
    let runs = variants
        .iter()
        .map(|v| run_variant(*v, rate, opts, t0, measured, progress.counter(), server()));
    let reports = futures::future::join_all(runs).await;
    progress.finish();
    reports.into_iter().collect()
}

pub(crate) async fn run(opts: Options) -> Result<Findings, BoxError> {
    let measured = Duration::from_millis(if opts.quick { 1500 } else { 12_000 });
    let reports = side_by_side("tail", opts, measured, || {
        ServerConfig::new("tail", opts.seed).latency(latency())
    })
    .await?;

    let get = |variant: &str, key: &str| value(&reports, variant, key);
    let none_p99 = get("none", "p99_ms");
    let ours_p99 = get("hedge", "p99_ms");
    let ours_load = get("hedge", "extra_load");
    let tower_p99 = get("tower_hedge", "p99_ms");
    let tower_load = get("tower_hedge", "extra_load");
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let targets = vec![
        Target::new(
            ours_p99 * 10.0 <= none_p99 && ours_load <= BUDGET_RATIO,
            format!(
                "hedge cuts p99 by >= 10x vs none with extra load <= {:.0}%: {ours_p99:.1} vs {none_p99:.1} ms ({:.1}x), extra load {}",
                BUDGET_RATIO * 100.0,
                none_p99 / ours_p99,
                pct(ours_load)
            ),
        ),
        Target::new(
            ours_p99 <= tower_p99 * PARITY,
            format!(
                "hedge is at parity with tower_hedge on p99 (within {:.0}%; both hedge at p{PERCENTILE:.0}, which sets p99, so neither can beat the other by much): {ours_p99:.1} vs {tower_p99:.1} ms, extra load {} vs {}",
                (PARITY - 1.0) * 100.0,
                pct(ours_load),
                pct(tower_load)
            ),
        ),
    ];

    let requests_approx = RATE * measured.as_secs_f64();
    Ok(Findings {
        config: vec![
            (
                "server",
                format!(
                    "{} (drawn per attempt), no capacity limit",
                    latency().describe()
                ),
            ),
            (
                "load",
                format!(
                    "Poisson arrivals at {RATE:.0} requests/s, open loop, the three variants side by side: {} of warm-up (not measured, the same in every variant), then {} measured (~{requests_approx:.0} requests)",
                    ms(WARMUP),
                    ms(measured)
                ),
            ),
            (
                "tower_hedge",
                format!(
                    "tower::hedge::Hedge: p{PERCENTILE:.0}, min {MIN_SAMPLES} data points, rotation period {}; one hedge, no budget, first completion wins",
                    ms(TOWER_PERIOD)
                ),
            ),
            (
                "hedge",
                format!(
                    "the hedging preset (HedgeLayer inside): learned p{PERCENTILE:.0} delay (min {MIN_SAMPLES} samples, 30 s window), one hedge, budget {:.0}% of requests, first success wins",
                    BUDGET_RATIO * 100.0
                ),
            ),
            (
                "columns",
                "extra load = (server calls - requests) / requests, measured requests only; slow = requests that still took the slow mode's time; delay = our learned hedge delay at the end".to_owned(),
            ),
        ],
        variants: reports,
        targets,
    })
}
