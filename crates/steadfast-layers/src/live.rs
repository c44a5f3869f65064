//! Settings that a handle changes at run time, read on the call path without a lock.
//!
//! A scalar setting is one atomic, loaded with `Relaxed` ordering: a call sees the value set
//! before it started or a later one, never a torn one. Durations are `u64` nanoseconds (a
//! builder never accepts one above `u64::MAX` nanoseconds, 584 years). A setting of several
//! fields that must change together (a backoff, a break duration, a rate limiter) lives in an
//! [`arc_swap::ArcSwap`] instead, read where no call is on its fast path (a retry, a trip, a
//! refusal) or, for the rate limit, in one lock-free load per call.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// An `f64` in an `AtomicU64` (its bits).
#[derive(Debug)]
pub(crate) struct AtomicF64(AtomicU64);

impl AtomicF64 {
    pub(crate) fn new(v: f64) -> Self {
        Self(AtomicU64::new(v.to_bits()))
    }

    #[inline]
    pub(crate) fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    pub(crate) fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
}

/// An optional `Duration` in an `AtomicU64` of nanoseconds, 0 for `None` (every setting kept
/// here is non-zero when set).
#[derive(Debug)]
pub(crate) struct AtomicOptDuration(AtomicU64);

impl AtomicOptDuration {
    pub(crate) fn new(v: Option<Duration>) -> Self {
        Self(AtomicU64::new(encode(v)))
    }

    #[inline]
    pub(crate) fn get(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    /// Whether a value is set (one load, no conversion).
    #[inline]
    pub(crate) fn is_some(&self) -> bool {
        self.0.load(Ordering::Relaxed) != 0
    }

    pub(crate) fn set(&self, v: Option<Duration>) {
        self.0.store(encode(v), Ordering::Relaxed);
    }
}

fn encode(v: Option<Duration>) -> u64 {
    v.map_or(0, |d| {
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX).max(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let f = AtomicF64::new(0.25);
        assert_eq!(f.get(), 0.25);
        f.set(0.5);
        assert_eq!(f.get(), 0.5);
        let d = AtomicOptDuration::new(None);
        assert_eq!(d.get(), None);
        assert!(!d.is_some());
        d.set(Some(Duration::from_millis(3)));
        assert_eq!(d.get(), Some(Duration::from_millis(3)));
        assert!(d.is_some());
    }
}
