use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, TryLockError, Weak};
use std::time::Duration;

use opentelemetry::metrics::Counter;
use tokio::time::Instant;
use tower_layer::Layer;

use super::{AdaptiveLimit, Algorithm, Samples, Vegas, MAX_LIMIT};
use crate::classify::RetryOnError;
use crate::deadline::MAX_TIMEOUT;
use crate::error::ConfigError;
use crate::error_type::{Boxed, Typed};
use crate::gate::Gate;
use crate::rng::{default_rng, RandomSource, SeededRng, SharedRng};
use crate::telemetry::{ms, Attrs, Telemetry};

/// A concurrency limit that adapts to the backend: the limit is recomputed from each call's
/// latency and outcome by an [`Algorithm`], and shared by every clone of the layer.
///
/// Built by [`AdaptiveLimitLayer::builder`]. See the [module docs](super).
///
/// ```
/// use steadfast_layers::adaptive_limit::{AdaptiveLimitLayer, Vegas};
/// let layer = AdaptiveLimitLayer::builder()
///     .algorithm(Vegas::builder().initial_limit(10).build()?)
///     .seed(7)
///     .build()?;
/// assert_eq!(layer.handle().limit(), 10);
/// assert_eq!(layer.handle().algorithm(), "vegas");
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
pub struct AdaptiveLimitLayer<A = Vegas, C = RetryOnError, K = Boxed> {
    classifier: C,
    core: Arc<Core<A>>,
    _error: PhantomData<fn() -> K>,
}

impl<A, C: Clone, K> Clone for AdaptiveLimitLayer<A, C, K> {
    fn clone(&self) -> Self {
        Self {
            classifier: self.classifier.clone(),
            core: Arc::clone(&self.core),
            _error: PhantomData,
        }
    }
}

impl<A, C: fmt::Debug, K> fmt::Debug for AdaptiveLimitLayer<A, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitLayer")
            .field("classifier", &self.classifier)
            .field("core", &self.core)
            .finish()
    }
}

/// A view of an adaptive limit: its current value, the calls in flight, the algorithm. Cheap to
/// clone; every clone of the layer and of its services shares what it shows.
///
/// ```
/// use steadfast_layers::adaptive_limit::{AdaptiveLimitLayer, Aimd};
/// let layer = AdaptiveLimitLayer::builder().algorithm(Aimd::default()).build()?;
/// let handle = layer.handle();
/// assert_eq!((handle.limit(), handle.in_flight(), handle.algorithm()), (20, 0, "aimd"));
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct LimitHandle {
    gate: Arc<Gate>,
    algorithm: &'static str,
}

impl LimitHandle {
    /// The current limit.
    pub fn limit(&self) -> usize {
        self.gate.max()
    }

    /// The calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.gate.in_flight()
    }

    /// The algorithm's name.
    pub fn algorithm(&self) -> &'static str {
        self.algorithm
    }
}

/// Samples gathered since the last update, lock-free.
#[derive(Debug)]
struct Pending {
    count: AtomicU64,
    drops: AtomicU64,
    rtt_sum_nanos: AtomicU64,
    min_rtt_nanos: AtomicU64,
    max_in_flight: AtomicUsize,
}

impl Pending {
    fn new() -> Self {
        Self {
            count: AtomicU64::new(0),
            drops: AtomicU64::new(0),
            rtt_sum_nanos: AtomicU64::new(0),
            min_rtt_nanos: AtomicU64::new(u64::MAX),
            max_in_flight: AtomicUsize::new(0),
        }
    }

    /// `exact` is false for a call its caller gave up on: its time counts in the mean as a lower
    /// bound of its round-trip time, but cannot be the window's shortest.
    fn add(&self, rtt_nanos: u64, in_flight: usize, dropped: bool, exact: bool) -> u64 {
        self.rtt_sum_nanos.fetch_add(rtt_nanos, Ordering::Relaxed);
        if exact {
            self.min_rtt_nanos.fetch_min(rtt_nanos, Ordering::Relaxed);
        }
        self.max_in_flight.fetch_max(in_flight, Ordering::Relaxed);
        if dropped {
            self.drops.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Takes what has accumulated. Samples racing with the take land in this window or the
    /// next; none is lost.
    fn take(&self) -> Option<Samples> {
        let count = self.count.swap(0, Ordering::AcqRel);
        if count == 0 {
            return None;
        }
        let sum = self.rtt_sum_nanos.swap(0, Ordering::Relaxed);
        let min = self.min_rtt_nanos.swap(u64::MAX, Ordering::Relaxed);
        let drops = self.drops.swap(0, Ordering::Relaxed);
        let max_in_flight = self.max_in_flight.swap(0, Ordering::Relaxed);
        Some(Samples::new(
            count,
            drops.min(count),
            Duration::from_nanos(sum / count),
            Duration::from_nanos(if min == u64::MAX { 0 } else { min }),
            max_in_flight,
        ))
    }
}

/// The default update window.
pub const DEFAULT_WINDOW: Duration = Duration::from_millis(100);
/// The default fewest calls per update.
pub const DEFAULT_MIN_SAMPLES: u64 = 10;

/// What every clone of one layer shares.
pub(super) struct Core<A> {
    /// The crate's concurrency gate (the fixed limit's), its maximum moved by the algorithm;
    /// no queue: a call over the limit is refused at once.
    pub(super) gate: Arc<Gate>,
    pub(super) algorithm_name: &'static str,
    pending: Pending,
    algorithm: Mutex<A>,
    window: Duration,
    min_samples: u64,
    cancelled_as_drops: bool,
    epoch: Instant,
    /// Nanoseconds after `epoch` when the next update may run.
    next_update: AtomicU64,
    rng: SharedRng,
    pub(super) telemetry: Telemetry,
    pub(super) attrs: Attrs,
    pub(super) calls: Counter<u64>,
    pub(super) rejected: Counter<u64>,
    pub(super) drops: Counter<u64>,
}

impl<A> fmt::Debug for Core<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("gate", &self.gate)
            .field("window", &self.window)
            .field("min_samples", &self.min_samples)
            .finish_non_exhaustive()
    }
}

impl<A> Core<A> {
    pub(super) fn handle(&self) -> LimitHandle {
        LimitHandle {
            gate: Arc::clone(&self.gate),
            algorithm: self.algorithm_name,
        }
    }
}

impl<A: Algorithm> Core<A> {
    /// Records a call whose future was dropped before it completed: its caller gave up (a
    /// deadline, a cancelled request), so it is a drop and its round-trip time is at least what
    /// it waited.
    pub(super) fn record_cancelled(&self, started: Instant, in_flight: usize) {
        if !self.cancelled_as_drops {
            return;
        }
        let now = Instant::now();
        self.attrs
            .with(crate::telemetry::ERROR_TYPE_KEY, "cancelled", |a| {
                self.drops.add(1, a);
            });
        self.record(
            now.saturating_duration_since(started),
            in_flight,
            true,
            false,
            now,
        );
    }

    /// Records one finished call (`exact`: it completed, so `rtt` is its round-trip time, not a
    /// lower bound) and, when an update is due and no other thread is running one, runs the
    /// algorithm. Never blocks.
    pub(super) fn record(
        &self,
        rtt: Duration,
        in_flight: usize,
        dropped: bool,
        exact: bool,
        now: Instant,
    ) {
        let rtt_nanos = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
        let count = self.pending.add(rtt_nanos, in_flight, dropped, exact);
        if count < self.min_samples {
            return;
        }
        let at = nanos_since(self.epoch, now);
        if at < self.next_update.load(Ordering::Acquire) {
            return;
        }
        let mut algorithm = match self.algorithm.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // Another thread is updating; this sample is in `pending` for the next update.
            Err(TryLockError::WouldBlock) => return,
        };
        let Some(samples) = self.pending.take() else {
            return;
        };
        let window = u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX);
        self.next_update
            .store(at.saturating_add(window), Ordering::Release);
        let from = self.gate.max();
        let to = algorithm.update(&samples, &*self.rng).clamp(1, MAX_LIMIT);
        drop(algorithm);
        if to != from {
            self.gate.set_max(to);
            tracing::debug!(
                target: "steadfast::adaptive",
                instance = self.telemetry.span_name(),
                algorithm = self.algorithm_name,
                from,
                to,
                samples = samples.count,
                drops = samples.drops,
                rtt_ms = ms(samples.avg_rtt),
                min_rtt_ms = ms(samples.min_rtt),
                max_in_flight = samples.max_in_flight,
                "adaptive limit changed"
            );
        }
    }
}

fn nanos_since(epoch: Instant, now: Instant) -> u64 {
    u64::try_from(now.saturating_duration_since(epoch).as_nanos()).unwrap_or(u64::MAX)
}

impl<A, C, K> AdaptiveLimitLayer<A, C, K> {
    /// The same layer (sharing its limit), whose services fail with `E` instead of
    /// [`BoxError`](crate::BoxError): a refusal is made into `E` with `From<Overloaded>` and an
    /// inner error with `Into<E>` ([`Typed<E>`](crate::error_type::Typed); see
    /// [`error_type`](crate::error_type)). With a type that holds the refusal inline (an enum), a
    /// refusal allocates nothing; with [`BoxError`](crate::BoxError), the default, each one boxes
    /// its [`Overloaded`](super::Overloaded) (one allocation).
    ///
    /// `E` also implements [`AsErrorRef`](crate::classify::AsErrorRef) (returning each variant's
    /// error): a call that ends in a [`DeadlineExceeded`](crate::deadline::DeadlineExceeded)
    /// held in `E` after it ran is a drop, as with `BoxError` (see
    /// [`classifier`](AdaptiveLimitLayerBuilder::classifier)).
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use steadfast_layers::adaptive_limit::{AdaptiveLimitLayer, Aimd, OverloadReason, Overloaded};
    /// use steadfast_layers::classify::AsErrorRef;
    /// use tower::{service_fn, Layer, Service, ServiceExt};
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
    /// impl AsErrorRef for CallError {
    ///     fn as_error_ref(&self) -> Option<&(dyn std::error::Error + 'static)> {
    ///         match self {
    ///             CallError::Overloaded(e) => Some(e),
    ///         }
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::ConfigError> {
    /// let layer = AdaptiveLimitLayer::builder()
    ///     .algorithm(Aimd::builder().initial_limit(1).build()?)
    ///     .build()?
    ///     .with_error::<CallError>();
    /// let stuck = service_fn(|_: u32| std::future::pending::<Result<u32, Infallible>>());
    /// let mut svc = layer.layer(stuck);
    /// let _first = svc.ready().await.map_err(|_| ()).unwrap().call(1); // holds the one slot
    /// match svc.oneshot(2).await {
    ///     Err(CallError::Overloaded(e)) => assert_eq!(e.reason(), OverloadReason::AtCapacity),
    ///     other => panic!("expected a refusal, got {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn with_error<E>(self) -> AdaptiveLimitLayer<A, C, Typed<E>> {
        AdaptiveLimitLayer {
            classifier: self.classifier,
            core: self.core,
            _error: PhantomData,
        }
    }

    /// A view of the current limit, shared with every clone.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::AdaptiveLimitLayer;
    /// let layer = AdaptiveLimitLayer::builder().build()?;
    /// assert_eq!(layer.handle().limit(), 20);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn handle(&self) -> LimitHandle {
        self.core.handle()
    }
}

impl AdaptiveLimitLayer {
    /// A builder with the defaults: [`Vegas`] with Netflix's parameters, updated once per
    /// 100 ms window of at least 10 calls, failures classified by [`RetryOnError`] (every error
    /// is a drop; a [`DeadlineExceeded`](crate::deadline::DeadlineExceeded) only if the call
    /// ran, see [`classifier`](AdaptiveLimitLayerBuilder::classifier)); calls whose caller gave
    /// up count as drops
    /// ([`cancelled_as_drops`](AdaptiveLimitLayerBuilder::cancelled_as_drops)).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::AdaptiveLimitLayer;
    /// assert_eq!(AdaptiveLimitLayer::builder().build()?.handle().algorithm(), "vegas");
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder() -> AdaptiveLimitLayerBuilder {
        AdaptiveLimitLayerBuilder {
            algorithm: Vegas::default(),
            classifier: RetryOnError,
            window: DEFAULT_WINDOW,
            min_samples: DEFAULT_MIN_SAMPLES,
            cancelled_as_drops: true,
            rng: None,
            telemetry: Telemetry::default(),
        }
    }
}

impl<S, A, C: Clone, K> Layer<S> for AdaptiveLimitLayer<A, C, K> {
    type Service = AdaptiveLimit<S, A, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveLimit {
            inner,
            classifier: self.classifier.clone(),
            core: Arc::clone(&self.core),
            _error: PhantomData,
        }
    }
}

/// Builds an [`AdaptiveLimitLayer`], validating its configuration.
///
/// ```
/// # use steadfast_layers::adaptive_limit::AdaptiveLimitLayer;
/// assert_eq!(AdaptiveLimitLayer::builder().min_samples(0).build().unwrap_err().path(), "min_samples");
/// ```
#[derive(Debug)]
pub struct AdaptiveLimitLayerBuilder<A = Vegas, C = RetryOnError> {
    algorithm: A,
    classifier: C,
    window: Duration,
    min_samples: u64,
    cancelled_as_drops: bool,
    rng: Option<SharedRng>,
    telemetry: Telemetry,
}

impl<A, C> AdaptiveLimitLayerBuilder<A, C> {
    /// The algorithm computing the limit ([`Aimd`](super::Aimd),
    /// [`Gradient2`](super::Gradient2), [`Vegas`] (the default), or your own).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::{AdaptiveLimitLayer, Aimd};
    /// let l = AdaptiveLimitLayer::builder().algorithm(Aimd::builder().initial_limit(5).build()?).build()?;
    /// assert_eq!(l.handle().limit(), 5);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn algorithm<A2>(self, algorithm: A2) -> AdaptiveLimitLayerBuilder<A2, C> {
        AdaptiveLimitLayerBuilder {
            algorithm,
            classifier: self.classifier,
            window: self.window,
            min_samples: self.min_samples,
            cancelled_as_drops: self.cancelled_as_drops,
            rng: self.rng,
            telemetry: self.telemetry,
        }
    }

    /// Decides which calls are drops (see [`crate::classify`]): a
    /// [`Retryable`](crate::classify::Outcome::Retryable) or
    /// [`Pushback`](crate::classify::Outcome::Pushback) outcome is a drop; a
    /// [`Fatal`](crate::classify::Outcome::Fatal) one (a bad request says nothing about load) or
    /// a [`NotSent`](crate::classify::Outcome::NotSent) one (the backend never saw it) is not
    /// measured at all, except a [`DeadlineExceeded`](crate::deadline::DeadlineExceeded) error
    /// after the call ran (a deadline layer below this one), which is a timeout, so a drop
    /// (whatever the classifier says: [`RetryOnError`] calls it fatal so as not to retry it).
    ///
    /// ```
    /// # use steadfast_layers::{adaptive_limit::AdaptiveLimitLayer, classify::Outcome, BoxError};
    /// let l = AdaptiveLimitLayer::builder()
    ///     .classifier(|r: &Result<u16, BoxError>| match r {
    ///         Ok(503) | Err(_) => Outcome::retryable("unavailable"),
    ///         Ok(400) => Outcome::fatal("bad_request"),
    ///         Ok(_) => Outcome::Success,
    ///     })
    ///     .build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn classifier<C2>(self, classifier: C2) -> AdaptiveLimitLayerBuilder<A, C2> {
        AdaptiveLimitLayerBuilder {
            algorithm: self.algorithm,
            classifier,
            window: self.window,
            min_samples: self.min_samples,
            cancelled_as_drops: self.cancelled_as_drops,
            rng: self.rng,
            telemetry: self.telemetry,
        }
    }

    /// Updates the limit at most once per `window` (default 100 ms), from every call completed
    /// in it (their mean and minimum RTT, the most in flight, the drops), as Netflix's
    /// `WindowedLimit` (whose window is 1 s). Zero, with [`min_samples`](Self::min_samples) 1,
    /// updates after every call, as Netflix's `SimpleLimiter`: the algorithms' formulas then
    /// apply per call, which reacts fastest but overshoots when many calls complete together.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::adaptive_limit::AdaptiveLimitLayer;
    /// let l = AdaptiveLimitLayer::builder().window(Duration::from_secs(1)).min_samples(10).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The fewest calls an update needs, in `[1, 1000000]` (default 10).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::AdaptiveLimitLayer;
    /// assert!(AdaptiveLimitLayer::builder().min_samples(10).build().is_ok());
    /// ```
    pub fn min_samples(mut self, n: u64) -> Self {
        self.min_samples = n;
        self
    }

    /// Whether a call whose response future is dropped before it completes (its caller gave up:
    /// a deadline above this layer, a cancelled request) counts as a drop, with the time it
    /// waited as a lower bound of its round-trip time (default `true`). Under overload such calls
    /// are the clearest signal there is, and without them an algorithm only hears from the calls
    /// that were fast enough to finish. Set `false` when callers routinely abandon calls for
    /// reasons unrelated to load (hedged requests whose loser is cancelled): they are then
    /// ignored, their slot freed.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::AdaptiveLimitLayer;
    /// let l = AdaptiveLimitLayer::builder().cancelled_as_drops(false).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn cancelled_as_drops(mut self, yes: bool) -> Self {
        self.cancelled_as_drops = yes;
        self
    }

    /// Randomness (Vegas's probe jitter) from a [`SeededRng`] seeded with `seed`.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::AdaptiveLimitLayer;
    /// let l = AdaptiveLimitLayer::builder().seed(3).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = Some(Arc::new(SeededRng::new(seed)));
        self
    }

    /// Randomness from `rng`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_layers::{adaptive_limit::AdaptiveLimitLayer, rng::SeededRng};
    /// let l = AdaptiveLimitLayer::builder().rng(Arc::new(SeededRng::new(3))).build()?;
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
    /// # use steadfast_layers::{adaptive_limit::AdaptiveLimitLayer, telemetry::Telemetry};
    /// let l = AdaptiveLimitLayer::builder().telemetry(Telemetry::new().name("search")).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Validates and builds the layer.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::adaptive_limit::AdaptiveLimitLayer;
    /// assert!(AdaptiveLimitLayer::builder().window(Duration::from_secs(u64::MAX)).build().is_err());
    /// ```
    pub fn build(self) -> Result<AdaptiveLimitLayer<A, C>, ConfigError>
    where
        A: Algorithm,
    {
        if self.min_samples == 0 {
            return Err(ConfigError::zero("min_samples"));
        }
        if self.min_samples > 1_000_000 {
            return Err(ConfigError::out_of_range(
                "min_samples",
                self.min_samples,
                "[1, 1000000]",
            ));
        }
        if self.window > MAX_TIMEOUT {
            return Err(ConfigError::out_of_range(
                "window",
                self.window,
                "[0, 99999999 h]",
            ));
        }
        let initial = self.algorithm.initial_limit();
        if initial == 0 {
            return Err(ConfigError::zero("initial_limit"));
        }
        if initial > MAX_LIMIT {
            return Err(ConfigError::out_of_range(
                "initial_limit",
                initial,
                "[1, 1000000]",
            ));
        }
        let meter = self.telemetry.resolve_meter();
        let gate = Arc::new(Gate::with_queue(initial, 0));
        let algorithm_name = self.algorithm.name();
        let attrs = self.telemetry.base_attributes();
        for (name, description, read) in [
            (
                "steadfast.adaptive.limit",
                "The current adaptive concurrency limit",
                Gate::max as fn(&Gate) -> usize,
            ),
            (
                "steadfast.adaptive.in_flight",
                "Calls in flight under the adaptive concurrency limit",
                Gate::in_flight,
            ),
        ] {
            let weak: Weak<Gate> = Arc::downgrade(&gate);
            let attrs = attrs.clone();
            let _gauge = meter
                .u64_observable_gauge(name)
                .with_unit("{call}")
                .with_description(description)
                .with_callback(move |gauge| {
                    if let Some(g) = weak.upgrade() {
                        gauge.observe(read(&g) as u64, attrs.base());
                    }
                })
                .build();
        }
        let core = Core {
            gate,
            algorithm_name,
            pending: Pending::new(),
            algorithm: Mutex::new(self.algorithm),
            window: self.window,
            min_samples: self.min_samples,
            cancelled_as_drops: self.cancelled_as_drops,
            epoch: Instant::now(),
            next_update: AtomicU64::new(0),
            rng: self.rng.unwrap_or_else(default_rng),
            attrs,
            calls: meter
                .u64_counter("steadfast.adaptive.calls")
                .with_unit("{call}")
                .with_description("Calls made through the adaptive concurrency limit, refused ones included")
                .build(),
            rejected: meter
                .u64_counter("steadfast.adaptive.rejected")
                .with_unit("{call}")
                .with_description("Calls refused by the adaptive concurrency limit")
                .build(),
            drops: meter
                .u64_counter("steadfast.adaptive.drops")
                .with_unit("{call}")
                .with_description("Calls counted as drops, by error.type (the classifier's label, deadline_exceeded or cancelled)")
                .build(),
            telemetry: self.telemetry,
        };
        Ok(AdaptiveLimitLayer {
            classifier: self.classifier,
            core: Arc::new(core),
            _error: PhantomData,
        })
    }
}
