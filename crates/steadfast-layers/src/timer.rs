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
    #[cfg(test)]
    ARMED.with(|n| n.set(n.get() + 1));
    slot.set(Some(sleep_until(at)));
}

#[cfg(test)]
thread_local! {
    /// Timers armed through [`arm`] on this thread, for the unit tests that count them.
    pub(crate) static ARMED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}
