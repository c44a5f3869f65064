use super::algorithm::check_bounds;
use super::{Algorithm, Samples};
use crate::error::{check_f64, ConfigError};
use crate::rng::RandomSource;

/// Netflix's `Gradient2Limit`, anchored to a measured no-load round-trip time: compares the
/// current round-trip time with a long-term average and shrinks the limit when latency rises
/// beyond a tolerance, or when calls are dropped.
///
/// For each update, with `short` the window's mean RTT and `long` its exponential average over
/// `long_window` samples (a plain mean over the first 10):
///
/// ```text
/// long     = min(long, long_rtt_cap × rtt_noload)   (anchored: see below)
/// if long / short > 2:            long *= 0.95        (recover quickly after a load spike)
/// gradient = clamp(tolerance × long / short, 0.5, 1.0)
/// if drops:                       new = limit × max(0.5, min(gradient, 1 − drops / count))
/// else if in_flight < limit / 2:  keep the limit      (app-limited: no evidence)
/// else:                           new = limit × gradient + queue_size
/// limit    = clamp(limit × (1 − smoothing) + new × smoothing, min, max)
/// ```
///
/// Defaults are Netflix's: tolerance 1.5, smoothing 0.2, queue size 4, long window 600,
/// initial limit 20, maximum 200; the minimum is 1 (Netflix: 20). Samples with a zero
/// round-trip time carry no latency information and are skipped.
///
/// # Deviations from Netflix, and why
///
/// Netflix's long-term average follows whatever latency it is fed. Under sustained overload
/// (more demand than the backend serves, callers that wait in its queue) the loaded latency is
/// all it is fed: the average catches up with it, the gradient returns to 1, the limit grows by
/// the queue allowance, the backend's queue and latency grow with it, and so on until calls
/// queue for as long as their callers wait: goodput collapses, which is what the limit is for.
/// (Netflix's own docs say the baseline grows under load, lagging the current measurement.) In a
/// simulated 2x overload against 8 workers and an unbounded queue (`tests/adaptive.rs`, and the
/// lab's `overload_adaptive` scenario), the unanchored limit climbs to about 100, where calls
/// queue for their whole 500 ms deadline and nothing succeeds any more. Two changes stop it:
///
/// - **An anchored long-term RTT** (after Envoy's adaptive concurrency filter, which measures
///   a minimum RTT at low concurrency): the first update, and then every `probe_interval`
///   updates (default 600, one minute at the layer's 100 ms windows; ±25 % jitter from the
///   layer's seeded random source so that clients do not probe together), the limit drops to
///   `probe_limit` (default 3, Envoy's `min_concurrency`) until a window whose calls all
///   started with at most that many in flight and none dropped (10 updates at most): its mean
///   RTT is the no-load RTT `rtt_noload`, and the limit returns to where it was. The long-term
///   average may not exceed `long_rtt_cap` (default 2) × `rtt_noload`, so the limit shrinks once
///   latency exceeds `tolerance × long_rtt_cap` = 3 × the no-load RTT, however long the
///   overload lasts. A cap over a measured mean, rather than Envoy's minimum as the target,
///   keeps Netflix's reason for averages: requests of uneven cost, where a minimum sheds too
///   much. A backend that becomes slower for good is learnt at the next probe (until then the
///   limit may sit low: Envoy also re-measures when its limit stays at the minimum; this does
///   not). A probe costs a few windows at a low limit once a minute.
/// - **Drops decrease the limit** (Netflix's Gradient2 ignores them; its Vegas and AIMD do
///   not): a window with drops (failures the classifier calls retryable or pushback, deadlines
///   that expired while the call ran, and calls whose caller gave up: see
///   [`AdaptiveLimitLayerBuilder::cancelled_as_drops`](super::AdaptiveLimitLayerBuilder::cancelled_as_drops))
///   takes the limit to `limit × gradient` with no queue allowance, the gradient at most
///   `1 − drops / count` (a few stray timeouts barely move it; a window where half the calls
///   time out takes it to its floor of 0.5), and does not feed the long-term average.
///
/// Netflix's app-limited rule is kept: with fewer than half the limit in flight, latency says
/// nothing about the limit, which is left alone (drops still decrease it).
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::adaptive_limit::{Algorithm, Gradient2, Samples};
/// use steadfast_layers::rng::SeededRng;
///
/// let mut g = Gradient2::builder().initial_limit(10).build()?;
/// let rng = SeededRng::new(1);
/// let at = |ms, in_flight| Samples::single(Duration::from_millis(ms), in_flight, false);
/// // The first update starts a no-load probe: the limit drops to 3 until a window whose calls
/// // started with at most 3 in flight; its RTT is the no-load RTT, and the limit comes back.
/// assert_eq!(g.update(&at(10, 10), &rng), 3);
/// assert_eq!(g.update(&at(10, 3), &rng), 10);
/// assert_eq!(g.rtt_noload_secs(), 0.010);
/// // Steady latency with the limit in use: it creeps up by smoothing × queue_size = 0.8.
/// assert_eq!(g.update(&at(10, 100), &rng), 10); // 10.8
/// assert_eq!(g.update(&at(10, 100), &rng), 11); // 11.6
/// let before = (0..18).map(|_| g.update(&at(10, 100), &rng)).last().unwrap();
/// assert_eq!(before, 26); // 26.0
/// // Latency jumps tenfold: the gradient falls to 0.5, and each update takes the limit to
/// // 0.9 × limit + 0.8.
/// assert_eq!(g.update(&at(100, 100), &rng), 24); // 24.2
/// // An app-limited sample (fewer than half the limit in flight) changes nothing...
/// assert_eq!(g.update(&at(100, 3), &rng), 24);
/// // ...but drops do: half of the window's calls dropped halves the limit, smoothed.
/// let dropped = Samples::new(10, 5, Duration::from_millis(100), Duration::from_millis(10), 3);
/// assert_eq!(g.update(&dropped, &rng), 21); // 24.2 × 0.8 + 12.1 × 0.2 = 21.8
/// // However long latency stays high, the long-term RTT stays within 2 × the no-load RTT.
/// for _ in 0..5_000 {
///     g.update(&at(100, 100), &rng);
/// }
/// assert!(g.long_rtt_secs() <= 0.020 + 1e-9, "{}", g.long_rtt_secs());
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
    long_rtt_cap: f64,
    probe_interval: u32,
    probe_limit: usize,
    /// The no-load RTT in nanoseconds (0: not measured yet).
    rtt_noload: f64,
    /// Updates left before the next probe (a probe starts at the first update).
    until_probe: u64,
    probe: Option<Probe>,
}

/// A no-load probe in progress.
#[derive(Clone, Copy, Debug)]
struct Probe {
    /// The limit to return to.
    saved: f64,
    /// Updates spent probing.
    updates: u32,
}

/// A probe that finds no clean window within this many updates gives up (the limit returns).
const MAX_PROBE_UPDATES: u32 = 10;

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
            long_rtt_cap: 2.0,
            probe_interval: 600,
            probe_limit: 3,
            rtt_noload: 0.0,
            until_probe: 0,
            probe: None,
        }
    }
}

impl Gradient2 {
    /// A builder with Netflix's defaults.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::{Algorithm, Gradient2};
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
    /// # use steadfast_layers::adaptive_limit::Gradient2;
    /// assert_eq!(Gradient2::default().long_rtt_secs(), 0.0);
    /// ```
    pub fn long_rtt_secs(&self) -> f64 {
        self.long_rtt.value / 1e9
    }

    /// The no-load RTT measured by the last probe, in seconds (0 before the first).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Gradient2;
    /// assert_eq!(Gradient2::default().rtt_noload_secs(), 0.0);
    /// ```
    pub fn rtt_noload_secs(&self) -> f64 {
        self.rtt_noload / 1e9
    }

    fn limit(&self) -> usize {
        self.estimate as usize
    }

    fn probe_limit(&self) -> usize {
        self.probe_limit.clamp(self.min, self.max)
    }

    /// Ends a probe: back to the limit before it, next probe in `probe_interval × U(0.75, 1.25)`.
    fn end_probe(&mut self, saved: f64, rng: &dyn RandomSource) -> usize {
        self.probe = None;
        self.estimate = saved;
        let jitter = 0.75 + 0.5 * rng.next_f64();
        self.until_probe = ((f64::from(self.probe_interval) * jitter) as u64).max(1);
        self.limit()
    }
}

impl Algorithm for Gradient2 {
    fn name(&self) -> &'static str {
        "gradient2"
    }

    fn initial_limit(&self) -> usize {
        self.estimate as usize
    }

    fn update(&mut self, samples: &Samples, rng: &dyn RandomSource) -> usize {
        let short = samples.avg_rtt.as_nanos() as f64;
        if short <= 0.0 {
            return self.limit();
        }
        if let Some(mut probe) = self.probe {
            probe.updates += 1;
            // Every call of this window started with at most the probe limit in flight: the
            // backend's queue (of ours) had drained, so this is the no-load RTT.
            if samples.max_in_flight <= self.probe_limit() && samples.drops == 0 {
                self.rtt_noload = short;
                return self.end_probe(probe.saved, rng);
            }
            if probe.updates >= MAX_PROBE_UPDATES {
                return self.end_probe(probe.saved, rng);
            }
            self.probe = Some(probe);
            return self.probe_limit();
        }
        if self.until_probe == 0 {
            self.probe = Some(Probe {
                saved: self.estimate,
                updates: 0,
            });
            return self.probe_limit();
        }
        self.until_probe -= 1;

        let dropped = samples.drops > 0 && samples.count > 0;
        // A window with drops is no measure of normal latency (its RTTs include lower bounds).
        if !dropped || self.long_rtt.count == 0 {
            self.long_rtt.add(short);
        }
        if self.rtt_noload > 0.0 {
            let cap = self.long_rtt_cap * self.rtt_noload;
            if self.long_rtt.value > cap {
                self.long_rtt.value = cap;
            }
        }
        let long = self.long_rtt.value;
        if long / short > 2.0 {
            self.long_rtt.value *= 0.95;
        }
        let latency_gradient = (self.tolerance * long / short).clamp(0.5, 1.0);
        let new = if dropped {
            let lost = samples.drops.min(samples.count) as f64 / samples.count as f64;
            self.estimate * latency_gradient.min(1.0 - lost).clamp(0.5, 1.0)
        } else if (samples.max_in_flight as f64) < self.estimate / 2.0 {
            return self.limit();
        } else {
            self.estimate * latency_gradient + self.queue_size as f64
        };
        let new = self.estimate * (1.0 - self.smoothing) + new * self.smoothing;
        self.estimate = new.clamp(self.min as f64, self.max as f64);
        self.limit()
    }
}

/// Builds a [`Gradient2`] algorithm, validating it.
///
/// ```
/// # use steadfast_layers::adaptive_limit::Gradient2;
/// assert_eq!(Gradient2::builder().tolerance(0.9).build().unwrap_err().path(), "tolerance");
/// assert_eq!(Gradient2::builder().smoothing(f64::NAN).build().unwrap_err().path(), "smoothing");
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
    /// # use steadfast_layers::adaptive_limit::{Algorithm, Gradient2};
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
    /// # use steadfast_layers::adaptive_limit::Gradient2;
    /// assert!(Gradient2::builder().min_limit(0).build().is_err());
    /// ```
    pub fn min_limit(mut self, n: usize) -> Self {
        self.g.min = n;
        self
    }

    /// The highest limit (default 200, at most 1,000,000).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Gradient2;
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
    /// # use steadfast_layers::adaptive_limit::Gradient2;
    /// assert!(Gradient2::builder().tolerance(2.0).build().is_ok());
    /// ```
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.g.tolerance = tolerance;
        self
    }

    /// How much of each new estimate is taken, in `(0, 1]` (default 0.2).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Gradient2;
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
    /// # use steadfast_layers::adaptive_limit::Gradient2;
    /// assert!(Gradient2::builder().queue_size(1_001).build().is_err());
    /// ```
    pub fn queue_size(mut self, n: usize) -> Self {
        self.g.queue_size = n;
        self
    }

    /// The number of samples the long-term RTT averages over, in `[10, 100000]` (default 600).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Gradient2;
    /// assert!(Gradient2::builder().long_window(5).build().is_err());
    /// ```
    pub fn long_window(mut self, n: u32) -> Self {
        self.long_window = n;
        self
    }

    /// The long-term RTT is held at most this multiple of the no-load RTT measured by the last
    /// probe, in `[1, 100]` (default 2; not in Netflix's algorithm: see the type's docs). With
    /// the tolerance, the limit shrinks once latency exceeds `tolerance × cap` times the
    /// no-load RTT (3 by default).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Gradient2;
    /// assert!(Gradient2::builder().long_rtt_cap(1.0).build().is_ok());
    /// assert_eq!(Gradient2::builder().long_rtt_cap(0.5).build().unwrap_err().path(), "long_rtt_cap");
    /// ```
    pub fn long_rtt_cap(mut self, cap: f64) -> Self {
        self.g.long_rtt_cap = cap;
        self
    }

    /// Updates between no-load probes, in `[10, 1000000]` (default 600: a minute at the layer's
    /// default 100 ms window); each interval is jittered by ±25 %. The first probe is at the
    /// first update.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Gradient2;
    /// assert!(Gradient2::builder().probe_interval(100).build().is_ok());
    /// assert!(Gradient2::builder().probe_interval(5).build().is_err());
    /// ```
    pub fn probe_interval(mut self, updates: u32) -> Self {
        self.g.probe_interval = updates;
        self
    }

    /// The limit during a no-load probe, in `[1, 1000]` (default 3, Envoy's
    /// `min_concurrency`), kept within `[min_limit, max_limit]`.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Gradient2;
    /// assert_eq!(Gradient2::builder().probe_limit(0).build().unwrap_err().path(), "probe_limit");
    /// ```
    pub fn probe_limit(mut self, n: usize) -> Self {
        self.g.probe_limit = n;
        self
    }

    /// Validates and builds the algorithm.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Gradient2;
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
        check_f64("long_rtt_cap", g.long_rtt_cap, 1.0, 100.0, "[1, 100]")?;
        if !(10..=1_000_000).contains(&g.probe_interval) {
            return Err(ConfigError::out_of_range(
                "probe_interval",
                g.probe_interval,
                "[10, 1000000]",
            ));
        }
        if g.probe_limit == 0 {
            return Err(ConfigError::zero("probe_limit"));
        }
        if g.probe_limit > 1_000 {
            return Err(ConfigError::out_of_range(
                "probe_limit",
                g.probe_limit,
                "[1, 1000]",
            ));
        }
        g.estimate = self.initial as f64;
        g.long_rtt = ExpAvg::new(self.long_window, 10);
        Ok(g)
    }
}
