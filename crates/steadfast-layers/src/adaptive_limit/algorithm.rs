use std::fmt;
use std::time::Duration;

use crate::rng::RandomSource;

/// Computes an adaptive concurrency limit from what calls experienced.
///
/// The layer measures each admitted call (its round-trip time, how many calls were in flight
/// when it started, whether the [`Classifier`](crate::classify::Classifier) called it a drop),
/// folds the measurements into [`Samples`], and calls [`update`](Algorithm::update) with them
/// once per window (see
/// [`AdaptiveLimitLayerBuilder::window`](super::AdaptiveLimitLayerBuilder::window); a zero
/// window updates after every call). Updates are serialised; the returned limit is clamped to at
/// least 1 and published at once.
///
/// Provided: [`Aimd`](super::Aimd), [`Gradient2`](super::Gradient2), [`Vegas`](super::Vegas),
/// after Netflix's concurrency-limits. Implement it to plug in your own.
///
/// ```
/// use steadfast_layers::adaptive_limit::{Algorithm, Samples};
/// use steadfast_layers::rng::RandomSource;
///
/// /// Halves on any drop, otherwise grows by one.
/// #[derive(Debug)]
/// struct Halving(usize);
/// impl Algorithm for Halving {
///     fn name(&self) -> &'static str { "halving" }
///     fn initial_limit(&self) -> usize { self.0 }
///     fn update(&mut self, samples: &Samples, _rng: &dyn RandomSource) -> usize {
///         self.0 = if samples.drops > 0 { (self.0 / 2).max(1) } else { self.0 + 1 };
///         self.0
///     }
/// }
/// let mut h = Halving(10);
/// let rng = steadfast_layers::rng::SeededRng::new(1);
/// let drop = Samples::single(std::time::Duration::from_millis(5), 10, true);
/// assert_eq!(h.update(&drop, &rng), 5);
/// ```
pub trait Algorithm: fmt::Debug + Send + 'static {
    /// A short name for telemetry (`"aimd"`, `"gradient2"`, `"vegas"`).
    fn name(&self) -> &'static str;

    /// The limit before any sample (at least 1).
    fn initial_limit(&self) -> usize;

    /// The new limit after `samples`. `rng` is the layer's seeded random source.
    fn update(&mut self, samples: &Samples, rng: &dyn RandomSource) -> usize;
}

/// What the calls completed since the last update experienced.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::adaptive_limit::Samples;
/// let s = Samples::single(Duration::from_millis(20), 7, false);
/// assert_eq!((s.count, s.drops, s.max_in_flight), (1, 0, 7));
/// assert_eq!(s.avg_rtt, Duration::from_millis(20));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Samples {
    /// Calls measured (drops included; calls the classifier ignored are not measured).
    pub count: u64,
    /// How many of them were drops (failures that signal overload: timeouts, `503`s, deadlines
    /// that expired while the call ran, calls whose caller gave up before they completed).
    pub drops: u64,
    /// Their mean round-trip time; for a call its caller gave up on, the time it waited (a
    /// lower bound).
    pub avg_rtt: Duration,
    /// The shortest round-trip time of the calls that completed (zero if none did).
    pub min_rtt: Duration,
    /// The most calls in flight when one of them started (itself included).
    pub max_in_flight: usize,
}

impl Samples {
    /// Samples summarising `count` calls.
    ///
    /// ```
    /// use std::time::Duration;
    /// use steadfast_layers::adaptive_limit::Samples;
    /// let s = Samples::new(10, 1, Duration::from_millis(8), Duration::from_millis(5), 12);
    /// assert_eq!(s.drops, 1);
    /// ```
    pub const fn new(
        count: u64,
        drops: u64,
        avg_rtt: Duration,
        min_rtt: Duration,
        max_in_flight: usize,
    ) -> Self {
        Self {
            count,
            drops,
            avg_rtt,
            min_rtt,
            max_in_flight,
        }
    }

    /// One call: its round-trip time, the calls in flight when it started, whether it dropped.
    ///
    /// ```
    /// use std::time::Duration;
    /// use steadfast_layers::adaptive_limit::Samples;
    /// assert_eq!(Samples::single(Duration::from_millis(3), 1, true).drops, 1);
    /// ```
    pub const fn single(rtt: Duration, in_flight: usize, dropped: bool) -> Self {
        Self::new(1, dropped as u64, rtt, rtt, in_flight)
    }
}

/// Netflix's `Log10RootFunction`: `max(1, floor(log10(n)))`.
pub(super) fn log10_floor(n: f64) -> f64 {
    if n < 10.0 {
        1.0
    } else {
        n.log10().floor().max(1.0)
    }
}

/// Validates the `[min, max]` bounds and the initial limit of an algorithm.
pub(super) fn check_bounds(
    initial: usize,
    min: usize,
    max: usize,
) -> Result<(), crate::ConfigError> {
    use crate::ConfigError;
    if initial == 0 {
        return Err(ConfigError::zero("initial_limit"));
    }
    if min == 0 {
        return Err(ConfigError::zero("min_limit"));
    }
    if max == 0 {
        return Err(ConfigError::zero("max_limit"));
    }
    if max > super::MAX_LIMIT {
        return Err(ConfigError::out_of_range("max_limit", max, "[1, 1000000]"));
    }
    if min > max {
        return Err(ConfigError::conflict(
            "min_limit",
            "must not exceed max_limit",
        ));
    }
    if initial < min || initial > max {
        return Err(ConfigError::conflict(
            "initial_limit",
            "must lie within [min_limit, max_limit]",
        ));
    }
    Ok(())
}
