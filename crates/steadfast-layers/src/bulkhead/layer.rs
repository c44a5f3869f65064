use std::fmt;
use std::marker::PhantomData;
use std::sync::{Arc, Weak};
use std::time::Duration;

use opentelemetry::metrics::{Counter, Histogram};
use tokio::sync::Semaphore;
use tower_layer::Layer;

use super::Bulkhead;
use crate::error::ConfigError;
use crate::error_type::{Boxed, Typed};
use crate::gate::Gate;
use crate::limit::validate_wait;
use crate::telemetry::{Attrs, Telemetry};

/// The largest accepted waiting queue.
pub const MAX_QUEUE: usize = 1_000_000;

/// Isolates a dependency: at most `max_concurrent` calls in flight, at most `max_queue` more
/// waiting (each at most `max_wait`), the rest refused at once. Shared by every clone.
///
/// Built by [`BulkheadLayer::builder`]. See the [module docs](super).
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::bulkhead::BulkheadLayer;
/// let layer = BulkheadLayer::builder(10)
///     .max_queue(20)
///     .max_wait(Duration::from_millis(250))
///     .build()?;
/// assert_eq!((layer.max_concurrent(), layer.max_queue()), (10, 20));
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
pub struct BulkheadLayer<K = Boxed> {
    shared: Arc<Shared>,
    _error: PhantomData<fn() -> K>,
}

impl<K> Clone for BulkheadLayer<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            _error: PhantomData,
        }
    }
}

impl<K> fmt::Debug for BulkheadLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

/// What every clone of one layer shares.
#[derive(Debug)]
pub(super) struct Shared {
    /// Its maximum is the bulkhead's `max_concurrent`, changed through [`BulkheadHandle`].
    pub(super) gate: Arc<Gate>,
    pub(super) max_queue: usize,
    pub(super) max_wait: Duration,
    pub(super) telemetry: Telemetry,
    pub(super) attrs: Attrs,
    pub(super) calls: Counter<u64>,
    pub(super) rejected: Counter<u64>,
    pub(super) wait_time: Option<Histogram<f64>>,
}

impl Shared {
    pub(super) fn in_flight(&self) -> usize {
        self.gate.in_flight()
    }

    /// Calls waiting for a slot (a call handed its slot has left the queue).
    pub(super) fn queued(&self) -> usize {
        self.gate.waiters()
    }
}

impl BulkheadLayer {
    /// A builder for `max_concurrent` calls in flight; by default as many may wait, each at most
    /// 1 s.
    ///
    /// ```
    /// # use steadfast_layers::bulkhead::BulkheadLayer;
    /// let l = BulkheadLayer::builder(4).build()?;
    /// assert_eq!(l.max_queue(), 4);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder(max_concurrent: usize) -> BulkheadLayerBuilder {
        BulkheadLayerBuilder {
            max_concurrent,
            max_queue: max_concurrent,
            max_wait: Duration::from_secs(1),
            telemetry: Telemetry::default(),
        }
    }
}

impl<K> BulkheadLayer<K> {
    /// The same layer (sharing its slots and queue), whose services fail with `E` instead of
    /// [`BoxError`](crate::BoxError): a refusal is made into `E` with `From<Overloaded>` and an
    /// inner error with `Into<E>` ([`Typed<E>`](crate::error_type::Typed); see
    /// [`error_type`](crate::error_type)). With a type that holds the refusal inline (an enum), a
    /// refusal allocates nothing; with [`BoxError`](crate::BoxError), the default, each refusal
    /// boxes its [`Overloaded`](super::Overloaded) (one allocation).
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use steadfast_layers::bulkhead::{BulkheadLayer, OverloadReason, Overloaded};
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
    /// let layer = BulkheadLayer::builder(1).max_queue(0).build()?.with_error::<CallError>();
    /// let stuck = service_fn(|_: u32| std::future::pending::<Result<u32, Infallible>>());
    /// let mut svc = layer.layer(stuck);
    /// let _first = svc.ready().await.map_err(|_| ()).unwrap().call(1); // holds the one slot
    /// match svc.oneshot(2).await {
    ///     Err(CallError::Overloaded(e)) => assert_eq!(e.reason(), OverloadReason::QueueFull),
    ///     other => panic!("expected a refusal, got {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn with_error<E>(self) -> BulkheadLayer<Typed<E>> {
        BulkheadLayer {
            shared: self.shared,
            _error: PhantomData,
        }
    }

    /// The most calls in flight.
    pub fn max_concurrent(&self) -> usize {
        self.shared.gate.max()
    }

    /// A handle that changes the most calls in flight at run time, for every clone of the layer
    /// and every service it made (see the [module docs](super#changing-settings-at-run-time)).
    ///
    /// ```
    /// # use steadfast_layers::bulkhead::BulkheadLayer;
    /// let layer = BulkheadLayer::builder(8).build()?;
    /// layer.handle().set_max_concurrent(2)?;
    /// assert_eq!(layer.max_concurrent(), 2);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn handle(&self) -> BulkheadHandle {
        BulkheadHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The most calls waiting.
    pub fn max_queue(&self) -> usize {
        self.shared.max_queue
    }

    /// How long a call may wait.
    pub fn max_wait(&self) -> Duration {
        self.shared.max_wait
    }

    /// Calls in flight now, over every clone.
    ///
    /// ```
    /// # use steadfast_layers::bulkhead::BulkheadLayer;
    /// assert_eq!(BulkheadLayer::builder(4).build()?.in_flight(), 0);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Calls waiting now, over every clone.
    ///
    /// ```
    /// # use steadfast_layers::bulkhead::BulkheadLayer;
    /// assert_eq!(BulkheadLayer::builder(4).build()?.queued(), 0);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }
}

impl<S, K> Layer<S> for BulkheadLayer<K> {
    type Service = Bulkhead<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead {
            inner,
            shared: Arc::clone(&self.shared),
            _error: PhantomData,
        }
    }
}

/// Builds a [`BulkheadLayer`], validating its configuration.
///
/// ```
/// # use std::time::Duration;
/// # use steadfast_layers::bulkhead::BulkheadLayer;
/// assert_eq!(BulkheadLayer::builder(0).build().unwrap_err().path(), "max_concurrent");
/// assert_eq!(BulkheadLayer::builder(2).max_wait(Duration::ZERO).build().unwrap_err().path(), "max_wait");
/// // With no queue, nothing waits: the wait does not matter.
/// assert!(BulkheadLayer::builder(2).max_queue(0).max_wait(Duration::ZERO).build().is_ok());
/// ```
#[derive(Clone, Debug)]
pub struct BulkheadLayerBuilder {
    max_concurrent: usize,
    max_queue: usize,
    max_wait: Duration,
    telemetry: Telemetry,
}

impl BulkheadLayerBuilder {
    /// The most calls waiting for a slot, in `[0, 1000000]` (default: `max_concurrent`); 0
    /// refuses at once every call that finds the bulkhead full.
    ///
    /// ```
    /// # use steadfast_layers::bulkhead::BulkheadLayer;
    /// assert_eq!(BulkheadLayer::builder(2).max_queue(0).build()?.max_queue(), 0);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn max_queue(mut self, n: usize) -> Self {
        self.max_queue = n;
        self
    }

    /// How long a call may wait for a slot (default 1 s; non-zero when there is a queue).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::bulkhead::BulkheadLayer;
    /// let l = BulkheadLayer::builder(2).max_wait(Duration::from_millis(20)).build()?;
    /// assert_eq!(l.max_wait(), Duration::from_millis(20));
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// Where and how to record telemetry.
    ///
    /// ```
    /// # use steadfast_layers::{bulkhead::BulkheadLayer, telemetry::Telemetry};
    /// let l = BulkheadLayer::builder(2).telemetry(Telemetry::new().name("payments")).build()?;
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
    /// # use steadfast_layers::bulkhead::BulkheadLayer;
    /// assert_eq!(BulkheadLayer::builder(2).max_queue(usize::MAX).build().unwrap_err().path(), "max_queue");
    /// ```
    pub fn build(self) -> Result<BulkheadLayer, ConfigError> {
        check_max_concurrent(self.max_concurrent)?;
        if self.max_queue > MAX_QUEUE {
            return Err(ConfigError::out_of_range(
                "max_queue",
                self.max_queue,
                "[0, 1000000]",
            ));
        }
        if self.max_queue > 0 {
            validate_wait("max_wait", self.max_wait)?;
        }
        let meter = self.telemetry.resolve_meter();
        let shared = Arc::new(Shared {
            // The concurrency limit's gate, with a bounded queue.
            gate: Arc::new(Gate::with_queue(self.max_concurrent, self.max_queue)),
            max_queue: self.max_queue,
            max_wait: self.max_wait,
            attrs: self.telemetry.base_attributes(),
            calls: meter
                .u64_counter("steadfast.bulkhead.calls")
                .with_unit("{call}")
                .with_description("Calls made through the bulkhead, refused ones included")
                .build(),
            rejected: meter
                .u64_counter("steadfast.bulkhead.rejected")
                .with_unit("{call}")
                .with_description("Calls refused by the bulkhead, by reason")
                .build(),
            wait_time: self.telemetry.records_duration().then(|| {
                meter
                    .f64_histogram("steadfast.bulkhead.wait")
                    .with_unit("s")
                    .with_boundaries(crate::telemetry::DURATION_BOUNDARIES.to_vec())
                    .with_description(
                        "Time calls spent in the bulkhead's queue (calls that queued)",
                    )
                    .build()
            }),
            telemetry: self.telemetry,
        });
        for (name, description, read) in [
            (
                "steadfast.bulkhead.in_flight",
                "Calls in flight through the bulkhead",
                Shared::in_flight as fn(&Shared) -> usize,
            ),
            (
                "steadfast.bulkhead.queued",
                "Calls waiting in the bulkhead's queue",
                Shared::queued,
            ),
        ] {
            let weak: Weak<Shared> = Arc::downgrade(&shared);
            let _gauge = meter
                .u64_observable_gauge(name)
                .with_unit("{call}")
                .with_description(description)
                .with_callback(move |gauge| {
                    if let Some(s) = weak.upgrade() {
                        gauge.observe(read(&s) as u64, s.attrs.base());
                    }
                })
                .build();
        }
        Ok(BulkheadLayer {
            shared,
            _error: PhantomData,
        })
    }
}

/// `max_concurrent`: in `[1, Semaphore::MAX_PERMITS]`. The one check, for the builder and the
/// handle.
fn check_max_concurrent(n: usize) -> Result<usize, ConfigError> {
    if n == 0 {
        return Err(ConfigError::zero("max_concurrent"));
    }
    if n > Semaphore::MAX_PERMITS {
        return Err(ConfigError::out_of_range(
            "max_concurrent",
            n,
            "[1, usize::MAX >> 3]",
        ));
    }
    Ok(n)
}

/// Changes a [`BulkheadLayer`]'s most calls in flight at run time; cheap to clone. From
/// [`BulkheadLayer::handle`].
///
/// Raising it serves queued calls at once; lowering it below the calls in flight drops none of
/// them: they finish, and new calls queue (within `max_queue` and `max_wait`) until fewer than
/// the new maximum are in flight. The queue bound and wait are fixed when the layer is built.
///
/// ```
/// use steadfast_layers::bulkhead::BulkheadLayer;
/// let layer = BulkheadLayer::builder(10).build()?;
/// let handle = layer.handle();
/// handle.set_max_concurrent(4)?;
/// assert_eq!(handle.max_concurrent(), 4);
/// assert_eq!(handle.set_max_concurrent(0).unwrap_err().path(), "max_concurrent");
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct BulkheadHandle {
    shared: Arc<Shared>,
}

impl BulkheadHandle {
    /// Sets the most calls in flight at once, as [`BulkheadLayer::builder`]'s `max_concurrent`.
    ///
    /// ```
    /// # use steadfast_layers::bulkhead::BulkheadLayer;
    /// let h = BulkheadLayer::builder(2).build()?.handle();
    /// h.set_max_concurrent(5)?;
    /// assert!(h.set_max_concurrent(usize::MAX).is_err());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn set_max_concurrent(&self, n: usize) -> Result<(), ConfigError> {
        let n = check_max_concurrent(n)?;
        self.shared.gate.set_max(n);
        Ok(())
    }

    /// The most calls in flight at once, in force now.
    ///
    /// ```
    /// # use steadfast_layers::bulkhead::BulkheadLayer;
    /// assert_eq!(BulkheadLayer::builder(3).build()?.handle().max_concurrent(), 3);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn max_concurrent(&self) -> usize {
        self.shared.gate.max()
    }
}
