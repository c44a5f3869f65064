use std::time::Duration;

use crate::error::{check_f64, ConfigError};
use crate::rng::RandomSource;

/// The longest backoff delay (base, cap or constant) a builder accepts: one day.
pub const MAX_BACKOFF: Duration = Duration::from_secs(24 * 3600);

/// How long to wait before each retry: constant or exponential, with [`Jitter`].
///
/// The default is Envoy's: exponential from 25 ms, doubling, capped at 250 ms, full jitter.
/// A server-given delay (`Retry-After`, `grpc-retry-pushback-ms`) replaces the computed one.
/// Validated when the retry layer is built.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::retry::{Backoff, Jitter};
/// use steadfast_layers::rng::SeededRng;
///
/// let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2)).jitter(Jitter::None);
/// let rng = SeededRng::new(1);
/// let delays: Vec<_> = (1..=6).map(|n| b.delay(n, Duration::ZERO, &rng)).collect();
/// assert_eq!(delays[0], Duration::from_millis(100));
/// assert_eq!(delays[1], Duration::from_millis(200));
/// assert_eq!(delays[5], Duration::from_secs(2)); // capped
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    kind: Kind,
    jitter: Jitter,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Constant(Duration),
    Exponential {
        base: Duration,
        cap: Duration,
        multiplier: f64,
    },
}

/// How a backoff delay is randomised (the AWS Architecture Blog's names).
///
/// With `d` the un-jittered delay and `u` uniform in `[0, 1)`:
/// - `None`: `d`;
/// - `Full`: `u * d`;
/// - `Equal`: `d/2 + u * d/2`;
/// - `Decorrelated`: `min(cap, base + u * (3 * previous - base))`, starting from `previous = base`;
/// - `Proportional(r)`: `d * (1 + r * (2u - 1))`, with `r` in `[0, 1]`.
///
/// ```
/// use steadfast_layers::retry::Jitter;
/// assert_eq!(Jitter::default(), Jitter::Full);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum Jitter {
    /// No randomness.
    None,
    /// Uniform in `[0, d)`.
    #[default]
    Full,
    /// Uniform in `[d/2, d)`.
    Equal,
    /// AWS decorrelated jitter, driven by the previous delay.
    Decorrelated,
    /// `d` plus or minus up to the given fraction of `d`.
    Proportional(f64),
}

/// The default backoff's base delay (Envoy's): 25 ms.
pub(crate) const DEFAULT_BASE: Duration = Duration::from_millis(25);
/// The default backoff's cap (Envoy's: ten times the base): 250 ms.
pub(crate) const DEFAULT_CAP: Duration = Duration::from_millis(250);

impl Default for Backoff {
    fn default() -> Self {
        Backoff::exponential(DEFAULT_BASE, DEFAULT_CAP)
    }
}

impl Backoff {
    /// The same delay before every retry (no jitter unless [`Backoff::jitter`] adds it).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::{retry::Backoff, rng::SeededRng};
    /// let b = Backoff::constant(Duration::from_millis(50));
    /// assert_eq!(b.delay(4, Duration::ZERO, &SeededRng::new(0)), Duration::from_millis(50));
    /// ```
    pub const fn constant(delay: Duration) -> Self {
        Backoff {
            kind: Kind::Constant(delay),
            jitter: Jitter::None,
        }
    }

    /// `base * 2^(n-1)` before retry `n`, capped at `cap`, with full jitter.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::{retry::Backoff, rng::SeededRng};
    /// let b = Backoff::exponential(Duration::from_millis(10), Duration::from_millis(80));
    /// let d = b.delay(3, Duration::ZERO, &SeededRng::new(3));
    /// assert!(d < Duration::from_millis(40));
    /// ```
    pub const fn exponential(base: Duration, cap: Duration) -> Self {
        Backoff {
            kind: Kind::Exponential {
                base,
                cap,
                multiplier: 2.0,
            },
            jitter: Jitter::Full,
        }
    }

    /// The growth factor of an exponential backoff (default 2; finite, in `[1, 100]`).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::{retry::{Backoff, Jitter}, rng::SeededRng};
    /// let b = Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1))
    ///     .multiplier(3.0).jitter(Jitter::None);
    /// assert_eq!(b.delay(3, Duration::ZERO, &SeededRng::new(0)), Duration::from_millis(90));
    /// ```
    pub const fn multiplier(mut self, factor: f64) -> Self {
        if let Kind::Exponential {
            ref mut multiplier, ..
        } = self.kind
        {
            *multiplier = factor;
        }
        self
    }

    /// Sets the jitter.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::retry::{Backoff, Jitter};
    /// let b = Backoff::constant(Duration::from_secs(1)).jitter(Jitter::Equal);
    /// assert_eq!(b.jitter_kind(), Jitter::Equal);
    /// ```
    pub const fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The configured jitter.
    ///
    /// ```
    /// # use steadfast_layers::retry::{Backoff, Jitter};
    /// assert_eq!(Backoff::default().jitter_kind(), Jitter::Full);
    /// ```
    pub const fn jitter_kind(&self) -> Jitter {
        self.jitter
    }

    /// Checks the configuration: non-zero base, base at most cap, delays at most
    /// [`MAX_BACKOFF`], a finite multiplier in `[1, 100]`, a proportional jitter in `[0, 1]`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::retry::{Backoff, Jitter};
    /// let bad = Backoff::exponential(Duration::from_secs(2), Duration::from_secs(1));
    /// assert!(bad.validate().is_err());
    /// assert!(Backoff::default().jitter(Jitter::Proportional(f64::NAN)).validate().is_err());
    /// assert!(Backoff::default().validate().is_ok());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.kind {
            Kind::Constant(d) => {
                if d > MAX_BACKOFF {
                    return Err(ConfigError::out_of_range(
                        "backoff.constant",
                        d,
                        "[0, 24 h]",
                    ));
                }
            }
            Kind::Exponential {
                base,
                cap,
                multiplier,
            } => {
                if base.is_zero() {
                    return Err(ConfigError::zero("backoff.base"));
                }
                if cap > MAX_BACKOFF {
                    return Err(ConfigError::out_of_range("backoff.cap", cap, "(0, 24 h]"));
                }
                if base > cap {
                    return Err(ConfigError::conflict(
                        "backoff.base",
                        "the base delay exceeds the cap",
                    ));
                }
                check_f64("backoff.multiplier", multiplier, 1.0, 100.0, "[1, 100]")?;
            }
        }
        if let Jitter::Proportional(r) = self.jitter {
            check_f64("backoff.jitter", r, 0.0, 1.0, "[0, 1]")?;
        }
        Ok(())
    }

    /// The delay before retry number `retry` (1 for the first retry), given the previous delay
    /// (used by decorrelated jitter; pass `Duration::ZERO` before the first retry).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::{retry::{Backoff, Jitter}, rng::SeededRng};
    /// let b = Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1)).jitter(Jitter::Decorrelated);
    /// let rng = SeededRng::new(9);
    /// let first = b.delay(1, Duration::ZERO, &rng);
    /// assert!(first >= Duration::from_millis(10) && first < Duration::from_millis(30));
    /// ```
    pub fn delay(&self, retry: u32, previous: Duration, rng: &dyn RandomSource) -> Duration {
        let (base, cap, raw) = match self.kind {
            Kind::Constant(d) => (d, d, d.as_secs_f64()),
            Kind::Exponential {
                base,
                cap,
                multiplier,
            } => {
                let exp = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
                let raw = (base.as_secs_f64() * multiplier.powi(exp)).min(cap.as_secs_f64());
                (base, cap, raw)
            }
        };
        let secs = match self.jitter {
            Jitter::None => raw,
            Jitter::Full => raw * rng.next_f64(),
            Jitter::Equal => raw / 2.0 + raw / 2.0 * rng.next_f64(),
            Jitter::Decorrelated => {
                let prev = if previous.is_zero() { base } else { previous };
                let lo = base.as_secs_f64();
                let hi = (prev.as_secs_f64() * 3.0).max(lo);
                (lo + rng.next_f64() * (hi - lo)).min(cap.as_secs_f64())
            }
            Jitter::Proportional(r) => raw * (1.0 + r * (2.0 * rng.next_f64() - 1.0)),
        };
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(cap)
    }
}
