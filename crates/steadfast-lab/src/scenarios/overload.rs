//! `overload`: open-loop arrivals at twice what the server can serve.
//!
//! The server works on at most [`CAPACITY`] calls at once (20-60 ms each, so about 200 calls/s),
//! queues [`QUEUE`] more and answers 503 beyond that. Rejecting is not free: each 503 costs
//! [`REJECT_COST`] of worker time, paid by the next call to start (parsing, authentication and
//! answering all take CPU; "the cost of rejecting a request is not negligible", as the Google
//! SRE book puts it). Requests arrive as a Poisson process at 400/s for a fixed time, whatever
//! happens to earlier ones, so retries add to the load instead of slowing the arrivals. Callers
//! give each request a 1 s deadline and each attempt 200 ms; the server does not notice a caller
//! that gave up, so queued work that comes too late is wasted.
//!
//! Without a budget every rejected or timed-out attempt is retried (up to 3 attempts), so the
//! server receives well over twice the calls, spends more of its time rejecting and less
//! serving, and goodput falls. A [`RatioBudget`](steadfast_layers::retry::RatioBudget) of 10 %
//! of requests (no per-second floor) keeps the extra load at 10 % at most. Were rejections free
//! (`REJECT_COST` = 0), naive retries would cost nothing in goodput here: the server is saturated
//! either way; the lab shows the realistic case.

use std::sync::Arc;
use std::time::Duration;

use super::ms;
use crate::client::{lab_client, CallerConfig, Retries};
use crate::ledger::Ledger;
use crate::load::{open_loop, Summary};
use crate::progress::{Progress, Total};
use crate::report::{value, Findings, Target, Value, VariantReport};
use crate::server::{Capacity, Latency, Server, ServerConfig};
use crate::{BoxError, Options};

pub(crate) const SUMMARY: &str =
    "Arrivals at 2x the server's capacity: do retries amplify the overload, and how much goodput is left?";

/// Calls the server works on at once.
const CAPACITY: usize = 8;
/// Calls it queues beyond that.
const QUEUE: usize = 16;
/// Worker time a rejection costs.
const REJECT_COST: Duration = Duration::from_millis(2);
const WORK_MIN: Duration = Duration::from_millis(20);
const WORK_MAX: Duration = Duration::from_millis(60);
/// Offered load over capacity.
const OVERLOAD: f64 = 2.0;
const DEADLINE: Duration = Duration::from_secs(1);
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(200);

pub(crate) async fn run(opts: Options) -> Result<Findings, BoxError> {
    let duration = Duration::from_secs(if opts.quick { 3 } else { 10 });
    let mean_work = (WORK_MIN + WORK_MAX) / 2;
    let capacity_per_s = CAPACITY as f64 / mean_work.as_secs_f64();
    let rate = OVERLOAD * capacity_per_s;
    let caller = |retries| CallerConfig {
        deadline: DEADLINE,
        attempt_timeout: Some(ATTEMPT_TIMEOUT),
        retries,
        backoff: (Duration::from_millis(25), Duration::from_millis(250)),
        seed: opts.seed,
        propagate: None,
    };
    let budgeted = Retries::Budgeted {
        max_attempts: 3,
        ratio: 0.1,
        min_retries_per_sec: 0,
    };
    let variants = [
        ("none", Retries::None),
        ("naive_retry", Retries::Naive { max_attempts: 3 }),
        ("budgeted_retry", budgeted),
    ];

    let mut reports = Vec::new();
    for (name, retries) in variants {
        let ledger = Arc::new(Ledger::new());
        let server = Server::start(
            ServerConfig::new("overload", opts.seed)
                .latency(Latency::Uniform {
                    min: WORK_MIN,
                    max: WORK_MAX,
                })
                .capacity(Capacity {
                    limit: CAPACITY,
                    queue: QUEUE,
                    reject_cost: REJECT_COST,
                })
                .ledger(Arc::clone(&ledger)),
        )
        .await?;
        let http = opts.http_client()?.ledger(Arc::clone(&ledger));
        let svc = lab_client(&caller(retries), http)?;
        let progress = Progress::start(
            format!("overload/{name}"),
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
        server.drain(Duration::from_secs(5)).await;
        let stats = server.stats();
        let summary = Summary::of(&records);
        let late = ledger.served_after_attempt_abandoned("overload");
        reports.push(
            VariantReport::new(name, &summary, stats.calls)
                .json_metric("goodput", Value::Count(summary.succeeded))
                .metric(
                    "goodput_per_s",
                    "goodput/s",
                    Value::Number(summary.succeeded as f64 / duration.as_secs_f64(), 1),
                )
                .metric("success_rate", "success", Value::Ratio(summary.success_rate()))
                .metric("rejected", "rejected", Value::Count(stats.rejected))
                .metric("served_too_late", "served late", Value::Count(late))
                .metric(
                    "worker_time_rejecting",
                    "time rejecting",
                    Value::Ratio(if stats.busy.is_zero() {
                        0.0
                    } else {
                        (REJECT_COST * u32::try_from(stats.rejected).unwrap_or(u32::MAX))
                            .as_secs_f64()
                            / stats.busy.as_secs_f64()
                    }),
                )
                .json_metric("served", Value::Count(stats.served))
                .timeline(server.timeline(&records)),
        );
    }

    let get = |variant: &str, key: &str| value(&reports, variant, key);
    let budget_amp = get("budgeted_retry", "amplification");
    let naive_amp = get("naive_retry", "amplification");
    let budget_good = get("budgeted_retry", "goodput");
    let naive_good = get("naive_retry", "goodput");
    let targets = vec![
        Target::new(
            budget_amp <= 1.1,
            format!("budgeted_retry amplification <= 1.10, got {budget_amp:.2}"),
        ),
        Target::new(
            naive_amp >= 2.0,
            format!("naive_retry amplification >= 2.00 (a retry storm), got {naive_amp:.2}"),
        ),
        Target::new(
            budget_good >= naive_good,
            format!(
                "budgeted_retry goodput >= naive_retry goodput, got {budget_good:.0} vs {naive_good:.0}"
            ),
        ),
    ];

    Ok(Findings {
        config: vec![
            (
                "server",
                format!(
                    "{CAPACITY} calls at once, {} each (~{capacity_per_s:.0} calls/s), {QUEUE} more queued, 503 beyond; each 503 costs {} of worker time",
                    Latency::Uniform { min: WORK_MIN, max: WORK_MAX }.describe(),
                    ms(REJECT_COST)
                ),
            ),
            (
                "load",
                format!(
                    "Poisson arrivals at {rate:.0} requests/s ({OVERLOAD:.0}x capacity) for {:.0} s, open loop",
                    duration.as_secs_f64()
                ),
            ),
            (
                "callers",
                format!(
                    "deadline {}, attempt timeout {}, backoff exponential 25-250 ms full jitter",
                    ms(DEADLINE),
                    ms(ATTEMPT_TIMEOUT)
                ),
            ),
            ("naive", Retries::Naive { max_attempts: 3 }.describe()),
            ("budgeted", budgeted.describe()),
            (
                "columns",
                "goodput = requests that succeeded (the succeeded column); served late = calls the server finished after the caller's attempt had timed out (wasted work); time rejecting = share of worker time spent answering 503s".to_owned(),
            ),
        ],
        variants: reports,
        targets,
    })
}
