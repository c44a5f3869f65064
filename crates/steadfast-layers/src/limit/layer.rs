use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram};
use tokio::sync::Semaphore;
use tower_layer::Layer;

use super::{ConcurrencyLimit, OverloadReason};
use crate::deadline::MAX_TIMEOUT;
use crate::error::ConfigError;
use crate::error_type::{Boxed, Typed};
use crate::gate::Gate;
use crate::keyed::{validate_max_keys, Global, KeyMap, DEFAULT_MAX_KEYS};
use crate::telemetry::{Attrs, Telemetry, REASON_KEY};

/// Limits how many calls are in flight at once, across every clone of the layer and of its
/// services, globally or per key.
///
/// Built by [`ConcurrencyLimitLayer::builder`]; [`ConcurrencyLimitLayer::new`] is the fail-fast,
/// global shortcut. See the [module docs](super) for the rules.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::limit::ConcurrencyLimitLayer;
///
/// // At most 32 calls per tenant, each waiting at most 50 ms for a slot.
/// let layer = ConcurrencyLimitLayer::builder(32)
///     .key_by(|req: &(u32, String)| req.0)
///     .max_wait(Duration::from_millis(50))
///     .build()?;
/// assert_eq!(layer.max_in_flight(), 32);
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
pub struct ConcurrencyLimitLayer<X = Global, K = Boxed> {
    extractor: X,
    shared: Arc<Shared>,
    _error: PhantomData<fn() -> K>,
}

impl<X: Clone, K> Clone for ConcurrencyLimitLayer<X, K> {
    fn clone(&self) -> Self {
        Self {
            extractor: self.extractor.clone(),
            shared: Arc::clone(&self.shared),
            _error: PhantomData,
        }
    }
}

impl<X: fmt::Debug, K> fmt::Debug for ConcurrencyLimitLayer<X, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimitLayer")
            .field("extractor", &self.extractor)
            .field("shared", &self.shared)
            .finish()
    }
}

/// What every clone of one layer shares.
#[derive(Debug)]
pub(super) struct Shared {
    /// Changed through [`ConcurrencyLimitHandle`]; read when a key's gate is made.
    pub(super) max_in_flight: AtomicUsize,
    pub(super) wait: bool,
    pub(super) max_wait: Option<Duration>,
    pub(super) slots: Slots,
    pub(super) telemetry: Telemetry,
    pub(super) attrs: Attrs,
    pub(super) calls: Counter<u64>,
    pub(super) rejected: Counter<u64>,
    pub(super) wait_time: Option<Histogram<f64>>,
}

/// The slots: one gate, or one per key.
#[derive(Debug)]
pub(super) enum Slots {
    Global(Arc<Gate>),
    Keyed(KeyMap<Arc<Gate>>),
}

impl Shared {
    /// Counts one refused call and traces it (`waited_ms`: how long it waited, if it did).
    pub(super) fn reject(&self, reason: OverloadReason, waited_ms: Option<f64>) {
        self.attrs.with(REASON_KEY, reason.label(), |a| {
            self.rejected.add(1, a);
        });
        tracing::debug!(
            target: "steadfast::limit",
            instance = self.telemetry.span_name(),
            reason = reason.label(),
            max_in_flight = self.max_in_flight.load(Ordering::Relaxed),
            waited_ms,
            "concurrency limit: call rejected"
        );
    }

    pub(super) fn in_flight(&self) -> u64 {
        let busy = |g: &Gate| g.in_flight() as u64;
        match &self.slots {
            Slots::Global(s) => busy(s),
            Slots::Keyed(map) => map.fold(0, |n, s| n + busy(s)),
        }
    }
}

impl ConcurrencyLimitLayer {
    /// A global, fail-fast limit of `max_in_flight` calls.
    ///
    /// ```
    /// # use steadfast_layers::limit::ConcurrencyLimitLayer;
    /// assert!(ConcurrencyLimitLayer::new(10).is_ok());
    /// assert_eq!(ConcurrencyLimitLayer::new(0).unwrap_err().path(), "max_in_flight");
    /// ```
    pub fn new(max_in_flight: usize) -> Result<Self, ConfigError> {
        Self::builder(max_in_flight).build()
    }

    /// A builder for a limit of `max_in_flight` calls: global and fail-fast unless told
    /// otherwise.
    ///
    /// ```
    /// # use steadfast_layers::limit::ConcurrencyLimitLayer;
    /// let layer = ConcurrencyLimitLayer::builder(8).wait().build()?;
    /// assert!(layer.waits());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder(max_in_flight: usize) -> ConcurrencyLimitLayerBuilder {
        ConcurrencyLimitLayerBuilder {
            max_in_flight,
            wait: false,
            max_wait: None,
            max_keys: DEFAULT_MAX_KEYS,
            extractor: Global,
            keyed: false,
            telemetry: Telemetry::default(),
        }
    }
}

impl<X, K> ConcurrencyLimitLayer<X, K> {
    /// The same layer (sharing its permits), whose services fail with `E` instead of
    /// [`BoxError`](crate::BoxError): a refusal is made into `E` with `From<Overloaded>` and an
    /// inner error with `Into<E>` ([`Typed<E>`](crate::error_type::Typed); see
    /// [`error_type`](crate::error_type)). With a type that holds the refusal inline (an enum), a
    /// refusal allocates nothing; with [`BoxError`](crate::BoxError), the default, each refusal
    /// boxes its [`Overloaded`](super::Overloaded) (one allocation).
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use steadfast_layers::limit::{ConcurrencyLimitLayer, OverloadReason, Overloaded};
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
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::ConfigError> {
    /// let layer = ConcurrencyLimitLayer::new(1)?.with_error::<CallError>();
    /// let stuck = service_fn(|_: u32| std::future::pending::<Result<u32, Infallible>>());
    /// let mut svc = layer.layer(stuck);
    /// let _first = svc.ready().await.map_err(|_| ()).unwrap().call(1); // holds the one permit
    /// match svc.oneshot(2).await {
    ///     Err(CallError::Overloaded(e)) => assert_eq!(e.reason(), OverloadReason::AtCapacity),
    ///     other => panic!("expected a refusal, got {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn with_error<E>(self) -> ConcurrencyLimitLayer<X, Typed<E>> {
        ConcurrencyLimitLayer {
            extractor: self.extractor,
            shared: self.shared,
            _error: PhantomData,
        }
    }

    /// The most calls in flight at once (per key when keyed).
    ///
    /// ```
    /// # use steadfast_layers::limit::ConcurrencyLimitLayer;
    /// assert_eq!(ConcurrencyLimitLayer::new(3)?.max_in_flight(), 3);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::Relaxed)
    }

    /// A handle that changes this limit at run time, for every clone of the layer and every
    /// service it made (see the [module docs](super#changing-settings-at-run-time)).
    ///
    /// ```
    /// # use steadfast_layers::limit::ConcurrencyLimitLayer;
    /// let layer = ConcurrencyLimitLayer::new(8)?;
    /// layer.handle().set_max_in_flight(4)?;
    /// assert_eq!(layer.max_in_flight(), 4);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn handle(&self) -> ConcurrencyLimitHandle {
        ConcurrencyLimitHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Whether a call waits for a permit (rather than failing at once).
    ///
    /// ```
    /// # use steadfast_layers::limit::ConcurrencyLimitLayer;
    /// assert!(!ConcurrencyLimitLayer::new(3)?.waits());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn waits(&self) -> bool {
        self.shared.wait
    }

    /// How many calls are in flight now, over every clone (and every key).
    ///
    /// ```
    /// # use steadfast_layers::limit::ConcurrencyLimitLayer;
    /// assert_eq!(ConcurrencyLimitLayer::new(3)?.in_flight(), 0);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight() as usize
    }

    /// The number of keys tracked (`None` when global): at most `max_keys`, as for
    /// [`RateLimitLayer::keys`](crate::rate::RateLimitLayer::keys).
    ///
    /// ```
    /// # use steadfast_layers::limit::ConcurrencyLimitLayer;
    /// assert_eq!(ConcurrencyLimitLayer::new(3)?.keys(), None);
    /// let keyed = ConcurrencyLimitLayer::builder(3).key_by(|req: &u32| *req % 10).build()?;
    /// assert_eq!(keyed.keys(), Some(0));
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn keys(&self) -> Option<usize> {
        match &self.shared.slots {
            Slots::Global(_) => None,
            Slots::Keyed(map) => Some(map.len()),
        }
    }
}

impl<S, X: Clone, K> Layer<S> for ConcurrencyLimitLayer<X, K> {
    type Service = ConcurrencyLimit<S, X, K>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            extractor: self.extractor.clone(),
            shared: Arc::clone(&self.shared),
            _error: PhantomData,
        }
    }
}

/// Builds a [`ConcurrencyLimitLayer`], validating its configuration.
///
/// ```
/// # use std::time::Duration;
/// # use steadfast_layers::limit::ConcurrencyLimitLayer;
/// let err = ConcurrencyLimitLayer::builder(4).max_wait(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err.path(), "max_wait");
/// ```
#[derive(Debug)]
pub struct ConcurrencyLimitLayerBuilder<X = Global> {
    max_in_flight: usize,
    wait: bool,
    max_wait: Option<Duration>,
    max_keys: usize,
    extractor: X,
    keyed: bool,
    telemetry: Telemetry,
}

impl<X> ConcurrencyLimitLayerBuilder<X> {
    /// Waits for a permit, with no bound on the wait, instead of failing at once.
    ///
    /// ```
    /// # use steadfast_layers::limit::ConcurrencyLimitLayer;
    /// let l = ConcurrencyLimitLayer::builder(2).wait().build()?;
    /// assert!(l.waits());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn wait(mut self) -> Self {
        self.wait = true;
        self
    }

    /// Waits for a permit at most `max_wait` (implies [`wait`](Self::wait)); a call still
    /// waiting then fails with [`Overloaded`](super::Overloaded) (`wait_timeout`). Non-zero, at
    /// most [`MAX_TIMEOUT`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::limit::ConcurrencyLimitLayer;
    /// let l = ConcurrencyLimitLayer::builder(2).max_wait(Duration::from_millis(100)).build()?;
    /// assert!(l.waits());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.wait = true;
        self.max_wait = Some(max_wait);
        self
    }

    /// The most keys tracked at once when keyed (default 10,000, at most 10,000,000). See
    /// [`keyed`](crate::keyed) for what happens when the table is full.
    ///
    /// ```
    /// # use steadfast_layers::limit::ConcurrencyLimitLayer;
    /// assert!(ConcurrencyLimitLayer::builder(2).max_keys(0).build().is_err());
    /// ```
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Where and how to record telemetry.
    ///
    /// ```
    /// # use steadfast_layers::{limit::ConcurrencyLimitLayer, telemetry::Telemetry};
    /// let l = ConcurrencyLimitLayer::builder(2).telemetry(Telemetry::new().name("db")).build()?;
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
    /// # use steadfast_layers::limit::ConcurrencyLimitLayer;
    /// let l = ConcurrencyLimitLayer::builder(2).key_by(|req: &String| req.len()).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn key_by<X2>(self, extractor: X2) -> ConcurrencyLimitLayerBuilder<X2> {
        ConcurrencyLimitLayerBuilder {
            max_in_flight: self.max_in_flight,
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
    /// # use steadfast_layers::limit::ConcurrencyLimitLayer;
    /// assert_eq!(ConcurrencyLimitLayer::builder(0).build().unwrap_err().path(), "max_in_flight");
    /// assert!(ConcurrencyLimitLayer::builder(usize::MAX).build().is_err());
    /// ```
    pub fn build(self) -> Result<ConcurrencyLimitLayer<X>, ConfigError> {
        check_max_in_flight(self.max_in_flight)?;
        if let Some(w) = self.max_wait {
            validate_wait("max_wait", w)?;
        }
        validate_max_keys(self.max_keys)?;
        let meter = self.telemetry.resolve_meter();
        let slots = if self.keyed {
            Slots::Keyed(KeyMap::new(self.max_keys))
        } else {
            Slots::Global(Arc::new(Gate::new(self.max_in_flight)))
        };
        let keyed = self.keyed;
        let shared = Arc::new(Shared {
            max_in_flight: AtomicUsize::new(self.max_in_flight),
            wait: self.wait,
            max_wait: self.max_wait,
            slots,
            attrs: self.telemetry.base_attributes(),
            calls: meter
                .u64_counter("steadfast.limit.calls")
                .with_unit("{call}")
                .with_description("Calls made through the concurrency limit, refused ones included")
                .build(),
            rejected: meter
                .u64_counter("steadfast.limit.rejected")
                .with_unit("{call}")
                .with_description("Calls refused by the concurrency limit, by reason")
                .build(),
            wait_time: self.telemetry.records_duration().then(|| {
                meter
                    .f64_histogram("steadfast.limit.wait")
                    .with_unit("s")
                    .with_boundaries(crate::telemetry::DURATION_BOUNDARIES.to_vec())
                    .with_description("Time calls spent waiting for a permit (calls that waited)")
                    .build()
            }),
            telemetry: self.telemetry,
        });
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        let _in_flight = meter
            .u64_observable_gauge("steadfast.limit.in_flight")
            .with_unit("{call}")
            .with_description("Calls holding a permit of the concurrency limit (all keys)")
            .with_callback(move |gauge| {
                if let Some(shared) = weak.upgrade() {
                    gauge.observe(shared.in_flight(), shared.attrs.base());
                }
            })
            .build();
        if keyed {
            let weak: Weak<Shared> = Arc::downgrade(&shared);
            let _keys = meter
                .u64_observable_gauge("steadfast.limit.keys")
                .with_unit("{key}")
                .with_description("Keys tracked by a keyed concurrency limit")
                .with_callback(move |gauge| {
                    if let Some(shared) = weak.upgrade() {
                        if let Slots::Keyed(map) = &shared.slots {
                            gauge.observe(map.len() as u64, shared.attrs.base());
                        }
                    }
                })
                .build();
        }
        Ok(ConcurrencyLimitLayer {
            extractor: self.extractor,
            shared,
            _error: PhantomData,
        })
    }
}

pub(crate) fn validate_wait(field: &'static str, w: Duration) -> Result<(), ConfigError> {
    if w.is_zero() {
        return Err(ConfigError::zero(field));
    }
    if w > MAX_TIMEOUT {
        return Err(ConfigError::out_of_range(field, w, "(0, 99999999 h]"));
    }
    Ok(())
}

/// `max_in_flight`: in `[1, Semaphore::MAX_PERMITS]`. The one check, for the builder and the
/// handle.
fn check_max_in_flight(n: usize) -> Result<usize, ConfigError> {
    if n == 0 {
        return Err(ConfigError::zero("max_in_flight"));
    }
    if n > Semaphore::MAX_PERMITS {
        return Err(ConfigError::out_of_range(
            "max_in_flight",
            n,
            "[1, usize::MAX >> 3]",
        ));
    }
    Ok(n)
}

/// Changes a [`ConcurrencyLimitLayer`]'s limit at run time; cheap to clone. From
/// [`ConcurrencyLimitLayer::handle`].
///
/// The new limit applies to every key (keys seen later get it too). Raising it admits waiting
/// calls at once; lowering it below the calls in flight drops none of them: they finish, and
/// new calls wait (or are refused, when the layer does not wait) until fewer than the new limit
/// are in flight.
///
/// ```
/// use steadfast_layers::limit::ConcurrencyLimitLayer;
/// let layer = ConcurrencyLimitLayer::builder(16).wait().build()?;
/// let handle = layer.handle();
/// handle.set_max_in_flight(4)?;
/// assert_eq!(handle.max_in_flight(), 4);
/// assert_eq!(handle.set_max_in_flight(0).unwrap_err().path(), "max_in_flight");
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitHandle {
    shared: Arc<Shared>,
}

impl ConcurrencyLimitHandle {
    /// Sets the most calls in flight at once (per key when keyed), as
    /// [`ConcurrencyLimitLayer::builder`]'s `max_in_flight`.
    ///
    /// ```
    /// # use steadfast_layers::limit::ConcurrencyLimitLayer;
    /// let h = ConcurrencyLimitLayer::new(2)?.handle();
    /// h.set_max_in_flight(3)?;
    /// assert!(h.set_max_in_flight(usize::MAX).is_err());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn set_max_in_flight(&self, n: usize) -> Result<(), ConfigError> {
        let n = check_max_in_flight(n)?;
        let shared = &self.shared;
        // Stored first: a key's gate made from now on starts at `n`; one made before is in the
        // table by the time `fold` visits it (both hold the table's lock).
        shared.max_in_flight.store(n, Ordering::SeqCst);
        match &shared.slots {
            Slots::Global(gate) => gate.set_max(n),
            Slots::Keyed(map) => map.fold((), |(), gate| gate.set_max(n)),
        }
        Ok(())
    }

    /// The limit in force.
    ///
    /// ```
    /// # use steadfast_layers::limit::ConcurrencyLimitLayer;
    /// assert_eq!(ConcurrencyLimitLayer::new(2)?.handle().max_in_flight(), 2);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::Relaxed)
    }
}
