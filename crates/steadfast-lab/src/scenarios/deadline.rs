//! `deadline`: a two-hop chain, lab caller -> service A -> service B, where B is sometimes slow.
//!
//! The caller gives every request [`CALLER_TIMEOUT`] (its own `DeadlineLayer`) and gives up when
//! it passes, in both variants. B usually answers in 10-30 ms but 30 % of calls take 150-400 ms.
//!
//! - `without_deadline`: nothing is propagated. A and B do not know the caller has gone (like
//!   most servers, they do not notice a hung-up connection), so B finishes every slow call,
//!   long after anyone is waiting for it.
//! - `with_deadline`: the caller sends its remaining time in `x-request-timeout-ms`; A runs its
//!   handler in `Deadline::scope` built from it, its client to B wraps `DeadlineLayer::inherit()`
//!   and forwards what remains, each hop shaving [`HOP_MARGIN`]; B stops working when its
//!   deadline passes.
//!
//! `served_after_caller_gave_up` counts the calls B finished after the original caller had given
//! up, measured on one clock (the caller, A and B run in one process): 0 is the target with
//! deadlines, and it must be above 0 without them for the scenario to show anything.

use std::sync::Arc;
use std::time::Duration;

use super::ms;
use crate::client::{lab_client, CallerConfig, Retries};
use crate::ledger::Ledger;
use crate::load::{closed_loop, Summary};
use crate::progress::{Progress, Total};
use crate::report::{value, Findings, Target, Value, VariantReport};
use crate::server::{Latency, Server, ServerConfig, Upstream};
use crate::{BoxError, Options};

pub(crate) const SUMMARY: &str =
    "Caller -> A -> B with a slow tail at B: does B keep working for callers that have given up?";

/// How long the original caller waits.
const CALLER_TIMEOUT: Duration = Duration::from_millis(100);
/// What each hop shaves off the remaining time it forwards.
const HOP_MARGIN: Duration = Duration::from_millis(5);
const CONCURRENCY: usize = 16;

fn b_latency() -> Latency {
    let ms = Duration::from_millis;
    Latency::Bimodal {
        fast: (ms(10), ms(30)),
        slow: (ms(150), ms(400)),
        p_slow: 0.3,
    }
}

const A_WORK: Duration = Duration::from_millis(5);

pub(crate) async fn run(opts: Options) -> Result<Findings, BoxError> {
    let requests: u64 = if opts.quick { 300 } else { 1_500 };
    let caller_with = |propagate| CallerConfig {
        deadline: CALLER_TIMEOUT,
        attempt_timeout: None,
        retries: Retries::None,
        backoff: (Duration::from_millis(25), Duration::from_millis(250)),
        seed: opts.seed,
        propagate,
    };

    let mut reports = Vec::new();
    for (name, propagate) in [("without_deadline", false), ("with_deadline", true)] {
        let ledger = Arc::new(Ledger::new());
        let b = Server::start(
            ServerConfig::new("b", opts.seed)
                .latency(b_latency())
                .honor_deadline(true)
                .ledger(Arc::clone(&ledger)),
        )
        .await?;
        // A forwards whatever deadline it has; without a header from the caller it has none.
        let to_b = Upstream::new(b.uri().clone(), opts.http_client()?, Some(HOP_MARGIN));
        let a = Server::start(
            ServerConfig::new("a", opts.seed)
                .latency(Latency::Fixed(A_WORK))
                .honor_deadline(true)
                .upstream(to_b)
                .ledger(Arc::clone(&ledger)),
        )
        .await?;
        // The caller is steadfast's standard client preset: with propagation, its deadline
        // crosses the wire less a hop margin; without, the header is taken off again.
        let caller = caller_with(propagate.then_some(HOP_MARGIN));
        let http = opts.http_client()?.ledger(Arc::clone(&ledger));
        let svc = lab_client(&caller, http)?;
        let progress = Progress::start(
            format!("deadline/{name}"),
            Total::Requests(requests),
            opts.progress,
        );
        let records = closed_loop(
            svc,
            a.uri().clone(),
            requests,
            CONCURRENCY,
            Some(Arc::clone(&ledger)),
            progress.counter(),
        )
        .await?;
        progress.finish();
        // Let abandoned work finish (or be stopped) before counting it.
        a.drain(Duration::from_secs(5)).await;
        b.drain(Duration::from_secs(5)).await;
        let summary = Summary::of(&records);
        let bs = b.stats();
        let late = ledger.served_after_caller_gave_up("b");
        let (work, wasted) = ledger.work_time("b");
        reports.push(
            VariantReport::new(name, &summary, a.stats().calls)
                .metric("success_rate", "success", Value::Ratio(summary.success_rate()))
                .json_metric("b_calls", Value::Count(bs.calls))
                .metric("b_served", "B served", Value::Count(bs.served))
                .metric(
                    "b_stopped",
                    "B stopped",
                    Value::Count(bs.stopped_by_deadline + bs.expired_on_arrival),
                )
                .metric(
                    "served_after_caller_gave_up",
                    "served after give-up",
                    Value::Count(late),
                )
                .metric(
                    "b_work_ms",
                    "B work ms",
                    Value::Number(work.as_secs_f64() * 1e3, 0),
                )
                .metric(
                    "b_wasted_work_ms",
                    "B wasted ms",
                    Value::Number(wasted.as_secs_f64() * 1e3, 0),
                )
                .timeline(a.timeline(&records)),
        );
    }

    let late = |variant: &str| value(&reports, variant, "served_after_caller_gave_up");
    let with = late("with_deadline");
    let without = late("without_deadline");
    let targets = vec![
        Target::new(
            with == 0.0,
            format!("with_deadline: B serves nothing after the caller gave up (0), got {with:.0}"),
        ),
        Target::new(
            without > 0.0,
            format!(
                "without_deadline: B does work nobody waits for (> 0 served after give-up), got {without:.0}"
            ),
        ),
    ];

    Ok(Findings {
        config: vec![
            (
                "chain",
                format!(
                    "caller -> A ({} of work, then calls B) -> B ({})",
                    ms(A_WORK),
                    b_latency().describe()
                ),
            ),
            (
                "load",
                format!("{requests} requests from {CONCURRENCY} concurrent callers (closed loop), no retries"),
            ),
            (
                "caller",
                format!("gives up after {} (DeadlineLayer) in both variants", ms(CALLER_TIMEOUT)),
            ),
            (
                "with",
                format!(
                    "remaining time sent in x-request-timeout-ms, each hop shaving {}; A runs in Deadline::scope and calls B through DeadlineLayer::inherit(); B stops at its deadline",
                    ms(HOP_MARGIN)
                ),
            ),
            ("without", "no timeout header: A and B work until done".to_owned()),
        ],
        variants: reports,
        targets,
    })
}
