//! What the `layers` and `stacks` benches share: criterion groups of one steadfast side and its
//! peers with the interleaved A/B cross-check, and `failsafe`'s circuit breaker as a tower
//! service (failsafe is a dev-dependency, so this lives beside the benches, not in the library).

use std::fmt::Debug;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::Criterion;
use steadfast_benches::{
    interleaved_runs, quick_mode, run_calls, run_rejected_calls, Refuse, OURS,
};
use tokio::runtime::Runtime;
use tower::Service;

/// Times `n` calls on one side of a comparison.
pub(crate) type Runner<'a> = Box<dyn FnMut(u64) -> Duration + 'a>;

/// Interleaved `(steadfast, peer)` medians, by `(group, peer)`.
pub(crate) type Cross = Vec<((&'static str, &'static str), (f64, f64))>;

/// An error that holds a breaker's refusal inline, as `failsafe::Error<E>` holds its own: the
/// error type an open breaker is measured with beside failsafe's
/// ([`CircuitBreakerLayer::with_error`](steadfast_layers::breaker::CircuitBreakerLayer::with_error);
/// ADR 0008). Its payloads are read through `Debug` only.
#[derive(Debug)]
#[allow(dead_code)]
pub(crate) enum InlineError {
    Open(steadfast_layers::breaker::CircuitOpen),
    Overloaded(steadfast_layers::overload::Overloaded),
    Inner(std::io::Error),
}

impl From<steadfast_layers::breaker::CircuitOpen> for InlineError {
    fn from(e: steadfast_layers::breaker::CircuitOpen) -> Self {
        InlineError::Open(e)
    }
}

impl From<steadfast_layers::overload::Overloaded> for InlineError {
    fn from(e: steadfast_layers::overload::Overloaded) -> Self {
        InlineError::Overloaded(e)
    }
}

impl From<std::io::Error> for InlineError {
    fn from(e: std::io::Error) -> Self {
        InlineError::Inner(e)
    }
}

/// The break of every breaker tripped open here: far longer than the run.
pub(crate) const LONG_BREAK: Duration = Duration::from_secs(3_600);

/// `n` successful calls on `svc`, on `rt`.
pub(crate) fn calls<'a, S>(rt: &'a Runtime, mut svc: S) -> Runner<'a>
where
    S: Service<u32, Response = u32> + 'a,
    S::Error: Debug,
{
    Box::new(move |n| rt.block_on(run_calls(&mut svc, n)))
}

/// `n` calls on `svc` that it refuses, on `rt`.
pub(crate) fn rejections<'a, S>(rt: &'a Runtime, mut svc: S) -> Runner<'a>
where
    S: Service<u32> + 'a,
    S::Error: Debug,
{
    Box::new(move |n| rt.block_on(run_rejected_calls(&mut svc, n)))
}

/// Benchmarks `ours` as `group/steadfast` and each peer as `group/<id>`; then, if criterion
/// measured them (bench mode, not filtered out), measures steadfast and each peer again in
/// alternation into `cross`.
pub(crate) fn group(
    c: &mut Criterion,
    cross: &mut Cross,
    group: &'static str,
    mut ours: Runner<'_>,
    mut peers: Vec<(&'static str, Runner<'_>)>,
) {
    let mut ran = false;
    let mut g = c.benchmark_group(group);
    g.bench_function(OURS, |b| {
        ran = true;
        b.iter_custom(&mut ours)
    });
    for (id, run) in &mut peers {
        g.bench_function(*id, |b| b.iter_custom(&mut *run));
    }
    g.finish();
    if !ran || !bench_mode() {
        return;
    }
    let (rounds, calls) = if quick_mode() {
        (7, 20_000)
    } else {
        (21, 100_000)
    };
    for (id, run) in &mut peers {
        let medians = interleaved_runs(&mut ours, &mut *run, rounds, calls);
        cross.push(((group, *id), medians));
    }
}

/// The interleaved medians of `(group, peer)` in `cross`, for [`comparison_table`](steadfast_benches::comparison_table).
pub(crate) fn find(cross: &Cross, group: &str, peer: &str) -> Option<(f64, f64)> {
    cross
        .iter()
        .find(|(key, _)| *key == (group, peer))
        .map(|(_, m)| *m)
}

/// Whether criterion runs in bench mode (`cargo bench`), not test or list mode (`cargo bench`
/// passes `--bench` in every mode).
pub(crate) fn bench_mode() -> bool {
    let args: Vec<String> = std::env::args().collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list")
}

/// `failsafe`'s circuit breaker as a tower service: `call` wraps the inner future in
/// `failsafe::futures::CircuitBreaker::call` (failsafe has no tower layer). Like the other
/// breakers here it lets `poll_ready` through to the inner service; the state machine is asked
/// when the response future is first polled.
#[derive(Clone, Debug)]
pub(crate) struct Failsafe<S, B> {
    inner: S,
    pub(crate) breaker: B,
}

impl<S, B> Service<u32> for Failsafe<S, B>
where
    S: Service<u32>,
    B: failsafe::futures::CircuitBreaker,
{
    type Response = S::Response;
    type Error = failsafe::Error<S::Error>;
    type Future = failsafe::futures::ResponseFuture<
        S::Future,
        B::FailurePolicy,
        B::Instrument,
        failsafe::Any,
    >;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(failsafe::Error::Inner)
    }

    #[inline]
    fn call(&mut self, req: u32) -> Self::Future {
        failsafe::futures::CircuitBreaker::call(&self.breaker, self.inner.call(req))
    }
}

/// failsafe's default breaker (`Config::new()`: success rate over a time window, or else
/// consecutive failures) around `inner`.
pub(crate) fn failsafe_default<S>(
    inner: S,
) -> Failsafe<S, impl failsafe::futures::CircuitBreaker + Clone> {
    Failsafe {
        inner,
        breaker: failsafe::Config::new().build(),
    }
}

/// failsafe's breaker around [`Refuse`], tripped open by 5 consecutive failures, with a break far
/// longer than the run.
pub(crate) fn tripped_failsafe(
    rt: &Runtime,
) -> Failsafe<Refuse, impl failsafe::futures::CircuitBreaker> {
    let mut failsafe = Failsafe {
        inner: Refuse,
        breaker: failsafe::Config::new()
            .failure_policy(failsafe::failure_policy::consecutive_failures(
                5,
                failsafe::backoff::constant(LONG_BREAK),
            ))
            .build(),
    };
    trip(rt, &mut failsafe, 5);
    assert!(!failsafe::futures::CircuitBreaker::is_call_permitted(
        &failsafe.breaker
    ));
    failsafe
}

/// Trips `svc` open by refusing `calls` calls.
pub(crate) fn trip<S>(rt: &Runtime, svc: &mut S, calls: u32)
where
    S: Service<u32>,
    S::Error: Debug,
{
    rt.block_on(run_rejected_calls(svc, u64::from(calls)));
}
