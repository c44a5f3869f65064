use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::RetryBudget;
use crate::error::{check_f64, ConfigError};

const SLOTS: usize = 10;
/// One retry, in parts per million.
const UNIT: i128 = 1_000_000;
/// A deposit re-reads the clock when its slot's count reaches a multiple of this (and on the
/// first deposit into a slot).
const REFRESH_EVERY: u32 = 16;

/// Finagle's retry budget: over any `ttl` window, retries may not exceed
/// `min_retries_per_sec * ttl + ratio * requests`.
///
/// `ratio` is a fraction (`0.2` = 20 %), the unit of every budget in this crate (Finagle calls it
/// `percentCanRetry`, Linkerd `retryRatio`). Defaults are Finagle's: 0.2, 10 retries per second,
/// 10 s. The window is ten slots of `ttl / 10`; each slot is one atomic word (slot number and
/// count). Arithmetic is in parts per million: a ratio with up to six decimal places is honoured
/// exactly.
///
/// Cost: a deposit is one compare-and-swap into the current slot, never a lock. It does not read
/// the clock: the current slot is re-read from the clock by every withdrawal, every balance read,
/// the first deposit into each slot and every 16th deposit after it. Between two reads a deposit
/// may land in an earlier slot than its true time, so it leaves the window early, never late:
/// the budget can under-allow, never over-allow. Above a few dozen requests per slot the lag is
/// negligible; below, the `min_retries_per_sec` reserve dominates the budget anyway.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::retry::{RatioBudget, RetryBudget};
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::ConfigError> {
/// let b = RatioBudget::builder().ratio(0.3).min_retries_per_sec(0).build()?;
/// for _ in 0..1000 { b.deposit(); }
/// assert_eq!((0..1000).filter(|_| b.withdraw()).count(), 300);
/// // After the ttl, the deposits have expired.
/// tokio::time::advance(Duration::from_secs(11)).await;
/// assert!(!b.withdraw());
/// # Ok(()) }
/// ```
pub struct RatioBudget {
    start: Instant,
    slot_nanos: u64,
    /// The slot deposits go to, as last read from the clock.
    current: AtomicU64,
    deposits: [AtomicU64; SLOTS],
    withdrawals: [AtomicU64; SLOTS],
    deposit_ppm: i128,
    reserve_ppm: i128,
    ratio: f64,
    min_retries_per_sec: u32,
    ttl: Duration,
}

impl fmt::Debug for RatioBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RatioBudget")
            .field("ratio", &self.ratio)
            .field("min_retries_per_sec", &self.min_retries_per_sec)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Default for RatioBudget {
    fn default() -> Self {
        Self::new(0.2, 10, Duration::from_secs(10))
    }
}

impl RatioBudget {
    /// A builder with Finagle's defaults.
    ///
    /// ```
    /// # use steadfast_layers::retry::RatioBudget;
    /// let b = RatioBudget::builder().build()?;
    /// assert_eq!(b.ratio(), 0.2);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder() -> RatioBudgetBuilder {
        RatioBudgetBuilder {
            ratio: 0.2,
            min_retries_per_sec: 10,
            ttl: Duration::from_secs(10),
        }
    }

    fn new(ratio: f64, min_per_sec: u32, ttl: Duration) -> Self {
        let ttl_nanos = ttl.as_nanos();
        RatioBudget {
            start: Instant::now(),
            slot_nanos: u64::try_from(ttl_nanos / SLOTS as u128)
                .unwrap_or(u64::MAX)
                .max(1),
            current: AtomicU64::new(0),
            deposits: Default::default(),
            withdrawals: Default::default(),
            deposit_ppm: (ratio * 1e6).round() as i128,
            reserve_ppm: i128::from(min_per_sec) * ttl_nanos as i128 / 1_000,
            ratio,
            min_retries_per_sec: min_per_sec,
            ttl,
        }
    }

    /// The configured share of requests that may be retried, as a fraction (`0.2` = 20 %).
    ///
    /// ```
    /// # use steadfast_layers::retry::RatioBudget;
    /// assert_eq!(RatioBudget::default().ratio(), 0.2);
    /// ```
    pub fn ratio(&self) -> f64 {
        self.ratio
    }

    /// Reads the clock and moves the current slot forward (never back).
    fn refresh(&self) -> u64 {
        let elapsed = Instant::now().saturating_duration_since(self.start);
        let nanos = elapsed
            .as_secs()
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::from(elapsed.subsec_nanos()));
        let index = nanos / self.slot_nanos;
        self.current.fetch_max(index, Ordering::AcqRel).max(index)
    }

    fn window(&self, slots: &[AtomicU64; SLOTS], index: u64) -> i128 {
        let now = index as u32;
        slots
            .iter()
            .map(|s| {
                let v = s.load(Ordering::Acquire);
                let epoch = (v >> 32) as u32;
                if now.wrapping_sub(epoch) < SLOTS as u32 {
                    i128::from(v as u32)
                } else {
                    0
                }
            })
            .sum()
    }

    fn balance_ppm(&self, index: u64) -> i128 {
        self.reserve_ppm + self.deposit_ppm * self.window(&self.deposits, index)
            - UNIT * self.window(&self.withdrawals, index)
    }
}

/// Adds one to `slot` for `index`; returns the slot's new count.
fn bump(slot: &AtomicU64, index: u64) -> u32 {
    let epoch = index as u32;
    let next = |v: u64| {
        if (v >> 32) as u32 == epoch {
            // Saturate rather than wrap into the epoch bits.
            if v as u32 == u32::MAX {
                v
            } else {
                v + 1
            }
        } else {
            (u64::from(epoch) << 32) | 1
        }
    };
    match slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(next(v))) {
        Ok(prev) | Err(prev) => next(prev) as u32,
    }
}

fn unbump(slot: &AtomicU64, index: u64) {
    let epoch = index as u32;
    let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
        ((v >> 32) as u32 == epoch && v as u32 > 0).then(|| v - 1)
    });
}

impl RetryBudget for RatioBudget {
    #[inline]
    fn deposit(&self) {
        let index = self.current.load(Ordering::Acquire);
        let count = bump(&self.deposits[index as usize % SLOTS], index);
        if count % REFRESH_EVERY == 1 {
            self.refresh();
        }
    }

    fn withdraw(&self) -> bool {
        let index = self.refresh();
        let slot = &self.withdrawals[index as usize % SLOTS];
        // Take first, then check: concurrent withdrawals can never overdraw together.
        bump(slot, index);
        if self.balance_ppm(index) >= 0 {
            true
        } else {
            unbump(slot, index);
            false
        }
    }

    fn balance(&self) -> f64 {
        (self.balance_ppm(self.refresh()) / UNIT).max(0) as f64
    }
}

/// Builds a [`RatioBudget`], validating its configuration.
///
/// ```
/// # use std::time::Duration;
/// # use steadfast_layers::retry::RatioBudget;
/// assert!(RatioBudget::builder().ratio(-0.1).build().is_err());
/// assert!(RatioBudget::builder().ratio(f64::INFINITY).build().is_err());
/// assert!(RatioBudget::builder().ttl(Duration::ZERO).build().is_err());
/// ```
#[derive(Clone, Debug)]
pub struct RatioBudgetBuilder {
    ratio: f64,
    min_retries_per_sec: u32,
    ttl: Duration,
}

impl RatioBudgetBuilder {
    /// The share of requests that may be retried, as a fraction (`0.2` = 20 %), in `[0, 10]`.
    ///
    /// ```
    /// # use steadfast_layers::retry::RatioBudget;
    /// let b = RatioBudget::builder().ratio(0.05).build()?;
    /// assert_eq!(b.ratio(), 0.05);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn ratio(mut self, fraction: f64) -> Self {
        self.ratio = fraction;
        self
    }

    /// Retries per second always allowed, whatever the request rate (at most 1,000,000).
    ///
    /// ```
    /// # use steadfast_layers::retry::RatioBudget;
    /// let b = RatioBudget::builder().min_retries_per_sec(0).build()?;
    /// # let _ = b;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn min_retries_per_sec(mut self, n: u32) -> Self {
        self.min_retries_per_sec = n;
        self
    }

    /// How long a deposit counts, in `[1 s, 60 s]` (Finagle's bounds).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::retry::RatioBudget;
    /// assert!(RatioBudget::builder().ttl(Duration::from_secs(120)).build().is_err());
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Validates and builds the budget.
    ///
    /// ```
    /// # use steadfast_layers::retry::RatioBudget;
    /// assert!(RatioBudget::builder().build().is_ok());
    /// ```
    pub fn build(self) -> Result<RatioBudget, ConfigError> {
        check_f64("ratio", self.ratio, 0.0, 10.0, "[0, 10] (0 % to 1000 %)")?;
        if self.min_retries_per_sec > 1_000_000 {
            return Err(ConfigError::out_of_range(
                "min_retries_per_sec",
                self.min_retries_per_sec,
                "[0, 1000000]",
            ));
        }
        if self.ttl.is_zero() {
            return Err(ConfigError::zero("ttl"));
        }
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(60) {
            return Err(ConfigError::out_of_range("ttl", self.ttl, "[1 s, 60 s]"));
        }
        Ok(RatioBudget::new(
            self.ratio,
            self.min_retries_per_sec,
            self.ttl,
        ))
    }
}
