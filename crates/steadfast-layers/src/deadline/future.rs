use pin_project::pin_project;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::Sleep;
use tracing::Span;

use super::layer::Shared;
use super::value::{cover, Current};
use super::DeadlineExceeded;
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::telemetry::{SharedRef, REASON_KEY};

/// The response future of [`DeadlineService`](super::DeadlineService).
///
/// It polls the inner call (in the deadline's task-local scope) first and arms its timer only if
/// the call is still pending, so a call that completes at once costs no timer.
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F, K = Boxed> {
    #[pin]
    kind: Kind<F>,
    _error: PhantomData<fn() -> K>,
}

#[pin_project(project = KindProj)]
#[derive(Debug)]
enum Kind<F> {
    Passthrough {
        #[pin]
        inner: F,
    },
    Enforced {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        /// The deadline once fixed, or the timeout to fix it from while it is not.
        scope: Current,
        /// The call's span, only when a subscriber wants it: a disabled span costs a check on
        /// every poll and on drop, and 40 bytes moved with the future.
        span: Option<Box<Span>>,
        shared: SharedRef<Shared>,
    },
    Expired,
}

impl<F, K> ResponseFuture<F, K> {
    pub(super) fn passthrough(inner: F) -> Self {
        Self {
            kind: Kind::Passthrough { inner },
            _error: PhantomData,
        }
    }

    /// Makes the inner call (`call`) with `scope` in scope and inside `span`, and builds the
    /// future around it (the inner future is moved once, into its field: moving it, as large as
    /// the stack below, through closures was most of this layer's cost). The deadline is the
    /// scope's, if it is fixed or became fixed during the call; else it is fixed from the
    /// scope's timeout the moment it is first needed.
    #[inline(always)]
    pub(super) fn enforced(
        scope: Current,
        call: impl FnOnce() -> F,
        span: Option<Box<Span>>,
        shared: SharedRef<Shared>,
    ) -> Self {
        if let Some(span) = span {
            return Self::enforced_traced(scope, call, span, shared);
        }
        // One call site for the untraced path, with no span guard to drop after it.
        let entered = scope.enter();
        let inner = call();
        let scope = match entered.exit() {
            Some(d) => Current::fixed(d),
            None => scope,
        };
        Self {
            kind: Kind::Enforced {
                inner,
                scope,
                sleep: None,
                span: None,
                shared,
            },
            _error: PhantomData,
        }
    }

    /// [`ResponseFuture::enforced`] for a call a subscriber traces: the call is made inside
    /// `span` too.
    #[cold]
    #[inline(never)]
    fn enforced_traced(
        scope: Current,
        call: impl FnOnce() -> F,
        span: Box<Span>,
        shared: SharedRef<Shared>,
    ) -> Self {
        let entered = scope.enter();
        let inner = {
            let _span = span.enter();
            call()
        };
        let scope = match entered.exit() {
            Some(d) => Current::fixed(d),
            None => scope,
        };
        Self {
            kind: Kind::Enforced {
                inner,
                scope,
                sleep: None,
                span: Some(span),
                shared,
            },
            _error: PhantomData,
        }
    }

    pub(super) fn expired() -> Self {
        Self {
            kind: Kind::Expired,
            _error: PhantomData,
        }
    }
}

impl<F, T, E, K> Future for ResponseFuture<F, K>
where
    F: Future<Output = Result<T, E>>,
    K: MakeRefusal<E, DeadlineExceeded>,
{
    type Output = Result<T, <K as MakeError<E>>::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { inner } => inner.poll(cx).map_err(K::inner),
            KindProj::Expired => Poll::Ready(Err(K::refusal(DeadlineExceeded::on_arrival_error()))),
            KindProj::Enforced {
                inner,
                mut sleep,
                scope,
                span,
                shared,
            } => {
                let _entered = span.as_deref().map(Span::enter);
                // Once fixed (at the latest when the timer is armed, after the first poll), the
                // scope cannot change inside: leaving it restores the enclosing one and reads
                // nothing back.
                let fixed = scope.is_fixed();
                let entered = scope.enter();
                // A deadline around this one would ask whether it is covered.
                let enclosed = entered.encloses();
                // Asked below only while this future has no timer of its own.
                let unarmed = sleep.is_none();
                if unarmed {
                    cover::reset();
                }
                let polled = inner.poll(cx);
                if fixed {
                    drop(entered);
                } else if let Some(d) = entered.exit() {
                    *scope = Current::fixed(d);
                }
                if let Poll::Ready(out) = polled {
                    return Poll::Ready(out.map_err(K::inner));
                }
                // No timer of its own while a timer inside, polled just now with this task's
                // waker, ends at or before the deadline (an attempt timeout under it, a nested
                // deadline): that one wakes the call in time, and the inner call then ends with
                // its error as it would have with both timers armed (ADR 0008, decision 16).
                if unarmed {
                    let deadline = scope.fix().instant();
                    if cover::covers(cx.waker(), deadline) {
                        // The mark stays: it covers an enclosing deadline too.
                        return Poll::Pending;
                    }
                    crate::timer::arm(sleep.as_mut(), deadline);
                }
                let Some(timer) = sleep.as_pin_mut() else {
                    return Poll::Pending;
                };
                let end = timer.deadline();
                if timer.poll(cx).is_ready() {
                    return Poll::Ready(Err(K::refusal(exceeded_in_flight(shared))));
                }
                if enclosed {
                    cover::mark(cx.waker(), end);
                }
                Poll::Pending
            }
        }
    }
}

/// Counts and traces a deadline that passed while the call was in flight; out of line, so that
/// the poll path keeps its registers and stack for the common case.
#[cold]
#[inline(never)]
fn exceeded_in_flight(shared: &Shared) -> DeadlineExceeded {
    shared.attrs.with(REASON_KEY, "in_flight", |a| {
        shared.exceeded.add(1, a);
    });
    tracing::debug!(
        target: "steadfast::deadline",
        reason = "in_flight",
        "deadline exceeded: call cancelled"
    );
    DeadlineExceeded::new()
}
