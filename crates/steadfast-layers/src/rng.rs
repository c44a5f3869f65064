//! Injectable, seedable randomness, so that jitter replays exactly in tests.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A source of uniformly distributed random numbers, shared by every clone of a layer.
///
/// Implement it to plug in your own generator; [`SeededRng`] is the default.
///
/// ```
/// use steadfast_layers::rng::{RandomSource, SeededRng};
/// let a = SeededRng::new(7);
/// let b = SeededRng::new(7);
/// assert_eq!(a.next_u64(), b.next_u64());
/// let x = a.next_f64();
/// assert!((0.0..1.0).contains(&x));
/// ```
pub trait RandomSource: Send + Sync + fmt::Debug + 'static {
    /// The next uniformly distributed 64-bit value.
    fn next_u64(&self) -> u64;

    /// The next uniformly distributed value in `[0, 1)`.
    fn next_f64(&self) -> f64 {
        // 53 high bits: every value is exactly representable.
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A lock-free SplitMix64 generator: one atomic add per draw, deterministic for a given seed and
/// order of draws, safe to share across threads.
///
/// ```
/// use steadfast_layers::rng::{RandomSource, SeededRng};
/// let rng = SeededRng::new(42);
/// let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
/// let again = SeededRng::new(42);
/// assert_eq!(first, (0..3).map(|_| again.next_u64()).collect::<Vec<_>>());
/// ```
pub struct SeededRng {
    state: AtomicU64,
}

const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl SeededRng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            state: AtomicU64::new(seed),
        }
    }

    /// A generator seeded from the process's hash randomness (different on each run).
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x5eed);
        Self::new(h.finish())
    }
}

impl fmt::Debug for SeededRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeededRng").finish_non_exhaustive()
    }
}

impl RandomSource for SeededRng {
    fn next_u64(&self) -> u64 {
        let mut z = self
            .state
            .fetch_add(GOLDEN_GAMMA, Ordering::Relaxed)
            .wrapping_add(GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// A shared random source, as held by layers.
pub type SharedRng = Arc<dyn RandomSource>;

pub(crate) fn default_rng() -> SharedRng {
    Arc::new(SeededRng::from_entropy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_interval_is_half_open_and_spread() {
        let rng = SeededRng::new(1);
        let mut lo = 0;
        for _ in 0..10_000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
            if x < 0.5 {
                lo += 1;
            }
        }
        assert!((4_500..5_500).contains(&lo), "{lo}");
    }

    #[test]
    fn different_seeds_differ() {
        assert_ne!(SeededRng::new(1).next_u64(), SeededRng::new(2).next_u64());
    }
}
