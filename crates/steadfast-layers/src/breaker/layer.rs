use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use opentelemetry::metrics::AsyncInstrument;
use tokio::time::Instant;
use tower_layer::Layer;

use super::core::{control_state, Callback, Common, Config, NORMAL};
use super::keyed::Registry;
use super::policy::{MAX_BREAK, MAX_PROBES};
use super::{
    BreakDuration, BreakTimer, BreakerHandle, BreakerState, CircuitBreaker, Mode, SlidingWindow,
    Transition,
};
use crate::classify::RetryOnError;
use crate::error::{check_f64, ConfigError};
use crate::error_type::{Boxed, Typed};
use crate::keyed::{validate_max_keys, Global, DEFAULT_MAX_KEYS};
use crate::live::{AtomicF64, AtomicOptDuration};
use crate::rng::{default_rng, RandomSource, SeededRng, SharedRng};
use crate::telemetry::Telemetry;
#[cfg(doc)]
use crate::BoxError;

/// Stops calling a failing dependency for a while, then lets a few probes test it.
///
/// Built by [`CircuitBreakerLayer::builder`]. Every service made by one layer (and every clone of
/// the layer) shares the same breakers, observed and controlled through
/// [`CircuitBreakerLayer::handle`]. See the [module docs](super) for the rules.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::breaker::{BreakDuration, CircuitBreakerLayer};
///
/// let layer = CircuitBreakerLayer::builder()
///     .failure_rate(0.25)
///     .minimum_calls(20)
///     .time_window(Duration::from_secs(30))
///     .break_duration(
///         BreakDuration::exponential(Duration::from_secs(5), Duration::from_secs(300)).jitter(0.5),
///     )
///     .seed(42)
///     .build()?;
/// assert_eq!(layer.handle().breakers(), 1);
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
pub struct CircuitBreakerLayer<C = RetryOnError, X = Global, K = Boxed> {
    classifier: C,
    extract: X,
    registry: Arc<Registry>,
    _error: PhantomData<fn() -> K>,
}

impl<C: Clone, X: Clone, K> Clone for CircuitBreakerLayer<C, X, K> {
    fn clone(&self) -> Self {
        Self {
            classifier: self.classifier.clone(),
            extract: self.extract.clone(),
            registry: Arc::clone(&self.registry),
            _error: PhantomData,
        }
    }
}

impl<C, X, K> fmt::Debug for CircuitBreakerLayer<C, X, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("registry", &self.registry)
            .finish_non_exhaustive()
    }
}

impl CircuitBreakerLayer {
    /// A builder with resilience4j's defaults, save one: a count window of the last 100 calls,
    /// failure rate 50 % after at least 100 calls, no consecutive-failure trip, 10 half-open
    /// probes admitted at once, a constant 60 s break, fail-fast mode, one breaker, every error a
    /// failure ([`RetryOnError`]); slow-call detection is off until
    /// [`slow_call_duration`](CircuitBreakerLayerBuilder::slow_call_duration) sets a threshold
    /// (resilience4j's 100 % at 60 s almost never fires and would cost two clock reads per call).
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let layer = CircuitBreakerLayer::builder().build()?;
    /// # let _ = layer;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder() -> CircuitBreakerLayerBuilder {
        CircuitBreakerLayerBuilder {
            window: SlidingWindow::default(),
            failure_rate: 0.5,
            slow_call: None,
            slow_call_rate: 1.0,
            minimum_calls: 100,
            consecutive_failures: None,
            probes: 10,
            progressive: false,
            break_duration: BreakDuration::default(),
            break_timer: BreakTimer::Auto,
            mode: Mode::FailFast,
            max_keys: DEFAULT_MAX_KEYS,
            keyed: false,
            rng: None,
            telemetry: Telemetry::default(),
            on_transition: None,
            classifier: RetryOnError,
            extract: Global,
        }
    }
}

impl<C, X, K> CircuitBreakerLayer<C, X, K> {
    /// A handle on this layer's breakers: read their state and counts, force them open, disable
    /// them, or put them in metrics-only mode.
    ///
    /// ```
    /// # use steadfast_layers::breaker::{BreakerState, CircuitBreakerLayer};
    /// let layer = CircuitBreakerLayer::builder().build()?;
    /// assert_eq!(layer.handle().state(), BreakerState::Closed);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle {
            registry: Arc::clone(&self.registry),
        }
    }

    /// The same layer (sharing its breakers), whose services fail with `E` instead of
    /// [`BoxError`]: a refusal is then made into `E` with `From<CircuitOpen>` (or
    /// `From<Overloaded>`, for a keyed layer whose key table is full) and an inner error with
    /// `Into<E>` ([`Typed<E>`](crate::error_type::Typed); see [`error_type`](crate::error_type)). With a type that holds the refusal inline (an enum, like
    /// `failsafe::Error<E>`), a refusal allocates nothing; with [`BoxError`], the default and
    /// tower's convention, each refusal boxes its [`CircuitOpen`](super::CircuitOpen) (one
    /// allocation of 32 bytes). Stacked under a layer that converts errors into [`BoxError`]
    /// (every other steadfast layer, and tower's), the box is made there instead.
    ///
    /// ```
    /// use steadfast_layers::breaker::{CircuitBreakerLayer, CircuitOpen};
    /// use steadfast_layers::overload::Overloaded;
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// #[derive(Debug)]
    /// enum CallError {
    ///     Refused(CircuitOpen),
    ///     Overloaded(Overloaded),
    ///     Io(std::io::Error),
    /// }
    /// impl From<CircuitOpen> for CallError {
    ///     fn from(e: CircuitOpen) -> Self { CallError::Refused(e) }
    /// }
    /// impl From<Overloaded> for CallError {
    ///     fn from(e: Overloaded) -> Self { CallError::Overloaded(e) }
    /// }
    /// impl From<std::io::Error> for CallError {
    ///     fn from(e: std::io::Error) -> Self { CallError::Io(e) }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::ConfigError> {
    /// let layer = CircuitBreakerLayer::builder().build()?.with_error::<CallError>();
    /// let svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
    /// layer.handle().force_open();
    /// match svc.oneshot(1).await {
    ///     Err(CallError::Refused(open)) => assert!(open.remaining().is_none()),
    ///     other => panic!("expected a refusal, got {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn with_error<E>(self) -> CircuitBreakerLayer<C, X, Typed<E>> {
        CircuitBreakerLayer {
            classifier: self.classifier,
            extract: self.extract,
            registry: self.registry,
            _error: PhantomData,
        }
    }
}

#[cfg(test)]
impl<C, X, K> CircuitBreakerLayer<C, X, K> {
    /// The breaker of a layer without keys (tests).
    pub(super) fn single_core(&self) -> Arc<super::core::Core> {
        match &self.registry.breakers {
            super::keyed::Breakers::Single(core) => Arc::clone(core),
            super::keyed::Breakers::Keyed(_) => panic!("a keyed layer has no single breaker"),
        }
    }
}

impl<S, C: Clone, X: Clone, K> Layer<S> for CircuitBreakerLayer<C, X, K> {
    type Service = CircuitBreaker<S, C, X, K>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(
            inner,
            self.classifier.clone(),
            self.extract.clone(),
            Arc::clone(&self.registry),
        )
    }
}

/// Builds a [`CircuitBreakerLayer`], validating its configuration.
///
/// ```
/// # use std::time::Duration;
/// # use steadfast_layers::breaker::{BreakDuration, CircuitBreakerLayer};
/// let err = CircuitBreakerLayer::builder().failure_rate(f64::NAN).build().unwrap_err();
/// assert_eq!(err.path(), "failure_rate");
/// let err = CircuitBreakerLayer::builder()
///     .break_duration(BreakDuration::exponential(Duration::from_secs(60), Duration::from_secs(1)))
///     .build()
///     .unwrap_err();
/// assert_eq!(err.path(), "break_duration.cap");
/// ```
pub struct CircuitBreakerLayerBuilder<C = RetryOnError, X = Global> {
    window: SlidingWindow,
    failure_rate: f64,
    slow_call: Option<Duration>,
    slow_call_rate: f64,
    minimum_calls: u32,
    consecutive_failures: Option<u32>,
    probes: u32,
    progressive: bool,
    break_duration: BreakDuration,
    break_timer: BreakTimer,
    mode: Mode,
    max_keys: usize,
    keyed: bool,
    rng: Option<SharedRng>,
    telemetry: Telemetry,
    on_transition: Option<Callback>,
    classifier: C,
    extract: X,
}

impl<C, X> fmt::Debug for CircuitBreakerLayerBuilder<C, X> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayerBuilder")
            .field("window", &self.window)
            .field("failure_rate", &self.failure_rate)
            .field("slow_call", &self.slow_call)
            .field("slow_call_rate", &self.slow_call_rate)
            .field("minimum_calls", &self.minimum_calls)
            .field("consecutive_failures", &self.consecutive_failures)
            .field("probes", &self.probes)
            .field("progressive", &self.progressive)
            .field("break_duration", &self.break_duration)
            .field("break_timer", &self.break_timer)
            .field("mode", &self.mode)
            .field("keyed", &self.keyed)
            .field("max_keys", &self.max_keys)
            .finish_non_exhaustive()
    }
}

impl<C, X> CircuitBreakerLayerBuilder<C, X> {
    /// The failure rate at or above which the breaker opens, in `[0, 1]` (default 0.5). It is
    /// judged once the window holds at least [`minimum_calls`](Self::minimum_calls) calls, and
    /// needs at least one failure (so 0 means "open on any failure").
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// assert!(CircuitBreakerLayer::builder().failure_rate(1.5).build().is_err());
    /// assert!(CircuitBreakerLayer::builder().failure_rate(0.1).build().is_ok());
    /// ```
    pub fn failure_rate(mut self, threshold: f64) -> Self {
        self.failure_rate = threshold;
        self
    }

    /// Turns on slow-call detection: a call lasting at least `threshold` is slow (whether it
    /// failed or not). Costs two clock reads per call. Off by default.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let l = CircuitBreakerLayer::builder().slow_call_duration(Duration::from_secs(2)).slow_call_rate(0.8).build()?;
    /// # let _ = l;
    /// assert!(CircuitBreakerLayer::builder().slow_call_duration(Duration::ZERO).build().is_err());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn slow_call_duration(mut self, threshold: Duration) -> Self {
        self.slow_call = Some(threshold);
        self
    }

    /// The slow-call rate at or above which the breaker opens, in `[0, 1]` (default 1.0: every
    /// call in the window slow). Needs [`slow_call_duration`](Self::slow_call_duration).
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// assert_eq!(CircuitBreakerLayer::builder().slow_call_rate(-0.1).build().unwrap_err().path(), "slow_call_rate");
    /// ```
    pub fn slow_call_rate(mut self, threshold: f64) -> Self {
        self.slow_call_rate = threshold;
        self
    }

    /// How many calls the window must hold before its rates count (default 100, at least 1).
    /// For a count window it is capped at the window's size, as in resilience4j.
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// assert_eq!(CircuitBreakerLayer::builder().minimum_calls(0).build().unwrap_err().path(), "minimum_calls");
    /// ```
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.minimum_calls = n;
        self
    }

    /// The sliding window (default: the last 100 calls).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::{CircuitBreakerLayer, SlidingWindow};
    /// let l = CircuitBreakerLayer::builder()
    ///     .window(SlidingWindow::time_with_buckets(Duration::from_secs(60), 60))
    ///     .build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn window(mut self, window: SlidingWindow) -> Self {
        self.window = window;
        self
    }

    /// A count window of the last `n` calls, in `[1, 1_000_000]`.
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// assert_eq!(CircuitBreakerLayer::builder().count_window(0).build().unwrap_err().path(), "count_window");
    /// ```
    pub fn count_window(self, n: u32) -> Self {
        self.window(SlidingWindow::count(n))
    }

    /// A time window of the calls that finished in the last `span`, in ten buckets.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// assert_eq!(CircuitBreakerLayer::builder().time_window(Duration::ZERO).build().unwrap_err().path(), "time_window");
    /// ```
    pub fn time_window(self, span: Duration) -> Self {
        self.window(SlidingWindow::time(span))
    }

    /// Also opens after `n` consecutive failures, whatever the window says (at least 1).
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// assert!(CircuitBreakerLayer::builder().consecutive_failures(5).build().is_ok());
    /// assert!(CircuitBreakerLayer::builder().consecutive_failures(0).build().is_err());
    /// ```
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive_failures = Some(n);
        self
    }

    /// How many probes the half-open breaker admits, in `[1, 1000]` (default 10). When they have
    /// all finished with the failure and slow-call rates (out of this number) below their
    /// thresholds, the breaker closes; as soon as a rate reaches its threshold, it re-opens.
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// assert_eq!(CircuitBreakerLayer::builder().half_open_probes(0).build().unwrap_err().path(), "half_open_probes");
    /// ```
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.probes = n;
        self
    }

    /// Ramps the half-open probes up instead of admitting them all at once: one probe first,
    /// then up to twice as many as have finished (1, 2, 4, 8, ...), up to
    /// [`half_open_probes`](Self::half_open_probes). Off by default.
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let l = CircuitBreakerLayer::builder().half_open_probes(20).progressive_half_open(true).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn progressive_half_open(mut self, yes: bool) -> Self {
        self.progressive = yes;
        self
    }

    /// How long the breaker stays open (default: constant 60 s).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::{BreakDuration, CircuitBreakerLayer};
    /// let l = CircuitBreakerLayer::builder()
    ///     .break_duration(BreakDuration::exponential(Duration::from_secs(5), Duration::from_secs(300)).jitter(0.5))
    ///     .build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn break_duration(mut self, d: BreakDuration) -> Self {
        self.break_duration = d;
        self
    }

    /// How an open breaker learns that its break is over: a timer task (the default on any
    /// tokio runtime), so that most refusals read no clock, or the clock (see [`BreakTimer`]).
    ///
    /// **Implementation knob**: how the layer spends its time, not what it decides; the default
    /// suits every user, it is not part of a policy (configuration formats leave it out), and it
    /// may change or go in a minor release.
    ///
    /// ```
    /// # use steadfast_layers::breaker::{BreakTimer, CircuitBreakerLayer};
    /// let l = CircuitBreakerLayer::builder().break_timer(BreakTimer::Always).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn break_timer(mut self, timer: BreakTimer) -> Self {
        self.break_timer = timer;
        self
    }

    /// Fail fast (the default) or hold `poll_ready` while open (see [`Mode`]).
    ///
    /// ```
    /// # use steadfast_layers::breaker::{CircuitBreakerLayer, Mode};
    /// let l = CircuitBreakerLayer::builder().mode(Mode::Readiness).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Break-duration jitter from a [`SeededRng`] seeded with `seed`: the same seed replays the
    /// same breaks.
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let l = CircuitBreakerLayer::builder().seed(7).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = Some(Arc::new(SeededRng::new(seed)));
        self
    }

    /// Break-duration jitter from `rng`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_layers::{breaker::CircuitBreakerLayer, rng::SeededRng};
    /// let l = CircuitBreakerLayer::builder().rng(Arc::new(SeededRng::new(1))).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn rng<G: RandomSource>(mut self, rng: Arc<G>) -> Self {
        self.rng = Some(rng);
        self
    }

    /// Where and how to record telemetry.
    ///
    /// ```
    /// # use steadfast_layers::{breaker::CircuitBreakerLayer, telemetry::Telemetry};
    /// let l = CircuitBreakerLayer::builder().telemetry(Telemetry::new().name("payments")).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Calls `f` on every transition (after it is traced and counted), on the thread that made
    /// it. Keep it short: it runs inside a call's completion.
    ///
    /// ```
    /// # use steadfast_layers::breaker::{CircuitBreakerLayer, Transition};
    /// let l = CircuitBreakerLayer::builder()
    ///     .on_transition(|t: &Transition| eprintln!("breaker {} -> {}", t.from, t.to))
    ///     .build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn on_transition(mut self, f: impl Fn(&Transition) + Send + Sync + 'static) -> Self {
        self.on_transition = Some(Arc::new(f));
        self
    }

    /// Decides what counts as a failure: any [`Outcome`](crate::classify::Outcome) but
    /// `Success`, responses included (see [`crate::classify`]).
    ///
    /// ```
    /// # use steadfast_layers::{classify::Outcome, breaker::CircuitBreakerLayer};
    /// let l = CircuitBreakerLayer::builder()
    ///     .classifier(|r: &Result<u16, steadfast_layers::BoxError>| match r {
    ///         Ok(s) if *s >= 500 => Outcome::retryable("server_error"),
    ///         Ok(_) => Outcome::Success,
    ///         Err(_) => Outcome::retryable("error"),
    ///     })
    ///     .build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn classifier<C2>(self, classifier: C2) -> CircuitBreakerLayerBuilder<C2, X> {
        CircuitBreakerLayerBuilder {
            window: self.window,
            failure_rate: self.failure_rate,
            slow_call: self.slow_call,
            slow_call_rate: self.slow_call_rate,
            minimum_calls: self.minimum_calls,
            consecutive_failures: self.consecutive_failures,
            probes: self.probes,
            progressive: self.progressive,
            break_duration: self.break_duration,
            break_timer: self.break_timer,
            mode: self.mode,
            max_keys: self.max_keys,
            keyed: self.keyed,
            rng: self.rng,
            telemetry: self.telemetry,
            on_transition: self.on_transition,
            classifier,
            extract: self.extract,
        }
    }

    /// One breaker per key (host, route, tenant...): `extractor` (any `Fn(&Req) -> K` with
    /// `K: Hash + Debug`, or a [`KeyExtractor`](crate::keyed::KeyExtractor)) computes the key of
    /// each request. The key's `Debug` form names its breaker in traces and transitions. At most
    /// [`max_keys`](Self::max_keys) breakers are kept; see [`keyed`](crate::keyed) for the one
    /// eviction rule (a closed breaker with no call in flight is idle; a new key that finds the
    /// table full of busy breakers is refused with
    /// [`Overloaded`](crate::overload::Overloaded), reason `too_many_keys`).
    ///
    /// Each key costs about 300 bytes with the default count window of 100 calls (its breaker,
    /// its label, its share of the table; more for a longer window), so a layer holds at most
    /// about twice `max_keys` times that (see `docs/memory.md`).
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let layer = CircuitBreakerLayer::builder()
    ///     .key_by(|req: &(String, Vec<u8>)| req.0.clone())
    ///     .max_keys(256)
    ///     .build()?;
    /// assert_eq!(layer.handle().breakers(), 0);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn key_by<X2>(self, extractor: X2) -> CircuitBreakerLayerBuilder<C, X2> {
        CircuitBreakerLayerBuilder {
            window: self.window,
            failure_rate: self.failure_rate,
            slow_call: self.slow_call,
            slow_call_rate: self.slow_call_rate,
            minimum_calls: self.minimum_calls,
            consecutive_failures: self.consecutive_failures,
            probes: self.probes,
            progressive: self.progressive,
            break_duration: self.break_duration,
            break_timer: self.break_timer,
            mode: self.mode,
            max_keys: self.max_keys,
            keyed: true,
            rng: self.rng,
            telemetry: self.telemetry,
            on_transition: self.on_transition,
            classifier: self.classifier,
            extract: extractor,
        }
    }

    /// The most breakers kept at once when keyed (default 10,000, at most 10,000,000). See
    /// [`keyed`](crate::keyed) for what happens when the table is full.
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// let err = CircuitBreakerLayer::builder().max_keys(0).build().unwrap_err();
    /// assert_eq!(err.path(), "max_keys");
    /// ```
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    fn config(&self) -> Result<Config, ConfigError> {
        let failure_rate = check_failure_rate(self.failure_rate)?;
        let slow_call_rate = check_slow_call_rate(self.slow_call_rate)?;
        let slow_call = check_slow_call_duration(self.slow_call)?;
        let minimum_calls = check_minimum_calls(self.minimum_calls, &self.window)?;
        self.window.validate()?;
        let consecutive_failures = check_consecutive_failures(self.consecutive_failures)?;
        let probes = check_half_open_probes(self.probes)?;
        self.break_duration.validate()?;
        validate_max_keys(self.max_keys)?;
        if self.keyed && self.mode == Mode::Readiness {
            return Err(ConfigError::conflict(
                "mode",
                "readiness mode needs a single breaker (poll_ready cannot know the next request's key)",
            ));
        }
        Ok(Config {
            window: self.window,
            failure_rate: AtomicF64::new(failure_rate),
            slow_call: AtomicOptDuration::new(slow_call),
            slow_call_rate: AtomicF64::new(slow_call_rate),
            minimum_calls: AtomicU64::new(minimum_calls),
            consecutive_failures: AtomicU32::new(consecutive_failures),
            probes: AtomicU32::new(probes),
            progressive: AtomicBool::new(self.progressive),
            break_duration: ArcSwap::from_pointee(self.break_duration),
            break_timer: self.break_timer,
            mode: self.mode,
        })
    }

    /// Validates and builds the layer.
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerLayer;
    /// assert_eq!(CircuitBreakerLayer::builder().half_open_probes(1001).build().unwrap_err().path(), "half_open_probes");
    /// ```
    pub fn build(self) -> Result<CircuitBreakerLayer<C, X>, ConfigError> {
        let cfg = self.config()?;
        let meter = self.telemetry.resolve_meter();
        let waiters = (cfg.mode == Mode::Readiness).then(|| Mutex::new(Vec::new()));
        let attrs = self.telemetry.base_attributes();
        let rejected_attrs = [
            BreakerState::Open,
            BreakerState::HalfOpen,
            BreakerState::ForcedOpen,
        ]
        .map(|s| attrs.joined("steadfast.breaker.state", s.label()));
        let common = Arc::new(Common {
            cfg,
            origin: Instant::now(),
            control: AtomicU8::new(NORMAL),
            rng: self.rng.unwrap_or_else(default_rng),
            attrs,
            rejected_attrs,
            calls: meter
                .u64_counter("steadfast.breaker.calls")
                .with_unit("{call}")
                .with_description(
                    "Calls made through the circuit breaker layer, refused ones included",
                )
                .build(),
            transitions: meter
                .u64_counter("steadfast.breaker.transitions")
                .with_unit("{transition}")
                .with_description("Circuit breaker state transitions, by from and to state")
                .build(),
            rejected: meter
                .u64_counter("steadfast.breaker.rejected")
                .with_unit("{call}")
                .with_description("Calls refused by a circuit breaker, by the breaker's state")
                .build(),
            on_transition: self.on_transition,
            waiters,
            telemetry: self.telemetry,
        });
        let registry = Arc::new(if self.keyed {
            Registry::keyed(Arc::clone(&common), self.max_keys)
        } else {
            Registry::single(Arc::clone(&common))
        });
        let weak: Weak<Registry> = Arc::downgrade(&registry);
        let _gauge = meter
            .u64_observable_gauge("steadfast.breaker.state")
            .with_unit("{breaker}")
            .with_description("Circuit breakers in each state")
            .with_callback(move |obs: &dyn AsyncInstrument<u64>| {
                let Some(registry) = weak.upgrade() else {
                    return;
                };
                let common = &registry.common;
                let census = registry.census();
                let mode = control_state(common.control());
                let total = census.iter().sum::<u64>();
                for state in BreakerState::ALL {
                    let n = match (mode, state) {
                        (Some(m), s) => u64::from(m == s) * total,
                        (None, BreakerState::Closed) => census[0],
                        (None, BreakerState::Open) => census[1],
                        (None, BreakerState::HalfOpen) => census[2],
                        (None, _) => 0,
                    };
                    common
                        .attrs
                        .with("steadfast.breaker.state", state.label(), |a| {
                            obs.observe(n, a)
                        });
                }
            })
            .build();
        Ok(CircuitBreakerLayer {
            classifier: self.classifier,
            extract: self.extract,
            registry,
            _error: PhantomData,
        })
    }
}

// The checks of each setting, shared by the builder and the handle (one place for each rule).

/// `failure_rate`: finite, in `[0, 1]`.
pub(super) fn check_failure_rate(v: f64) -> Result<f64, ConfigError> {
    check_f64("failure_rate", v, 0.0, 1.0, "[0, 1]")
}

/// `slow_call_rate`: finite, in `[0, 1]`.
pub(super) fn check_slow_call_rate(v: f64) -> Result<f64, ConfigError> {
    check_f64("slow_call_rate", v, 0.0, 1.0, "[0, 1]")
}

/// `slow_call_duration`: off, or in `(0, 24 h]`.
pub(super) fn check_slow_call_duration(
    d: Option<Duration>,
) -> Result<Option<Duration>, ConfigError> {
    match d {
        Some(d) if d.is_zero() => Err(ConfigError::zero("slow_call_duration")),
        Some(d) if d > MAX_BREAK => Err(ConfigError::out_of_range(
            "slow_call_duration",
            d,
            "(0, 24 h]",
        )),
        _ => Ok(d),
    }
}

/// `minimum_calls`: at least 1; capped at a count window's size, as in resilience4j.
pub(super) fn check_minimum_calls(n: u32, window: &SlidingWindow) -> Result<u64, ConfigError> {
    if n == 0 {
        return Err(ConfigError::zero("minimum_calls"));
    }
    let n = match *window {
        SlidingWindow::Count(size) => n.min(size),
        SlidingWindow::Time { .. } => n,
    };
    Ok(u64::from(n))
}

/// `consecutive_failures`: off, or at least 1. Off is kept as 0.
pub(super) fn check_consecutive_failures(n: Option<u32>) -> Result<u32, ConfigError> {
    match n {
        Some(0) => Err(ConfigError::zero("consecutive_failures")),
        Some(n) => Ok(n),
        None => Ok(0),
    }
}

/// `half_open_probes`: in `[1, 1000]`.
pub(super) fn check_half_open_probes(n: u32) -> Result<u32, ConfigError> {
    if n == 0 {
        return Err(ConfigError::zero("half_open_probes"));
    }
    if n > MAX_PROBES {
        return Err(ConfigError::out_of_range(
            "half_open_probes",
            n,
            "[1, 1000]",
        ));
    }
    Ok(n)
}
