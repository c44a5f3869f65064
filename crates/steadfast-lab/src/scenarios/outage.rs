//! `outage`: the server is hard down for a while, then comes back.
//!
//! Requests arrive as a Poisson process at [`RATE`] per second, open loop (callers do not slow
//! down because the server fails). After a healthy start the server is down for a fixed window,
//! then healthy again. "Down" is chosen to be what callers most often meet in production when a
//! service is hard down: every call is answered **503 at once**, as a proxy in front of it with
//! no healthy backend answers (Envoy's "no healthy upstream"), or as a service whose database is
//! unreachable answers. (A crashed process on the same host would refuse connections instead, and
//! a partitioned host would let calls time out; with 503s the server can count every call that
//! still reaches it, which is what a breaker is meant to spare.)
//!
//! - `none`: every request goes to the server, outage or not.
//! - `breaker`: a [`CircuitBreakerLayer`] (fail fast) opens when half of the last 20 calls failed
//!   (judged after 10), refuses calls for a constant [`BREAK`], then lets [`PROBES`] probes
//!   through; it closes when they succeed and re-opens when they fail.
//! - `standard_breaker`: steadfast's standard client preset as a user builds it (10 s deadline,
//!   3 attempts with backoff within a retry budget, 3 s per attempt) with the same breaker in its
//!   slot. The retries above the breaker must not multiply the calls it refuses: a refused
//!   attempt waits out the rest of the break (the one error table's `circuit_open`), and the
//!   budget caps the rest.
//!
//! Measured: `calls_during_outage`, the calls that reached the server while it was down; and
//! `recovery_ms`, from the instant the server came back to the first request that succeeded
//! (completion time). A breaker trades some requests after the recovery (refused while its break
//! runs out: `failed_after_return`) for sparing the server during the outage; with a constant break
//! it must notice the recovery within one break plus one probe.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast_layers::breaker::{BreakDuration, BreakerState, CircuitBreakerLayer, Mode};
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{Layer, ServiceExt};

use super::ms;
use steadfast_http::classify::HttpClassifier;

use crate::client::{caller_layer, CallerConfig, LabRequest, LabResponse, Retries};
use crate::load::{open_loop, Summary};
use crate::progress::{Progress, Total};
use crate::report::{value, Findings, Target, Value, VariantReport};
use crate::server::{Latency, Outage, OutageKind, Server, ServerConfig};
use crate::timeline::BreakerLog;
use crate::{BoxError, Options};

pub(crate) const SUMMARY: &str =
    "The server is hard down (immediate 503s) for a while, then recovers: does a breaker spare it, and how soon does it notice the recovery?";

/// Arrivals per second.
const RATE: f64 = 200.0;
const WORK_MIN: Duration = Duration::from_millis(2);
const WORK_MAX: Duration = Duration::from_millis(6);
/// The breaker's constant break.
const BREAK: Duration = Duration::from_millis(500);
/// The breaker's count window, the calls it needs before judging, and its failure-rate threshold.
const WINDOW: u32 = 20;
const MIN_CALLS: u32 = 10;
const FAILURE_RATE: f64 = 0.5;
/// Probes admitted when the break is over.
const PROBES: u32 = 3;
/// What "one probe" may take in the recovery target: the wait for the next request to carry it
/// (exponential, mean 5 ms at 200/s; above 40 ms with probability e^-8) and its round trip
/// (2-6 ms), with room for a busy 2-core machine.
const PROBE_ALLOWANCE: Duration = Duration::from_millis(50);

/// The standard preset's retry budget (Finagle's defaults): 20 % of requests plus 10 retries/s
/// over a 10 s window.
const BUDGET_RATIO: f64 = 0.2;
const BUDGET_MIN_PER_SEC: u32 = 10;
const BUDGET_TTL_SECS: f64 = 10.0;

/// One call as the caller saw it: when it started and ended, and whether it succeeded.
type CallLog = Arc<Mutex<Vec<(Instant, Instant, bool)>>>;

type LabBoxService = BoxCloneService<LabRequest, LabResponse, BoxError>;

/// Wraps `inner` so that every call's start, end and success land in `log`.
fn logged(inner: LabBoxService, log: CallLog) -> LabBoxService {
    let svc = tower::service_fn(move |req: LabRequest| {
        let (inner, log) = (inner.clone(), Arc::clone(&log));
        async move {
            let start = Instant::now();
            let result = inner.oneshot(req).await;
            let ok = matches!(&result, Ok(res) if res.status().is_success());
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((start, Instant::now(), ok));
            result
        }
    });
    BoxCloneService::new(svc)
}

pub(crate) async fn run(opts: Options) -> Result<Findings, BoxError> {
    let (before, down, after) = if opts.quick {
        (
            Duration::from_millis(400),
            Duration::from_millis(1200),
            Duration::from_millis(900),
        )
    } else {
        (
            Duration::from_secs(2),
            Duration::from_secs(5),
            Duration::from_secs(3),
        )
    };
    let total = before + down + after;
    let latency = Latency::Uniform {
        min: WORK_MIN,
        max: WORK_MAX,
    };

    let mut reports = Vec::new();
    for name in ["none", "breaker", "standard_breaker"] {
        let server = Server::start(
            ServerConfig::new("outage", opts.seed)
                .latency(latency)
                .outage(Outage {
                    start: before,
                    duration: down,
                })
                .outage_kind(OutageKind::Unavailable),
        )
        .await?;
        let returned = server.started() + before + down;
        let trips = Arc::new(AtomicU32::new(0));
        let states = BreakerLog::new();
        let (svc, handle) = if name != "none" {
            let record = states.recorder();
            let counted = Arc::clone(&trips);
            let layer = CircuitBreakerLayer::builder()
                .count_window(WINDOW)
                .minimum_calls(MIN_CALLS)
                .failure_rate(FAILURE_RATE)
                .half_open_probes(PROBES)
                .break_duration(BreakDuration::constant(BREAK))
                .mode(Mode::FailFast)
                .seed(opts.seed)
                .on_transition(move |t| {
                    record(t);
                    if t.to == BreakerState::Open {
                        counted.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .classifier(HttpClassifier::new())
                .build()?;
            let handle = layer.handle();
            if name == "breaker" {
                (
                    BoxCloneService::new(layer.layer(opts.http_client()?)),
                    Some(handle),
                )
            } else {
                // The preset's defaults, as a user gets them, with the breaker in its slot.
                let caller = CallerConfig {
                    deadline: Duration::from_secs(10),
                    attempt_timeout: Some(Duration::from_secs(3)),
                    retries: Retries::Budgeted {
                        max_attempts: 3,
                        ratio: BUDGET_RATIO,
                        min_retries_per_sec: BUDGET_MIN_PER_SEC,
                    },
                    backoff: (Duration::from_millis(25), Duration::from_millis(250)),
                    seed: opts.seed,
                    propagate: None,
                };
                let client = caller_layer(&caller)?.breaker(layer).build()?;
                (
                    BoxCloneService::new(client.layer(opts.http_client()?.without_deadline_header())),
                    Some(handle),
                )
            }
        } else {
            (BoxCloneService::new(opts.http_client()?), None)
        };
        let log: CallLog = Arc::default();
        let svc = logged(svc, Arc::clone(&log));
        let progress = Progress::start(format!("outage/{name}"), Total::Time(total), opts.progress);
        let records = open_loop(
            svc,
            server.uri().clone(),
            RATE,
            total,
            opts.seed,
            None,
            progress.counter(),
        )
        .await?;
        progress.finish();
        server.drain(Duration::from_secs(1)).await;
        let stats = server.stats();
        let summary = Summary::of(&records);
        let timeline = server.timeline(&records);

        let calls = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let first_success = calls
            .iter()
            .filter(|(_, end, ok)| *ok && *end >= returned)
            .map(|(_, end, _)| *end)
            .min();
        // No success after the return: the whole remaining run, a lower bound (the target fails).
        let recovery = first_success.map_or(after, |t| t.saturating_duration_since(returned));
        let failed_after_return = calls
            .iter()
            .filter(|(start, _, ok)| !*ok && *start >= returned)
            .count() as u64;
        let refused = handle.as_ref().map_or(0, |h| h.metrics().rejected);

        reports.push(
            VariantReport::new(name, &summary, stats.calls)
                .metric("success_rate", "success", Value::Ratio(summary.success_rate()))
                .metric(
                    "calls_during_outage",
                    "calls in outage",
                    Value::Count(stats.unavailable_in_outage),
                )
                .metric("refused_by_breaker", "refused", Value::Count(refused))
                .metric(
                    "breaker_trips",
                    "trips",
                    Value::Count(u64::from(trips.load(Ordering::Relaxed))),
                )
                .metric(
                    "recovery_ms",
                    "recovery ms",
                    Value::Number(recovery.as_secs_f64() * 1e3, 1),
                )
                .metric(
                    "failed_after_return",
                    "failed after return",
                    Value::Count(failed_after_return),
                )
                .json_metric("recovered", Value::Count(u64::from(first_success.is_some())))
                .json_metric("served", Value::Count(stats.served))
                .timeline(if handle.is_some() {
                    timeline.breaker(states.changes(server.started()))
                } else {
                    timeline
                }),
        );
    }

    let get = |variant: &str, key: &str| value(&reports, variant, key);
    let none_calls = get("none", "calls_during_outage");
    let breaker_calls = get("breaker", "calls_during_outage");
    let cut = 1.0 - breaker_calls / none_calls;
    let none_recovery = get("none", "recovery_ms");
    let breaker_recovery = get("breaker", "recovery_ms");
    let bound_ms = (BREAK + PROBE_ALLOWANCE).as_secs_f64() * 1e3;
    let probe_ms = PROBE_ALLOWANCE.as_secs_f64() * 1e3;
    let recovered = |v: &str| get(v, "recovered") == 1.0;
    let standard_calls = get("standard_breaker", "calls_during_outage");
    let standard_cut = 1.0 - standard_calls / none_calls;
    let standard_recovery = get("standard_breaker", "recovery_ms");
    let refused = get("breaker", "refused_by_breaker");
    let standard_refused = get("standard_breaker", "refused_by_breaker");
    // Every retry the budget grants over the run (its window covers a quick run; a full run's
    // 10 s fits one window too): what retries above the breaker may add at most.
    let requests = reports
        .iter()
        .find(|r| r.name == "standard_breaker")
        .map_or(0.0, |r| r.requests as f64);
    let allowance = BUDGET_RATIO * requests + f64::from(BUDGET_MIN_PER_SEC) * BUDGET_TTL_SECS;
    let targets = vec![
        Target::new(
            none_calls > 0.0 && standard_cut >= 0.9,
            format!(
                "standard_breaker (the preset, retries above the breaker) cuts the calls reaching the server during the outage by >= 90% vs none: {standard_calls:.0} vs {none_calls:.0} ({:.1}% fewer)",
                standard_cut * 100.0
            ),
        ),
        Target::new(
            refused > 0.0 && standard_refused - refused <= allowance,
            format!(
                "retries above the open breaker do not multiply its refusals: the refusals they add fit the retry budget (20 % of requests + 10/s over 10 s: <= {allowance:.0}), not 3 attempts each: {standard_refused:.0} vs {refused:.0} without retries"
            ),
        ),
        Target::new(
            recovered("standard_breaker") && standard_recovery <= bound_ms,
            format!(
                "standard_breaker notices the recovery within one break plus one probe: recovery <= {bound_ms:.0} ms, got {standard_recovery:.1} ms"
            ),
        ),
        Target::new(
            none_calls > 0.0 && cut >= 0.9,
            format!(
                "breaker cuts the calls reaching the server during the outage by >= 90% vs none: {breaker_calls:.0} vs {none_calls:.0} ({:.1}% fewer)",
                cut * 100.0
            ),
        ),
        Target::new(
            recovered("breaker") && breaker_recovery <= bound_ms,
            format!(
                "breaker notices the recovery within one break plus one probe ({} + {}): recovery <= {bound_ms:.0} ms, got {breaker_recovery:.1} ms",
                ms(BREAK),
                ms(PROBE_ALLOWANCE)
            ),
        ),
        Target::new(
            recovered("none") && none_recovery <= probe_ms,
            format!(
                "none succeeds again with the next request after the return: recovery <= {probe_ms:.0} ms, got {none_recovery:.1} ms"
            ),
        ),
    ];

    Ok(Findings {
        config: vec![
            (
                "server",
                format!(
                    "serves in {}; hard down from {} to {} (every call answered 503 at once, as a proxy with no healthy backend answers), healthy again for the last {}",
                    latency.describe(),
                    ms(before),
                    ms(before + down),
                    ms(after)
                ),
            ),
            (
                "load",
                format!(
                    "Poisson arrivals at {RATE:.0} requests/s for {}, open loop; no retries (standard_breaker: the preset's 3 attempts within a 20 % + 10/s budget, 10 s deadline)",
                    ms(total)
                ),
            ),
            (
                "breaker",
                format!(
                    "fail fast; opens at {:.0}% failures over the last {WINDOW} calls (at least {MIN_CALLS}); break duration {} (constant); {PROBES} half-open probes",
                    FAILURE_RATE * 100.0,
                    ms(BREAK)
                ),
            ),
            (
                "columns",
                "calls in outage = calls that reached the server while it was down; refused = calls the breaker failed at once; trips = openings; recovery = from the server's return to the first success; failed after return = requests started after the return that failed".to_owned(),
            ),
        ],
        variants: reports,
        targets,
    })
}
