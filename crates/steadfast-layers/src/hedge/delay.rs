use std::time::Duration;

use super::histogram::TrackerConfig;
use crate::error::ConfigError;

/// The longest hedge delay (fixed or warm-up) a builder accepts: one hour.
pub const MAX_HEDGE_DELAY: Duration = Duration::from_secs(3600);

/// When to send a hedge: after a fixed delay, or after a latency percentile learned from a
/// rolling histogram of every completed attempt.
///
/// The learned delay follows Finagle's backup requests: a percentile over a 30 s window,
/// recomputed at most every 3 s (here: or every 1,000 samples, whichever comes first), with
/// microsecond resolution and at most 1/256 (0.4 %) of error, rounded up (Finagle's bucketed
/// histogram defaults to 0.5 %). The histogram is shared by the layer's services and pays for
/// the latencies it sees: under 1 KiB before the first sample, then 6 KiB for each power of two
/// of microseconds a latency has landed in (48 KiB in the lab's `tail` scenario, whose latencies
/// and hedge losers span eight; 150 KiB at most), allocated by that power of two's first sample
/// and kept (see `docs/memory.md`). Until the window holds `min_samples` samples (100 by default)
/// the layer sends no hedge, or hedges after `warmup_delay` if one is set. Validated when the
/// hedge layer is built.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::hedge::HedgeDelay;
///
/// let fixed = HedgeDelay::fixed(Duration::from_millis(50));
/// assert_eq!(fixed.fixed_delay(), Some(Duration::from_millis(50)));
///
/// let learned = HedgeDelay::percentile(95.0)
///     .min_samples(200)
///     .warmup_delay(Duration::from_millis(100))
///     .window(Duration::from_secs(60))
///     .recompute_every(Duration::from_secs(5), 500);
/// assert!(learned.validate().is_ok());
/// assert!(HedgeDelay::percentile(100.0).validate().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HedgeDelay {
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Fixed(Duration),
    Percentile {
        percentile: f64,
        min_samples: u64,
        warmup_delay: Option<Duration>,
        window: Duration,
        recompute_interval: Duration,
        recompute_samples: u64,
    },
}

impl Default for HedgeDelay {
    /// The 95th percentile (Dean and Barroso's choice), learned as described above.
    fn default() -> Self {
        HedgeDelay::percentile(95.0)
    }
}

impl HedgeDelay {
    /// Hedge after `delay` (non-zero, at most [`MAX_HEDGE_DELAY`]). Further hedges follow at the
    /// same interval.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::hedge::HedgeDelay;
    /// assert!(HedgeDelay::fixed(Duration::ZERO).validate().is_err());
    /// ```
    pub const fn fixed(delay: Duration) -> Self {
        HedgeDelay {
            kind: Kind::Fixed(delay),
        }
    }

    /// Hedge after the `percentile` (in `(0, 100)`, e.g. `95.0`) of recent attempt latencies.
    ///
    /// ```
    /// # use steadfast_layers::hedge::HedgeDelay;
    /// assert!(HedgeDelay::percentile(99.9).validate().is_ok());
    /// assert!(HedgeDelay::percentile(0.0).validate().is_err());
    /// assert!(HedgeDelay::percentile(f64::NAN).validate().is_err());
    /// ```
    pub const fn percentile(percentile: f64) -> Self {
        HedgeDelay {
            kind: Kind::Percentile {
                percentile,
                min_samples: 100,
                warmup_delay: None,
                window: Duration::from_secs(30),
                recompute_interval: Duration::from_secs(3),
                recompute_samples: 1000,
            },
        }
    }

    /// Samples the window must hold before the percentile is used (default 100, at least 1).
    /// No effect on a fixed delay.
    ///
    /// ```
    /// # use steadfast_layers::hedge::HedgeDelay;
    /// assert!(HedgeDelay::percentile(95.0).min_samples(0).validate().is_err());
    /// ```
    pub const fn min_samples(mut self, n: u64) -> Self {
        if let Kind::Percentile {
            ref mut min_samples,
            ..
        } = self.kind
        {
            *min_samples = n;
        }
        self
    }

    /// The delay to hedge after while the histogram warms up (default: no hedge until then).
    /// No effect on a fixed delay.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::hedge::HedgeDelay;
    /// let d = HedgeDelay::percentile(95.0).warmup_delay(Duration::from_millis(200));
    /// assert!(d.validate().is_ok());
    /// ```
    pub const fn warmup_delay(mut self, delay: Duration) -> Self {
        if let Kind::Percentile {
            ref mut warmup_delay,
            ..
        } = self.kind
        {
            *warmup_delay = Some(delay);
        }
        self
    }

    /// The span of latencies the percentile is computed over, in `[1 s, 1 h]` (default 30 s).
    /// The window rotates in six slots, so it covers between 5/6 of `window` and `window`.
    /// No effect on a fixed delay.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::hedge::HedgeDelay;
    /// assert!(HedgeDelay::percentile(95.0).window(Duration::from_millis(10)).validate().is_err());
    /// ```
    pub const fn window(mut self, span: Duration) -> Self {
        if let Kind::Percentile { ref mut window, .. } = self.kind {
            *window = span;
        }
        self
    }

    /// Recompute the percentile at most every `interval` (non-zero, at most the window; default
    /// 3 s) or every `samples` recorded samples (at least 1; default 1,000), whichever comes first.
    /// Between recomputations every call reads the cached value with one atomic load. No effect on
    /// a fixed delay.
    ///
    /// **Implementation knob**: how the layer spends its time, not what it decides; the default
    /// suits every user, it is not part of a policy (configuration formats leave it out), and it
    /// may change or go in a minor release.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::hedge::HedgeDelay;
    /// let d = HedgeDelay::percentile(95.0).recompute_every(Duration::from_secs(1), 100);
    /// assert!(d.validate().is_ok());
    /// ```
    pub const fn recompute_every(mut self, interval: Duration, samples: u64) -> Self {
        if let Kind::Percentile {
            ref mut recompute_interval,
            ref mut recompute_samples,
            ..
        } = self.kind
        {
            *recompute_interval = interval;
            *recompute_samples = samples;
        }
        self
    }

    /// The fixed delay, if this is one.
    ///
    /// ```
    /// # use steadfast_layers::hedge::HedgeDelay;
    /// assert_eq!(HedgeDelay::percentile(90.0).fixed_delay(), None);
    /// ```
    pub const fn fixed_delay(&self) -> Option<Duration> {
        match self.kind {
            Kind::Fixed(d) => Some(d),
            Kind::Percentile { .. } => None,
        }
    }

    /// The configured percentile, if the delay is learned.
    ///
    /// ```
    /// # use steadfast_layers::hedge::HedgeDelay;
    /// assert_eq!(HedgeDelay::percentile(99.0).percentile_value(), Some(99.0));
    /// ```
    pub const fn percentile_value(&self) -> Option<f64> {
        match self.kind {
            Kind::Fixed(_) => None,
            Kind::Percentile { percentile, .. } => Some(percentile),
        }
    }

    /// Checks the configuration: a non-zero fixed or warm-up delay of at most
    /// [`MAX_HEDGE_DELAY`], a finite percentile strictly between 0 and 100, at least one sample,
    /// a window in `[1 s, 1 h]`, a non-zero recompute interval no longer than the window, and at
    /// least one sample between recomputations.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::hedge::HedgeDelay;
    /// let err = HedgeDelay::percentile(-5.0).validate().unwrap_err();
    /// assert_eq!(err.path(), "delay.percentile");
    /// let err = HedgeDelay::fixed(Duration::from_secs(7200)).validate().unwrap_err();
    /// assert_eq!(err.path(), "delay");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.kind {
            Kind::Fixed(d) => check_delay("delay", d),
            Kind::Percentile {
                percentile,
                min_samples,
                warmup_delay,
                window,
                recompute_interval,
                recompute_samples,
            } => {
                if !percentile.is_finite() {
                    return Err(ConfigError::not_finite("delay.percentile"));
                }
                if percentile <= 0.0 || percentile >= 100.0 {
                    return Err(ConfigError::out_of_range(
                        "delay.percentile",
                        percentile,
                        "(0, 100)",
                    ));
                }
                if min_samples == 0 {
                    return Err(ConfigError::zero("delay.min_samples"));
                }
                if let Some(d) = warmup_delay {
                    check_delay("delay.warmup_delay", d)?;
                }
                if window < Duration::from_secs(1) || window > Duration::from_secs(3600) {
                    return Err(ConfigError::out_of_range(
                        "delay.window",
                        window,
                        "[1 s, 1 h]",
                    ));
                }
                if recompute_interval.is_zero() {
                    return Err(ConfigError::zero("delay.recompute_interval"));
                }
                if recompute_interval > window {
                    return Err(ConfigError::conflict(
                        "delay.recompute_interval",
                        "the recompute interval exceeds the window",
                    ));
                }
                if recompute_samples == 0 {
                    return Err(ConfigError::zero("delay.recompute_samples"));
                }
                Ok(())
            }
        }
    }

    /// What the layer needs: the fixed delay or the histogram configuration.
    pub(super) fn plan(&self) -> Plan {
        match self.kind {
            Kind::Fixed(d) => Plan::Fixed(d),
            Kind::Percentile {
                percentile,
                min_samples,
                warmup_delay,
                window,
                recompute_interval,
                recompute_samples,
            } => Plan::Learned(TrackerConfig {
                percentile,
                min_samples,
                warmup_delay,
                window,
                recompute_interval,
                recompute_samples,
            }),
        }
    }
}

/// A validated delay, as the layer uses it.
pub(super) enum Plan {
    Fixed(Duration),
    Learned(TrackerConfig),
}

fn check_delay(field: &'static str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::zero(field));
    }
    if d > MAX_HEDGE_DELAY {
        return Err(ConfigError::out_of_range(field, d, "(0, 1 h]"));
    }
    Ok(())
}
