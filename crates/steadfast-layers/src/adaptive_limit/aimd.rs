use std::time::Duration;

use super::algorithm::check_bounds;
use super::{Algorithm, Samples};
use crate::error::{check_f64, ConfigError};
use crate::rng::RandomSource;

/// Additive increase, multiplicative decrease, as Netflix's `AIMDLimit`: on a drop (or a call
/// slower than `timeout`) the limit is multiplied by `backoff_ratio` (0.9); on success, while
/// the limit is in use (at least half of it in flight), it grows by one.
///
/// Loss-based: it reacts to failures the classifier calls drops, not to latency. Defaults:
/// initial 20, bounds `[1, 200]` (Netflix's minimum is 20; ours lets the limit fall to what a
/// small backend can take), ratio 0.9, timeout 5 s.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::adaptive_limit::{Aimd, Algorithm, Samples};
/// use steadfast_layers::rng::SeededRng;
///
/// let mut aimd = Aimd::builder().initial_limit(10).build()?;
/// let rng = SeededRng::new(1);
/// let ok = Samples::single(Duration::from_millis(10), 10, false);
/// assert_eq!(aimd.update(&ok, &rng), 11);
/// let dropped = Samples::single(Duration::from_millis(10), 11, true);
/// assert_eq!(aimd.update(&dropped, &rng), 9); // floor(11 × 0.9)
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Aimd {
    limit: usize,
    min: usize,
    max: usize,
    backoff_ratio: f64,
    timeout: Duration,
}

impl Default for Aimd {
    fn default() -> Self {
        Self {
            limit: 20,
            min: 1,
            max: 200,
            backoff_ratio: 0.9,
            timeout: Duration::from_secs(5),
        }
    }
}

impl Aimd {
    /// A builder with the defaults above.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::{Aimd, Algorithm};
    /// assert_eq!(Aimd::builder().build()?.initial_limit(), 20);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder() -> AimdBuilder {
        AimdBuilder(Aimd::default())
    }
}

impl Algorithm for Aimd {
    fn name(&self) -> &'static str {
        "aimd"
    }

    fn initial_limit(&self) -> usize {
        self.limit
    }

    fn update(&mut self, samples: &Samples, _rng: &dyn RandomSource) -> usize {
        let limit = if samples.drops > 0 || samples.avg_rtt > self.timeout {
            (self.limit as f64 * self.backoff_ratio) as usize
        } else if samples.max_in_flight.saturating_mul(2) >= self.limit {
            self.limit.saturating_add(1)
        } else {
            self.limit
        };
        self.limit = limit.clamp(self.min, self.max);
        self.limit
    }
}

/// Builds an [`Aimd`] algorithm, validating it.
///
/// ```
/// # use steadfast_layers::adaptive_limit::Aimd;
/// assert_eq!(Aimd::builder().backoff_ratio(1.0).build().unwrap_err().path(), "backoff_ratio");
/// assert_eq!(Aimd::builder().backoff_ratio(f64::NAN).build().unwrap_err().path(), "backoff_ratio");
/// ```
#[derive(Clone, Debug)]
pub struct AimdBuilder(Aimd);

impl AimdBuilder {
    /// The limit to start from (default 20).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::{Aimd, Algorithm};
    /// assert_eq!(Aimd::builder().initial_limit(5).build()?.initial_limit(), 5);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn initial_limit(mut self, n: usize) -> Self {
        self.0.limit = n;
        self
    }

    /// The lowest limit (default 1).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Aimd;
    /// assert!(Aimd::builder().min_limit(0).build().is_err());
    /// ```
    pub fn min_limit(mut self, n: usize) -> Self {
        self.0.min = n;
        self
    }

    /// The highest limit (default 200, at most 1,000,000).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Aimd;
    /// assert!(Aimd::builder().max_limit(10).build().is_err()); // below the initial 20
    /// ```
    pub fn max_limit(mut self, n: usize) -> Self {
        self.0.max = n;
        self
    }

    /// The factor applied on a drop, in `[0.5, 1)` (default 0.9).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Aimd;
    /// assert!(Aimd::builder().backoff_ratio(0.5).build().is_ok());
    /// assert!(Aimd::builder().backoff_ratio(0.4).build().is_err());
    /// ```
    pub fn backoff_ratio(mut self, ratio: f64) -> Self {
        self.0.backoff_ratio = ratio;
        self
    }

    /// A call slower than this counts as a drop (default 5 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::adaptive_limit::Aimd;
    /// assert!(Aimd::builder().timeout(Duration::ZERO).build().is_err());
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.0.timeout = timeout;
        self
    }

    /// Validates and builds the algorithm.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Aimd;
    /// assert!(Aimd::builder().min_limit(30).build().is_err()); // above the initial 20
    /// ```
    pub fn build(self) -> Result<Aimd, ConfigError> {
        let a = self.0;
        check_bounds(a.limit, a.min, a.max)?;
        if a.backoff_ratio >= 1.0 {
            return Err(ConfigError::out_of_range(
                "backoff_ratio",
                a.backoff_ratio,
                "[0.5, 1)",
            ));
        }
        check_f64("backoff_ratio", a.backoff_ratio, 0.5, 1.0, "[0.5, 1)")?;
        if a.timeout.is_zero() {
            return Err(ConfigError::zero("timeout"));
        }
        Ok(a)
    }
}
