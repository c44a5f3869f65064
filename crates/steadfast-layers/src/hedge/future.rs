use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::{sleep_until, Instant, Sleep};
use tower_service::Service;
use tracing::Span;

use super::layer::Shared;
use super::{AttemptVerdict, HedgePolicy, NextHedge};
use crate::classify::Classifier;
use crate::deadline::Deadline;
use crate::retry::{NotReplayable, Replay};
use crate::telemetry::{mark_outcome, ms};
use crate::BoxError;

/// The response future of [`Hedge`](super::Hedge): races the original attempt and its hedges in
/// one pinned state machine.
///
/// The original and the first hedge live inline: a call whose original wins allocates nothing,
/// and neither does one hedge. Only when a second hedge must run alongside the first (with
/// `max_hedges > 1`) is it boxed. The first poll that finds the original pending reads the clock
/// once and arms the hedge timer; a call that completes on its first poll reads no clock at all.
#[pin_project]
pub struct ResponseFuture<S, P, C, R, Req>
where
    S: Service<Req>,
{
    #[pin]
    primary: Option<S::Future>,
    #[pin]
    hedge: Option<S::Future>,
    #[pin]
    timer: Option<Sleep>,
    /// Hedges running alongside the inline one (boxed; empty, and unallocated, otherwise).
    more: Vec<Extra<S::Future>>,
    /// When the original started (its first pending poll); `None` while it has not been pending.
    primary_start: Option<Instant>,
    /// The inline hedge's number (1 for the first hedge) and start.
    hedge_info: (u32, Option<Instant>),
    /// `None` when the call is not hedged (only measured, or passed through).
    ctx: Option<Hedging<S, P, C, R, Req>>,
    /// The most informative failure so far, kept while other attempts are in flight.
    failure: Option<Result<S::Response, S::Error>>,
    /// `None` for a call passed through untouched.
    shared: Option<Arc<Shared>>,
    span: Span,
    /// The original's and the inline hedge's own spans, children of `span` (disabled when it
    /// is): closed when their attempt ends, marked the winner, failed or cancelled.
    primary_span: Span,
    hedge_span: Span,
}

struct Extra<F> {
    fut: Pin<Box<F>>,
    number: u32,
    start: Instant,
    span: Span,
}

/// Everything a hedged call needs to send hedges.
pub(super) struct Hedging<S, P, C, R, Req> {
    service: S,
    /// Judges each finished attempt.
    policy: P,
    classifier: C,
    replay: R,
    /// The request kept for copies; the last hedge takes it.
    template: Option<Req>,
    delay: Duration,
    /// Hedges sent so far.
    sent: u32,
    /// The timer fired (or a non-fatal failure sent the next hedge at once) and the hedge
    /// waits for the service to be ready.
    due: bool,
    /// No further hedge: one was skipped, the service failed, or the policy stopped hedging.
    ended: bool,
}

impl<S, P, C, R, Req> Hedging<S, P, C, R, Req> {
    pub(super) fn new(
        service: S,
        policy: P,
        classifier: C,
        replay: R,
        template: Req,
        delay: Duration,
    ) -> Self {
        Self {
            service,
            policy,
            classifier,
            replay,
            template: Some(template),
            delay,
            sent: 0,
            due: false,
            ended: false,
        }
    }
}

impl<S, P, C, R, Req> std::fmt::Debug for ResponseFuture<S, P, C, R, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("hedged", &self.ctx.is_some())
            .field("hedges_sent", &self.ctx.as_ref().map_or(0, |c| c.sent))
            .finish_non_exhaustive()
    }
}

impl<S, P, C, R, Req> ResponseFuture<S, P, C, R, Req>
where
    S: Service<Req>,
{
    fn new(
        fut: S::Future,
        ctx: Option<Hedging<S, P, C, R, Req>>,
        shared: Option<Arc<Shared>>,
        span: Span,
        primary_span: Span,
    ) -> Self {
        Self {
            primary: Some(fut),
            hedge: None,
            timer: None,
            more: Vec::new(),
            primary_start: None,
            hedge_info: (0, None),
            ctx,
            failure: None,
            shared,
            span,
            primary_span,
            hedge_span: Span::none(),
        }
    }

    /// A call the layer does not touch.
    pub(super) fn passthrough(fut: S::Future) -> Self {
        Self::new(fut, None, None, Span::none(), Span::none())
    }

    /// A call that is not hedged but whose latency feeds the histogram.
    pub(super) fn measured(fut: S::Future, shared: Arc<Shared>) -> Self {
        Self::new(fut, None, Some(shared), Span::none(), Span::none())
    }

    /// A hedged call, its original sent inside `primary_span` (see [`attempt_span`]).
    pub(super) fn hedged(
        fut: S::Future,
        ctx: Hedging<S, P, C, R, Req>,
        shared: Arc<Shared>,
        span: Span,
        primary_span: Span,
    ) -> Self {
        Self::new(fut, Some(ctx), Some(shared), span, primary_span)
    }
}

/// The span of one attempt of a hedged call, a child of the call's `parent` span: `number` 0 is
/// the original, `n` the n-th hedge (a re-send: OpenTelemetry's `http.request.resend_count`).
/// Disabled when `parent` is (no subscriber wants the call's span: nothing is built).
#[inline]
pub(super) fn attempt_span(parent: &Span, number: u32) -> Span {
    if parent.is_disabled() {
        return Span::none();
    }
    attempt_span_enabled(parent, number)
}

#[cold]
#[inline(never)]
fn attempt_span_enabled(parent: &Span, number: u32) -> Span {
    let span = tracing::debug_span!(
        target: "steadfast::hedge",
        parent: parent,
        "steadfast.hedge.attempt",
        // Signed: exported as an integer (see the retry layer's attempt spans).
        steadfast.hedge.attempt = i64::from(number),
        steadfast.hedge.role = if number == 0 { "original" } else { "hedge" },
        http.request.resend_count = tracing::field::Empty,
        steadfast.hedge.winner = tracing::field::Empty,
        steadfast.hedge.cancelled = tracing::field::Empty,
        steadfast.outcome = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if number > 0 {
        span.record("http.request.resend_count", i64::from(number));
    }
    span
}

/// Marks a losing attempt's span cancelled (an event says so) and closes it.
fn cancel(span: &mut Span) {
    if !span.is_disabled() {
        span.record("steadfast.hedge.cancelled", true);
        span.in_scope(|| {
            tracing::debug!(
                target: "steadfast::hedge",
                "attempt cancelled: another attempt won"
            );
        });
        *span = Span::none();
    }
}

/// The clock, read at most once per poll and only when needed.
struct Clock(Option<Instant>);

impl Clock {
    fn now(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

/// Why a due hedge was not sent.
enum Skip {
    Deadline(Duration),
    NotReplayable(NotReplayable),
    Budget(&'static str),
}

impl Skip {
    fn label(&self) -> &'static str {
        match self {
            Skip::Deadline(_) => "deadline",
            Skip::NotReplayable(_) => "not_replayable",
            Skip::Budget(_) => "budget",
        }
    }
}

impl<S, P, C, R, Req> Future for ResponseFuture<S, P, C, R, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: HedgePolicy<Req>,
    C: Classifier<S::Response, S::Error>,
    R: Replay<Req>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(shared) = this.shared.as_deref() else {
            return match this.primary.as_pin_mut() {
                Some(fut) => fut.poll(cx).map_err(Into::into),
                None => panic!("hedge ResponseFuture polled after completion"),
            };
        };
        let _entered = this.span.enter();
        let mut clock = Clock(None);
        loop {
            // 1. Poll every attempt in flight; settle the first one that finished.
            let mut done = None;
            if let Some(fut) = this.primary.as_mut().as_pin_mut() {
                let polled = {
                    let _attempt = this.primary_span.enter();
                    fut.poll(cx)
                };
                match polled {
                    Poll::Ready(r) => {
                        this.primary.set(None);
                        let span = std::mem::replace(this.primary_span, Span::none());
                        done = Some((r, 0, *this.primary_start, span));
                    }
                    Poll::Pending if this.primary_start.is_none() => {
                        // The first pending poll: the attempt's clock starts, and the hedge timer.
                        let now = clock.now();
                        *this.primary_start = Some(now);
                        if let Some(ctx) = this.ctx.as_ref() {
                            if let Some(at) = now.checked_add(ctx.delay) {
                                this.timer.set(Some(sleep_until(at)));
                            }
                        }
                    }
                    Poll::Pending => {}
                }
            }
            if done.is_none() {
                if let Some(fut) = this.hedge.as_mut().as_pin_mut() {
                    let polled = {
                        let _attempt = this.hedge_span.enter();
                        fut.poll(cx)
                    };
                    if let Poll::Ready(r) = polled {
                        this.hedge.set(None);
                        let span = std::mem::replace(this.hedge_span, Span::none());
                        done = Some((r, this.hedge_info.0, this.hedge_info.1, span));
                    }
                }
            }
            if done.is_none() {
                for i in 0..this.more.len() {
                    let extra = &mut this.more[i];
                    let polled = {
                        let _attempt = extra.span.enter();
                        extra.fut.as_mut().poll(cx)
                    };
                    if let Poll::Ready(r) = polled {
                        let extra = this.more.swap_remove(i);
                        done = Some((r, extra.number, Some(extra.start), extra.span));
                        break;
                    }
                }
            }

            if let Some((result, number, start, finished)) = done {
                if let Some(tracker) = shared.tracker() {
                    // An attempt that completed on its first poll took no measurable time.
                    let latency = match start {
                        Some(s) => clock.now().saturating_duration_since(s),
                        None => Duration::ZERO,
                    };
                    tracker.record(latency, clock.0);
                }
                let Some(ctx) = this.ctx.as_mut() else {
                    return Poll::Ready(result.map_err(Into::into));
                };
                let outcome = ctx.classifier.classify(&result);
                let verdict = ctx.policy.judge(&outcome);
                let accepted = verdict == AttemptVerdict::Accept;
                // The attempt's span ends with its outcome (dropped here).
                if !finished.is_disabled() {
                    mark_outcome(&finished, &outcome);
                    if accepted && ctx.sent > 0 {
                        finished.record("steadfast.hedge.winner", true);
                    }
                }
                drop(finished);
                let next = match verdict {
                    AttemptVerdict::NonFatal { next } => next,
                    // Accept, Fatal: the call ends with this attempt.
                    _ => {
                        if ctx.sent > 0 {
                            if let Some(tracker) = shared.tracker() {
                                // The losers' time so far is a lower bound of their latency:
                                // recording it keeps the slow tail (which hedging cuts short) in
                                // the histogram, so that the learned delay does not drift down.
                                let now = clock.now();
                                let censor = |s: Instant| {
                                    tracker.record(now.saturating_duration_since(s), Some(now));
                                };
                                if let (true, Some(s)) =
                                    (this.primary.is_some(), *this.primary_start)
                                {
                                    censor(s);
                                }
                                if let (true, Some(s)) = (this.hedge.is_some(), this.hedge_info.1) {
                                    censor(s);
                                }
                                for extra in this.more.iter() {
                                    censor(extra.start);
                                }
                            }
                            if accepted {
                                let winner = if number == 0 { "primary" } else { "hedge" };
                                shared.attrs.with("steadfast.hedge.winner", winner, |a| {
                                    shared.wins.add(1, a)
                                });
                                tracing::debug!(
                                    target: "steadfast::hedge",
                                    winner,
                                    attempt = number,
                                    hedges_sent = ctx.sent,
                                    "hedged call won; the other attempts are cancelled"
                                );
                            }
                        }
                        if !accepted {
                            tracing::debug!(
                                target: "steadfast::hedge",
                                attempt = number,
                                hedges_sent = ctx.sent,
                                reason = outcome.reason(),
                                "fatal failure ends the hedged call; the other attempts are cancelled"
                            );
                        }
                        // The losers are cancelled by dropping them.
                        if this.primary.is_some() {
                            cancel(this.primary_span);
                        }
                        if this.hedge.is_some() {
                            cancel(this.hedge_span);
                        }
                        for extra in this.more.iter_mut() {
                            cancel(&mut extra.span);
                        }
                        this.primary.set(None);
                        this.hedge.set(None);
                        this.more.clear();
                        this.timer.set(None);
                        return Poll::Ready(result.map_err(Into::into));
                    }
                };
                // A non-fatal failure: the policy may move the next hedge.
                let more_to_send = !ctx.ended && ctx.sent < shared.max_hedges;
                let coming = match next {
                    NextHedge::Now if more_to_send => {
                        this.timer.set(None);
                        ctx.due = true;
                        true
                    }
                    NextHedge::After(after) if more_to_send => {
                        ctx.due = false;
                        let at = clock.now().checked_add(after);
                        this.timer.set(at.map(sleep_until));
                        at.is_some()
                    }
                    NextHedge::Stop => {
                        if more_to_send {
                            tracing::debug!(
                                target: "steadfast::hedge",
                                attempt = number,
                                reason = outcome.reason(),
                                "hedging stopped: the server pushed back"
                            );
                        }
                        ctx.ended = true;
                        ctx.due = false;
                        this.timer.set(None);
                        false
                    }
                    // On schedule (hedging is not retrying), or no hedge left to send.
                    _ => false,
                };
                let in_flight =
                    this.primary.is_some() || this.hedge.is_some() || !this.more.is_empty();
                // A failed response is more informative than an error (a proxy must forward it);
                // otherwise the latest failure is kept.
                let best = match this.failure.take() {
                    Some(prev) if prev.is_ok() && result.is_err() => prev,
                    _ => result,
                };
                if !in_flight && !coming {
                    if ctx.sent > 0 {
                        tracing::debug!(
                            target: "steadfast::hedge",
                            attempts = ctx.sent + 1,
                            reason = outcome.reason(),
                            "every hedged attempt failed"
                        );
                    }
                    this.timer.set(None);
                    return Poll::Ready(best.map_err(Into::into));
                }
                if coming {
                    tracing::debug!(
                        target: "steadfast::hedge",
                        attempt = number,
                        reason = outcome.reason(),
                        next_hedge_in_ms = match next {
                            NextHedge::After(after) => ms(after),
                            _ => 0.0,
                        },
                        "attempt failed; the next hedge leaves early"
                    );
                } else {
                    tracing::debug!(
                        target: "steadfast::hedge",
                        attempt = number,
                        reason = outcome.reason(),
                        "attempt failed; waiting for the others in flight"
                    );
                }
                *this.failure = Some(best);
                continue;
            }

            // 2. Nothing finished: drive the hedge timer.
            let Some(ctx) = this.ctx.as_mut() else {
                return Poll::Pending;
            };
            if let Some(timer) = this.timer.as_mut().as_pin_mut() {
                if timer.poll(cx).is_pending() {
                    return Poll::Pending;
                }
                this.timer.set(None);
                ctx.due = true;
            }
            if !ctx.due {
                return Poll::Pending;
            }
            match ctx.service.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    ctx.due = false;
                    ctx.ended = true;
                    let e: BoxError = e.into();
                    tracing::debug!(
                        target: "steadfast::hedge",
                        error = %e,
                        "hedging stopped: the service failed to become ready"
                    );
                    return idle_failure(
                        this.primary.is_some() || this.hedge.is_some() || !this.more.is_empty(),
                        this.failure,
                    );
                }
                Poll::Ready(Ok(())) => ctx.due = false,
            }
            let now = clock.now();
            let req = match plan(shared, ctx, now) {
                Ok(req) => req,
                Err(skip) => {
                    shared.skip(skip.label());
                    match &skip {
                        Skip::Deadline(left) => tracing::debug!(
                            target: "steadfast::hedge",
                            reason = "deadline",
                            hedge = ctx.sent + 1,
                            deadline_remaining_ms = ms(*left),
                            min_hedge_time_ms = ms(shared.min_hedge_time),
                            "hedge skipped: the deadline cannot hold another attempt"
                        ),
                        Skip::NotReplayable(why) => tracing::debug!(
                            target: "steadfast::hedge",
                            reason = "not_replayable",
                            hedge = ctx.sent + 1,
                            why = why.reason(),
                            "hedge skipped: the request cannot be copied"
                        ),
                        Skip::Budget(which) => tracing::debug!(
                            target: "steadfast::hedge",
                            reason = "budget",
                            budget = *which,
                            hedge = ctx.sent + 1,
                            budget_balance = shared.budget_balance(),
                            "hedge skipped: budget exhausted"
                        ),
                    }
                    ctx.ended = true;
                    return idle_failure(
                        this.primary.is_some() || this.hedge.is_some() || !this.more.is_empty(),
                        this.failure,
                    );
                }
            };
            ctx.sent += 1;
            let number = ctx.sent;
            let span = attempt_span(this.span, number);
            let fut = span.in_scope(|| ctx.service.call(req));
            shared.sent.add(1, shared.attrs.base());
            tracing::debug!(
                target: "steadfast::hedge",
                hedge = number,
                delay_ms = ms(ctx.delay),
                budget_balance = shared.budget_balance(),
                deadline_remaining_ms = Deadline::current().map(|d| ms(d.timeout_at(now))),
                "hedge sent"
            );
            if this.hedge.is_none() {
                this.hedge.set(Some(fut));
                *this.hedge_info = (number, Some(now));
                *this.hedge_span = span;
            } else {
                this.more.push(Extra {
                    fut: Box::pin(fut),
                    number,
                    start: now,
                    span,
                });
            }
            if number < shared.max_hedges {
                if let Some(at) = now.checked_add(ctx.delay) {
                    this.timer.set(Some(sleep_until(at)));
                }
            }
        }
    }
}

/// Hedging has ended: with no attempt in flight (a non-fatal failure sent the next hedge early,
/// and it could not be sent), the call returns its failure; otherwise it waits for the others.
fn idle_failure<T, E: Into<BoxError>>(
    in_flight: bool,
    failure: &mut Option<Result<T, E>>,
) -> Poll<Result<T, BoxError>> {
    match failure.take() {
        Some(best) if !in_flight => Poll::Ready(best.map_err(Into::into)),
        kept => {
            *failure = kept;
            Poll::Pending
        }
    }
}

/// Checks, in order, the deadline, a copy of the request, then the budgets (last, so that a
/// refusal for another reason spends nothing), and returns the request to send.
fn plan<S, P, C, R, Req>(
    shared: &Shared,
    ctx: &mut Hedging<S, P, C, R, Req>,
    now: Instant,
) -> Result<Req, Skip>
where
    R: Replay<Req>,
{
    if let Some(deadline) = Deadline::current() {
        let left = deadline.timeout_at(now);
        if left < shared.min_hedge_time {
            return Err(Skip::Deadline(left));
        }
    }
    let last = ctx.sent + 1 >= shared.max_hedges;
    let req = if last {
        ctx.template.take()
    } else {
        match ctx.template.as_mut() {
            Some(template) => Some(ctx.replay.replay(template).map_err(Skip::NotReplayable)?),
            None => None,
        }
    };
    let Some(req) = req else {
        return Err(Skip::NotReplayable(NotReplayable::new(
            "the request was not kept",
        )));
    };
    if let Some(budget) = &shared.budget {
        if !budget.withdraw() {
            shared.attrs.with("steadfast.hedge.budget", "hedge", |a| {
                shared.budget_exhausted.add(1, a)
            });
            return Err(Skip::Budget("hedge"));
        }
    }
    if let Some(retry) = &shared.retry_budget {
        if !retry.withdraw() {
            if let Some(budget) = &shared.budget {
                budget.refund();
            }
            shared.attrs.with("steadfast.hedge.budget", "retry", |a| {
                shared.budget_exhausted.add(1, a)
            });
            return Err(Skip::Budget("retry"));
        }
    }
    Ok(req)
}
