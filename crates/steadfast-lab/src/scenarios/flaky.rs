//! `flaky`: a server that answers 20 % of calls with a transient 503.
//!
//! Three callers send the same requests (so they meet the same faults): one without retries, one
//! with 3 attempts and no budget, one with 3 attempts within the library's default
//! [`RatioBudget`](steadfast_layers::retry::RatioBudget) (20 % of requests plus 10 retries/s over
//! 10 s). With independent 20 % failures, 3 attempts succeed 1 - 0.2^3 = 99.2 % of the time for
//! 1 + 0.2 + 0.04 = 1.24 calls per request; the budget caps the extra calls near 20 %.

use std::time::Duration;

use super::ms;
use crate::client::{lab_client, CallerConfig, Retries};
use crate::load::{closed_loop, Summary};
use crate::progress::{Progress, Total};
use crate::report::{value, Findings, Target, Value, VariantReport};
use crate::server::{Latency, Server, ServerConfig};
use crate::{BoxError, Options};

pub(crate) const SUMMARY: &str =
    "20% of calls fail with a transient 503: what do retries recover, and at what cost in extra load?";

const ERROR_RATE: f64 = 0.2;
const CONCURRENCY: usize = 32;
const DEADLINE: Duration = Duration::from_secs(2);
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(250);
/// The library's default budget (Finagle's): 20 % of requests plus 10 retries/s over 10 s.
const RETRY_RATIO: f64 = 0.2;
const MIN_RETRIES_PER_SEC: u32 = 10;

pub(crate) async fn run(opts: Options) -> Result<Findings, BoxError> {
    let requests: u64 = if opts.quick { 1_000 } else { 5_000 };
    let latency = Latency::Uniform {
        min: Duration::from_millis(1),
        max: Duration::from_millis(5),
    };
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
        ratio: RETRY_RATIO,
        min_retries_per_sec: MIN_RETRIES_PER_SEC,
    };
    let variants = [
        ("none", Retries::None),
        ("naive_retry", Retries::Naive { max_attempts: 3 }),
        ("budgeted_retry", budgeted),
    ];

    let mut reports = Vec::new();
    for (name, retries) in variants {
        let server = Server::start(
            ServerConfig::new("flaky", opts.seed)
                .error_rate(ERROR_RATE)
                .latency(latency),
        )
        .await?;
        let svc = lab_client(&caller(retries), opts.http_client()?)?;
        let progress = Progress::start(
            format!("flaky/{name}"),
            Total::Requests(requests),
            opts.progress,
        );
        let records = closed_loop(
            svc,
            server.uri().clone(),
            requests,
            CONCURRENCY,
            None,
            progress.counter(),
        )
        .await?;
        progress.finish();
        server.drain(Duration::from_secs(1)).await;
        let stats = server.stats();
        let summary = Summary::of(&records);
        reports.push(
            VariantReport::new(name, &summary, stats.calls)
                .metric("success_rate", "success", Value::Ratio(summary.success_rate()))
                .metric(
                    "retries",
                    "retries",
                    Value::Count(stats.calls.saturating_sub(summary.requests)),
                )
                .metric("injected_503s", "503s", Value::Count(stats.injected_errors))
                .timeline(server.timeline(&records)),
        );
    }

    let get = |variant: &str, key: &str| value(&reports, variant, key);
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    let none_ok = get("none", "success_rate");
    let naive_ok = get("naive_retry", "success_rate");
    let budget_ok = get("budgeted_retry", "success_rate");
    let budget_amp = get("budgeted_retry", "amplification");
    // What the budget allows over one 10 s window (the whole run): the ratio plus the reserve.
    let budget_cap = 1.0 + RETRY_RATIO + f64::from(MIN_RETRIES_PER_SEC) * 10.0 / requests as f64;
    let targets = vec![
        Target::new(
            (0.75..=0.85).contains(&none_ok),
            format!(
                "none succeeds on ~80% (the injected 503 rate): 75-85%, got {}",
                pct(none_ok)
            ),
        ),
        Target::new(
            naive_ok >= 0.98,
            format!(
                "naive_retry recovers transient failures: success >= 98% (theory 99.2%), got {}",
                pct(naive_ok)
            ),
        ),
        Target::new(
            budget_ok >= 0.95 && budget_amp <= budget_cap,
            format!(
                "budgeted_retry recovers nearly as much within its budget: success >= 95% and amplification <= {budget_cap:.2} (1 + 20% + 10/s x 10 s / {requests} requests), got {} and {budget_amp:.2}",
                pct(budget_ok)
            ),
        ),
    ];

    Ok(Findings {
        config: vec![
            (
                "server",
                format!(
                    "{:.0}% of calls answered 503 at once, the rest served in {}",
                    ERROR_RATE * 100.0,
                    latency.describe()
                ),
            ),
            (
                "load",
                format!("{requests} requests from {CONCURRENCY} concurrent callers (closed loop)"),
            ),
            (
                "callers",
                format!(
                    "deadline {}, attempt timeout {}, backoff exponential 25-250 ms full jitter",
                    ms(DEADLINE),
                    ms(ATTEMPT_TIMEOUT),
                ),
            ),
            ("naive", Retries::Naive { max_attempts: 3 }.describe()),
            ("budgeted", format!("{} (the library default)", budgeted.describe())),
        ],
        variants: reports,
        targets,
    })
}
