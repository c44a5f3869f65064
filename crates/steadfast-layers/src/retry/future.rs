use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::{sleep_until, Instant, Sleep};
use tower_service::Service;
use tracing::Span;

use super::layer::Shared;
use super::{GaveUp, GiveUpReason, NotReplayable, Replay};
use crate::classify::{Classifier, Outcome};
use crate::deadline::Deadline;
use crate::telemetry::{mark_outcome, ms, ERROR_TYPE_KEY, REASON_KEY};
use crate::BoxError;

/// The response future of [`Retry`](super::Retry): drives attempts, backoffs and readiness in
/// one pinned state machine, with no allocation.
#[pin_project(project = ResponseFutureProj)]
pub struct ResponseFuture<S, C, R, Req>
where
    S: Service<Req>,
{
    #[pin]
    state: State<S::Future>,
    service: S,
    classifier: C,
    replay: R,
    /// The request kept for replay; `None` when it cannot be replayed (or when it has been moved
    /// into the last attempt).
    template: Option<Req>,
    /// The copy prepared for the next attempt.
    next: Option<Req>,
    not_replayable: Option<NotReplayable>,
    attempts: u32,
    /// The most attempts this call makes: the layer's setting when the call started (a change
    /// through the handle applies to calls that start after it).
    max_attempts: u32,
    /// Transparent retries made (requests that never reached the server).
    unsent: u32,
    /// Whether the prepared `next` request is a transparent retry.
    next_transparent: bool,
    previous_delay: Duration,
    shared: Arc<Shared>,
    /// The call's and the attempt's spans, only when a subscriber wants them: disabled spans
    /// cost checks on every poll and on drop, and bytes moved with the future.
    spans: Option<Box<Spans>>,
    started: Option<Instant>,
}

/// The spans of a traced call.
struct Spans {
    call: Span,
    /// The attempt in flight's own span, a child of `call` (disabled when `call` is): closed
    /// when the attempt's outcome is known.
    attempt: Span,
    /// Why the next attempt is made (the last failure's label) and the backoff before it, for
    /// that attempt's span.
    retry_reason: &'static str,
    backoff: Duration,
}

#[pin_project(project = StateProj)]
enum State<F> {
    Calling {
        #[pin]
        fut: F,
    },
    /// The backoff's timer, boxed: inline, its 112 bytes would set the size of every retry
    /// future whose attempt future is smaller, and that size is moved on every call; boxed, it
    /// costs one allocation per backoff, which then sleeps (ADR 0008, decision 19).
    Backoff {
        sleep: Pin<Box<Sleep>>,
    },
    Ready,
}

impl<S, C, R, Req> std::fmt::Debug for ResponseFuture<S, C, R, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl<S, C, R, Req> ResponseFuture<S, C, R, Req>
where
    S: Service<Req>,
{
    /// Sends the first attempt through `service` (in `span`, when traced) and builds the future
    /// around it.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(super) fn first(
        mut service: S,
        req: Req,
        classifier: C,
        replay: R,
        template: Option<Req>,
        not_replayable: Option<NotReplayable>,
        max_attempts: u32,
        shared: Arc<Shared>,
        span: Option<Span>,
        started: Option<Instant>,
    ) -> Self {
        let spans = span.map(|call| {
            Box::new(Spans {
                attempt: attempt_span(&call, 1, 0, false),
                call,
                retry_reason: "",
                backoff: Duration::ZERO,
            })
        });
        Self {
            state: State::Calling {
                fut: match &spans {
                    None => service.call(req),
                    Some(spans) => {
                        let _entered = spans.attempt.enter();
                        service.call(req)
                    }
                },
            },
            service,
            classifier,
            replay,
            template,
            next: None,
            not_replayable,
            attempts: 1,
            max_attempts,
            unsent: 0,
            next_transparent: false,
            previous_delay: Duration::ZERO,
            shared,
            spans,
            started,
        }
    }
}

impl<S, C, R, Req> Future for ResponseFuture<S, C, R, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classifier<S::Response, BoxError>,
    R: Replay<Req>,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        match this.spans.take() {
            // Untraced (no subscriber wanted the spans): nothing to take out or put back.
            None => poll_attempts(&mut this, None, cx),
            // Handed over by value: a reference handed out of line would make the compiler
            // write every field's address out on every poll, traced or not.
            Some(spans) => poll_traced(this, spans, cx),
        }
    }
}

/// [`ResponseFuture::poll`] of a traced call: the spans are taken out while polling (a pointer
/// moved) and the call's span entered through a clone of its handle, so that the attempt's span
/// can be replaced while the call's is entered. Out of line: the untraced poll, the common
/// case, then carries no span handling at all.
#[inline(never)]
#[cold]
fn poll_traced<S, C, R, Req>(
    mut this: ResponseFutureProj<'_, S, C, R, Req>,
    mut spans: Box<Spans>,
    cx: &mut Context<'_>,
) -> Poll<Result<S::Response, BoxError>>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classifier<S::Response, BoxError>,
    R: Replay<Req>,
{
    let call = spans.call.clone();
    let out = {
        let _entered = call.enter();
        poll_attempts(&mut this, Some(&mut spans), cx)
    };
    *this.spans = Some(spans);
    out
}

/// The attempts' state machine; `spans` when the call is traced. Inlined into both polls:
/// called, it would be handed the projection's fields one by one.
#[inline(always)]
fn poll_attempts<S, C, R, Req>(
    this: &mut ResponseFutureProj<'_, S, C, R, Req>,
    mut spans: Option<&mut Spans>,
    cx: &mut Context<'_>,
) -> Poll<Result<S::Response, BoxError>>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classifier<S::Response, BoxError>,
    R: Replay<Req>,
{
    let shared: &Shared = this.shared;
    loop {
        match this.state.as_mut().project() {
            StateProj::Calling { fut } => {
                let result = match spans.as_deref() {
                    None => ready!(fut.poll(cx)),
                    Some(spans) => {
                        let _attempt = spans.attempt.enter();
                        ready!(fut.poll(cx))
                    }
                };
                // Boxed as tower does (a no-op for an inner `BoxError`, the common case), so
                // that one classifier reads every transport's errors by downcasting, and
                // events and `GaveUp` can say what the error was.
                let result = result.map_err(Into::into);
                let outcome = this.classifier.classify(&result);
                // The attempt's span ends with its outcome; what follows (the retry decision,
                // the give-up) belongs to the call's span.
                if let Some(spans) = spans.as_deref_mut() {
                    close_attempt(&mut spans.attempt, &outcome);
                }
                if let Some(budget) = &shared.budget {
                    budget.record(&outcome);
                }
                // What kind of retry the outcome asks for: its label, a server-given
                // delay, and whether it is the one transparent re-send. A request that
                // never reached the server is re-sent once at once (gRPC A6 transparent
                // retry); a peer that refuses again is down, and further re-sends are
                // attempts like any other, with backoff and budget.
                let wanted = match outcome {
                    Outcome::Success => {
                        record_duration(shared, *this.started);
                        return Poll::Ready(result);
                    }
                    Outcome::Retryable { reason, after } => Ok((reason, after, false)),
                    Outcome::NotSent { reason } => Ok((reason, None, *this.unsent == 0)),
                    Outcome::Pushback { .. } => Err(GiveUpReason::Pushback),
                    Outcome::Fatal { reason } => Err(GiveUpReason::Fatal(reason)),
                    #[allow(unreachable_patterns)]
                    _ => Err(GiveUpReason::Fatal(outcome.reason())),
                };
                let verdict = wanted.and_then(|(reason, after, transparent)| {
                    let plan = Plan {
                        shared,
                        replay: &*this.replay,
                        template: this.template,
                        not_replayable: *this.not_replayable,
                        attempts: *this.attempts,
                        max_attempts: *this.max_attempts,
                        previous_delay: this.previous_delay,
                    };
                    *this.next_transparent = transparent;
                    if transparent {
                        plan.transparent()
                            .map(|next| (reason, Duration::ZERO, next, None))
                    } else {
                        plan.decide(after)
                            .map(|(delay, next, wake)| (reason, delay, next, wake))
                    }
                });
                match verdict {
                    Ok((reason, delay, next, wake)) => {
                        shared.attrs.with(ERROR_TYPE_KEY, reason, |a| {
                            shared.retries.add(1, a);
                        });
                        tracing::debug!(
                            target: "steadfast::retry",
                            attempt = *this.attempts,
                            delay_ms = ms(delay),
                            reason,
                            error = result.as_ref().err().map(tracing::field::display),
                            budget_balance = shared.budget.as_ref().map(|b| b.balance()),
                            deadline_remaining_ms = Deadline::current().map(|d| ms(d.remaining())),
                            "retry scheduled"
                        );
                        *this.next = Some(next);
                        if let Some(spans) = spans.as_deref_mut() {
                            spans.retry_reason = reason;
                            spans.backoff = delay;
                        }
                        match wake {
                            Some(at) => this.state.set(State::Backoff {
                                sleep: Box::pin(sleep_until(at)),
                            }),
                            None => this.state.set(State::Ready),
                        }
                    }
                    Err(why) => {
                        record_duration(shared, *this.started);
                        return Poll::Ready(give_up(
                            shared,
                            &*this.classifier,
                            why,
                            *this.attempts,
                            outcome.reason(),
                            result,
                        ));
                    }
                }
            }
            StateProj::Backoff { sleep } => {
                ready!(sleep.as_mut().poll(cx));
                this.state.set(State::Ready);
            }
            StateProj::Ready => {
                if let Err(e) = ready!(this.service.poll_ready(cx)) {
                    record_duration(shared, *this.started);
                    return Poll::Ready(Err(e.into()));
                }
                let Some(req) = this.next.take() else {
                    // Unreachable by construction: `Ready` is entered only with a request.
                    return Poll::Ready(Err(GaveUp::new(
                        GiveUpReason::NotReplayable(NotReplayable::new("no request")),
                        *this.attempts,
                        None,
                    )
                    .into()));
                };
                if *this.next_transparent {
                    *this.unsent += 1;
                } else {
                    *this.attempts += 1;
                    shared.attempts.add(1, shared.attrs.base());
                }
                let fut = match spans.as_deref_mut() {
                    None => this.service.call(req),
                    Some(spans) => {
                        spans.attempt = attempt_span(
                            &spans.call,
                            *this.attempts,
                            *this.attempts + *this.unsent - 1,
                            *this.next_transparent,
                        );
                        let _attempt = spans.attempt.enter();
                        if !spans.attempt.is_disabled() {
                            spans
                                .attempt
                                .record("steadfast.retry.reason", spans.retry_reason);
                            tracing::debug!(
                                target: "steadfast::retry",
                                backoff_ms = ms(spans.backoff),
                                reason = spans.retry_reason,
                                "backoff slept"
                            );
                        }
                        this.service.call(req)
                    }
                };
                this.state.set(State::Calling { fut });
            }
        }
    }
}

/// The span of attempt `attempt` (from 1), a child of the call's `parent` span, or a disabled
/// span when `parent` is disabled (no subscriber wants the call's span: nothing is built).
/// `resends` is how many times the request was sent before this one (OpenTelemetry's
/// `http.request.resend_count`, set on re-sends only); `transparent` marks the one re-send of a
/// request that never reached the server (same attempt number).
#[inline]
fn attempt_span(parent: &Span, attempt: u32, resends: u32, transparent: bool) -> Span {
    if parent.is_disabled() {
        return Span::none();
    }
    attempt_span_enabled(parent, attempt, resends, transparent)
}

#[cold]
#[inline(never)]
fn attempt_span_enabled(parent: &Span, attempt: u32, resends: u32, transparent: bool) -> Span {
    let span = tracing::debug_span!(
        target: "steadfast::retry",
        parent: parent,
        "steadfast.retry.attempt",
        // Signed: tracing-opentelemetry exports signed integers as integers (unsigned ones as
        // their text), and OpenTelemetry's conventions call for integers.
        steadfast.retry.attempt = i64::from(attempt),
        http.request.resend_count = tracing::field::Empty,
        steadfast.retry.reason = tracing::field::Empty,
        steadfast.retry.transparent = transparent,
        steadfast.outcome = tracing::field::Empty,
        error.type = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    if resends > 0 {
        span.record("http.request.resend_count", i64::from(resends));
    }
    span
}

/// Notes `outcome` on the attempt's span and closes it (a disabled span: nothing to do).
#[inline]
fn close_attempt(span: &mut Span, outcome: &Outcome) {
    if !span.is_disabled() {
        mark_outcome(span, outcome);
        *span = Span::none();
    }
}

/// Everything needed to decide whether and when to retry.
struct Plan<'a, R, Req> {
    shared: &'a Shared,
    replay: &'a R,
    template: &'a mut Option<Req>,
    not_replayable: Option<NotReplayable>,
    attempts: u32,
    max_attempts: u32,
    previous_delay: &'a mut Duration,
}

impl<R: Replay<Req>, Req> Plan<'_, R, Req> {
    /// Checks, in order: attempts left, a replayable request, the deadline (after the backoff at
    /// least `min_attempt_time` must be left), then the budget (last, so that a refusal for
    /// another reason spends nothing). Returns the delay, the next request, and when to wake.
    fn decide(
        self,
        server_delay: Option<Duration>,
    ) -> Result<(Duration, Req, Option<Instant>), GiveUpReason> {
        let shared = self.shared;
        if self.attempts >= self.max_attempts {
            return Err(GiveUpReason::AttemptsExhausted);
        }
        if self.template.is_none() {
            return Err(GiveUpReason::NotReplayable(
                self.not_replayable
                    .unwrap_or(NotReplayable::new("the request was not kept")),
            ));
        }
        let delay = server_delay.unwrap_or_else(|| {
            shared
                .backoff
                .load()
                .delay(self.attempts, *self.previous_delay, &*shared.rng)
        });
        let (wake, deadline_ok) = match Deadline::current() {
            Some(deadline) => {
                let now = Instant::now();
                let start = now.checked_add(delay);
                let ok = start
                    .and_then(|s| s.checked_add(shared.min_attempt_time))
                    .is_some_and(|s| s < deadline.instant());
                (start.filter(|_| !delay.is_zero()), ok)
            }
            None => (
                (!delay.is_zero())
                    .then(|| Instant::now().checked_add(delay))
                    .flatten(),
                true,
            ),
        };
        if !deadline_ok {
            return Err(GiveUpReason::Deadline);
        }
        let last = self.attempts + 1 == self.max_attempts;
        let next = if last {
            match self.template.take() {
                Some(template) => Some(
                    self.replay
                        .last(template)
                        .map_err(GiveUpReason::NotReplayable)?,
                ),
                None => None,
            }
        } else {
            match self.template.as_mut() {
                Some(template) => Some(
                    self.replay
                        .replay(template)
                        .map_err(GiveUpReason::NotReplayable)?,
                ),
                None => None,
            }
        };
        let Some(next) = next else {
            return Err(GiveUpReason::AttemptsExhausted);
        };
        if let Some(budget) = &shared.budget {
            if !budget.withdraw() {
                shared.budget_exhausted.add(1, shared.attrs.base());
                return Err(GiveUpReason::BudgetExhausted);
            }
        }
        *self.previous_delay = delay;
        Ok((delay, next, wake))
    }
}

impl<R: Replay<Req>, Req> Plan<'_, R, Req> {
    /// The one transparent re-send of a request that never reached the server: no attempt
    /// counted, no backoff, no budget; bounded by the deadline.
    fn transparent(self) -> Result<Req, GiveUpReason> {
        if let Some(deadline) = Deadline::current() {
            let fits = Instant::now()
                .checked_add(self.shared.min_attempt_time)
                .is_some_and(|t| t < deadline.instant());
            if !fits {
                return Err(GiveUpReason::Deadline);
            }
        }
        // Keep the template: the attempt does not count, so more attempts may follow.
        match self.template.as_mut() {
            Some(template) => self
                .replay
                .replay(template)
                .map_err(GiveUpReason::NotReplayable),
            None => Err(GiveUpReason::NotReplayable(
                self.not_replayable
                    .unwrap_or(NotReplayable::new("the request was not kept")),
            )),
        }
    }
}

fn give_up<Res, C>(
    shared: &Shared,
    classifier: &C,
    why: GiveUpReason,
    attempts: u32,
    last_reason: &'static str,
    result: Result<Res, BoxError>,
) -> Result<Res, BoxError>
where
    C: Classifier<Res, BoxError>,
{
    shared.attrs.with(REASON_KEY, why.label(), |a| {
        shared.give_ups.add(1, a);
    });
    tracing::debug!(
        target: "steadfast::retry",
        attempts,
        reason = why.label(),
        last_failure = last_reason,
        error = result.as_ref().err().map(tracing::field::display),
        budget_balance = shared.budget.as_ref().map(|b| b.balance()),
        deadline_remaining_ms = Deadline::current().map(|d| ms(d.remaining())),
        "retry gave up"
    );
    match result {
        Ok(mut response) => {
            classifier.on_give_up(&mut response, &why, attempts);
            Ok(response)
        }
        Err(e) => Err(GaveUp::new(why, attempts, Some(e))
            .with_last_reason(last_reason)
            .into()),
    }
}

fn record_duration(shared: &Shared, started: Option<Instant>) {
    if let (Some(h), Some(t0)) = (&shared.duration, started) {
        h.record(t0.elapsed().as_secs_f64(), shared.attrs.base());
    }
}
