use super::algorithm::check_bounds;
use super::{Algorithm, Samples};
use crate::error::{check_f64, ConfigError};
use crate::rng::RandomSource;

/// Netflix's `Gradient2Limit`: compares the current round-trip time with a long-term average and
/// shrinks the limit when latency rises beyond a tolerance.
///
/// For each update, with `short` the current RTT and `long` its exponential average over
/// `long_window` samples (a plain mean over the first 10):
///
/// ```text
/// if long / short > 2:            long *= 0.95        (recover quickly after a load spike)
/// if in_flight < limit / 2:       keep the limit      (app-limited: no evidence)
/// gradient = clamp(tolerance × long / short, 0.5, 1.0)
/// new      = limit × gradient + queue_size
/// limit    = clamp(limit × (1 − smoothing) + new × smoothing, min, max)
/// ```
///
/// Defaults are Netflix's: tolerance 1.5, smoothing 0.2, queue size 4, long window 600,
/// initial limit 20, maximum 200; the minimum is 1 (Netflix: 20). Drops do not enter the
/// formula (as in Netflix's implementation); only latency does. Samples with a zero round-trip
/// time carry no latency information and are skipped.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::adaptive::{Algorithm, Gradient2, Samples};
/// use steadfast_layers::rng::SeededRng;
///
/// let mut g = Gradient2::builder().initial_limit(10).build()?;
/// let rng = SeededRng::new(1);
/// // Steady latency with the limit in use: it creeps up by smoothing × queue_size = 0.8.
/// let steady = Samples::single(Duration::from_millis(10), 100, false);
/// assert_eq!(g.update(&steady, &rng), 10); // 10.8
/// assert_eq!(g.update(&steady, &rng), 11); // 11.6
/// let before = (0..18).map(|_| g.update(&steady, &rng)).last().unwrap();
/// assert_eq!(before, 26); // 26.0
/// // Latency jumps tenfold: the gradient falls to 0.5, and each update takes the limit to
/// // 0.9 × limit + 0.8.
/// let slow = Samples::single(Duration::from_millis(100), 100, false);
/// assert_eq!(g.update(&slow, &rng), 24); // 24.2
/// // An app-limited sample (fewer than half the limit in flight) changes nothing.
/// let idle = Samples::single(Duration::from_millis(100), 3, false);
/// assert_eq!(g.update(&idle, &rng), 24);
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Gradient2 {
    estimate: f64,
    min: usize,
    max: usize,
    tolerance: f64,
    smoothing: f64,
    queue_size: usize,
    long_rtt: ExpAvg,
}

/// Netflix's `ExpAvgMeasurement`: a mean over the first `warmup` samples, then an exponential
/// average with factor `2 / (window + 1)`.
#[derive(Clone, Debug)]
struct ExpAvg {
    value: f64,
    sum: f64,
    count: u32,
    warmup: u32,
    factor: f64,
}

impl ExpAvg {
    fn new(window: u32, warmup: u32) -> Self {
        Self {
            value: 0.0,
            sum: 0.0,
            count: 0,
            warmup,
            factor: 2.0 / (f64::from(window) + 1.0),
        }
    }

    fn add(&mut self, sample: f64) -> f64 {
        if self.count < self.warmup {
            self.count += 1;
            self.sum += sample;
            self.value = self.sum / f64::from(self.count);
        } else {
            self.value = self.value * (1.0 - self.factor) + sample * self.factor;
        }
        self.value
    }
}

impl Default for Gradient2 {
    fn default() -> Self {
        Self {
            estimate: 20.0,
            min: 1,
            max: 200,
            tolerance: 1.5,
            smoothing: 0.2,
            queue_size: 4,
            long_rtt: ExpAvg::new(600, 10),
        }
    }
}

impl Gradient2 {
    /// A builder with Netflix's defaults.
    ///
    /// ```
    /// # use steadfast_layers::adaptive::{Algorithm, Gradient2};
    /// assert_eq!(Gradient2::builder().build()?.initial_limit(), 20);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder() -> Gradient2Builder {
        Gradient2Builder {
            g: Gradient2::default(),
            initial: 20,
            long_window: 600,
        }
    }

    /// The long-term RTT average, in seconds (0 before any sample).
    ///
    /// ```
    /// # use steadfast_layers::adaptive::Gradient2;
    /// assert_eq!(Gradient2::default().long_rtt_secs(), 0.0);
    /// ```
    pub fn long_rtt_secs(&self) -> f64 {
        self.long_rtt.value / 1e9
    }
}

impl Algorithm for Gradient2 {
    fn name(&self) -> &'static str {
        "gradient2"
    }

    fn initial_limit(&self) -> usize {
        self.estimate as usize
    }

    fn update(&mut self, samples: &Samples, _rng: &dyn RandomSource) -> usize {
        let short = samples.avg_rtt.as_nanos() as f64;
        if short <= 0.0 {
            return self.estimate as usize;
        }
        let queue = self.queue_size as f64;
        let long = self.long_rtt.add(short);
        if long / short > 2.0 {
            self.long_rtt.value *= 0.95;
        }
        if (samples.max_in_flight as f64) < self.estimate / 2.0 {
            return self.estimate as usize;
        }
        let gradient = (self.tolerance * long / short).clamp(0.5, 1.0);
        let new = self.estimate * gradient + queue;
        let new = self.estimate * (1.0 - self.smoothing) + new * self.smoothing;
        self.estimate = new.clamp(self.min as f64, self.max as f64);
        self.estimate as usize
    }
}

/// Builds a [`Gradient2`] algorithm, validating it.
///
/// ```
/// # use steadfast_layers::adaptive::Gradient2;
/// assert_eq!(Gradient2::builder().tolerance(0.9).build().unwrap_err().field(), "tolerance");
/// assert_eq!(Gradient2::builder().smoothing(f64::NAN).build().unwrap_err().field(), "smoothing");
/// ```
#[derive(Clone, Debug)]
pub struct Gradient2Builder {
    g: Gradient2,
    initial: usize,
    long_window: u32,
}

impl Gradient2Builder {
    /// The limit to start from (default 20).
    ///
    /// ```
    /// # use steadfast_layers::adaptive::{Algorithm, Gradient2};
    /// assert_eq!(Gradient2::builder().initial_limit(8).build()?.initial_limit(), 8);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn initial_limit(mut self, n: usize) -> Self {
        self.initial = n;
        self
    }

    /// The lowest limit (default 1).
    ///
    /// ```
    /// # use steadfast_layers::adaptive::Gradient2;
    /// assert!(Gradient2::builder().min_limit(0).build().is_err());
    /// ```
    pub fn min_limit(mut self, n: usize) -> Self {
        self.g.min = n;
        self
    }

    /// The highest limit (default 200, at most 1,000,000).
    ///
    /// ```
    /// # use steadfast_layers::adaptive::Gradient2;
    /// assert!(Gradient2::builder().max_limit(0).build().is_err());
    /// ```
    pub fn max_limit(mut self, n: usize) -> Self {
        self.g.max = n;
        self
    }

    /// How much latency may grow over the long-term average before the limit shrinks, in
    /// `[1, 100]` (default 1.5: 50 % more is tolerated).
    ///
    /// ```
    /// # use steadfast_layers::adaptive::Gradient2;
    /// assert!(Gradient2::builder().tolerance(2.0).build().is_ok());
    /// ```
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.g.tolerance = tolerance;
        self
    }

    /// How much of each new estimate is taken, in `(0, 1]` (default 0.2).
    ///
    /// ```
    /// # use steadfast_layers::adaptive::Gradient2;
    /// assert!(Gradient2::builder().smoothing(0.0).build().is_err());
    /// ```
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.g.smoothing = smoothing;
        self
    }

    /// The headroom added to each estimate, so the limit can grow while latency holds
    /// (default 4, at most 1,000).
    ///
    /// ```
    /// # use steadfast_layers::adaptive::Gradient2;
    /// assert!(Gradient2::builder().queue_size(1_001).build().is_err());
    /// ```
    pub fn queue_size(mut self, n: usize) -> Self {
        self.g.queue_size = n;
        self
    }

    /// The number of samples the long-term RTT averages over, in `[10, 100000]` (default 600).
    ///
    /// ```
    /// # use steadfast_layers::adaptive::Gradient2;
    /// assert!(Gradient2::builder().long_window(5).build().is_err());
    /// ```
    pub fn long_window(mut self, n: u32) -> Self {
        self.long_window = n;
        self
    }

    /// Validates and builds the algorithm.
    ///
    /// ```
    /// # use steadfast_layers::adaptive::Gradient2;
    /// assert!(Gradient2::builder().initial_limit(500).build().is_err()); // above max 200
    /// ```
    pub fn build(self) -> Result<Gradient2, ConfigError> {
        let mut g = self.g;
        check_bounds(self.initial, g.min, g.max)?;
        check_f64("tolerance", g.tolerance, 1.0, 100.0, "[1, 100]")?;
        check_f64("smoothing", g.smoothing, 0.0, 1.0, "(0, 1]")?;
        if g.smoothing == 0.0 {
            return Err(ConfigError::zero("smoothing"));
        }
        if g.queue_size > 1_000 {
            return Err(ConfigError::out_of_range(
                "queue_size",
                g.queue_size,
                "[0, 1000]",
            ));
        }
        if !(10..=100_000).contains(&self.long_window) {
            return Err(ConfigError::out_of_range(
                "long_window",
                self.long_window,
                "[10, 100000]",
            ));
        }
        g.estimate = self.initial as f64;
        g.long_rtt = ExpAvg::new(self.long_window, 10);
        Ok(g)
    }
}
