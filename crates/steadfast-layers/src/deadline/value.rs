use std::cell::{Cell, RefCell};
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
//
// Every cell here holds one machine word, read and written whole: a value of several words that
// is written in pieces and then copied whole makes the copy wait for the pieces to reach the
// cache (a store-forwarding stall), and the scope is copied in and out on every poll (ADR 0008,
// decision 21).
thread_local! {
    /// The scope, as a [`word`].
    static CURRENT: Cell<u64> = const { Cell::new(word::NONE) };
    /// The scopes no word holds, innermost last: one for each scope in effect whose word is
    /// [`word::FAR`] (see [`far`]).
    static FAR: RefCell<Vec<Far>> = const { RefCell::new(Vec::new()) };
    /// The end of the timer marked by [`cover::mark`], as a fixed [`word`]; [`word::NONE`]
    /// when nothing is marked.
    static COVER_END: Cell<u64> = const { Cell::new(word::NONE) };
    /// The data address of the marked timer's waker (see [`identity`]).
    static COVER_DATA: Cell<usize> = const { Cell::new(0) };
    /// The vtable address of the marked timer's waker.
    static COVER_VTABLE: Cell<usize> = const { Cell::new(0) };
}

/// A scope in one word. `NONE` is no scope; `FAR` says the scope is on the `FAR` stack; a word
/// with the `LAZY` bit holds a timeout not yet fixed, in nanoseconds; any other word holds a
/// fixed deadline as one plus its nanoseconds after a process-wide origin. A word holds any
/// timeout under 292 years and any deadline from a day before the origin was first read (see
/// `origin`) to 292 years after; anything else (a deadline a user made before that, a timeout of
/// centuries) goes to the `FAR` stack, exactly and more slowly.
mod word {
    use super::Deadline;
    use std::sync::OnceLock;
    use std::time::Duration;
    use tokio::time::Instant;

    pub(super) const NONE: u64 = 0;
    pub(super) const FAR: u64 = u64::MAX;
    pub(super) const LAZY: u64 = 1 << 63;
    const NANOS_PER_SEC: u64 = 1_000_000_000;

    /// The instant fixed words count from: a day before it is first read, by the first deadline
    /// made a word or the first timer made by `timer::unset` (or right then, on a clock that
    /// cannot go back a day). Only how fast a deadline is kept depends on it, never what is
    /// kept: a paused or advanced tokio clock only moves forward from the real one, and a
    /// deadline before the origin is kept on the `FAR` stack.
    #[inline]
    pub(super) fn origin() -> Instant {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        *ORIGIN.get_or_init(|| {
            let now = Instant::now();
            now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now)
        })
    }

    /// `deadline` as a word, if one holds it.
    #[inline]
    pub(super) fn fixed(deadline: Deadline) -> Option<u64> {
        let since = deadline.instant().checked_duration_since(origin())?;
        let nanos = since
            .as_secs()
            .checked_mul(NANOS_PER_SEC)?
            .checked_add(u64::from(since.subsec_nanos()))?;
        (nanos < LAZY - 1).then_some(nanos + 1)
    }

    /// A timeout not yet fixed as a word, if one holds it.
    #[inline]
    pub(super) fn lazy(timeout: Duration) -> Option<u64> {
        u64::try_from(timeout.as_nanos())
            .ok()
            .filter(|&n| n < FAR - LAZY)
            .map(|n| LAZY | n)
    }

    /// Whether `word` (neither `NONE` nor `FAR`) holds a timeout not yet fixed.
    #[inline]
    pub(super) const fn is_lazy(word: u64) -> bool {
        word & LAZY != 0
    }

    /// The timeout of a lazy word.
    #[inline]
    pub(super) const fn timeout(word: u64) -> Duration {
        Duration::from_nanos(word & !LAZY)
    }

    /// The deadline of a fixed word.
    #[inline]
    pub(super) fn deadline(word: u64) -> Deadline {
        // Cannot overflow: the word was made from this very instant.
        Deadline::at(origin() + Duration::from_nanos(word - 1))
    }
}

/// An instant read once per process (the origin fixed words count from), for a caller that needs
/// some instant, any, without reading the clock.
#[inline]
pub(crate) fn process_instant() -> Instant {
    word::origin()
}

/// The `FAR` stack. A scope's word can become `FAR` in two ways: entering a scope no word holds
/// pushes it, and fixing a lazy scope at a deadline no word holds pushes that deadline. Neither
/// word ever becomes another word again while in scope, so a scope whose word is `FAR` when it is
/// left owns exactly the top entry, and leaving it pops that entry. (The stack's memory is kept
/// for the thread's next far scope; nothing on it outlives its scope.)
mod far {
    use super::{Far, FAR};

    /// Puts `far` on top (entering it, or fixing the scope on top of the words at it).
    #[cold]
    pub(super) fn push(far: Far) {
        let _ = FAR.try_with(|s| s.borrow_mut().push(far));
    }

    /// Takes the top off: the scope being left.
    #[cold]
    pub(super) fn pop() -> Option<Far> {
        FAR.try_with(|s| s.borrow_mut().pop()).ok().flatten()
    }

    /// The deadline of the scope on top, fixing it with the clock read by `now` if it was not.
    #[cold]
    pub(super) fn fix_top(now: impl FnOnce() -> tokio::time::Instant) -> Option<super::Deadline> {
        FAR.try_with(|s| s.borrow_mut().last_mut().map(|far| far.fix_with(now)))
            .ok()
            .flatten()
    }
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
    use super::{identity, word, Deadline, COVER_DATA, COVER_END, COVER_VTABLE};
    use std::task::Waker;
    use tokio::time::Instant;

    /// An end that marks nothing.
    pub(crate) const UNMARKED: u64 = word::NONE;

    /// Forgets any mark: before the inner call is polled, and when a marked timer is dropped.
    #[inline]
    pub(crate) fn reset() {
        let _ = COVER_END.try_with(|c| c.set(word::NONE));
    }

    /// A timer ending at `end` was polled just now with `waker`, and is pending. (An end no
    /// word holds is not marked: the deadline above then arms its own timer, as it would
    /// without the mark.)
    #[inline]
    pub(crate) fn mark(waker: &Waker, end: Instant) {
        mark_word(waker, end_word(end));
    }

    /// The mark of a timer ending at `end`, for [`mark_word`]: `end` as a fixed word, or
    /// [`UNMARKED`] when no word holds it.
    #[inline]
    pub(crate) fn end_word(end: Instant) -> u64 {
        word::fixed(Deadline::at(end)).unwrap_or(UNMARKED)
    }

    /// [`mark`] for an end already made a word by [`end_word`] (an [`UNMARKED`] end marks
    /// nothing).
    #[inline]
    pub(crate) fn mark_word(waker: &Waker, end: u64) {
        let (data, vtable) = identity(waker);
        let _ = COVER_DATA.try_with(|c| c.set(data));
        let _ = COVER_VTABLE.try_with(|c| c.set(vtable));
        let _ = COVER_END.try_with(|c| c.set(end));
    }

    /// Whether any timer was marked since the last [`reset`]: when none was, nothing covers.
    #[inline]
    pub(crate) fn is_marked() -> bool {
        mark_end() != word::NONE
    }

    /// Whether a timer polled inside this poll with `waker` ends at or before `deadline`.
    #[inline]
    pub(crate) fn covers(waker: &Waker, deadline: Instant) -> bool {
        let end = mark_end();
        end != word::NONE && word::deadline(end).instant() <= deadline && marked(waker)
    }

    /// [`covers`] for a deadline given as a fixed word.
    #[inline]
    pub(crate) fn covers_word(waker: &Waker, deadline: u64) -> bool {
        let end = mark_end();
        end != word::NONE && end <= deadline && marked(waker)
    }

    /// The marked timer's end as a word, or `NONE`.
    #[inline]
    fn mark_end() -> u64 {
        COVER_END
            .try_with(std::cell::Cell::get)
            .unwrap_or(word::NONE)
    }

    /// Whether the mark was made with `waker`.
    #[inline]
    fn marked(waker: &Waker) -> bool {
        let (data, vtable) = identity(waker);
        COVER_DATA.try_with(std::cell::Cell::get).ok() == Some(data)
            && COVER_VTABLE.try_with(std::cell::Cell::get).ok() == Some(vtable)
    }
}

/// A scope no [`word`] holds exactly: a deadline, or a timeout whose deadline is fixed the
/// first time anything needs it.
#[derive(Clone, Copy, Debug)]
struct Far {
    deadline: Option<Deadline>,
    timeout: Duration,
}

impl Far {
    /// The deadline, fixing it from the timeout with the clock read by `now` if it was not.
    #[inline]
    fn fix_with(&mut self, now: impl FnOnce() -> Instant) -> Deadline {
        match self.deadline {
            Some(d) => d,
            None => {
                let d = Deadline::after_saturating_at(now(), self.timeout);
                self.deadline = Some(d);
                d
            }
        }
    }
}

/// What the scope holds: a deadline, or a timeout whose deadline is fixed the first time
/// anything needs it (so that a call nobody asks about costs no clock read). As one [`word`],
/// read and written whole; `far` is read only when the word is [`word::FAR`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Current {
    word: u64,
    far: Far,
}

impl Current {
    /// The `far` of a scope in its word: never read.
    const NOT_FAR: Far = Far {
        deadline: None,
        timeout: Duration::ZERO,
    };

    /// A fixed deadline.
    #[inline]
    pub(crate) fn fixed(deadline: Deadline) -> Self {
        Self::of(
            word::fixed(deadline),
            Far {
                deadline: Some(deadline),
                timeout: Duration::ZERO,
            },
        )
    }

    /// A deadline `timeout` from the moment it is first needed.
    #[inline]
    pub(crate) fn lazy(timeout: Duration) -> Self {
        Self::of(
            word::lazy(timeout),
            Far {
                deadline: None,
                timeout,
            },
        )
    }

    /// The scope in `word`, or `far` when no word holds it.
    #[inline]
    fn of(word: Option<u64>, far: Far) -> Self {
        match word {
            Some(word) => Current {
                word,
                far: Self::NOT_FAR,
            },
            None => Current {
                word: word::FAR,
                far,
            },
        }
    }

    /// The deadline if fixed, else the one the timeout gives from now (one clock read).
    #[inline]
    pub(crate) fn deadline_or_now(&self) -> Deadline {
        match self.word {
            word::FAR => {
                let mut far = self.far;
                far.fix_with(Instant::now)
            }
            w if word::is_lazy(w) => {
                Deadline::after_saturating_at(Instant::now(), word::timeout(w))
            }
            w => word::deadline(w),
        }
    }

    /// The deadline as a [`word`], if it is fixed and one holds it (words of fixed deadlines
    /// compare as the deadlines do).
    #[inline]
    pub(crate) fn fixed_word(&self) -> Option<u64> {
        (self.word != word::FAR && !word::is_lazy(self.word)).then_some(self.word)
    }

    /// Whether the deadline is fixed (a fixed scope cannot change while it is in scope).
    #[inline]
    pub(crate) fn is_fixed(&self) -> bool {
        match self.word {
            word::FAR => self.far.deadline.is_some(),
            w => !word::is_lazy(w),
        }
    }

    /// Puts this scope in scope on this thread until [`Entered::exit`], or until the guard is
    /// dropped (which leaves without reading the scope back: enough for a fixed scope, and what
    /// happens when the code in the scope panics, since a runtime that catches the panic goes on
    /// polling other tasks on this thread). One thread-local word written to enter, one to leave.
    #[inline]
    pub(crate) fn enter(&self) -> Entered {
        // The word's cell has no destructor, so it is never destroyed and the access cannot
        // fail; if it ever did, the code would run without a scope. The `FAR` stack has one: a
        // far scope entered while the thread shuts down, after the stack is gone, reads as none.
        let prev = CURRENT
            .try_with(|c| c.replace(self.word))
            .unwrap_or(word::NONE);
        if self.word == word::FAR {
            far::push(self.far);
        }
        Entered { prev }
    }
}

/// A deadline scope entered by [`Current::enter`]: leave it with [`Entered::exit`] (reading the
/// scope back) or by dropping it.
pub(crate) struct Entered {
    /// The enclosing scope's word, put back on exit.
    prev: u64,
}

impl Entered {
    /// Whether this scope is inside another (a deadline's, or [`Deadline::scope`]'s).
    #[inline]
    pub(crate) fn encloses(&self) -> bool {
        self.prev != word::NONE
    }

    /// Leaves the scope, putting the enclosing one back; returns the scope if its deadline
    /// became known (fixed inside the scope, or given).
    #[inline]
    pub(crate) fn exit(self) -> Option<Current> {
        let prev = self.prev;
        // Left here: the guard's drop would put `prev` back a second time.
        std::mem::forget(self);
        match leave(prev) {
            word::NONE => None,
            word::FAR => far::pop()
                .filter(|far| far.deadline.is_some())
                .map(|far| Current::of(None, far)),
            w if word::is_lazy(w) => None,
            w => Some(Current::of(Some(w), Current::NOT_FAR)),
        }
    }
}

impl Drop for Entered {
    #[inline]
    fn drop(&mut self) {
        if leave(self.prev) == word::FAR {
            far::pop();
        }
    }
}

/// Puts `prev` back in scope; returns the word of the scope left.
#[inline]
fn leave(prev: u64) -> u64 {
    CURRENT.try_with(|c| c.replace(prev)).unwrap_or(word::NONE)
}

/// The future returned by [`Deadline::scope`]: `fut` polled with the deadline in scope.
#[pin_project]
#[derive(Debug)]
pub struct Scoped<F> {
    #[pin]
    inner: F,
    scope: Current,
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        // A fixed scope: left by dropping the guard, nothing to read back.
        let _scope = this.scope.enter();
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

    /// `timeout` after `now`, saturating far in the future (about 30 years after `now`) if it
    /// cannot be represented.
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
        Self::current_fixed_with(Instant::now).map(|(d, _)| d)
    }

    /// [`Deadline::current`] for a caller that has just read the clock: a deadline still to be
    /// fixed (a deadline layer's own timeout, fixed the first time something needs it) is fixed
    /// `now`, so that the caller and the scope share one clock read.
    /// With the deadline comes its [`cover`] mark: what [`cover::mark_word`] takes for a timer
    /// ending at the deadline.
    pub(crate) fn current_marked_at(now: Instant) -> Option<(Deadline, u64)> {
        Self::current_fixed_with(|| now)
    }

    /// The deadline in scope, fixed with the clock read by `now` if it was not, and its word
    /// ([`word::NONE`] when no word holds it).
    #[inline]
    fn current_fixed_with(now: impl FnOnce() -> Instant) -> Option<(Deadline, u64)> {
        let cell = CURRENT.try_with(Cell::get).ok()?;
        match cell {
            word::NONE => None,
            word::FAR => far::fix_top(now).map(|d| (d, word::NONE)),
            w if word::is_lazy(w) => {
                let d = Deadline::after_saturating_at(now(), word::timeout(w));
                Some(Self::fixed_in_scope(d))
            }
            w => Some((word::deadline(w), w)),
        }
    }

    /// Puts `self`, just fixed from the lazy scope's timeout, in that scope's place.
    #[inline]
    fn fixed_in_scope(self) -> (Deadline, u64) {
        let w = word::fixed(self);
        let _ = CURRENT.try_with(|c| c.set(w.unwrap_or(word::FAR)));
        if w.is_none() {
            far::push(Far {
                deadline: Some(self),
                timeout: Duration::ZERO,
            });
        }
        (self, w.unwrap_or(word::NONE))
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
            scope: Current::fixed(self.shrink(Self::current())),
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

/// The scope is one word for every deadline near the process's lifetime, and a slower cell for
/// the rest; both keep the deadline exactly.
#[cfg(test)]
mod tests {
    use super::{word, Deadline, MAX_TIMEOUT};
    use crate::deadline::DeadlineLayer;
    use std::convert::Infallible;
    use std::time::Duration;
    use tokio::time::Instant;
    use tower::{service_fn, Layer, ServiceExt};

    /// A deadline long before the origin (a day before the first scope), when the clock can
    /// express one.
    fn long_ago(now: Instant) -> Option<Deadline> {
        now.checked_sub(Duration::from_secs(3 * 86_400))
            .map(Deadline::at)
    }

    #[tokio::test(start_paused = true)]
    async fn every_deadline_comes_back_exactly_from_its_scope() {
        let now = Instant::now();
        let near = [
            now,
            now + Duration::from_nanos(1),
            now + Duration::from_secs(3600),
            now + Duration::from_secs(200 * 365 * 86_400),
        ];
        for at in near {
            let d = Deadline::at(at);
            assert!(word::fixed(d).is_some(), "{d:?} should fit in a word");
            assert_eq!(d.sync_scope(Deadline::current), Some(d));
            assert_eq!(Deadline::current(), None, "the scope was left");
        }
        let mut far = vec![Deadline::at(now + MAX_TIMEOUT)];
        far.extend(long_ago(now));
        for d in far {
            assert_eq!(word::fixed(d), None, "{d:?} should not fit in a word");
            assert_eq!(d.sync_scope(Deadline::current), Some(d));
            assert_eq!(Deadline::current(), None, "the scope was left");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn scopes_nested_across_the_far_cell_restore_each_other() {
        let now = Instant::now();
        let outer = Deadline::at(now + MAX_TIMEOUT);
        let middle = Deadline::at(now + Duration::from_secs(1));
        let seen = outer.sync_scope(|| {
            let inside = middle.sync_scope(|| {
                let innermost = long_ago(now).map(|d| (d, d.sync_scope(Deadline::current)));
                (innermost, Deadline::current())
            });
            (inside, Deadline::current())
        });
        let ((innermost, after_innermost), after_middle) = seen;
        if let Some((d, seen)) = innermost {
            assert_eq!(seen, Some(d));
        }
        assert_eq!(after_innermost, Some(middle));
        assert_eq!(after_middle, Some(outer));
        assert_eq!(Deadline::current(), None);
        assert_eq!(far_scopes(), 0, "every far scope was taken off when left");
    }

    fn far_scopes() -> usize {
        super::FAR.with(|s| s.borrow().len())
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_a_word_holds_fixed_at_a_deadline_it_does_not_is_kept_exactly() {
        // The longest timeout a word holds: fixed any time after the origin, its deadline is
        // past what a word holds.
        let longest = Duration::from_nanos((1 << 63) - 2);
        assert!(word::lazy(longest).is_some());
        let _ = word::fixed(Deadline::at(Instant::now())); // the origin is set by now
        tokio::time::advance(Duration::from_secs(1)).await;
        let start = Instant::now();
        let svc = DeadlineLayer::new(longest).unwrap().layer(service_fn(|()| {
            let in_call = Deadline::current();
            async move { Ok::<_, Infallible>((in_call, Deadline::current())) }
        }));
        let (in_call, in_poll) = svc.oneshot(()).await.unwrap();
        let expected = Deadline::at(start + longest);
        assert_eq!(word::fixed(expected), None);
        assert_eq!(in_call, Some(expected));
        assert_eq!(in_poll, in_call);
        assert_eq!(far_scopes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_too_long_for_a_word_is_fixed_exactly_once() {
        assert_eq!(word::lazy(MAX_TIMEOUT), None);
        let start = Instant::now();
        let svc = DeadlineLayer::new(MAX_TIMEOUT)
            .unwrap()
            .layer(service_fn(|()| {
                let in_call = Deadline::current();
                async move {
                    tokio::time::advance(Duration::from_secs(1)).await;
                    Ok::<_, Infallible>((in_call, Deadline::current()))
                }
            }));
        let (in_call, in_poll) = svc.oneshot(()).await.unwrap();
        assert_eq!(in_call, Some(Deadline::at(start + MAX_TIMEOUT)));
        assert_eq!(in_poll, in_call, "fixed once, and kept across polls");
        assert_eq!(far_scopes(), 0);
    }
}
