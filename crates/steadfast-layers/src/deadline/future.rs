use pin_project::pin_project;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::time::Sleep;
use tracing::Span;

use super::layer::{CallRef, Shared};
use super::value::{cover, Current};
use super::{Deadline, DeadlineExceeded};
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::telemetry::REASON_KEY;

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
        timer: Timer,
        /// The call's span and the layer's telemetry, in one word.
        call_ref: CallRef,
    },
    Expired,
}

/// The deadline before its timer is armed, or the timer that holds it: once armed, the timer's
/// end is the deadline, so the two share their space (ADR 0008, decision 22).
#[pin_project(project = TimerProj)]
#[derive(Debug)]
enum Timer {
    /// No timer: the deadline once fixed, or the timeout to fix it from while it is not.
    Unarmed { scope: Current },
    /// The timer, ending at the deadline.
    Armed {
        #[pin]
        sleep: Sleep,
    },
}

impl Timer {
    /// The scope's deadline as a word, if it is fixed and one holds it.
    #[inline]
    fn fixed_word(&self) -> Option<u64> {
        match self {
            Timer::Unarmed { scope } => scope.fixed_word(),
            Timer::Armed { .. } => None,
        }
    }

    /// The deadline: the timer's end, the scope's if fixed, else the one the scope's timeout
    /// gives from now.
    #[inline]
    fn deadline_or_now(&self) -> Deadline {
        match self {
            Timer::Unarmed { scope } => scope.deadline_or_now(),
            Timer::Armed { sleep } => Deadline::at(sleep.deadline()),
        }
    }
}

impl<F, K> ResponseFuture<F, K> {
    pub(super) fn passthrough(inner: F) -> Self {
        Self {
            kind: Kind::Passthrough { inner },
            _error: PhantomData,
        }
    }

    /// Makes the inner call (`call`) with `scope` in scope and inside the call's span, and
    /// builds the future around it (the inner future is moved once, into its field: moving it,
    /// as large as the stack below, through closures was most of this layer's cost). The
    /// deadline is the scope's, if it is fixed or became fixed during the call; else it is fixed
    /// from the scope's timeout the moment it is first needed.
    #[inline(always)]
    pub(super) fn enforced(scope: Current, call: impl FnOnce() -> F, call_ref: CallRef) -> Self {
        let entered = scope.enter();
        let inner = {
            let _span = call_ref.span().map(Span::enter);
            call()
        };
        let scope = entered.exit().unwrap_or(scope);
        Self {
            kind: Kind::Enforced {
                inner,
                timer: Timer::Unarmed { scope },
                call_ref,
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
                mut timer,
                call_ref,
            } => {
                let _entered = call_ref.span().map(Span::enter);
                // Once fixed (at the latest when the timer is armed, after the first poll), the
                // scope cannot change inside: leaving it restores the enclosing one and reads
                // nothing back.
                let (entered, fixed, unarmed) = match &*timer {
                    Timer::Unarmed { scope } => (scope.enter(), scope.is_fixed(), true),
                    Timer::Armed { sleep } => (
                        Current::fixed(Deadline::at(sleep.deadline())).enter(),
                        true,
                        false,
                    ),
                };
                // A deadline around this one would ask whether it is covered.
                let enclosed = entered.encloses();
                // Asked below only while this future has no timer of its own.
                if unarmed {
                    cover::reset();
                }
                let polled = inner.poll(cx);
                let learned = if fixed {
                    drop(entered);
                    None
                } else {
                    entered.exit()
                };
                if let Poll::Ready(out) = polled {
                    return Poll::Ready(out.map_err(K::inner));
                }
                // No timer of its own while a timer inside, polled just now with this task's
                // waker, ends at or before the deadline (an attempt timeout under it, a nested
                // deadline): that one wakes the call in time, and the inner call then ends with
                // its error as it would have with both timers armed (ADR 0008, decision 16).
                if unarmed {
                    // Compared with the mark as words when the deadline is one: no conversion.
                    let word = learned
                        .as_ref()
                        .map_or_else(|| timer.fixed_word(), Current::fixed_word);
                    let deadline_or_now = || {
                        learned
                            .as_ref()
                            .map_or_else(|| timer.deadline_or_now(), Current::deadline_or_now)
                    };
                    if !cover::is_marked() && word.is_none() {
                        // Nothing inside covers this deadline, and it is not fixed yet: the
                        // timer is made before the clock is read (decision 25).
                        let sleep = crate::timer::unset();
                        let deadline = deadline_or_now();
                        arm_at(timer.as_mut(), sleep, deadline);
                    } else {
                        let (covered, fixed_now) = match word {
                            Some(w) => (cover::covers_word(cx.waker(), w), None),
                            None => {
                                let d = deadline_or_now();
                                (cover::covers(cx.waker(), d.instant()), Some(d))
                            }
                        };
                        if covered {
                            // The mark stays: it covers an enclosing deadline too. The scope
                            // stays, fixed, for the next poll.
                            if let Some(scope) = learned.or_else(|| fixed_now.map(Current::fixed)) {
                                timer.set(Timer::Unarmed { scope });
                            }
                            return Poll::Pending;
                        }
                        let deadline = fixed_now.unwrap_or_else(deadline_or_now);
                        arm(timer.as_mut(), deadline);
                    }
                }
                let TimerProj::Armed { sleep } = timer.project() else {
                    return Poll::Pending;
                };
                let end = sleep.deadline();
                if sleep.poll(cx).is_ready() {
                    return Poll::Ready(Err(K::refusal(exceeded_in_flight(call_ref.shared()))));
                }
                if enclosed {
                    cover::mark(cx.waker(), end);
                }
                Poll::Pending
            }
        }
    }
}

/// Arms the timer at `deadline`; out of line, so that the poll path keeps its registers and
/// stack for the common case.
#[inline(never)]
fn arm(mut timer: Pin<&mut Timer>, deadline: Deadline) {
    timer.set(Timer::Armed {
        sleep: crate::timer::timer(deadline.instant()),
    });
}

/// Arms the timer with `sleep`, made before the deadline was known, set to end at `deadline`;
/// out of line, as [`arm`].
#[inline(never)]
fn arm_at(mut timer: Pin<&mut Timer>, sleep: Sleep, deadline: Deadline) {
    timer.set(Timer::Armed { sleep });
    if let TimerProj::Armed { sleep } = timer.project() {
        sleep.reset(deadline.instant());
    }
}

/// Counts and traces a deadline that passed while the call was in flight; out of line, so that
/// the poll path keeps its registers and stack for the common case.
#[cold]
#[inline(never)]
fn exceeded_in_flight(shared: &Shared) -> DeadlineExceeded {
    shared.attrs.with(REASON_KEY, "in_flight", |a| {
        shared.refused.add(1, a);
    });
    tracing::debug!(
        target: "steadfast::deadline",
        reason = "in_flight",
        "deadline exceeded: call cancelled"
    );
    DeadlineExceeded::new()
}
