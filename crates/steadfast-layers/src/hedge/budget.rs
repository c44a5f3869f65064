//! The hedge layer's own budget: hedges may not exceed a fraction of requests.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// One hedge, in parts per million.
const UNIT: u64 = 1_000_000;

/// A token bucket filled by requests and drained by hedges, with no clock: each request adds
/// `ratio` of a hedge, each hedge takes one, and the bucket holds at most `burst` hedges (it
/// starts full). Over any run of calls, hedges never exceed `burst + ratio × requests`.
///
/// While the bucket is full (the usual state when few calls are slow), a deposit is one atomic
/// load and writes nothing, so clones on many threads do not contend on the success path.
pub(super) struct HedgeBudget {
    balance: AtomicU64,
    deposit: u64,
    cap: u64,
    ratio: f64,
}

impl fmt::Debug for HedgeBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeBudget")
            .field("ratio", &self.ratio)
            .field("burst", &(self.cap / UNIT))
            .field("balance", &self.balance())
            .finish()
    }
}

impl HedgeBudget {
    /// `ratio` in `(0, 10]`, `burst` at least 1 (validated by the builder).
    pub(super) fn new(ratio: f64, burst: u32) -> Self {
        let cap = u64::from(burst) * UNIT;
        HedgeBudget {
            balance: AtomicU64::new(cap),
            deposit: (ratio * UNIT as f64).round() as u64,
            cap,
            ratio,
        }
    }

    /// A request went through the layer.
    #[inline]
    pub(super) fn deposit(&self) {
        let (deposit, cap) = (self.deposit, self.cap);
        let _ = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                (b < cap).then(|| (b + deposit).min(cap))
            });
    }

    /// Takes one hedge's worth; `false` when the bucket holds less.
    pub(super) fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| b.checked_sub(UNIT))
            .is_ok()
    }

    /// Gives back a withdrawal that was not used (another budget refused the hedge).
    pub(super) fn refund(&self) {
        let cap = self.cap;
        let _ = self
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                Some((b + UNIT).min(cap))
            });
    }

    /// Hedges the bucket would grant now.
    pub(super) fn balance(&self) -> f64 {
        self.balance.load(Ordering::Acquire) as f64 / UNIT as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hedges_are_capped_at_the_ratio_plus_the_burst() {
        let b = HedgeBudget::new(0.1, 1);
        let mut hedges = 0;
        for _ in 0..1000 {
            b.deposit();
            if b.withdraw() {
                hedges += 1;
            }
        }
        assert_eq!(hedges, 100);
    }

    #[test]
    fn a_quiet_period_does_not_bank_more_than_the_burst() {
        let b = HedgeBudget::new(0.5, 3);
        for _ in 0..10_000 {
            b.deposit();
        }
        assert_eq!((0..10).filter(|_| b.withdraw()).count(), 3);
        b.refund();
        assert_eq!(b.balance(), 1.0);
    }
}
