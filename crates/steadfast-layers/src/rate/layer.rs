use std::fmt;
use std::marker::PhantomData;
use std::num::NonZeroU32;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, Cache};
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::NotKeyed;
use governor::{Quota, RateLimiter};
use opentelemetry::metrics::{Counter, Histogram};
use tower_layer::Layer;

use super::store::{Cells, DirectCell, SharedCells};
use super::{RateLimit, TokioClock};
use crate::error::ConfigError;
use crate::error_type::{Boxed, Typed};
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

type Direct = RateLimiter<NotKeyed, DirectCell, TokioClock, NoOpMiddleware<Nanos>>;
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
pub struct RateLimitLayer<X = Global, K = Boxed> {
    extractor: X,
    shared: Arc<Shared>,
    _error: PhantomData<fn() -> K>,
}

impl<X: Clone, K> Clone for RateLimitLayer<X, K> {
    fn clone(&self) -> Self {
        Self {
            extractor: self.extractor.clone(),
            shared: Arc::clone(&self.shared),
            _error: PhantomData,
        }
    }
}

impl<X: fmt::Debug, K> fmt::Debug for RateLimitLayer<X, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("extractor", &self.extractor)
            .field("shared", &self.shared)
            .finish()
    }
}

/// Why a check failed.
#[derive(Clone, Copy, Debug)]
pub(super) enum Refusal {
    /// No cell: one is available after this long.
    RateLimited(Duration),
    TooManyKeys,
}

/// The limiter of the quota in force. A handle swaps in a new one (see [`RateLimitHandle`]);
/// every limiter of a layer drives the same state (the GCRA arrival times in `State`).
#[derive(Debug)]
pub(super) enum Limiter {
    Direct(Direct),
    Keyed(Keyed),
}

/// Where the limit's state lives, whichever limiter drives it.
#[derive(Debug)]
enum State {
    Direct(Arc<AtomicU64>),
    Keyed(Arc<Cells>),
}

/// The quota in force: its limiter and what follows from it.
#[derive(Debug)]
pub(super) struct Active {
    limiter: Limiter,
    /// Cells a global limit claims per clock read (1: one cell per call, every call reads the
    /// clock).
    batch: Option<NonZeroU32>,
    pub(super) interval: Duration,
    pub(super) burst: u32,
}

/// The layer's `ArcSwap` of the quota in force, for an [`arc_swap::Cache`] in each service:
/// a service's call reads it with one relaxed load (and takes the new quota once it changes).
#[derive(Clone, Debug)]
pub(super) struct ActiveOf(pub(super) Arc<Shared>);

impl Deref for ActiveOf {
    type Target = ArcSwap<Active>;

    fn deref(&self) -> &ArcSwap<Active> {
        &self.0.active
    }
}

/// What every clone of one layer shares.
pub(super) struct Shared {
    /// The quota in force, swapped by [`RateLimitHandle::set_rate`].
    pub(super) active: ArcSwap<Active>,
    state: State,
    precision: Duration,
    keyed: bool,
    /// Cells claimed and not yet used.
    stash: AtomicU32,
    /// Whether the last batch claim succeeded.
    batching: AtomicBool,
    /// Claims made (to retry a failed batch claim now and then).
    claims: AtomicU32,
    clock: TokioClock,
    pub(super) wait: bool,
    pub(super) max_wait: Option<Duration>,
    pub(super) telemetry: Telemetry,
    pub(super) attrs: Attrs,
    pub(super) calls: Counter<u64>,
    pub(super) rejected: Counter<u64>,
    pub(super) wait_time: Option<Histogram<f64>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let active = self.active.load();
        f.debug_struct("Shared")
            .field("interval", &active.interval)
            .field("burst", &active.burst)
            .field("wait", &self.wait)
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The digest of a request's key, when keyed.
    #[inline]
    pub(super) fn digest<K: std::hash::Hash>(&self, key: impl FnOnce() -> K) -> Option<u64> {
        match &self.state {
            State::Direct(_) => None,
            State::Keyed(cells) => Some(cells.map.digest(&key())),
        }
    }

    /// [`check_with`](Self::check_with) the quota in force (one `ArcSwap` load: for calls that
    /// waited, off the hot path).
    pub(super) fn check(&self, key: Option<u64>) -> Result<(), Refusal> {
        self.check_with(&self.active.load(), key)
    }

    /// Takes a cell for one call (one clock read) under the quota `active`, or says why not.
    #[inline]
    pub(super) fn check_with(&self, active: &Active, key: Option<u64>) -> Result<(), Refusal> {
        let denied = match (&active.limiter, key) {
            (Limiter::Direct(l), _) => match active.batch {
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
            (Limiter::Keyed(limiter), Some(k)) => limiter.check_key(&k),
            // Unreachable by construction: a keyed layer always has a key.
            (Limiter::Keyed(_), None) => return Err(Refusal::TooManyKeys),
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
        match &self.state {
            State::Direct(_) => None,
            State::Keyed(cells) => Some(cells.map.len()),
        }
    }

    /// Puts `rate` in force. The cells the global limit had claimed ahead (at most one
    /// `precision` worth) are given up: they were paid for under the old quota, so the new one
    /// starts without them (it may admit a few calls less, never more).
    fn activate(&self, rate: CheckedRate) {
        let limiter = limiter(&self.state, self.clock, rate.quota, rate.interval);
        self.active.store(Arc::new(Active {
            limiter,
            batch: rate.batch,
            interval: rate.interval,
            burst: rate.burst.get(),
        }));
        self.stash.store(0, Ordering::Relaxed);
        self.batching.store(true, Ordering::Relaxed);
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

impl<X, K> RateLimitLayer<X, K> {
    /// The same layer (sharing its cells), whose services fail with `E` instead of
    /// [`BoxError`](crate::BoxError): a refusal is made into `E` with `From<Overloaded>` and an
    /// inner error with `Into<E>` ([`Typed<E>`](crate::error_type::Typed); see
    /// [`error_type`](crate::error_type)). With a type that holds the refusal inline (an enum), a
    /// refusal allocates nothing; with [`BoxError`](crate::BoxError), the default, each refusal
    /// boxes its [`Overloaded`](super::Overloaded) (one allocation).
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use steadfast_layers::rate::{OverloadReason, Overloaded, RateLimitLayer};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// #[derive(Debug)]
    /// enum CallError {
    ///     Overloaded(Overloaded),
    /// }
    /// impl From<Overloaded> for CallError {
    ///     fn from(e: Overloaded) -> Self { CallError::Overloaded(e) }
    /// }
    /// impl From<Infallible> for CallError {
    ///     fn from(e: Infallible) -> Self { match e {} }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::ConfigError> {
    /// let layer = RateLimitLayer::builder(1, Duration::from_secs(1)).build()?.with_error::<CallError>();
    /// let svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, Infallible>(x) }));
    /// assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1); // the one cell
    /// match svc.oneshot(2).await {
    ///     Err(CallError::Overloaded(e)) => {
    ///         assert_eq!(e.reason(), OverloadReason::RateLimited);
    ///         assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
    ///     }
    ///     other => panic!("expected a refusal, got {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn with_error<E>(self) -> RateLimitLayer<X, Typed<E>> {
        RateLimitLayer {
            extractor: self.extractor,
            shared: self.shared,
            _error: PhantomData,
        }
    }

    /// The time between two cells (`per / requests`).
    pub fn interval(&self) -> Duration {
        self.shared.active.load().interval
    }

    /// The most calls let through at once after a quiet period.
    pub fn burst(&self) -> u32 {
        self.shared.active.load().burst
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
        self.shared.active.load().batch.map_or(1, NonZeroU32::get)
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

    /// A handle that changes the rate and burst at run time, for every clone of the layer and
    /// every service it made (see the [module docs](super#changing-settings-at-run-time)).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitLayer;
    /// let layer = RateLimitLayer::builder(10, Duration::from_secs(1)).build()?;
    /// layer.handle().set_rate(20, Duration::from_secs(1), None)?;
    /// assert_eq!(layer.burst(), 20);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn handle(&self) -> RateLimitHandle {
        RateLimitHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, X: Clone, K> Layer<S> for RateLimitLayer<X, K> {
    type Service = RateLimit<S, X, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            extractor: self.extractor.clone(),
            shared: Arc::clone(&self.shared),
            active: Cache::new(ActiveOf(Arc::clone(&self.shared))),
            _error: PhantomData,
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
        let rate = check_rate(
            self.requests,
            self.per,
            self.burst,
            self.precision,
            self.keyed,
        )?;
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
        let clock = TokioClock::new();
        let state = if self.keyed {
            State::Keyed(Arc::new(Cells::new(self.max_keys)))
        } else {
            State::Direct(Arc::new(AtomicU64::new(0)))
        };
        let active = Active {
            limiter: limiter(&state, clock, rate.quota, rate.interval),
            batch: rate.batch,
            interval: rate.interval,
            burst: rate.burst.get(),
        };
        let meter = self.telemetry.resolve_meter();
        let keyed = self.keyed;
        let shared = Arc::new(Shared {
            active: ArcSwap::from_pointee(active),
            state,
            precision: self.precision,
            keyed: self.keyed,
            stash: AtomicU32::new(0),
            batching: AtomicBool::new(true),
            claims: AtomicU32::new(0),
            clock,
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
            _error: PhantomData,
        })
    }
}

/// A limiter for `quota` over the layer's `state`. governor counts time from the limiter's
/// construction; the state is kept in `clock`'s time, the limiter's start (read just before
/// it, so within a few nanoseconds of it; exactly on a paused clock) being the shift between
/// the two. So a limiter swapped in by a handle carries on from the state its predecessor left.
fn limiter(state: &State, clock: TokioClock, quota: Quota, interval: Duration) -> Limiter {
    let shift = clock.now().as_u64();
    match state {
        State::Direct(tat) => Limiter::Direct(RateLimiter::new(
            quota,
            DirectCell {
                tat: Arc::clone(tat),
                shift,
            },
            clock,
        )),
        State::Keyed(cells) => Limiter::Keyed(RateLimiter::new(
            quota,
            SharedCells {
                cells: Arc::clone(cells),
                t_nanos: u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX),
                shift,
            },
            clock,
        )),
    }
}

/// A checked rate: what [`check_rate`] makes of `requests` per `per` with `burst`.
struct CheckedRate {
    quota: Quota,
    interval: Duration,
    burst: NonZeroU32,
    batch: Option<NonZeroU32>,
}

/// `requests` per `per` with `burst` (default `requests`): the one check, for the builder and
/// the handle. `precision` and `keyed` set how many cells a global limit claims per clock read.
fn check_rate(
    requests: u32,
    per: Duration,
    burst: Option<u32>,
    precision: Duration,
    keyed: bool,
) -> Result<CheckedRate, ConfigError> {
    let requests_nz = NonZeroU32::new(requests).ok_or(ConfigError::zero("requests"))?;
    if per.is_zero() {
        return Err(ConfigError::zero("per"));
    }
    if per > MAX_PER {
        return Err(ConfigError::out_of_range("per", per, "(0, 366 days]"));
    }
    let interval = per / requests_nz.get();
    if interval.is_zero() {
        return Err(ConfigError::out_of_range(
            "requests",
            requests,
            "at most one request per nanosecond of `per`",
        ));
    }
    let burst = match burst {
        Some(b) => NonZeroU32::new(b).ok_or(ConfigError::zero("burst"))?,
        None => requests_nz,
    };
    // governor computes interval × burst in nanoseconds: keep it far from overflowing.
    if interval.as_nanos().saturating_mul(u128::from(burst.get())) > u128::from(u64::MAX / 4) {
        return Err(ConfigError::out_of_range(
            "burst",
            burst.get(),
            "interval × burst under 146 years",
        ));
    }
    let batch = if keyed {
        1
    } else {
        let cells = precision.as_nanos() / interval.as_nanos();
        u32::try_from(cells)
            .unwrap_or(u32::MAX)
            .min(burst.get())
            .min(MAX_BATCH)
    };
    let batch = NonZeroU32::new(batch).filter(|b| b.get() > 1);
    let quota = Quota::with_period(interval)
        .ok_or(ConfigError::zero("per"))?
        .allow_burst(burst);
    Ok(CheckedRate {
        quota,
        interval,
        burst,
        batch,
    })
}

/// Changes a [`RateLimitLayer`]'s rate and burst at run time; cheap to clone. From
/// [`RateLimitLayer::handle`].
///
/// [`set_rate`](Self::set_rate) checks the new rate by the builder's own rule (the same
/// [`ConfigError`] paths: `requests`, `per`, `burst`) and swaps in a governor limiter for the
/// new quota over the same state (every key's, when keyed): what callers have spent is kept, in
/// time. GCRA's state is the instant the bucket is full again; it carries over, and the new rate
/// and burst count from it. So a caller that had spent its burst does not get a fresh one,
/// raising the rate refills faster from now on, and lowering the burst below what is spent
/// refuses calls until enough time has passed. The few cells a fast global limit claims ahead
/// (at most [`precision`](RateLimitLayerBuilder::precision) worth) are given up. Calls waiting
/// for a cell take it under the new quota. A service reads the quota in force with one relaxed
/// load per call.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::rate::RateLimitLayer;
///
/// let layer = RateLimitLayer::builder(100, Duration::from_secs(1)).build()?;
/// let handle = layer.handle();
/// handle.set_rate(50, Duration::from_secs(1), Some(10))?;
/// assert_eq!((layer.interval(), layer.burst()), (Duration::from_millis(20), 10));
/// assert_eq!(handle.set_rate(0, Duration::from_secs(1), None).unwrap_err().path(), "requests");
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RateLimitHandle {
    shared: Arc<Shared>,
}

impl RateLimitHandle {
    /// Allows `requests` calls per `per` (per key when keyed), in bursts of `burst` (`None`:
    /// `requests`), as [`RateLimitLayer::builder`] and
    /// [`burst`](RateLimitLayerBuilder::burst). See [`RateLimitHandle`] for what is kept.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitLayer;
    /// let h = RateLimitLayer::builder(10, Duration::from_secs(1)).build()?.handle();
    /// h.set_rate(20, Duration::from_secs(1), None)?;
    /// assert_eq!(h.set_rate(1, Duration::ZERO, None).unwrap_err().path(), "per");
    /// assert_eq!(h.set_rate(1, Duration::from_secs(1), Some(0)).unwrap_err().path(), "burst");
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn set_rate(
        &self,
        requests: u32,
        per: Duration,
        burst: Option<u32>,
    ) -> Result<(), ConfigError> {
        let shared = &self.shared;
        let rate = check_rate(requests, per, burst, shared.precision, shared.keyed)?;
        shared.activate(rate);
        Ok(())
    }

    /// The interval between cells in force (`per / requests`).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitLayer;
    /// let h = RateLimitLayer::builder(10, Duration::from_secs(1)).build()?.handle();
    /// assert_eq!(h.interval(), Duration::from_millis(100));
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn interval(&self) -> Duration {
        self.shared.active.load().interval
    }

    /// The burst in force.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitLayer;
    /// let h = RateLimitLayer::builder(10, Duration::from_secs(1)).burst(3).build()?.handle();
    /// assert_eq!(h.burst(), 3);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn burst(&self) -> u32 {
        self.shared.active.load().burst
    }
}
