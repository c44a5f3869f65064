use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, RawWakerVTable, Waker};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::Instant;

// The deadline in scope. Like tokio's task-local values, it is set on the polling thread for the
// duration of each `call` and each poll of a scoped future and restored afterwards; unlike them,
// the value is `Copy` and handed back when the scope ends, so a deadline fixed lazily inside the
// scope is kept (tokio's `sync_scope` consumes its value).
thread_local! {
    static CURRENT: Cell<Option<Current>> = const { Cell::new(None) };
    static COVERED: Cell<Option<Cover>> = const { Cell::new(None) };
}

/// A timer polled inside the current poll: the task its waker wakes and when it ends.
#[derive(Clone, Copy)]
struct Cover {
    waker: (usize, usize),
    end: Instant,
}

/// The task a waker wakes: its data and vtable addresses, compared and never followed, as
/// [`Waker::will_wake`](std::task::Waker::will_wake) compares them.
#[inline]
fn identity(waker: &Waker) -> (usize, usize) {
    (
        waker.data() as usize,
        waker.vtable() as *const RawWakerVTable as usize,
    )
}

/// Whether the call polled inside a deadline's scope is already bound to be woken by its
/// deadline (ADR 0008, decision 16): a timer inside it, polled in this very poll with this very
/// waker, ends at or before the deadline. The deadline's response future then arms no timer of
/// its own for that poll; when nothing covers it, it arms one as before.
///
/// The rule: the enforcing future calls [`cover::reset`] before it polls the inner call and asks
/// [`cover::covers`] after a `Pending`; a future that has just polled a pending timer calls
/// [`cover::mark`] with its end, and [`cover::reset`] again when it drops that timer (a
/// combinator may drop it within the same poll). A waker that differs (a sub-task's, a
/// combinator's own) never matches, so the deadline is then enforced by its own timer.
pub(crate) mod cover {
    use super::{identity, Cover, COVERED};
    use std::task::Waker;
    use tokio::time::Instant;

    /// Forgets any mark: before the inner call is polled, and when a marked timer is dropped.
    #[inline]
    pub(crate) fn reset() {
        let _ = COVERED.try_with(|c| c.set(None));
    }

    /// A timer ending at `end` was polled just now with `waker`, and is pending.
    #[inline]
    pub(crate) fn mark(waker: &Waker, end: Instant) {
        let cover = Cover {
            waker: identity(waker),
            end,
        };
        let _ = COVERED.try_with(|c| c.set(Some(cover)));
    }

    /// Whether a timer polled inside this poll with `waker` ends at or before `deadline`.
    #[inline]
    pub(crate) fn covers(waker: &Waker, deadline: Instant) -> bool {
        COVERED
            .try_with(|c| {
                c.get()
                    .is_some_and(|m| m.end <= deadline && m.waker == identity(waker))
            })
            .unwrap_or(false)
    }
}

/// What the scope holds: a deadline, or a timeout whose deadline is fixed the first time
/// anything needs it (so that a call nobody asks about costs no clock read).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Current {
    deadline: Option<Deadline>,
    timeout: Duration,
}

impl Current {
    pub(crate) const fn fixed(deadline: Deadline) -> Self {
        Current {
            deadline: Some(deadline),
            timeout: Duration::ZERO,
        }
    }

    /// A deadline `timeout` from the moment it is first needed, or `known` once fixed.
    pub(crate) const fn lazy(timeout: Duration, known: Option<Deadline>) -> Self {
        Current {
            deadline: known,
            timeout,
        }
    }

    /// The deadline, fixing it now (one clock read) if it was not.
    #[inline]
    pub(crate) fn fix(&mut self) -> Deadline {
        match self.deadline {
            Some(d) => d,
            None => {
                let d = Deadline::after_saturating(self.timeout);
                self.deadline = Some(d);
                d
            }
        }
    }

    /// Whether the deadline is fixed (a fixed scope cannot change while it is in scope).
    #[inline]
    pub(crate) const fn is_fixed(&self) -> bool {
        self.deadline.is_some()
    }

    /// Puts `self` in scope on this thread until [`Entered::exit`], or until the guard is
    /// dropped (which leaves without reading the scope back: enough for a fixed scope, and what
    /// happens when the code in the scope panics, since a runtime that catches the panic goes on
    /// polling other tasks on this thread). One thread-local access to enter, one to leave.
    #[inline]
    pub(crate) fn enter(self) -> Entered {
        // The cell has no destructor, so it is never destroyed and the access cannot fail; if it
        // ever did (a thread shutting down), the code would run without a scope.
        Entered {
            prev: CURRENT.try_with(|c| c.replace(Some(self))).ok().flatten(),
        }
    }
}

/// A deadline scope entered by [`Current::enter`]: leave it with [`Entered::exit`] (reading the
/// scope back) or by dropping it.
pub(crate) struct Entered {
    /// The enclosing scope, put back on exit.
    prev: Option<Current>,
}

impl Entered {
    /// Whether this scope is inside another (a deadline's, or [`Deadline::scope`]'s).
    #[inline]
    pub(crate) fn encloses(&self) -> bool {
        self.prev.is_some()
    }

    /// Leaves the scope, putting the enclosing one back; returns the scope's deadline if it
    /// became known (fixed inside the scope, or given).
    #[inline]
    pub(crate) fn exit(self) -> Option<Deadline> {
        let prev = self.prev;
        // Left here: the guard's drop would put `prev` back a second time.
        std::mem::forget(self);
        CURRENT
            .try_with(|c| c.replace(prev))
            .ok()
            .flatten()
            .and_then(|m| m.deadline)
    }
}

impl Drop for Entered {
    #[inline]
    fn drop(&mut self) {
        let prev = self.prev;
        let _ = CURRENT.try_with(|c| c.set(prev));
    }
}

/// The future returned by [`Deadline::scope`]: `fut` polled with the deadline in scope.
#[pin_project]
#[derive(Debug)]
pub struct Scoped<F> {
    #[pin]
    inner: F,
    deadline: Deadline,
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // A fixed scope: left by dropping the guard, nothing to read back.
        let _scope = Current::fixed(*this.deadline).enter();
        this.inner.poll(cx)
    }
}

/// The longest timeout a [`Deadline`] accepts: 99,999,999 hours, the largest `grpc-timeout`.
/// Anything longer is treated as no deadline by [`Deadline::after`].
pub const MAX_TIMEOUT: Duration = Duration::from_secs(99_999_999 * 3600);

/// One end-to-end deadline: the instant by which the original caller needs an answer.
///
/// It is absolute (on [`tokio::time::Instant`], so paused-clock tests work) and travels with the
/// request: in a task-local scope for any request type ([`Deadline::current`], [`Deadline::scope`])
/// and, for HTTP requests, in the request's extensions (see [`HttpExtensions`](super::HttpExtensions)).
/// Layers may only shrink it, never extend it. Over the wire it becomes a relative timeout
/// ([`Deadline::timeout_at`] / [`Deadline::from_timeout_at`]) such as `grpc-timeout`.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::deadline::Deadline;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let d = Deadline::after(Duration::from_secs(2)).unwrap();
/// assert!(Deadline::current().is_none());
/// d.scope(async {
///     // Every outbound call made here can see, and inherit, the caller's deadline.
///     assert_eq!(Deadline::current(), Some(d));
///     // A nested scope can shrink it but never extend it.
///     let longer = Deadline::after(Duration::from_secs(60)).unwrap();
///     longer.scope(async { assert_eq!(Deadline::current(), Some(d)) }).await;
/// })
/// .await;
/// tokio::time::advance(Duration::from_secs(3)).await;
/// assert!(d.is_expired());
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline at `instant`.
    ///
    /// ```
    /// # use steadfast_layers::deadline::Deadline;
    /// let now = tokio::time::Instant::now();
    /// assert_eq!(Deadline::at(now).instant(), now);
    /// ```
    pub const fn at(instant: Instant) -> Self {
        Deadline(instant)
    }

    /// A deadline `timeout` from now (one clock read); `None` if `timeout` exceeds
    /// [`MAX_TIMEOUT`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::deadline::{Deadline, MAX_TIMEOUT};
    /// assert!(Deadline::after(Duration::from_secs(1)).is_some());
    /// assert!(Deadline::after(MAX_TIMEOUT + Duration::from_secs(1)).is_none());
    /// ```
    pub fn after(timeout: Duration) -> Option<Self> {
        Self::from_timeout_at(Instant::now(), timeout)
    }

    /// A deadline `timeout` after `now`; `None` if `timeout` exceeds [`MAX_TIMEOUT`]. This is how
    /// a received `grpc-timeout` becomes a deadline.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::deadline::Deadline;
    /// let now = tokio::time::Instant::now();
    /// let d = Deadline::from_timeout_at(now, Duration::from_millis(250)).unwrap();
    /// assert_eq!(d.timeout_at(now), Duration::from_millis(250));
    /// ```
    pub fn from_timeout_at(now: Instant, timeout: Duration) -> Option<Self> {
        if timeout > MAX_TIMEOUT {
            return None;
        }
        now.checked_add(timeout).map(Deadline)
    }

    /// `timeout` from now, saturating far in the future (about 30 years) if it cannot be
    /// represented.
    #[inline]
    pub(crate) fn after_saturating(timeout: Duration) -> Self {
        Self::after_saturating_at(Instant::now(), timeout)
    }

    /// `timeout` after `now`, saturating like [`Deadline::after_saturating`].
    pub(crate) fn after_saturating_at(now: Instant, timeout: Duration) -> Self {
        Deadline(
            now.checked_add(timeout)
                .or_else(|| now.checked_add(Duration::from_secs(86_400 * 365 * 30)))
                .unwrap_or(now),
        )
    }

    /// The instant of the deadline.
    ///
    /// ```
    /// # use steadfast_layers::deadline::Deadline;
    /// let now = tokio::time::Instant::now();
    /// assert_eq!(Deadline::at(now).instant(), now);
    /// ```
    pub const fn instant(self) -> Instant {
        self.0
    }

    /// Time left before the deadline (zero once passed). One clock read.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::deadline::Deadline;
    /// let d = Deadline::after(Duration::from_secs(5)).unwrap();
    /// assert!(d.remaining() <= Duration::from_secs(5));
    /// ```
    pub fn remaining(self) -> Duration {
        self.timeout_at(Instant::now())
    }

    /// Time left before the deadline as seen at `now` (zero once passed): the value to send as
    /// `grpc-timeout`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::deadline::Deadline;
    /// let now = tokio::time::Instant::now();
    /// let d = Deadline::at(now + Duration::from_secs(1));
    /// assert_eq!(d.timeout_at(now), Duration::from_secs(1));
    /// assert_eq!(d.timeout_at(now + Duration::from_secs(9)), Duration::ZERO);
    /// ```
    pub fn timeout_at(self, now: Instant) -> Duration {
        self.0.saturating_duration_since(now)
    }

    /// Whether the deadline has passed. One clock read.
    ///
    /// ```
    /// # use steadfast_layers::deadline::Deadline;
    /// assert!(Deadline::at(tokio::time::Instant::now()).is_expired());
    /// ```
    pub fn is_expired(self) -> bool {
        self.is_expired_at(Instant::now())
    }

    /// Whether the deadline has passed at `now` (a deadline equal to `now` has passed).
    ///
    /// ```
    /// # use steadfast_layers::deadline::Deadline;
    /// let now = tokio::time::Instant::now();
    /// assert!(Deadline::at(now).is_expired_at(now));
    /// ```
    pub fn is_expired_at(self, now: Instant) -> bool {
        now >= self.0
    }

    /// The earlier of this deadline and `other`: deadlines only shrink.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::deadline::Deadline;
    /// let now = tokio::time::Instant::now();
    /// let a = Deadline::at(now + Duration::from_secs(1));
    /// let b = Deadline::at(now + Duration::from_secs(2));
    /// assert_eq!(b.shrink(Some(a)), a);
    /// assert_eq!(a.shrink(None), a);
    /// ```
    pub fn shrink(self, other: Option<Deadline>) -> Deadline {
        match other {
            Some(o) if o < self => o,
            _ => self,
        }
    }

    /// The deadline of the task-local scope this code runs in, if any.
    ///
    /// ```
    /// # use steadfast_layers::deadline::Deadline;
    /// assert_eq!(Deadline::current(), None);
    /// ```
    #[inline]
    pub fn current() -> Option<Deadline> {
        Self::current_fixed_with(Instant::now)
    }

    /// [`Deadline::current`] for a caller that has just read the clock: a deadline still to be
    /// fixed (a deadline layer's own timeout, fixed the first time something needs it) is fixed
    /// `now`, so that the caller and the scope share one clock read.
    pub(crate) fn current_at(now: Instant) -> Option<Deadline> {
        Self::current_fixed_with(|| now)
    }

    #[inline]
    fn current_fixed_with(now: impl FnOnce() -> Instant) -> Option<Deadline> {
        CURRENT
            .try_with(|c| {
                let mut cur = c.get()?;
                Some(match cur.deadline {
                    Some(d) => d,
                    None => {
                        let d = Deadline::after_saturating_at(now(), cur.timeout);
                        cur.deadline = Some(d);
                        c.set(Some(cur));
                        d
                    }
                })
            })
            .ok()
            .flatten()
    }

    /// Runs `fut` with this deadline (shrunk to any enclosing one) in the task-local scope, so
    /// that every call made while polling it inherits the deadline.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::deadline::Deadline;
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let d = Deadline::after(Duration::from_secs(1)).unwrap();
    /// let seen = d.scope(async { Deadline::current() }).await;
    /// assert_eq!(seen, Some(d));
    /// # }
    /// ```
    pub fn scope<F: Future>(self, fut: F) -> Scoped<F> {
        Scoped {
            inner: fut,
            deadline: self.shrink(Self::current()),
        }
    }

    /// Runs `f` synchronously with this deadline (shrunk to any enclosing one) in scope.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::deadline::Deadline;
    /// let d = Deadline::at(tokio::time::Instant::now());
    /// assert_eq!(d.sync_scope(Deadline::current), Some(d));
    /// ```
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        let _scope = Current::fixed(self.shrink(Self::current())).enter();
        f()
    }
}
