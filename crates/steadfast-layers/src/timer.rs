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

/// Arms `slot` with `sleep`, made by [`unset`] before the clock was read, set to end at `at`
/// (out of line, as [`arm`]).
#[inline(never)]
pub(crate) fn arm_at(mut slot: Pin<&mut Option<Sleep>>, sleep: Sleep, at: Instant) {
    slot.set(Some(sleep));
    if let Some(sleep) = slot.as_pin_mut() {
        sleep.reset(at);
    }
}

/// A timer ending at `at`, for a caller that arms it in a place of its own (and is out of
/// line itself, for the reason above).
#[inline(always)]
pub(crate) fn timer(at: Instant) -> Sleep {
    #[cfg(test)]
    ARMED.with(|n| n.set(n.get() + 1));
    sleep_until(at)
}

/// A timer whose end is still to be set (with [`Sleep::reset`], which also registers it, as its
/// first poll would have): for a caller that reads the clock to learn the end. Made before the
/// clock is read, its bytes have reached the cache by the time they are moved into place; made
/// after, the move read them back while they were still being written, and waited for them (a
/// store-forwarding stall, two thirds of arming's own time; ADR 0008, decision 25).
#[inline(always)]
pub(crate) fn unset() -> Sleep {
    timer(crate::deadline::process_instant())
}

#[cfg(test)]
thread_local! {
    /// Timers made through [`timer`] on this thread, for the unit tests that count them.
    pub(crate) static ARMED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}
