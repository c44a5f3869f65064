//! Per-call overhead of each steadfast layer beside its tower counterpart.
//!
//! Every benchmark makes one `ready()` + `call()` + `.await` per iteration on an always-ready
//! inner service that answers at once ([`Echo`]), on a current-thread runtime. After the
//! criterion groups it prints steadfast / tower ratios of the medians criterion estimated in
//! this run (target: at most 1.0 for each pair).
//!
//! ```text
//! cargo bench -p steadfast-benches --bench overhead
//! STEADFAST_BENCH_QUICK=1 cargo bench -p steadfast-benches --bench overhead   # short run
//! ```

use std::time::Duration;

use criterion::Criterion;
use steadfast_benches::{
    criterion_dir, interleaved_medians, quick_mode, read_median_ns, run_calls, runtime,
    summary_table, AttemptsPolicy, Echo, FileTime, TpsBudgetPolicy, BARE_GROUP, BARE_ID,
    MAX_ATTEMPTS, OURS, THEIRS, TIMEOUT,
};
use steadfast_layers::deadline::DeadlineLayer;
use steadfast_layers::retry::RetryLayer;
use steadfast_layers::timeout::AttemptTimeoutLayer;
use tokio::runtime::Runtime;
use tower::retry::Retry;
use tower::timeout::Timeout;
use tower::{Layer, Service, ServiceBuilder};

/// Benchmarks `ours` and `theirs` as `group/steadfast` and `group/tower`; then, if criterion
/// measured them (bench mode, not filtered out), measures both again in alternation and
/// returns those medians.
fn pair<A, B>(
    c: &mut Criterion,
    rt: &Runtime,
    group: &'static str,
    mut ours: A,
    mut theirs: B,
) -> Option<(&'static str, (f64, f64))>
where
    A: Service<u32, Response = u32>,
    A::Error: std::fmt::Debug,
    B: Service<u32, Response = u32>,
    B::Error: std::fmt::Debug,
{
    let mut ran = false;
    let mut g = c.benchmark_group(group);
    g.bench_function(OURS, |b| {
        ran = true;
        b.iter_custom(|iters| rt.block_on(run_calls(&mut ours, iters)))
    });
    g.bench_function(THEIRS, |b| {
        b.iter_custom(|iters| rt.block_on(run_calls(&mut theirs, iters)))
    });
    g.finish();
    if !ran || !bench_mode() {
        return None;
    }
    let (rounds, calls) = if quick_mode() {
        (7, 20_000)
    } else {
        (21, 100_000)
    };
    Some((
        group,
        interleaved_medians(rt, &mut ours, &mut theirs, rounds, calls),
    ))
}

/// Whether criterion runs in bench mode (`cargo bench`), not test or list mode.
/// A real measurement run: `cargo bench` passes `--bench`, and `--test` (smoke test) or
/// `--list` mean no measurement.
fn bench_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list")
}

fn retry_layer(budget: bool) -> RetryLayer {
    let builder = RetryLayer::builder().max_attempts(MAX_ATTEMPTS);
    let builder = if budget { builder } else { builder.no_budget() };
    builder.build().expect("valid retry configuration")
}

fn deadline_layer() -> DeadlineLayer {
    DeadlineLayer::new(TIMEOUT).expect("valid deadline configuration")
}

fn benches(c: &mut Criterion, rt: &Runtime) -> Vec<(&'static str, (f64, f64))> {
    let mut bare = Echo;
    c.benchmark_group(BARE_GROUP).bench_function(BARE_ID, |b| {
        b.iter_custom(|iters| rt.block_on(run_calls(&mut bare, iters)))
    });

    let mut cross = Vec::new();
    cross.extend(pair(
        c,
        rt,
        "deadline",
        deadline_layer().layer(Echo),
        Timeout::new(Echo, TIMEOUT),
    ));

    cross.extend(pair(
        c,
        rt,
        "attempt_timeout",
        AttemptTimeoutLayer::new(TIMEOUT)
            .expect("valid timeout configuration")
            .layer(Echo),
        Timeout::new(Echo, TIMEOUT),
    ));

    cross.extend(pair(
        c,
        rt,
        "retry_budget",
        retry_layer(true).layer(Echo),
        Retry::new(TpsBudgetPolicy::finagle(), Echo),
    ));

    cross.extend(pair(
        c,
        rt,
        "retry_no_budget",
        retry_layer(false).layer(Echo),
        Retry::new(AttemptsPolicy::default(), Echo),
    ));

    cross.extend(pair(
        c,
        rt,
        "stack",
        ServiceBuilder::new()
            .layer(deadline_layer())
            .layer(retry_layer(true))
            .service(Echo),
        ServiceBuilder::new()
            .timeout(TIMEOUT)
            .retry(TpsBudgetPolicy::finagle())
            .service(Echo),
    ));
    cross
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

    let cross = benches(&mut c, &rt);
    c.final_summary();

    print!(
        "{}",
        summary_table(
            |group, id| read_median_ns(&dir, group, id, started),
            |group| cross.iter().find(|(g, _)| *g == group).map(|(_, m)| *m),
        )
    );
}
