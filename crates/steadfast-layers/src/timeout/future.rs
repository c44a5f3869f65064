use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project::{pin_project, pinned_drop};
use tokio::time::{Instant, Sleep};

use super::layer::Shared;
use super::Elapsed;
use crate::deadline::{cover, Deadline, DeadlineExceeded};
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::telemetry::{SharedRef, REASON_KEY};

/// The response future of [`AttemptTimeout`](super::AttemptTimeout).
///
/// The timer is armed (one clock read) only when the inner call is still pending after its first
/// poll; the attempt's time counts from then, and the deadline is the one in scope then.
#[pin_project(PinnedDrop)]
#[derive(Debug)]
pub struct ResponseFuture<F, K = Boxed> {
    #[pin]
    inner: F,
    #[pin]
    sleep: Option<Sleep>,
    timeout: Option<Duration>,
    /// The timer was considered (armed, or found unneeded).
    armed: bool,
    /// Which of the two bounds the armed timer stands for.
    deadline_first: bool,
    /// When a deadline was in scope as the timer was armed, the timer's end as the mark that
    /// tells the deadline it is covered (it arms no timer while this one is pending, ADR 0008
    /// decision 16); [`cover::UNMARKED`] otherwise.
    cover: u64,
    shared: SharedRef<Shared>,
    _error: PhantomData<fn() -> K>,
}

impl<F, K> ResponseFuture<F, K> {
    #[inline]
    pub(super) fn new(inner: F, timeout: Option<Duration>, shared: SharedRef<Shared>) -> Self {
        Self {
            inner,
            sleep: None,
            timeout,
            armed: false,
            deadline_first: false,
            cover: cover::UNMARKED,
            shared,
            _error: PhantomData,
        }
    }
}

impl<F, T, E, K> Future for ResponseFuture<F, K>
where
    F: Future<Output = Result<T, E>>,
    K: MakeRefusal<E, Elapsed> + MakeRefusal<E, DeadlineExceeded>,
{
    type Output = Result<T, <K as MakeError<E>>::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out.map_err(K::inner));
        }
        if !*this.armed {
            *this.armed = true;
            // With a timeout of its own the timer is certain: made before the clock is read
            // (ADR 0008, decision 25).
            let made = this.timeout.is_some().then(crate::timer::unset);
            // One clock read for the attempt and for a deadline still to be fixed above it.
            let now = Instant::now();
            let attempt_end = this.timeout.and_then(|t| now.checked_add(t));
            let deadline = Deadline::current_marked_at(now);
            let end = match (attempt_end, deadline) {
                (Some(a), Some((d, mark))) if d.instant() <= a => {
                    *this.deadline_first = true;
                    *this.cover = mark;
                    d.instant()
                }
                (Some(a), Some(_)) => {
                    *this.cover = cover::end_word(a);
                    a
                }
                (Some(a), None) => a,
                (None, Some((d, mark))) => {
                    *this.deadline_first = true;
                    *this.cover = mark;
                    d.instant()
                }
                (None, None) => return Poll::Pending,
            };
            match made {
                Some(sleep) => crate::timer::arm_at(this.sleep.as_mut(), sleep, end),
                None => crate::timer::arm(this.sleep.as_mut(), end),
            }
        }
        let Some(timer) = this.sleep.as_pin_mut() else {
            // Neither a timeout nor a deadline: nothing to enforce.
            return Poll::Pending;
        };
        if timer.poll(cx).is_pending() {
            // This timer wakes the task by its end: a deadline above that ends no sooner needs
            // no timer of its own (ADR 0008, decision 16).
            if *this.cover != cover::UNMARKED {
                cover::mark_word(cx.waker(), *this.cover);
            }
            return Poll::Pending;
        }
        Poll::Ready(Err(
            match expired(this.shared, *this.deadline_first, *this.timeout) {
                Cut::Deadline(exceeded) => K::refusal(exceeded),
                Cut::Timeout(elapsed) => K::refusal(elapsed),
            },
        ))
    }
}

#[pinned_drop]
impl<F, K> PinnedDrop for ResponseFuture<F, K> {
    #[inline]
    fn drop(self: Pin<&mut Self>) {
        // Dropped with its timer (a combinator may drop it in the poll that marked it): nothing
        // above may count on that timer any more.
        if self.cover != cover::UNMARKED && self.sleep.is_some() {
            cover::reset();
        }
    }
}

/// Why an attempt was cut off.
enum Cut {
    Deadline(DeadlineExceeded),
    Timeout(Elapsed),
}

/// Counts and traces the end of an attempt, by its deadline or by its own timeout; out of line,
/// so that the poll path keeps its registers and stack for the common case.
#[cold]
#[inline(never)]
fn expired(shared: &Shared, deadline_first: bool, timeout: Option<Duration>) -> Cut {
    if deadline_first {
        shared.attrs.with(REASON_KEY, "attempt", |a| {
            shared.deadline_exceeded.add(1, a);
        });
        tracing::debug!(
            target: "steadfast::timeout",
            reason = "attempt",
            "deadline exceeded during an attempt: attempt cancelled"
        );
        Cut::Deadline(DeadlineExceeded::new())
    } else {
        let timeout = timeout.unwrap_or_default();
        shared.elapsed.add(1, shared.attrs.base());
        tracing::debug!(
            target: "steadfast::timeout",
            timeout_ms = crate::telemetry::ms(timeout),
            "attempt timed out: attempt cancelled"
        );
        Cut::Timeout(Elapsed::new(timeout))
    }
}
