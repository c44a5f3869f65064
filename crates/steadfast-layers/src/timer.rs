//! Arming a response future's timer in its pinned place.

use std::pin::Pin;

use tokio::time::{sleep_until, Instant, Sleep};

/// Arms `slot` with a timer ending at `at` (replacing any timer it held).
///
/// Not inlined: inlined into a `poll` that has just handed its future's fields to the inner
/// poll, the compiler built the 112-byte `Sleep` on the stack and copied it twice into its
/// place; here, with nothing of the future handed out, it is written once.
#[inline(never)]
pub(crate) fn arm(mut slot: Pin<&mut Option<Sleep>>, at: Instant) {
    slot.set(Some(timer(at)));
}

/// A timer ending at `at`, for a caller that arms it in a place of its own (and is out of
/// line itself, for the reason above).
#[inline(always)]
pub(crate) fn timer(at: Instant) -> Sleep {
    #[cfg(test)]
    ARMED.with(|n| n.set(n.get() + 1));
    sleep_until(at)
}

#[cfg(test)]
thread_local! {
    /// Timers made through [`timer`] on this thread, for the unit tests that count them.
    pub(crate) static ARMED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}
