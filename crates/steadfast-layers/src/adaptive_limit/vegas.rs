use super::algorithm::{check_bounds, log10_floor};
use super::{Algorithm, Samples};
use crate::error::{check_f64, ConfigError};
use crate::rng::RandomSource;

/// Netflix's `VegasLimit`, after TCP Vegas: estimates the queue from how much the round-trip
/// time exceeds the no-load RTT, and keeps it between `alpha` and `beta`.
///
/// With `rtt_noload` the lowest RTT seen (re-probed every `probe_multiplier × limit × U(0.5, 1)`
/// updates, so it follows a backend whose base latency rises) and `L = max(1, ⌊log10 limit⌋)`:
///
/// ```text
/// queue = ⌈limit × (1 − rtt_noload / rtt)⌉
/// drop                            → limit − L
/// in_flight × 2 < limit           → keep (app-limited)
/// queue ≤ L                       → limit + beta      (no queueing: grow fast)
/// queue < alpha                   → limit + L
/// queue > beta                    → limit − L
/// otherwise                       → keep
/// alpha = 3 × L, beta = 6 × L
/// ```
///
/// then `limit = (1 − smoothing) × limit + smoothing × clamp(new, min, max)`. Defaults are
/// Netflix's: initial 20, maximum 1,000, smoothing 1, probe multiplier 30; minimum 1. The probe
/// jitter is drawn from the layer's seeded random source. Samples with a zero round-trip time
/// carry no latency information and are skipped.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::adaptive_limit::{Algorithm, Samples, Vegas};
/// use steadfast_layers::rng::SeededRng;
///
/// let mut v = Vegas::builder().initial_limit(10).build()?;
/// let rng = SeededRng::new(1);
/// let at = |ms, in_flight| Samples::single(Duration::from_millis(ms), in_flight, false);
/// assert_eq!(v.update(&at(10, 10), &rng), 10); // first sample: the no-load RTT is 10 ms
/// assert_eq!(v.update(&at(10, 10), &rng), 16); // no queue: + beta (6)
/// assert_eq!(v.update(&at(20, 16), &rng), 15); // queue ⌈16 × 0.5⌉ = 8 > beta: − 1
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Vegas {
    estimate: f64,
    min: usize,
    max: usize,
    smoothing: f64,
    probe_multiplier: u32,
    alpha_factor: f64,
    beta_factor: f64,
    rtt_noload: u64,
    probe_count: u64,
    probe_jitter: Option<f64>,
}

impl Default for Vegas {
    fn default() -> Self {
        Self {
            estimate: 20.0,
            min: 1,
            max: 1_000,
            smoothing: 1.0,
            probe_multiplier: 30,
            alpha_factor: 3.0,
            beta_factor: 6.0,
            rtt_noload: 0,
            probe_count: 0,
            probe_jitter: None,
        }
    }
}

impl Vegas {
    /// A builder with Netflix's defaults.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::{Algorithm, Vegas};
    /// assert_eq!(Vegas::builder().build()?.initial_limit(), 20);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder() -> VegasBuilder {
        VegasBuilder {
            v: Vegas::default(),
            initial: 20,
        }
    }

    /// The no-load round-trip time currently assumed, in seconds (0 before any sample).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Vegas;
    /// assert_eq!(Vegas::default().rtt_noload_secs(), 0.0);
    /// ```
    pub fn rtt_noload_secs(&self) -> f64 {
        self.rtt_noload as f64 / 1e9
    }
}

impl Algorithm for Vegas {
    fn name(&self) -> &'static str {
        "vegas"
    }

    fn initial_limit(&self) -> usize {
        self.estimate as usize
    }

    fn update(&mut self, samples: &Samples, rng: &dyn RandomSource) -> usize {
        let rtt = u64::try_from(samples.avg_rtt.as_nanos()).unwrap_or(u64::MAX);
        if rtt == 0 {
            return self.estimate as usize;
        }
        let jitter = *self
            .probe_jitter
            .get_or_insert_with(|| 0.5 + 0.5 * rng.next_f64());
        self.probe_count += 1;
        if jitter * f64::from(self.probe_multiplier) * self.estimate <= self.probe_count as f64 {
            self.probe_jitter = Some(0.5 + 0.5 * rng.next_f64());
            self.probe_count = 0;
            self.rtt_noload = rtt;
            return self.estimate as usize;
        }
        if self.rtt_noload == 0 || rtt < self.rtt_noload {
            self.rtt_noload = rtt;
            return self.estimate as usize;
        }
        let limit = self.estimate;
        let queue = (limit * (1.0 - self.rtt_noload as f64 / rtt as f64)).ceil();
        let l = log10_floor(limit.floor());
        let new = if samples.drops > 0 {
            limit - l
        } else if (samples.max_in_flight as f64) * 2.0 < limit {
            return self.estimate as usize;
        } else {
            let alpha = self.alpha_factor * l;
            let beta = self.beta_factor * l;
            if queue <= l {
                limit + beta
            } else if queue < alpha {
                limit + l
            } else if queue > beta {
                limit - l
            } else {
                return self.estimate as usize;
            }
        };
        let new = new.clamp(self.min as f64, self.max as f64);
        self.estimate = (1.0 - self.smoothing) * limit + self.smoothing * new;
        self.estimate as usize
    }
}

/// Builds a [`Vegas`] algorithm, validating it.
///
/// ```
/// # use steadfast_layers::adaptive_limit::Vegas;
/// assert_eq!(Vegas::builder().smoothing(1.5).build().unwrap_err().path(), "smoothing");
/// assert_eq!(Vegas::builder().probe_multiplier(0).build().unwrap_err().path(), "probe_multiplier");
/// ```
#[derive(Clone, Debug)]
pub struct VegasBuilder {
    v: Vegas,
    initial: usize,
}

impl VegasBuilder {
    /// The limit to start from (default 20).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::{Algorithm, Vegas};
    /// assert_eq!(Vegas::builder().initial_limit(4).build()?.initial_limit(), 4);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn initial_limit(mut self, n: usize) -> Self {
        self.initial = n;
        self
    }

    /// The lowest limit (default 1).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Vegas;
    /// assert!(Vegas::builder().min_limit(0).build().is_err());
    /// ```
    pub fn min_limit(mut self, n: usize) -> Self {
        self.v.min = n;
        self
    }

    /// The highest limit (default 1,000, at most 1,000,000).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Vegas;
    /// assert!(Vegas::builder().max_limit(2_000_000).build().is_err());
    /// ```
    pub fn max_limit(mut self, n: usize) -> Self {
        self.v.max = n;
        self
    }

    /// How much of each new estimate is taken, in `(0, 1]` (default 1).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Vegas;
    /// assert!(Vegas::builder().smoothing(0.5).build().is_ok());
    /// ```
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.v.smoothing = smoothing;
        self
    }

    /// Re-probe the no-load RTT every `n × limit × U(0.5, 1)` updates, `n` in `[1, 1000]`
    /// (default 30).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Vegas;
    /// assert!(Vegas::builder().probe_multiplier(10).build().is_ok());
    /// ```
    pub fn probe_multiplier(mut self, n: u32) -> Self {
        self.v.probe_multiplier = n;
        self
    }

    /// `alpha = a × L` and `beta = b × L` (defaults 3 and 6), with `0 < a < b ≤ 100`.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Vegas;
    /// assert_eq!(Vegas::builder().alpha_beta(6.0, 3.0).build().unwrap_err().path(), "alpha_beta");
    /// ```
    pub fn alpha_beta(mut self, a: f64, b: f64) -> Self {
        self.v.alpha_factor = a;
        self.v.beta_factor = b;
        self
    }

    /// Validates and builds the algorithm.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Vegas;
    /// assert!(Vegas::builder().initial_limit(0).build().is_err());
    /// ```
    pub fn build(self) -> Result<Vegas, ConfigError> {
        let mut v = self.v;
        check_bounds(self.initial, v.min, v.max)?;
        check_f64("smoothing", v.smoothing, 0.0, 1.0, "(0, 1]")?;
        if v.smoothing == 0.0 {
            return Err(ConfigError::zero("smoothing"));
        }
        if v.probe_multiplier == 0 {
            return Err(ConfigError::zero("probe_multiplier"));
        }
        if v.probe_multiplier > 1_000 {
            return Err(ConfigError::out_of_range(
                "probe_multiplier",
                v.probe_multiplier,
                "[1, 1000]",
            ));
        }
        check_f64("alpha_beta", v.alpha_factor, 0.0, 100.0, "0 < a < b <= 100")?;
        check_f64("alpha_beta", v.beta_factor, 0.0, 100.0, "0 < a < b <= 100")?;
        if v.alpha_factor <= 0.0 || v.alpha_factor >= v.beta_factor {
            return Err(ConfigError::conflict(
                "alpha_beta",
                "alpha must be positive and below beta",
            ));
        }
        v.estimate = self.initial as f64;
        Ok(v)
    }
}
