//! `overload_adaptive`: open-loop arrivals at twice what the server can serve, against a server
//! that queues everything; the callers' stack decides how much to send.
//!
//! The server works on at most [`WORKERS`] calls at once (20-60 ms each, so about 200 calls/s)
//! and queues the rest without bound, first come first served, like a thread pool in front of an
//! unbounded queue. It does not notice a caller that hung up, so a call whose caller has given up
//! still takes its turn. Callers give each request [`DEADLINE`] and do not retry.
//!
//! - `none`: every request is sent. The queue grows by the excess (about 200 calls/s); once a
//!   call waits longer than the deadline, every call the server serves is one its caller has
//!   given up on: goodput collapses while the server stays fully busy.
//! - `static_limit`: steadfast's `ConcurrencyLimitLayer`, fail fast, at [`STATIC_LIMIT`] calls in
//!   flight (the server's workers plus a short queue, tuned by hand to this server).
//! - `adaptive_limit`: steadfast's `AdaptiveLimitLayer` with `Gradient2` at its defaults
//!   (Netflix's: initial limit 20, tolerance 1.5, smoothing 0.2, queue 4, long window 600; plus
//!   the long-term RTT held within 2 × a no-load RTT probed at 3 in flight once a minute, and
//!   drops, including calls whose caller gave up, decreasing the limit), updated every 100 ms:
//!   the limit is learned from latency, not configured.
//! - `shed`: steadfast's `LoadShedLayer` above tower's `ConcurrencyLimit` at the same
//!   [`STATIC_LIMIT`]: tower's limit applies backpressure through readiness, and the shedder turns
//!   "not ready" into an immediate failure (the composition `LoadShedLayer` exists for).
//!
//! A request refused by a client-side layer never reaches the server (counted in `refused`).
//! Goodput counts requests that succeeded; `p99_ok_ms` is the 99th percentile of successful
//! requests only (the standard percentiles include the instant refusals), and
//! `p99_ok_last_quarter_ms` the same for the requests that arrived in the last quarter of the run,
//! which shows where a limit is heading.
//!
//! **What to expect.** Every limit keeps the server busy on calls someone still waits for, so
//! goodput stays near capacity while `none` collapses. The static limit and the shedder (the same
//! hand-tuned bound, enforced two ways) keep a short queue: p99 of successes under 100 ms for
//! 20-60 ms of work. Gradient2 needs no tuning and runs a longer queue, of a bounded length: its
//! first update probes the server at 3 calls in flight (a no-load RTT of about 40 ms), and its
//! long-term RTT may not exceed twice that, so with a tolerance of 1.5 the limit shrinks once
//! latency passes about 3 × 40 ms, and holds near 26-30 (p99 of successes about 170 ms) for as
//! long as the overload lasts. Measured on one machine: two 10 s runs ended with a limit of 26
//! and 28, goodput 192/s, a p99 of successes of 167-169 ms (168-171 ms for the last quarter's
//! arrivals); two 120 s runs (the duration constant edited for the measurement) ended with a
//! limit of 27 and 28, goodput 193-194/s, p99 166-171 ms (169-172 ms in the last quarter),
//! nothing served for nobody.
//!
//! Before that anchor, Netflix's Gradient2 as such accepted latency growing by half over its
//! long-term average, and that average followed the loaded latency, so the limit crept up as long
//! as the overload lasted: a 10 s run ended near limit 42 with a p99 of 234 ms, a 40 s run at 71
//! and 360 ms, and a 120 s run at 101, where calls queued for about the whole deadline: goodput
//! fell to 97/s over the run (p99 493 ms), none of the requests of its last 30 s succeeded, and
//! the server served 12,065 calls for nobody. Calls the caller gave up on gave no sample at all,
//! and Gradient2 ignored drops anyway, so nothing stopped the creep. `tests/adaptive.rs`
//! reproduces both in a simulated 300 s run.

use std::sync::Arc;
use std::time::Duration;

use steadfast_layers::adaptive_limit::{AdaptiveLimitLayer, Gradient2, LimitHandle};
use steadfast_layers::limit::ConcurrencyLimitLayer;
use steadfast_layers::shed::LoadShedLayer;
use tower::util::BoxCloneService;
use tower::Layer;

use super::ms;
use steadfast_http::classify::HttpClassifier;

use crate::client::{caller_layer, CallerConfig, HttpClient, LabRequest, LabResponse, Retries};
use crate::ledger::Ledger;
use crate::load::{open_loop, percentile_ms, Summary};
use crate::progress::{Progress, Total};
use crate::report::{value, Findings, Target, Value, VariantReport};
use crate::server::{Capacity, Latency, Server, ServerConfig};
use crate::{BoxError, Options};

pub(crate) const SUMMARY: &str =
    "Arrivals at 2x the capacity of a server that queues everything: which client-side limit keeps goodput up and latency down?";

/// Calls the server works on at once.
const WORKERS: usize = 8;
/// Its queue: far more than a run can fill, i.e. unbounded.
const QUEUE: usize = 100_000;
const WORK_MIN: Duration = Duration::from_millis(20);
const WORK_MAX: Duration = Duration::from_millis(60);
/// Offered load over capacity.
const OVERLOAD: f64 = 2.0;
/// Each request's end-to-end deadline (the caller gives up then).
const DEADLINE: Duration = Duration::from_millis(500);
/// The hand-tuned limit of `static_limit` and `shed`.
const STATIC_LIMIT: usize = 12;
const SERVER: &str = "overload_adaptive";

type LabBoxService = BoxCloneService<LabRequest, LabResponse, BoxError>;

/// A variant's stack and, for the adaptive one, its limit: steadfast's standard client preset
/// as a user builds it (the caller's deadline, one attempt, no deadline header on the wire),
/// with the variant's limit in the preset's slot.
fn stack(
    name: &str,
    http: HttpClient,
    seed: u64,
) -> Result<(LabBoxService, Option<LimitHandle>), BoxError> {
    let caller = CallerConfig {
        deadline: DEADLINE,
        attempt_timeout: None,
        retries: Retries::None,
        backoff: (Duration::from_millis(25), Duration::from_millis(250)),
        seed,
        propagate: None,
    };
    let preset = caller_layer(&caller)?;
    let http = http.without_deadline_header();
    Ok(match name {
        "static_limit" => {
            let limit = ConcurrencyLimitLayer::new(STATIC_LIMIT)?;
            let client = preset.breaker(limit).build()?;
            (BoxCloneService::new(client.layer(http)), None)
        }
        "adaptive_limit" => {
            let layer = AdaptiveLimitLayer::builder()
                .algorithm(Gradient2::builder().build()?)
                .classifier(HttpClassifier::new())
                .seed(seed)
                .build()?;
            let handle = layer.handle();
            let client = preset.breaker(layer).build()?;
            (BoxCloneService::new(client.layer(http)), Some(handle))
        }
        "shed" => {
            let shed = tower::ServiceBuilder::new()
                .layer(LoadShedLayer::new())
                .layer(tower::limit::ConcurrencyLimitLayer::new(STATIC_LIMIT));
            let client = preset.breaker(shed).build()?;
            (BoxCloneService::new(client.layer(http)), None)
        }
        _ => (
            BoxCloneService::new(preset.build()?.layer(http)),
            None,
        ),
    })
}

pub(crate) async fn run(opts: Options) -> Result<Findings, BoxError> {
    let duration = Duration::from_secs(if opts.quick { 2 } else { 10 });
    let mean_work = (WORK_MIN + WORK_MAX) / 2;
    let capacity_per_s = WORKERS as f64 / mean_work.as_secs_f64();
    let rate = OVERLOAD * capacity_per_s;
    let latency = Latency::Uniform {
        min: WORK_MIN,
        max: WORK_MAX,
    };

    let mut reports = Vec::new();
    for name in ["none", "static_limit", "adaptive_limit", "shed"] {
        let ledger = Arc::new(Ledger::new());
        let server = Server::start(
            ServerConfig::new(SERVER, opts.seed)
                .latency(latency)
                .capacity(Capacity {
                    limit: WORKERS,
                    queue: QUEUE,
                    reject_cost: Duration::ZERO,
                })
                .ledger(Arc::clone(&ledger)),
        )
        .await?;
        let http = opts.http_client()?.ledger(Arc::clone(&ledger));
        let (svc, limit) = stack(name, http, opts.seed)?;
        let progress = Progress::start(
            format!("overload_adaptive/{name}"),
            Total::Time(duration),
            opts.progress,
        );
        // The same arrival times for every variant.
        let records = open_loop(
            svc,
            server.uri().clone(),
            rate,
            duration,
            opts.seed,
            Some(Arc::clone(&ledger)),
            progress.counter(),
        )
        .await?;
        progress.finish();
        let final_limit = limit.map(|l| l.limit());
        // What `none` left queued is served for nobody; count it if it drains in time.
        let drained = server
            .drain(Duration::from_millis(if opts.quick { 250 } else { 5000 }))
            .await;
        let stats = server.stats();
        let summary = Summary::of(&records);
        let ok_latencies = |from: usize| {
            let mut ok: Vec<Duration> = records[from..]
                .iter()
                .filter(|r| r.ok())
                .map(|r| r.latency)
                .collect();
            ok.sort_unstable();
            ok
        };
        let ok = ok_latencies(0);
        // Records are in arrival order: the last quarter shows where a limit is heading.
        let last_quarter = ok_latencies(records.len() * 3 / 4);
        let wasted = ledger.served_after_caller_gave_up(SERVER);
        let mut report = VariantReport::new(name, &summary, stats.calls)
            .json_metric("goodput", Value::Count(summary.succeeded))
            .metric(
                "goodput_per_s",
                "goodput/s",
                Value::Number(summary.succeeded as f64 / duration.as_secs_f64(), 1),
            )
            .metric("success_rate", "success", Value::Ratio(summary.success_rate()))
            .metric(
                "p99_ok_ms",
                "p99 ok ms",
                Value::Number(percentile_ms(&ok, 0.99), 1),
            )
            .json_metric("p50_ok_ms", Value::Number(percentile_ms(&ok, 0.5), 1))
            .metric(
                "refused",
                "refused",
                Value::Count(summary.requests.saturating_sub(stats.calls)),
            )
            .metric(
                "served_for_nobody",
                "served for nobody",
                Value::Count(wasted),
            )
            .json_metric("served", Value::Count(stats.served))
            .json_metric("server_drained", Value::Count(u64::from(drained)))
            .timeline(server.timeline(&records));
        let shown_limit = match name {
            "static_limit" | "shed" => Some(STATIC_LIMIT),
            _ => final_limit,
        };
        if let Some(l) = shown_limit {
            report = report.metric("limit", "limit", Value::Count(l as u64));
        }
        // Absent when nothing that arrived in the last quarter succeeded (`none`).
        if !last_quarter.is_empty() {
            report = report.metric(
                "p99_ok_last_quarter_ms",
                "p99 ok, last 25%",
                Value::Number(percentile_ms(&last_quarter, 0.99), 1),
            );
        }
        reports.push(report);
    }

    let get = |variant: &str, key: &str| value(&reports, variant, key);
    let capacity = capacity_per_s;
    let none_good = get("none", "goodput_per_s");
    let mut targets = Vec::new();
    for name in ["static_limit", "adaptive_limit", "shed"] {
        let good = get(name, "goodput_per_s");
        let p99 = get(name, "p99_ok_ms");
        targets.push(Target::new(
            good >= 0.8 * capacity && good >= 1.5 * none_good,
            format!(
                "{name} keeps goodput >= 80% of capacity ({:.0}/s) and >= 1.5x none's: {good:.1}/s vs none {none_good:.1}/s",
                0.8 * capacity
            ),
        ));
        targets.push(Target::new(
            p99 <= DEADLINE.as_secs_f64() * 1e3 / 2.0,
            format!(
                "{name}: p99 of successful requests <= half the deadline ({:.0} ms), got {p99:.1} ms",
                DEADLINE.as_secs_f64() * 1e3 / 2.0
            ),
        ));
    }

    Ok(Findings {
        config: vec![
            (
                "server",
                format!(
                    "{WORKERS} calls at once, {} each (~{capacity_per_s:.0} calls/s), unbounded FIFO queue, does not notice callers that gave up",
                    latency.describe()
                ),
            ),
            (
                "load",
                format!(
                    "Poisson arrivals at {rate:.0} requests/s ({OVERLOAD:.0}x capacity) for {}, open loop; deadline {} per request, no retries",
                    ms(duration),
                    ms(DEADLINE)
                ),
            ),
            (
                "static_limit",
                format!("ConcurrencyLimitLayer, fail fast at {STATIC_LIMIT} in flight (hand-tuned: {WORKERS} workers + 4)"),
            ),
            (
                "adaptive_limit",
                "AdaptiveLimitLayer + Gradient2 at its defaults (Netflix's: initial 20, tolerance 1.5, smoothing 0.2, queue 4, long window 600; long-term RTT <= 2x the no-load RTT probed at 3 in flight), 100 ms windows; limit = its value at the end".to_owned(),
            ),
            (
                "shed",
                format!("LoadShedLayer over tower's ConcurrencyLimit({STATIC_LIMIT}) (backpressure by readiness, shed when not ready)"),
            ),
            (
                "columns",
                "goodput = requests that succeeded; p99 ok = p99 of successful requests (last 25% = of those that arrived in the last quarter of the run); refused = requests failed by the client's layer without reaching the server; served for nobody = calls the server finished after their caller gave up".to_owned(),
            ),
        ],
        variants: reports,
        targets,
    })
}
