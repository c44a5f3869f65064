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
    state: State<S::Future, Req>,
    service: S,
    classifier: C,
    replay: R,
    /// The request kept for replay, or why none is.
    template: Kept<Req>,
    /// Attempts made. The counters are bytes (`MAX_ATTEMPTS` fits one, checked below), and the
    /// previous delay is nanoseconds in a word: the future is moved whole on every call, and
    /// up to 128 bytes the compiler moves it with inline stores instead of a call to `memmove`
    /// (ADR 0008, decision 26).
    attempts: u8,
    /// The most attempts this call makes: the layer's setting when the call started (a change
    /// through the handle applies to calls that start after it).
    max_attempts: u8,
    /// Transparent retries made (requests that never reached the server): at most one.
    unsent: u8,
    /// The previous backoff delay in nanoseconds (saturated: 584 years), for decorrelated
    /// jitter.
    previous_delay: u64,
    shared: Arc<Shared>,
    /// The call's and the attempt's spans, only when a subscriber wants them: disabled spans
    /// cost checks on every poll and on drop, and bytes moved with the future.
    spans: Option<Box<Spans>>,
    started: Option<Instant>,
}

// The future keeps its attempt counters in bytes.
const _: () = assert!(super::MAX_ATTEMPTS <= u8::MAX as u32);

/// The request a call keeps for its retries, or why it keeps none: one field, as the two never
/// exist at once (the reason's 16 bytes share the place of a request at least that large).
#[derive(Debug)]
pub(super) enum Kept<Req> {
    /// The request each retry is copied from.
    Template(Req),
    /// The request cannot be replayed, for this reason.
    NotReplayable(NotReplayable),
    /// None is kept: the call makes one attempt, or its last attempt took the request.
    Spent,
}

impl<Req> Kept<Req> {
    /// The kept request, or why there is none.
    fn get_mut(&mut self) -> Result<&mut Req, NotReplayable> {
        match self {
            Kept::Template(req) => Ok(req),
            Kept::NotReplayable(why) => Err(*why),
            Kept::Spent => Err(NotReplayable::new("the request was not kept")),
        }
    }

    /// Takes the kept request out (for the last attempt), or says why there is none.
    fn take(&mut self) -> Result<Req, NotReplayable> {
        match std::mem::replace(self, Kept::Spent) {
            Kept::Template(req) => Ok(req),
            Kept::NotReplayable(why) => {
                *self = Kept::NotReplayable(why);
                Err(why)
            }
            Kept::Spent => Err(NotReplayable::new("the request was not kept")),
        }
    }
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

/// Where a call is: an attempt in flight, or between two attempts with the next one's request.
/// The request prepared for the next attempt lives in the state, not beside it: it exists only
/// while no attempt is in flight, so it shares its place with the attempt's future.
#[pin_project(project = StateProj, project_replace = StateOwn)]
enum State<F, Req> {
    Calling {
        #[pin]
        fut: F,
    },
    /// Between attempts: the next attempt's request, whether it is the one transparent re-send,
    /// and the backoff's timer while it runs. The timer is boxed: inline, its 112 bytes would
    /// set the size of every retry future whose attempt future is smaller, and that size is
    /// moved on every call; boxed, it costs one allocation per backoff, which then sleeps (ADR
    /// 0008, decision 19).
    Next {
        backoff: Option<Pin<Box<Sleep>>>,
        req: Req,
        transparent: bool,
    },
    /// Only while the next attempt's request is taken out to be sent (or if sending it
    /// panicked).
    Sending,
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
        template: Kept<Req>,
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
            attempts: 1,
            // In `[1, MAX_ATTEMPTS]` (the layer's one check), so it fits a byte.
            max_attempts: u8::try_from(max_attempts).unwrap_or(u8::MAX),
            unsent: 0,
            previous_delay: 0,
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
                        attempts: u32::from(*this.attempts),
                        max_attempts: u32::from(*this.max_attempts),
                        previous_delay: this.previous_delay,
                    };
                    if transparent {
                        plan.transparent()
                            .map(|next| (reason, Duration::ZERO, next, None, true))
                    } else {
                        plan.decide(after)
                            .map(|(delay, next, wake)| (reason, delay, next, wake, false))
                    }
                });
                match verdict {
                    Ok((reason, delay, next, wake, transparent)) => {
                        shared.attrs.with(ERROR_TYPE_KEY, reason, |a| {
                            shared.retries.add(1, a);
                        });
                        tracing::debug!(
                            target: "steadfast::retry",
                            attempt = u32::from(*this.attempts),
                            delay_ms = ms(delay),
                            reason,
                            error = result.as_ref().err().map(tracing::field::display),
                            budget_balance = shared.budget.as_ref().map(|b| b.balance()),
                            deadline_remaining_ms = Deadline::current().map(|d| ms(d.remaining())),
                            "retry scheduled"
                        );
                        if let Some(spans) = spans.as_deref_mut() {
                            spans.retry_reason = reason;
                            spans.backoff = delay;
                        }
                        this.state.set(State::Next {
                            backoff: wake.map(|at| Box::pin(sleep_until(at))),
                            req: next,
                            transparent,
                        });
                    }
                    Err(why) => {
                        record_duration(shared, *this.started);
                        return Poll::Ready(give_up(
                            shared,
                            &*this.classifier,
                            why,
                            u32::from(*this.attempts),
                            outcome.reason(),
                            result,
                        ));
                    }
                }
            }
            StateProj::Next { backoff, .. } => {
                if let Some(sleep) = backoff {
                    ready!(sleep.as_mut().poll(cx));
                    *backoff = None;
                }
                if let Err(e) = ready!(this.service.poll_ready(cx)) {
                    record_duration(shared, *this.started);
                    return Poll::Ready(Err(e.into()));
                }
                let StateOwn::Next {
                    req, transparent, ..
                } = this.state.as_mut().project_replace(State::Sending)
                else {
                    return Poll::Ready(Err(no_request(*this.attempts)));
                };
                if transparent {
                    *this.unsent = this.unsent.saturating_add(1);
                } else {
                    *this.attempts = this.attempts.saturating_add(1);
                    shared.attempts.add(1, shared.attrs.base());
                }
                let fut = match spans.as_deref_mut() {
                    None => this.service.call(req),
                    Some(spans) => {
                        spans.attempt = attempt_span(
                            &spans.call,
                            u32::from(*this.attempts),
                            u32::from(*this.attempts) + u32::from(*this.unsent) - 1,
                            transparent,
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
            // Left only if the inner `call` panicked: the request went with it.
            StateProj::Sending => return Poll::Ready(Err(no_request(*this.attempts))),
        }
    }
}

/// The error of a call polled after the request for its next attempt was lost (its inner
/// `call` panicked); out of line, as it never happens in a call that did not panic.
#[cold]
#[inline(never)]
fn no_request(attempts: u8) -> BoxError {
    GaveUp::new(
        GiveUpReason::NotReplayable(NotReplayable::new("no request")),
        u32::from(attempts),
        None,
    )
    .into()
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
    template: &'a mut Kept<Req>,
    attempts: u32,
    max_attempts: u32,
    /// In nanoseconds, as the future keeps it.
    previous_delay: &'a mut u64,
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
        if let Err(why) = self.template.get_mut() {
            return Err(GiveUpReason::NotReplayable(why));
        }
        let delay = server_delay.unwrap_or_else(|| {
            shared.backoff.load().delay(
                self.attempts,
                Duration::from_nanos(*self.previous_delay),
                &*shared.rng,
            )
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
            None => match (!delay.is_zero()).then(|| Instant::now().checked_add(delay)) {
                // A server delay past what the clock holds (a classifier handing on a peer's
                // huge `Retry-After`): not a retry at once, but the server's "not in any time
                // we can wait".
                Some(None) => return Err(GiveUpReason::Pushback),
                wake => (wake.flatten(), true),
            },
        };
        if !deadline_ok {
            return Err(GiveUpReason::Deadline);
        }
        let last = self.attempts + 1 == self.max_attempts;
        // The kept request was checked above: `take` and `get_mut` find it.
        let next = if last {
            self.template
                .take()
                .and_then(|template| self.replay.last(template))
        } else {
            self.template
                .get_mut()
                .and_then(|template| self.replay.replay(template))
        }
        .map_err(GiveUpReason::NotReplayable)?;
        if let Some(budget) = &shared.budget {
            if !budget.withdraw() {
                shared.budget_exhausted.add(1, shared.attrs.base());
                return Err(GiveUpReason::BudgetExhausted);
            }
        }
        *self.previous_delay = u64::try_from(delay.as_nanos()).unwrap_or(u64::MAX);
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
        self.template
            .get_mut()
            .and_then(|template| self.replay.replay(template))
            .map_err(GiveUpReason::NotReplayable)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::RetryOnError;
    use crate::retry::CloneReplay;

    const REQUEST: usize = 256;
    const ATTEMPT: usize = 512;

    /// A service with a large request and a larger attempt future.
    struct Large;

    struct LargeFuture([u8; ATTEMPT]);

    impl Future for LargeFuture {
        type Output = Result<u8, BoxError>;

        fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
            Poll::Ready(Ok(self.0[0]))
        }
    }

    impl Service<[u8; REQUEST]> for Large {
        type Response = u8;
        type Error = BoxError;
        type Future = LargeFuture;

        fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: [u8; REQUEST]) -> LargeFuture {
            LargeFuture([req[0]; ATTEMPT])
        }
    }

    #[test]
    fn the_next_attempts_request_shares_its_place_with_the_attempt_in_flight() {
        // The template and the attempt's future are held side by side; the request prepared for
        // the next attempt exists only while no attempt is in flight, and takes no room of its
        // own. Holding it beside them would make the future at least this big.
        let beside = ATTEMPT + 2 * REQUEST;
        let size =
            std::mem::size_of::<ResponseFuture<Large, RetryOnError, CloneReplay, [u8; REQUEST]>>();
        assert!(size >= ATTEMPT + REQUEST, "{size}");
        assert!(
            size < beside,
            "{size} bytes: the next request is kept beside the attempt"
        );
    }
}
