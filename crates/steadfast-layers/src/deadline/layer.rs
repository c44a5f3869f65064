use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;
use tracing::Span;

use super::{DeadlineService, TaskLocal, MAX_TIMEOUT};
use crate::error::ConfigError;
use crate::error_type::{Boxed, Typed};
use crate::telemetry::{ms, CallCounts, DefaultShared, SharedRef, Telemetry};

/// Sets or shrinks the end-to-end deadline of each call, enforces it, and puts it in scope for
/// everything the inner service does.
///
/// Built by [`DeadlineLayer::builder`]; [`DeadlineLayer::new`] and [`DeadlineLayer::inherit`] are
/// shortcuts. See the [module docs](super) for the semantics.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::deadline::{DeadlineLayer, HttpExtensions};
/// use steadfast_layers::telemetry::Telemetry;
///
/// let layer = DeadlineLayer::builder()
///     .timeout(Duration::from_secs(2))
///     .carrier(HttpExtensions)
///     .telemetry(Telemetry::new().name("checkout"))
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
///
/// Its services fail with [`BoxError`](crate::BoxError) by default; see
/// [`DeadlineLayer::with_error`] for an error type of your own that holds
/// [`DeadlineExceeded`](super::DeadlineExceeded) inline, so that a call refused or cut off by
/// its deadline allocates nothing.
#[derive(Clone, Debug)]
pub struct DeadlineLayer<C = TaskLocal, K = Boxed> {
    pub(super) timeout: Option<Duration>,
    pub(super) carrier: C,
    pub(super) shared: SharedRef<Shared>,
    pub(super) _error: PhantomData<fn() -> K>,
}

/// The layer's telemetry: its calls, and the calls that ran out of deadline (`refused`).
pub(super) type Shared = CallCounts;

impl DeadlineLayer {
    /// A builder with no timeout of its own (inherit only), the [`TaskLocal`] carrier and default
    /// telemetry.
    ///
    /// ```
    /// # use steadfast_layers::deadline::DeadlineLayer;
    /// let layer = DeadlineLayer::builder().build()?;
    /// assert_eq!(layer.timeout(), None);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder() -> DeadlineLayerBuilder {
        DeadlineLayerBuilder {
            timeout: None,
            carrier: TaskLocal,
            telemetry: Telemetry::default(),
        }
    }

    /// Gives each call at most `timeout`, shrinking any inherited deadline to it.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::deadline::DeadlineLayer;
    /// assert!(DeadlineLayer::new(Duration::from_millis(300)).is_ok());
    /// assert!(DeadlineLayer::new(Duration::ZERO).is_err());
    /// ```
    pub fn new(timeout: Duration) -> Result<Self, ConfigError> {
        Self::builder().timeout(timeout).build()
    }

    /// Enforces the inherited deadline only (from the task-local scope), adding none of its own.
    ///
    /// ```
    /// # use steadfast_layers::deadline::DeadlineLayer;
    /// assert_eq!(DeadlineLayer::inherit().timeout(), None);
    /// ```
    pub fn inherit() -> Self {
        let telemetry = Telemetry::default();
        DeadlineLayer {
            timeout: None,
            carrier: TaskLocal,
            shared: shared(telemetry),
            _error: PhantomData,
        }
    }
}

impl<C> DeadlineLayer<C> {
    /// Services that fail with `E` instead of [`BoxError`](crate::BoxError): the inner error
    /// by `Into<E>`, and [`DeadlineExceeded`](super::DeadlineExceeded) by `From`, so that a
    /// call whose deadline had passed on arrival, or passed in flight, allocates nothing (see
    /// [`error_type`](crate::error_type)).
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use steadfast_layers::deadline::{Deadline, DeadlineExceeded, DeadlineLayer};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// #[derive(Debug)]
    /// enum CallError {
    ///     Deadline(DeadlineExceeded),
    /// }
    /// impl From<DeadlineExceeded> for CallError {
    ///     fn from(e: DeadlineExceeded) -> Self { CallError::Deadline(e) }
    /// }
    /// impl From<Infallible> for CallError {
    ///     fn from(e: Infallible) -> Self { match e {} }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::ConfigError> {
    /// let layer = DeadlineLayer::new(Duration::from_secs(1))?.with_error::<CallError>();
    /// let svc = layer.layer(service_fn(|()| async { Ok::<_, Infallible>(()) }));
    /// // The caller's deadline has already passed: refused without calling the service.
    /// let passed = Deadline::at(tokio::time::Instant::now());
    /// match passed.scope(svc.oneshot(())).await {
    ///     Err(CallError::Deadline(e)) => assert!(e.on_arrival()),
    ///     other => panic!("expected a refusal, got {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn with_error<E>(self) -> DeadlineLayer<C, Typed<E>> {
        DeadlineLayer {
            timeout: self.timeout,
            carrier: self.carrier,
            shared: self.shared,
            _error: PhantomData,
        }
    }
}

impl<C, K> DeadlineLayer<C, K> {
    /// The layer's own timeout, if it has one.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::deadline::DeadlineLayer;
    /// let l = DeadlineLayer::new(Duration::from_secs(1))?;
    /// assert_eq!(l.timeout(), Some(Duration::from_secs(1)));
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

/// The shared state of every deadline layer built with default telemetry.
static DEFAULT: DefaultShared<Shared> = DefaultShared::new();

/// The layer's shared state, made from its telemetry.
fn shared(telemetry: Telemetry) -> SharedRef<Shared> {
    SharedRef::new(telemetry, &DEFAULT, build)
}

fn build(telemetry: Telemetry) -> Shared {
    CallCounts::build(
        telemetry,
        (
            "steadfast.deadline.calls",
            "Calls made through the deadline layer",
        ),
        (
            "steadfast.deadline.exceeded",
            "Calls that ran out of end-to-end deadline, by stage",
        ),
    )
}

/// The shared state of the layers with default telemetry.
fn default_shared() -> &'static Shared {
    DEFAULT.get(build)
}

/// What a call's response future keeps of its layer, in one word: nothing on an untraced call
/// through a layer with default telemetry, else the layer's shared state and, when a subscriber
/// wants it, the call's span. One word, not the three of a shared reference and a span, keeps
/// the future within what the compiler copies inline (ADR 0008, decision 22).
#[derive(Clone, Debug)]
pub(super) struct CallRef(Option<Arc<CallShared>>);

#[derive(Debug)]
struct CallShared {
    shared: SharedRef<Shared>,
    span: Option<Span>,
}

impl CallRef {
    /// What the untraced calls of a service sharing `shared` keep (made once per service).
    pub(super) fn untraced(shared: &SharedRef<Shared>) -> Self {
        match shared {
            SharedRef::Static(_) => CallRef(None),
            SharedRef::Owned(_) => CallRef(Some(Arc::new(CallShared {
                shared: shared.clone(),
                span: None,
            }))),
        }
    }

    /// What a call with `remaining` time keeps, for a service whose untraced calls keep
    /// `self`: `self` again, or, when a subscriber wants the call's span, the span beside
    /// `shared` (one allocation, as a span takes).
    #[inline]
    pub(super) fn for_call(&self, shared: &SharedRef<Shared>, remaining: Duration) -> Self {
        if tracing::enabled!(target: "steadfast::deadline", tracing::Level::DEBUG) {
            Self::traced(shared, remaining)
        } else {
            self.clone()
        }
    }

    #[cold]
    #[inline(never)]
    fn traced(shared: &SharedRef<Shared>, remaining: Duration) -> Self {
        let span = tracing::debug_span!(
            target: "steadfast::deadline",
            "steadfast.deadline",
            instance = shared.telemetry.span_name(),
            deadline_remaining_ms = ms(remaining),
        );
        CallRef(Some(Arc::new(CallShared {
            shared: shared.clone(),
            span: Some(span),
        })))
    }

    /// The call's span, if a subscriber wanted one.
    #[inline]
    pub(super) fn span(&self) -> Option<&Span> {
        self.0.as_deref().and_then(|c| c.span.as_ref())
    }

    /// The layer's shared state.
    pub(super) fn shared(&self) -> &Shared {
        match &self.0 {
            Some(c) => &c.shared,
            None => default_shared(),
        }
    }
}

impl<S, C: Clone, K> Layer<S> for DeadlineLayer<C, K> {
    type Service = DeadlineService<S, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            timeout: self.timeout,
            carrier: self.carrier.clone(),
            call_ref: CallRef::untraced(&self.shared),
            shared: self.shared.clone(),
            _error: PhantomData,
        }
    }
}

/// Builds a [`DeadlineLayer`], validating its configuration.
///
/// ```
/// # use std::time::Duration;
/// # use steadfast_layers::deadline::DeadlineLayer;
/// let err = DeadlineLayer::builder().timeout(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err.path(), "timeout");
/// ```
#[derive(Clone, Debug)]
pub struct DeadlineLayerBuilder<C = TaskLocal> {
    timeout: Option<Duration>,
    carrier: C,
    telemetry: Telemetry,
}

impl<C> DeadlineLayerBuilder<C> {
    /// The layer's own timeout: each call's deadline becomes the earlier of `now + timeout` and
    /// the inherited one. Must be non-zero and at most [`MAX_TIMEOUT`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::deadline::DeadlineLayer;
    /// let l = DeadlineLayer::builder().timeout(Duration::from_secs(1)).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Where besides the task-local scope the deadline travels (e.g. [`HttpExtensions`](super::HttpExtensions)).
    ///
    /// ```
    /// # use steadfast_layers::deadline::{DeadlineLayer, HttpExtensions};
    /// let l = DeadlineLayer::builder().carrier(HttpExtensions).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn carrier<C2>(self, carrier: C2) -> DeadlineLayerBuilder<C2> {
        DeadlineLayerBuilder {
            timeout: self.timeout,
            carrier,
            telemetry: self.telemetry,
        }
    }

    /// Where and how to record telemetry.
    ///
    /// ```
    /// # use steadfast_layers::{deadline::DeadlineLayer, telemetry::Telemetry};
    /// let l = DeadlineLayer::builder().telemetry(Telemetry::new().name("api")).build()?;
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
    /// # use steadfast_layers::deadline::DeadlineLayer;
    /// assert!(DeadlineLayer::builder().timeout(Duration::from_secs(u64::MAX)).build().is_err());
    /// ```
    pub fn build(self) -> Result<DeadlineLayer<C>, ConfigError> {
        if let Some(t) = self.timeout {
            if t.is_zero() {
                return Err(ConfigError::zero("timeout"));
            }
            if t > MAX_TIMEOUT {
                return Err(ConfigError::out_of_range(
                    "timeout",
                    t,
                    "(0, 99999999 h] (the largest grpc-timeout)",
                ));
            }
        }
        Ok(DeadlineLayer {
            timeout: self.timeout,
            carrier: self.carrier,
            shared: shared(self.telemetry),
            _error: PhantomData,
        })
    }
}
