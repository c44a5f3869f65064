use std::time::Duration;

use crate::error::{check_f64, ConfigError};
use crate::rng::RandomSource;

/// The largest count window a builder accepts.
///
/// ```
/// # use steadfast_layers::breaker::{CircuitBreakerLayer, MAX_COUNT_WINDOW};
/// assert!(CircuitBreakerLayer::builder().count_window(MAX_COUNT_WINDOW + 1).build().is_err());
/// ```
pub const MAX_COUNT_WINDOW: u32 = 1_000_000;
/// The most half-open probes a builder accepts.
///
/// ```
/// # use steadfast_layers::breaker::{CircuitBreakerLayer, MAX_PROBES};
/// assert!(CircuitBreakerLayer::builder().half_open_probes(MAX_PROBES).build().is_ok());
/// ```
pub const MAX_PROBES: u32 = 1_000;
/// The longest break (base or cap), slow-call threshold or time window a builder accepts: one
/// day.
///
/// ```
/// # use steadfast_layers::breaker::{BreakDuration, MAX_BREAK};
/// assert!(BreakDuration::constant(MAX_BREAK * 2).validate().is_err());
/// ```
pub const MAX_BREAK: Duration = Duration::from_secs(24 * 3600);
/// The most buckets a time window may have.
///
/// ```
/// # use std::time::Duration;
/// # use steadfast_layers::breaker::{CircuitBreakerLayer, SlidingWindow, MAX_BUCKETS};
/// let w = SlidingWindow::time_with_buckets(Duration::from_secs(3600), MAX_BUCKETS + 1);
/// assert!(CircuitBreakerLayer::builder().window(w).build().is_err());
/// ```
pub const MAX_BUCKETS: u32 = 1_000;

/// Which recent calls the closed breaker judges.
///
/// - `Count(n)`: the last `n` calls (a ring of `n` one-byte atomic slots);
/// - `Time { span, buckets }`: the calls that finished in the last `span`, kept in `buckets`
///   atomic buckets of `span / buckets` each, so the window slides by whole buckets (it covers
///   between `span - span / buckets` and `span`). A time window needs one clock read per call,
///   when the call finishes.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::breaker::SlidingWindow;
/// assert_eq!(SlidingWindow::default(), SlidingWindow::count(100));
/// let w = SlidingWindow::time(Duration::from_secs(30));
/// assert_eq!(w, SlidingWindow::Time { span: Duration::from_secs(30), buckets: 10 });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlidingWindow {
    /// The last `n` calls, in `[1, 1_000_000]`.
    Count(u32),
    /// The calls that finished in the last `span`.
    Time {
        /// The window's length, in `(0, 24 h]`.
        span: Duration,
        /// How many buckets it is cut into, in `[1, 1000]`; each must be at least 1 ms.
        buckets: u32,
    },
}

impl Default for SlidingWindow {
    fn default() -> Self {
        SlidingWindow::Count(100)
    }
}

impl SlidingWindow {
    /// The last `n` calls.
    ///
    /// ```
    /// # use steadfast_layers::breaker::SlidingWindow;
    /// assert_eq!(SlidingWindow::count(20), SlidingWindow::Count(20));
    /// ```
    pub const fn count(n: u32) -> Self {
        SlidingWindow::Count(n)
    }

    /// The calls of the last `span`, in ten buckets.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::SlidingWindow;
    /// let w = SlidingWindow::time(Duration::from_secs(10));
    /// # let _ = w;
    /// ```
    pub const fn time(span: Duration) -> Self {
        SlidingWindow::Time { span, buckets: 10 }
    }

    /// The calls of the last `span`, in `buckets` buckets.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::SlidingWindow;
    /// let w = SlidingWindow::time_with_buckets(Duration::from_secs(60), 60);
    /// # let _ = w;
    /// ```
    pub const fn time_with_buckets(span: Duration, buckets: u32) -> Self {
        SlidingWindow::Time { span, buckets }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            SlidingWindow::Count(0) => Err(ConfigError::zero("count_window")),
            SlidingWindow::Count(n) if n > MAX_COUNT_WINDOW => {
                Err(ConfigError::out_of_range("count_window", n, "[1, 1000000]"))
            }
            SlidingWindow::Count(_) => Ok(()),
            SlidingWindow::Time { span, buckets } => {
                if span.is_zero() {
                    return Err(ConfigError::zero("time_window"));
                }
                if span > MAX_BREAK {
                    return Err(ConfigError::out_of_range("time_window", span, "(0, 24 h]"));
                }
                if buckets == 0 {
                    return Err(ConfigError::zero("time_window.buckets"));
                }
                if buckets > MAX_BUCKETS {
                    return Err(ConfigError::out_of_range(
                        "time_window.buckets",
                        buckets,
                        "[1, 1000]",
                    ));
                }
                if span / buckets < Duration::from_millis(1) {
                    return Err(ConfigError::conflict(
                        "time_window.buckets",
                        "each bucket must last at least 1 ms",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// How long the breaker stays open after a trip: a base duration that may grow exponentially
/// with each trip that follows a failed half-open test, up to a cap, with optional jitter.
///
/// For the `k`-th consecutive opening (`k = 1` after the breaker was closed), the break is
/// `min(cap, base * multiplier^(k-1))`, shortened by jitter `r` to a uniform draw in
/// `[d * (1 - r), d]`: jitter never lengthens a break, so the cap holds. `r = 0.5` is Finagle's
/// "equal jitter". Breaks are kept to whole milliseconds (rounded up).
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::breaker::BreakDuration;
/// use steadfast_layers::rng::SeededRng;
///
/// let b = BreakDuration::exponential(Duration::from_secs(5), Duration::from_secs(300));
/// let rng = SeededRng::new(1);
/// assert_eq!(b.duration(1, &rng), Duration::from_secs(5));
/// assert_eq!(b.duration(2, &rng), Duration::from_secs(10));
/// assert_eq!(b.duration(9, &rng), Duration::from_secs(300)); // capped
///
/// let jittered = b.jitter(0.5);
/// let d = jittered.duration(3, &rng);
/// assert!(d >= Duration::from_secs(10) && d <= Duration::from_secs(20));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BreakDuration {
    base: Duration,
    cap: Duration,
    multiplier: f64,
    jitter: f64,
}

impl Default for BreakDuration {
    /// resilience4j's: a constant 60 s.
    fn default() -> Self {
        BreakDuration::constant(Duration::from_secs(60))
    }
}

impl BreakDuration {
    /// The same break after every trip.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::{breaker::BreakDuration, rng::SeededRng};
    /// let b = BreakDuration::constant(Duration::from_secs(30));
    /// assert_eq!(b.duration(7, &SeededRng::new(0)), Duration::from_secs(30));
    /// ```
    pub const fn constant(d: Duration) -> Self {
        BreakDuration {
            base: d,
            cap: d,
            multiplier: 1.0,
            jitter: 0.0,
        }
    }

    /// `base`, doubling with each consecutive trip, up to `cap`; no jitter.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::{breaker::BreakDuration, rng::SeededRng};
    /// let b = BreakDuration::exponential(Duration::from_secs(1), Duration::from_secs(4));
    /// assert_eq!(b.duration(3, &SeededRng::new(0)), Duration::from_secs(4));
    /// ```
    pub const fn exponential(base: Duration, cap: Duration) -> Self {
        BreakDuration {
            base,
            cap,
            multiplier: 2.0,
            jitter: 0.0,
        }
    }

    /// The growth factor per consecutive trip (finite, in `[1, 100]`).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::{breaker::BreakDuration, rng::SeededRng};
    /// let b = BreakDuration::exponential(Duration::from_secs(1), Duration::from_secs(100)).multiplier(3.0);
    /// assert_eq!(b.duration(3, &SeededRng::new(0)), Duration::from_secs(9));
    /// ```
    pub const fn multiplier(mut self, factor: f64) -> Self {
        self.multiplier = factor;
        self
    }

    /// Shortens each break by up to this fraction (finite, in `[0, 1]`), at random.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::{breaker::BreakDuration, rng::SeededRng};
    /// let b = BreakDuration::constant(Duration::from_secs(10)).jitter(0.2);
    /// let d = b.duration(1, &SeededRng::new(4));
    /// assert!(d >= Duration::from_secs(8) && d <= Duration::from_secs(10));
    /// ```
    pub const fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// The first break.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::BreakDuration;
    /// assert_eq!(BreakDuration::default().base(), Duration::from_secs(60));
    /// ```
    pub const fn base(&self) -> Duration {
        self.base
    }

    /// The longest break.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::BreakDuration;
    /// let b = BreakDuration::exponential(Duration::from_secs(1), Duration::from_secs(60));
    /// assert_eq!(b.cap(), Duration::from_secs(60));
    /// ```
    pub const fn cap(&self) -> Duration {
        self.cap
    }

    /// Checks the configuration: a non-zero base, a cap not below the base and at most
    /// [`MAX_BREAK`], a finite multiplier in `[1, 100]`, a finite jitter in `[0, 1]`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::BreakDuration;
    /// let bad = BreakDuration::exponential(Duration::from_secs(10), Duration::from_secs(1));
    /// assert_eq!(bad.validate().unwrap_err().path(), "break_duration.cap");
    /// assert!(BreakDuration::default().jitter(f64::NAN).validate().is_err());
    /// assert!(BreakDuration::constant(Duration::ZERO).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.base.is_zero() {
            return Err(ConfigError::zero("break_duration"));
        }
        if self.cap < self.base {
            return Err(ConfigError::conflict(
                "break_duration.cap",
                "the cap is below the base break duration",
            ));
        }
        if self.cap > MAX_BREAK {
            return Err(ConfigError::out_of_range(
                "break_duration.cap",
                self.cap,
                "(0, 24 h]",
            ));
        }
        check_f64(
            "break_duration.multiplier",
            self.multiplier,
            1.0,
            100.0,
            "[1, 100]",
        )?;
        check_f64("break_duration.jitter", self.jitter, 0.0, 1.0, "[0, 1]")?;
        Ok(())
    }

    /// The break after the `opens`-th consecutive opening (1 for the first since the breaker was
    /// last closed). Draws one random number when jitter is set, none otherwise.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::{breaker::BreakDuration, rng::SeededRng};
    /// let b = BreakDuration::exponential(Duration::from_millis(100), Duration::from_secs(1));
    /// assert_eq!(b.duration(2, &SeededRng::new(0)), Duration::from_millis(200));
    /// ```
    pub fn duration(&self, opens: u32, rng: &dyn RandomSource) -> Duration {
        let exp = i32::try_from(opens.saturating_sub(1)).unwrap_or(i32::MAX);
        let raw = (self.base.as_secs_f64() * self.multiplier.powi(exp)).min(self.cap.as_secs_f64());
        let secs = if self.jitter > 0.0 {
            raw * (1.0 - self.jitter * rng.next_f64())
        } else {
            raw
        };
        Duration::try_from_secs_f64(secs.max(0.0))
            .unwrap_or(self.cap)
            .min(self.cap)
    }
}

/// What a caller sees while the breaker is open.
///
/// - `FailFast` (the default): `poll_ready` is the inner service's; a call made while open fails at
///   once with [`CircuitOpen`](super::CircuitOpen), which says how long until a probe is allowed.
/// - `Readiness`: `poll_ready` stays pending while the breaker is open (and while every half-open
///   probe is taken), and wakes when a probe becomes allowed; the ready service holds that probe's
///   permit. This is for load balancers, which skip endpoints that are not ready. Not available
///   with per-key breakers (readiness cannot know the next request's key).
///
/// ```
/// use steadfast_layers::breaker::Mode;
/// assert_eq!(Mode::default(), Mode::FailFast);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Calls fail at once with `CircuitOpen` while the breaker is open.
    #[default]
    FailFast,
    /// `poll_ready` is pending while the breaker is open.
    Readiness,
}

/// How an open breaker learns that its break is over.
///
/// A refused call must not be let through before the break ends, so a breaker that only has the
/// clock reads it on every refusal (one `Instant::now()`, about as costly as the rest of the
/// refusal put together). With a break timer, the breaker that opens spawns one task on the
/// current tokio runtime that sleeps until the break ends and then tells the breaker so; until
/// then most refusals read no clock. Every 64th refusal still reads it (about every 64th when
/// several threads refuse at once), so a timer that fires late (workers blocked by a long
/// synchronous job) delays the first probe by about 64 refused calls. If the runtime shuts down
/// before the timer fires, dropping the task tells the breaker too, and it goes back to reading
/// the clock: a lost timer never keeps a breaker open.
///
/// - `Auto` (the default): a timer on any tokio runtime. On a multi-thread runtime, whose
///   workers drive timers whatever the caller is doing, refusals check the clock every 64th
///   call. A current-thread runtime fires the timer only while someone drives it (a program that
///   calls `block_on` once per call never does while its calls are refused at once), so there
///   refusals check it every 4th call: the first probe is then at most 3 refused calls late,
///   and exact whenever the runtime runs its timers (a server's runtime, a test on a paused
///   clock once the timer task has run). With no runtime, the clock on every refusal.
/// - `Always`: a timer on any tokio runtime, checking the clock every 64th refusal even on a
///   current-thread one. Choose it only when that runtime keeps running while the breaker is
///   used (a thread-per-core server): a current-thread runtime that nobody drives fires no
///   timers, and its breakers would then stay open until about the 64th refused call.
/// - `Off`: never spawn; always read the clock (the break ends at the first call after it, on
///   any runtime).
///
/// **Implementation knob**: how the layer spends its time, not what it decides; the default
/// suits every user, it is not part of a policy (configuration formats leave it out), and it
/// may change or go in a minor release.
///
/// ```
/// use steadfast_layers::breaker::{BreakTimer, CircuitBreakerLayer};
/// assert_eq!(BreakTimer::default(), BreakTimer::Auto);
/// let layer = CircuitBreakerLayer::builder().break_timer(BreakTimer::Off).build()?;
/// # let _ = layer;
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakTimer {
    /// A timer on any tokio runtime, with a clock check on every 64th refusal (every 4th on a
    /// current-thread runtime).
    #[default]
    Auto,
    /// A timer on any tokio runtime, with a clock check on every 64th refusal.
    Always,
    /// The clock on every refusal.
    Off,
}
