use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use opentelemetry::metrics::{Counter, Histogram};
use tower_layer::Layer;

use super::store::{Cells, SharedCells};
use super::{RateLimit, TokioClock};
use crate::error::ConfigError;
use crate::keyed::validate_max_keys;
use crate::keyed::{Global, DEFAULT_MAX_KEYS};
use crate::limit::validate_wait;
use crate::telemetry::{Attrs, Telemetry};

/// The longest accepted `per`: a year and a day.
const MAX_PER: Duration = Duration::from_secs(366 * 24 * 3600);

/// The default [`precision`](RateLimitLayerBuilder::precision): 100 µs.
pub const DEFAULT_PRECISION: Duration = Duration::from_micros(100);

/// The most cells a global limit claims per clock read.
const MAX_BATCH: u32 = 1024;

/// How often, in claims, a limit whose last batch claim failed tries a batch again.
const BATCH_RETRY_EVERY: u32 = 16;

type Direct = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;
type Keyed = RateLimiter<u64, SharedCells, TokioClock, NoOpMiddleware<Nanos>>;

/// Limits the rate of calls with governor's GCRA (a leaky bucket that allows bursts), shared by
/// every clone of the layer, globally or per key.
///
/// Built by [`RateLimitLayer::builder`]. See the [module docs](super).
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::rate::RateLimitLayer;
/// // 100 calls per second per user, bursts of 10.
/// let layer = RateLimitLayer::builder(100, Duration::from_secs(1))
///     .burst(10)
///     .key_by(|req: &(String, u32)| req.0.clone())
///     .build()?;
/// assert_eq!(layer.interval(), Duration::from_millis(10));
/// assert_eq!(layer.burst(), 10);
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct RateLimitLayer<X = Global> {
    extractor: X,
    shared: Arc<Shared>,
}

impl<X: Clone> Clone for RateLimitLayer<X> {
    fn clone(&self) -> Self {
        Self {
            extractor: self.extractor.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Why a check failed.
#[derive(Clone, Copy, Debug)]
pub(super) enum Refusal {
    /// No cell: one is available after this long.
    RateLimited(Duration),
    TooManyKeys,
}

#[derive(Debug)]
pub(super) enum Limiter {
    Direct(Direct),
    Keyed { limiter: Keyed, cells: Arc<Cells> },
}

/// What every clone of one layer shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) limiter: Limiter,
    /// Cells a global limit claims per clock read (1: one cell per call, every call reads the
    /// clock).
    batch: Option<NonZeroU32>,
    /// Cells claimed and not yet used.
    stash: AtomicU32,
    /// Whether the last batch claim succeeded.
    batching: AtomicBool,
    /// Claims made (to retry a failed batch claim now and then).
    claims: AtomicU32,
    clock: TokioClock,
    pub(super) interval: Duration,
    pub(super) burst: u32,
    pub(super) wait: bool,
    pub(super) max_wait: Option<Duration>,
    pub(super) telemetry: Telemetry,
    pub(super) attrs: Attrs,
    pub(super) calls: Counter<u64>,
    pub(super) rejected: Counter<u64>,
    pub(super) wait_time: Option<Histogram<f64>>,
}

impl Shared {
    /// The digest of a request's key, when keyed.
    #[inline]
    pub(super) fn digest<K: std::hash::Hash>(&self, key: impl FnOnce() -> K) -> Option<u64> {
        match &self.limiter {
            Limiter::Direct(_) => None,
            Limiter::Keyed { cells, .. } => Some(cells.map.digest(&key())),
        }
    }

    /// Takes a cell for one call (one clock read), or says why not.
    #[inline]
    pub(super) fn check(&self, key: Option<u64>) -> Result<(), Refusal> {
        let denied = match (&self.limiter, key) {
            (Limiter::Direct(l), _) => match self.batch {
                Some(batch) => {
                    // The hot path of a fast limit: a cell claimed earlier, no clock read.
                    let took = self
                        .stash
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| s.checked_sub(1));
                    if took.is_ok() {
                        return Ok(());
                    }
                    self.claim(l, batch)
                }
                None => l.check(),
            },
            (Limiter::Keyed { limiter, .. }, Some(k)) => limiter.check_key(&k),
            // Unreachable by construction: a keyed layer always has a key.
            (Limiter::Keyed { .. }, None) => return Err(Refusal::TooManyKeys),
        };
        let Err(not_until) = denied else {
            return Ok(());
        };
        let wait = not_until.wait_time_from(self.clock.now());
        // A legitimate wait is at most one interval (at most `MAX_PER`); the store refuses a
        // key it has no room for with a state centuries away.
        if wait > MAX_PER {
            return Err(Refusal::TooManyKeys);
        }
        Err(Refusal::RateLimited(wait))
    }

    /// Claims `batch` cells at once (one clock read; all but this call's go to the stash), or,
    /// when fewer are left, one cell, as a limit without batches does.
    #[inline(never)]
    fn claim(&self, l: &Direct, batch: NonZeroU32) -> Result<(), governor::NotUntil<Nanos>> {
        let n = self.claims.fetch_add(1, Ordering::Relaxed);
        if self.batching.load(Ordering::Relaxed) || n.is_multiple_of(BATCH_RETRY_EVERY) {
            if let Ok(Ok(())) = l.check_n(batch) {
                self.batching.store(true, Ordering::Relaxed);
                self.stash.fetch_add(batch.get() - 1, Ordering::Relaxed);
                return Ok(());
            }
            self.batching.store(false, Ordering::Relaxed);
        }
        l.check()
    }

    fn keys(&self) -> Option<usize> {
        match &self.limiter {
            Limiter::Direct(_) => None,
            Limiter::Keyed { cells, .. } => Some(cells.map.len()),
        }
    }
}

impl RateLimitLayer {
    /// A builder for `requests` calls per `per` (at most one per nanosecond; `per` at most a
    /// year and a day), with a burst of `requests`, failing fast, global.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitLayer;
    /// let l = RateLimitLayer::builder(5, Duration::from_secs(1)).build()?;
    /// assert_eq!((l.interval(), l.burst()), (Duration::from_millis(200), 5));
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder(requests: u32, per: Duration) -> RateLimitLayerBuilder {
        RateLimitLayerBuilder {
            requests,
            per,
            burst: None,
            precision: DEFAULT_PRECISION,
            wait: false,
            max_wait: None,
            max_keys: DEFAULT_MAX_KEYS,
            extractor: Global,
            keyed: false,
            telemetry: Telemetry::default(),
        }
    }
}

impl<X> RateLimitLayer<X> {
    /// The time between two cells (`per / requests`).
    pub fn interval(&self) -> Duration {
        self.shared.interval
    }

    /// The most calls let through at once after a quiet period.
    pub fn burst(&self) -> u32 {
        self.shared.burst
    }

    /// How many cells a clock read claims: 1 unless the limit is global and fast (see
    /// [`precision`](RateLimitLayerBuilder::precision)).
    ///
    /// Reports an implementation knob (see [`precision`](RateLimitLayerBuilder::precision)):
    /// for benchmarks and tests, not part of a policy.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitLayer;
    /// assert_eq!(RateLimitLayer::builder(100, Duration::from_secs(1)).build()?.cells_per_clock_read(), 1);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn cells_per_clock_read(&self) -> u32 {
        self.shared.batch.map_or(1, NonZeroU32::get)
    }

    /// The number of keys tracked (`None` when global).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitLayer;
    /// assert_eq!(RateLimitLayer::builder(5, Duration::from_secs(1)).build()?.keys(), None);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn keys(&self) -> Option<usize> {
        self.shared.keys()
    }
}

impl<S, X: Clone> Layer<S> for RateLimitLayer<X> {
    type Service = RateLimit<S, X>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            extractor: self.extractor.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Builds a [`RateLimitLayer`], validating its configuration.
///
/// ```
/// # use std::time::Duration;
/// # use steadfast_layers::rate::RateLimitLayer;
/// assert_eq!(RateLimitLayer::builder(0, Duration::from_secs(1)).build().unwrap_err().path(), "requests");
/// assert_eq!(RateLimitLayer::builder(1, Duration::ZERO).build().unwrap_err().path(), "per");
/// assert_eq!(RateLimitLayer::builder(1, Duration::from_secs(1)).burst(0).build().unwrap_err().path(), "burst");
/// ```
#[derive(Debug)]
pub struct RateLimitLayerBuilder<X = Global> {
    requests: u32,
    per: Duration,
    burst: Option<u32>,
    precision: Duration,
    wait: bool,
    max_wait: Option<Duration>,
    max_keys: usize,
    extractor: X,
    keyed: bool,
    telemetry: Telemetry,
}

impl<X> RateLimitLayerBuilder<X> {
    /// The most calls let through at once after a quiet period (default: `requests`).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitLayer;
    /// assert_eq!(RateLimitLayer::builder(10, Duration::from_secs(1)).burst(1).build()?.burst(), 1);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// How far a global limit may run ahead of the clock (default [`DEFAULT_PRECISION`],
    /// 100 µs; at most 1 s; `Duration::ZERO` for none).
    ///
    /// **Implementation knob**: how the layer spends its time, not what it decides; the default
    /// suits every user, it is not part of a policy (configuration formats leave it out), and it
    /// may change or go in a minor release.
    ///
    /// A global limit fast enough that more than one cell falls due per `precision` claims the
    /// cells of one `precision` at a time (at most the burst, at most 1,024) with one clock
    /// read, and lets the next calls through on those cells without reading the clock: a
    /// clock read costs more than the rest of the limit. The cells count as used when claimed,
    /// so the limit never lets more through than its rate over time; what it gives up is
    /// exactness after a quiet period: cells claimed before it and still unused add to the
    /// refilled burst, at most `precision`'s worth of cells once. Slower limits (at the
    /// default, 10,000 calls per second or fewer), keyed limits and `Duration::ZERO` read the
    /// clock on every call and are exact.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitLayer;
    /// let exact = RateLimitLayer::builder(1_000_000, Duration::from_secs(1))
    ///     .precision(Duration::ZERO)
    ///     .build()?;
    /// assert_eq!(exact.cells_per_clock_read(), 1);
    /// let fast = RateLimitLayer::builder(1_000_000, Duration::from_secs(1)).build()?;
    /// assert_eq!(fast.cells_per_clock_read(), 100); // 100 µs of cells at 1 per µs
    /// assert!(RateLimitLayer::builder(1, Duration::from_secs(1)).precision(Duration::from_secs(2)).build().is_err());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn precision(mut self, precision: Duration) -> Self {
        self.precision = precision;
        self
    }

    /// Waits for a cell instead of failing at once.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitLayer;
    /// let l = RateLimitLayer::builder(10, Duration::from_secs(1)).wait().build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn wait(mut self) -> Self {
        self.wait = true;
        self
    }

    /// Waits for a cell, but only when it comes within `max_wait` (implies
    /// [`wait`](Self::wait)); otherwise fails at once with
    /// [`Overloaded`](super::Overloaded) (`rate_limited`, with the time to wait).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitLayer;
    /// assert!(RateLimitLayer::builder(10, Duration::from_secs(1)).max_wait(Duration::ZERO).build().is_err());
    /// ```
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.wait = true;
        self.max_wait = Some(max_wait);
        self
    }

    /// The most keys tracked at once when keyed (default 10,000). See [`keyed`](crate::keyed).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitLayer;
    /// assert!(RateLimitLayer::builder(10, Duration::from_secs(1)).max_keys(0).build().is_err());
    /// ```
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Where and how to record telemetry.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::{rate::RateLimitLayer, telemetry::Telemetry};
    /// let l = RateLimitLayer::builder(10, Duration::from_secs(1)).telemetry(Telemetry::new().name("api")).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Limits each key separately: `extractor` (any `Fn(&Req) -> K` with `K: Hash`, or a
    /// [`KeyExtractor`](crate::keyed::KeyExtractor)) computes the key of each request.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitLayer;
    /// let l = RateLimitLayer::builder(10, Duration::from_secs(1)).key_by(|ip: &std::net::IpAddr| *ip).build()?;
    /// assert_eq!(l.keys(), Some(0));
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn key_by<X2>(self, extractor: X2) -> RateLimitLayerBuilder<X2> {
        RateLimitLayerBuilder {
            requests: self.requests,
            per: self.per,
            burst: self.burst,
            precision: self.precision,
            wait: self.wait,
            max_wait: self.max_wait,
            max_keys: self.max_keys,
            extractor,
            keyed: true,
            telemetry: self.telemetry,
        }
    }

    /// Validates and builds the layer.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitLayer;
    /// // More than one call per nanosecond cannot be represented.
    /// assert!(RateLimitLayer::builder(10, Duration::from_nanos(5)).build().is_err());
    /// assert!(RateLimitLayer::builder(1, Duration::from_secs(400 * 86_400)).build().is_err());
    /// ```
    pub fn build(self) -> Result<RateLimitLayer<X>, ConfigError> {
        let requests = NonZeroU32::new(self.requests).ok_or(ConfigError::zero("requests"))?;
        if self.per.is_zero() {
            return Err(ConfigError::zero("per"));
        }
        if self.per > MAX_PER {
            return Err(ConfigError::out_of_range("per", self.per, "(0, 366 days]"));
        }
        let interval = self.per / requests.get();
        if interval.is_zero() {
            return Err(ConfigError::out_of_range(
                "requests",
                self.requests,
                "at most one request per nanosecond of `per`",
            ));
        }
        let burst = match self.burst {
            Some(b) => NonZeroU32::new(b).ok_or(ConfigError::zero("burst"))?,
            None => requests,
        };
        // governor computes interval × burst in nanoseconds: keep it far from overflowing.
        if interval.as_nanos().saturating_mul(u128::from(burst.get())) > u128::from(u64::MAX / 4) {
            return Err(ConfigError::out_of_range(
                "burst",
                burst.get(),
                "interval × burst under 146 years",
            ));
        }
        if let Some(w) = self.max_wait {
            validate_wait("max_wait", w)?;
        }
        validate_max_keys(self.max_keys)?;
        if self.precision > Duration::from_secs(1) {
            return Err(ConfigError::out_of_range(
                "precision",
                self.precision,
                "[0, 1 s]",
            ));
        }
        let batch = if self.keyed {
            1
        } else {
            let cells = self.precision.as_nanos() / interval.as_nanos();
            u32::try_from(cells)
                .unwrap_or(u32::MAX)
                .min(burst.get())
                .min(MAX_BATCH)
        };
        let batch = NonZeroU32::new(batch).filter(|b| b.get() > 1);
        let quota = Quota::with_period(interval)
            .ok_or(ConfigError::zero("per"))?
            .allow_burst(burst);
        let clock = TokioClock::new();
        let limiter = if self.keyed {
            let interval_nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
            let cells = Arc::new(Cells::new(self.max_keys, interval_nanos));
            Limiter::Keyed {
                limiter: RateLimiter::new(quota, SharedCells(Arc::clone(&cells)), clock),
                cells,
            }
        } else {
            Limiter::Direct(RateLimiter::direct_with_clock(quota, clock))
        };
        let meter = self.telemetry.resolve_meter();
        let keyed = self.keyed;
        let shared = Arc::new(Shared {
            limiter,
            batch,
            stash: AtomicU32::new(0),
            batching: AtomicBool::new(true),
            claims: AtomicU32::new(0),
            clock,
            interval,
            burst: burst.get(),
            wait: self.wait,
            max_wait: self.max_wait,
            attrs: self.telemetry.base_attributes(),
            calls: meter
                .u64_counter("steadfast.rate.calls")
                .with_unit("{call}")
                .with_description("Calls made through the rate limit, refused ones included")
                .build(),
            rejected: meter
                .u64_counter("steadfast.rate.rejected")
                .with_unit("{call}")
                .with_description("Calls refused by the rate limit, by reason")
                .build(),
            wait_time: self.telemetry.records_duration().then(|| {
                meter
                    .f64_histogram("steadfast.rate.wait")
                    .with_unit("s")
                    .with_boundaries(crate::telemetry::DURATION_BOUNDARIES.to_vec())
                    .with_description("Time calls waited for the rate limit (calls that waited)")
                    .build()
            }),
            telemetry: self.telemetry,
        });
        if keyed {
            let weak: Weak<Shared> = Arc::downgrade(&shared);
            let _keys = meter
                .u64_observable_gauge("steadfast.rate.keys")
                .with_unit("{key}")
                .with_description("Keys tracked by a keyed rate limit")
                .with_callback(move |gauge| {
                    if let Some(s) = weak.upgrade() {
                        if let Some(n) = s.keys() {
                            gauge.observe(n as u64, s.attrs.base());
                        }
                    }
                })
                .build();
        }
        Ok(RateLimitLayer {
            extractor: self.extractor,
            shared,
        })
    }
}
