//! What steadfast's layers cost together, and on their failure paths, beside the nearest peer
//! stacks, in the same run (issue 17; the findings are in `docs/adr/0008-stack-cost.md`).
//!
//! Every benchmark makes one `ready()` + `call()` + `.await` per iteration on a current-thread
//! runtime, on an inner service that answers at once ([`Echo`]), or that is pending once before
//! it answers ([`PendingOnce`]: every timer in the stack is armed), or that fails ([`Refuse`],
//! to trip a breaker). The stacks, outermost first:
//!
//! - two layers: deadline -> budgeted retry, beside tower's timeout -> retry (`TpsBudget`);
//! - four: deadline -> budgeted retry -> load shed -> concurrency limit, beside tower's same four;
//! - five, the presets' standard client order: deadline -> budgeted retry -> circuit breaker ->
//!   attempt timeout -> concurrency limit, beside tower's timeout -> budgeted retry -> load shed
//!   -> timeout -> concurrency limit (tower has no breaker; load shed stands in its place).
//!
//! Then single layers on the paths the stacks do not show:
//! - the deadline when the call is pending once, beside tower's `Timeout` and, for information,
//!   beside the same work done with tokio's own parts (`timeout_at` in a `task_local!` scope
//!   that carries the deadline to the inner call on every poll, which tower's `Timeout` does not);
//! - an open breaker refusing calls with default settings on a current-thread runtime (a break
//!   timer armed, the clock checked on every 4th refusal; and, for information, with
//!   `BreakTimer::Always`, which checks it on every 64th where the caller says the runtime keeps
//!   running) and a closed breaker with a 30 s time window, both beside failsafe's;
//! - load shedding, beside tower's;
//! - a retry with no budget, beside seatbelt's (and tower's, for information).
//!
//! After the criterion groups it measures each pair again in alternation and prints
//! steadfast / peer ratios with their targets.
//!
//! ```text
//! cargo bench -p steadfast-benches --bench stacks
//! STEADFAST_BENCH_QUICK=1 cargo bench -p steadfast-benches --bench stacks   # short run
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::Criterion;
use seatbelt::retry::Retry as SeatbeltRetry;
use seatbelt::{RecoveryInfo, ResilienceContext};
use steadfast_benches::{
    comparison_table, criterion_dir, quick_mode, read_median_ns, run_calls, runtime,
    AttemptsPolicy, Comparison, Echo, FileTime, PendingOnce, Refuse, Target, TpsBudgetPolicy,
    BARE_GROUP, BARE_ID, MAX_ATTEMPTS, TIMEOUT,
};
use steadfast_layers::breaker::{BreakDuration, BreakTimer, BreakerState, CircuitBreakerLayer};
use steadfast_layers::deadline::DeadlineLayer;
use steadfast_layers::limit::ConcurrencyLimitLayer;
use steadfast_layers::retry::RetryLayer;
use steadfast_layers::shed::LoadShedLayer;
use steadfast_layers::timeout::AttemptTimeoutLayer;
use tokio::runtime::Runtime;
use tokio::task::futures::TaskLocalFuture;
use tokio::time::Instant;
use tower::load_shed::LoadShed;
use tower::retry::Retry;
use tower::timeout::Timeout;
use tower::{Layer, Service, ServiceBuilder};

#[path = "harness.rs"]
mod harness;
use harness::{
    calls, failsafe_default, find, group, rejections, trip, tripped_failsafe, Cross, InlineError,
    LONG_BREAK,
};

/// Benchmark id of tower in a group.
const TOWER: &str = "tower";
/// Benchmark id of `failsafe` in a group.
const FAILSAFE: &str = "failsafe";
/// Benchmark id of `seatbelt` in a group.
const SEATBELT: &str = "seatbelt";

/// Benchmark id of [`TokioScoped`] in a group.
const TOKIO_SCOPED: &str = "tokio_scoped";

/// Calls every concurrency limit admits at once, on both sides (one is ever used).
const MAX_IN_FLIGHT: usize = 25;

/// Every row of the table, in order, with the issue's targets.
const ROWS: &[Comparison] = &[
    Comparison {
        group: "stack2",
        peer: Some(TOWER),
        label: "deadline > retry(budget) vs tower, instant",
        target: Target::AtMost(1.0),
    },
    Comparison {
        group: "stack2_pending",
        peer: Some(TOWER),
        label: "deadline > retry(budget) vs tower, pending once",
        target: Target::AtMost(1.0),
    },
    Comparison {
        group: "stack4",
        peer: Some(TOWER),
        label: "deadline > retry > shed > limit vs tower, instant",
        target: Target::AtMost(1.0),
    },
    Comparison {
        group: "stack4_pending",
        peer: Some(TOWER),
        label: "deadline > retry > shed > limit vs tower, pending once",
        target: Target::AtMost(1.0),
    },
    Comparison {
        group: "stack5",
        peer: Some(TOWER),
        label: "standard order (5 layers) vs tower, instant",
        target: Target::AtMost(1.0),
    },
    Comparison {
        group: "stack5_pending",
        peer: Some(TOWER),
        label: "standard order (5 layers) vs tower, pending once",
        target: Target::AtMost(1.0),
    },
    Comparison {
        group: "deadline_pending",
        peer: Some(TOWER),
        label: "deadline vs tower Timeout, pending once",
        target: Target::AtMost(1.0),
    },
    Comparison {
        group: "deadline_pending",
        peer: Some(TOKIO_SCOPED),
        label: "deadline vs tokio timeout_at in a task_local scope, pending once",
        target: Target::Report,
    },
    Comparison {
        group: "breaker_open_default",
        peer: Some(FAILSAFE),
        label: "breaker open (default, current-thread, inline error) vs failsafe",
        target: Target::AtMost(1.0),
    },
    Comparison {
        group: "breaker_open_boxed",
        peer: Some(FAILSAFE),
        label: "breaker open (default, current-thread, BoxError) vs failsafe",
        target: Target::Report,
    },
    Comparison {
        group: "breaker_open_timer",
        peer: Some(FAILSAFE),
        label: "breaker open (BreakTimer::Always, current-thread, inline error) vs failsafe",
        target: Target::Report,
    },
    Comparison {
        group: "breaker_time_window",
        peer: Some(FAILSAFE),
        label: "breaker closed, 30 s time window vs failsafe",
        target: Target::AtMost(1.0),
    },
    Comparison {
        group: "load_shed",
        peer: Some(TOWER),
        label: "load shed vs tower LoadShed",
        target: Target::AtMost(1.2),
    },
    Comparison {
        group: "retry_no_budget",
        peer: Some(SEATBELT),
        label: "retry, no budget, vs seatbelt retry",
        target: Target::AtMost(0.5),
    },
    Comparison {
        group: "retry_no_budget",
        peer: Some(TOWER),
        label: "retry, no budget, vs tower Retry",
        target: Target::Report,
    },
];

fn deadline() -> DeadlineLayer {
    DeadlineLayer::new(TIMEOUT).expect("valid deadline")
}

fn retry(budget: bool) -> RetryLayer {
    let builder = RetryLayer::builder().max_attempts(MAX_ATTEMPTS);
    let builder = if budget { builder } else { builder.no_budget() };
    builder.build().expect("valid retry")
}

fn breaker() -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .build()
        .expect("valid breaker")
}

fn attempt_timeout() -> AttemptTimeoutLayer {
    AttemptTimeoutLayer::new(TIMEOUT).expect("valid attempt timeout")
}

fn limit() -> ConcurrencyLimitLayer {
    ConcurrencyLimitLayer::new(MAX_IN_FLIGHT).expect("valid limit")
}

/// The three stacks around `$inner`, each beside tower's, as groups `$two`, `$four`, `$five`.
macro_rules! stacks {
    ($c:expr, $rt:expr, $cross:expr, $inner:expr, $two:literal, $four:literal, $five:literal) => {{
        let (c, rt, cross) = ($c, $rt, $cross);
        group(
            c,
            cross,
            $two,
            calls(
                rt,
                ServiceBuilder::new()
                    .layer(deadline())
                    .layer(retry(true))
                    .service($inner),
            ),
            vec![(
                TOWER,
                calls(
                    rt,
                    ServiceBuilder::new()
                        .timeout(TIMEOUT)
                        .retry(TpsBudgetPolicy::finagle())
                        .service($inner),
                ),
            )],
        );
        group(
            c,
            cross,
            $four,
            calls(
                rt,
                ServiceBuilder::new()
                    .layer(deadline())
                    .layer(retry(true))
                    .layer(LoadShedLayer::new())
                    .layer(limit())
                    .service($inner),
            ),
            vec![(
                TOWER,
                calls(
                    rt,
                    ServiceBuilder::new()
                        .timeout(TIMEOUT)
                        .retry(TpsBudgetPolicy::finagle())
                        .load_shed()
                        .concurrency_limit(MAX_IN_FLIGHT)
                        .service($inner),
                ),
            )],
        );
        group(
            c,
            cross,
            $five,
            calls(
                rt,
                ServiceBuilder::new()
                    .layer(deadline())
                    .layer(retry(true))
                    .layer(breaker())
                    .layer(attempt_timeout())
                    .layer(limit())
                    .service($inner),
            ),
            vec![(
                TOWER,
                calls(
                    rt,
                    ServiceBuilder::new()
                        .timeout(TIMEOUT)
                        .retry(TpsBudgetPolicy::finagle())
                        .load_shed()
                        .timeout(TIMEOUT)
                        .concurrency_limit(MAX_IN_FLIGHT)
                        .service($inner),
                ),
            )],
        );
    }};
}

tokio::task_local! {
    /// The deadline in scope, for [`TokioScoped`].
    static SCOPED_DEADLINE: Instant;
}

/// A deadline enforced and carried with tokio's own parts, for information beside the
/// deadline layer: the deadline fixed from one clock read, the inner call made inside a
/// `task_local!` scope holding it, and its future run under `timeout_at` in that scope, entered
/// on every poll. This is the deadline layer's work (enforce, and carry to the inner call on
/// every poll) as a tower user would write it; tower's `Timeout` enforces without carrying.
#[derive(Clone, Copy, Debug)]
struct TokioScoped<S>(S);

impl<S: Service<u32>> Service<u32> for TokioScoped<S> {
    type Response = S::Response;
    type Error = Option<S::Error>;
    type Future = Flatten<TaskLocalFuture<Instant, tokio::time::Timeout<S::Future>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx).map_err(Some)
    }

    fn call(&mut self, req: u32) -> Self::Future {
        let deadline = Instant::now() + TIMEOUT;
        let inner = SCOPED_DEADLINE.sync_scope(deadline, || self.0.call(req));
        Flatten(SCOPED_DEADLINE.scope(deadline, tokio::time::timeout_at(deadline, inner)))
    }
}

/// [`TokioScoped`]'s response future: the timeout's `Elapsed` as `None`.
#[pin_project::pin_project]
#[derive(Debug)]
struct Flatten<F>(#[pin] F);

impl<F, T, E> Future for Flatten<F>
where
    F: Future<Output = Result<Result<T, E>, tokio::time::error::Elapsed>>,
{
    type Output = Result<T, Option<E>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project()
            .0
            .poll(cx)
            .map(|out| out.map_err(|_| None).and_then(|r| r.map_err(Some)))
    }
}

fn singles(c: &mut Criterion, rt: &Runtime, cross: &mut Cross) {
    group(
        c,
        cross,
        "deadline_pending",
        calls(rt, deadline().layer(PendingOnce)),
        vec![
            (TOWER, calls(rt, Timeout::new(PendingOnce, TIMEOUT))),
            (TOKIO_SCOPED, calls(rt, TokioScoped(PendingOnce))),
        ],
    );

    // Open with default settings (a break far longer than the run), tripped and refusing on a
    // current-thread runtime, where `BreakTimer::Auto` arms a break timer and checks the clock
    // on every 4th refusal (ADR 0008, decision 17): with an error type that holds the refusal inline, as failsafe's
    // does (no allocation), and with `BoxError`, the default (one box per refusal).
    let open_with = |timer: BreakTimer| {
        CircuitBreakerLayer::builder()
            .break_duration(BreakDuration::constant(LONG_BREAK))
            .break_timer(timer)
            .build()
            .expect("valid breaker")
    };
    let open = || open_with(BreakTimer::default());
    macro_rules! open_group {
        ($name:expr, $layer:expr) => {{
            let layer = $layer;
            let mut ours = layer.layer(Refuse);
            trip(rt, &mut ours, 100);
            assert_eq!(layer.handle().state(), BreakerState::Open);
            group(
                c,
                cross,
                $name,
                rejections(rt, ours),
                vec![(FAILSAFE, rejections(rt, tripped_failsafe(rt)))],
            );
        }};
    }
    open_group!("breaker_open_default", open().with_error::<InlineError>());
    open_group!("breaker_open_boxed", open());
    // The same with `BreakTimer::Always`, the caller's word that this runtime keeps running (a
    // current-thread runtime drives timers only while its tasks yield, ADR 0003): refusals then
    // read the clock only as the timer's watchdog, every 64th refusal instead of every 4th.
    open_group!(
        "breaker_open_timer",
        open_with(BreakTimer::Always).with_error::<InlineError>()
    );

    // Closed, counting the calls of the last 30 s (failsafe's default is a time window too).
    let ours = CircuitBreakerLayer::builder()
        .time_window(Duration::from_secs(30))
        .build()
        .expect("valid breaker")
        .layer(Echo);
    group(
        c,
        cross,
        "breaker_time_window",
        calls(rt, ours),
        vec![(FAILSAFE, calls(rt, failsafe_default(Echo)))],
    );

    group(
        c,
        cross,
        "load_shed",
        calls(rt, LoadShedLayer::new().layer(Echo)),
        vec![(TOWER, calls(rt, LoadShed::new(Echo)))],
    );

    // seatbelt's retry with the same attempts (2 retries), retrying every error.
    let context = ResilienceContext::<u32, Result<u32, Infallible>>::new(tick::Clock::new_tokio())
        .name("bench");
    let seatbelt = SeatbeltRetry::layer("retry", &context)
        .clone_input()
        .recovery_with(|out: &Result<u32, Infallible>, _| match out {
            Ok(_) => RecoveryInfo::never(),
            Err(_) => RecoveryInfo::retry(),
        })
        .max_retry_attempts(MAX_ATTEMPTS - 1)
        .layer(Echo);
    group(
        c,
        cross,
        "retry_no_budget",
        calls(rt, retry(false).layer(Echo)),
        vec![
            (SEATBELT, calls(rt, seatbelt)),
            (
                TOWER,
                calls(rt, Retry::new(AttemptsPolicy::default(), Echo)),
            ),
        ],
    );
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
    // seatbelt's clock is made in the runtime's context.
    let _context = rt.enter();

    let mut bare = Echo;
    c.benchmark_group(BARE_GROUP).bench_function(BARE_ID, |b| {
        b.iter_custom(|iters| rt.block_on(run_calls(&mut bare, iters)))
    });
    let mut cross = Cross::new();
    stacks!(&mut c, &rt, &mut cross, Echo, "stack2", "stack4", "stack5");
    stacks!(
        &mut c,
        &rt,
        &mut cross,
        PendingOnce,
        "stack2_pending",
        "stack4_pending",
        "stack5_pending"
    );
    singles(&mut c, &rt, &mut cross);
    c.final_summary();

    print!(
        "{}",
        comparison_table(
            "steadfast / peer, median ns per call (ready + call + await, current-thread runtime)",
            ROWS,
            |group, id| read_median_ns(&dir, group, id, started),
            |group, peer| find(&cross, group, peer),
        )
    );
}
