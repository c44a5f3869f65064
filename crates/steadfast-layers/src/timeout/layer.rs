use std::marker::PhantomData;
use std::time::Duration;

use opentelemetry::metrics::Counter;
use tower_layer::Layer;

use super::AttemptTimeout;
use crate::deadline::MAX_TIMEOUT;
use crate::error::ConfigError;
use crate::error_type::{Boxed, Typed};
use crate::telemetry::{Attrs, DefaultShared, SharedRef, Telemetry};

/// Bounds each attempt by `min(timeout, remaining deadline)`.
///
/// When the configured timeout fires the call fails with [`Elapsed`](super::Elapsed); when the
/// end-to-end deadline fires first it fails with
/// [`DeadlineExceeded`](crate::deadline::DeadlineExceeded), so that a retry layer above knows
/// not to try again.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::timeout::AttemptTimeoutLayer;
/// let layer = AttemptTimeoutLayer::new(Duration::from_millis(200))?;
/// assert_eq!(layer.timeout(), Some(Duration::from_millis(200)));
/// assert!(AttemptTimeoutLayer::new(Duration::ZERO).is_err());
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
///
/// Its services fail with [`BoxError`](crate::BoxError) by default; see
/// [`AttemptTimeoutLayer::with_error`] for an error type of your own that holds both nouns
/// inline, so that an attempt cut off allocates nothing.
#[derive(Clone, Debug)]
pub struct AttemptTimeoutLayer<K = Boxed> {
    timeout: Option<Duration>,
    shared: SharedRef<Shared>,
    _error: PhantomData<fn() -> K>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) calls: Counter<u64>,
    pub(super) elapsed: Counter<u64>,
    pub(super) deadline_exceeded: Counter<u64>,
    pub(super) attrs: Attrs,
}

impl Shared {
    pub(crate) fn new(telemetry: &Telemetry) -> SharedRef<Self> {
        static DEFAULT: DefaultShared<Shared> = DefaultShared::new();
        SharedRef::new(telemetry.clone(), &DEFAULT, |t| Self::build(&t))
    }

    fn build(telemetry: &Telemetry) -> Self {
        let meter = telemetry.resolve_meter();
        Shared {
            calls: meter
                .u64_counter("steadfast.timeout.calls")
                .with_unit("{call}")
                .with_description("Attempts made through the per-attempt timeout layer")
                .build(),
            elapsed: meter
                .u64_counter("steadfast.timeout.elapsed")
                .with_unit("{call}")
                .with_description("Attempts that exceeded their per-attempt timeout")
                .build(),
            deadline_exceeded: meter
                .u64_counter("steadfast.deadline.exceeded")
                .with_unit("{call}")
                .with_description("Calls that ran out of end-to-end deadline, by stage")
                .build(),
            attrs: telemetry.base_attributes(),
        }
    }
}

impl AttemptTimeoutLayer {
    /// Each attempt gets at most `timeout` (non-zero, at most
    /// [`MAX_TIMEOUT`](crate::deadline::MAX_TIMEOUT)), and never more than the deadline leaves.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::timeout::AttemptTimeoutLayer;
    /// assert!(AttemptTimeoutLayer::new(Duration::from_secs(1)).is_ok());
    /// ```
    pub fn new(timeout: Duration) -> Result<Self, ConfigError> {
        Self::with_telemetry(Some(timeout), &Telemetry::default())
    }

    /// Each attempt is bounded by the deadline only.
    ///
    /// ```
    /// # use steadfast_layers::timeout::AttemptTimeoutLayer;
    /// assert_eq!(AttemptTimeoutLayer::deadline_only().timeout(), None);
    /// ```
    pub fn deadline_only() -> Self {
        Self {
            timeout: None,
            shared: Shared::new(&Telemetry::default()),
            _error: PhantomData,
        }
    }

    /// Like [`AttemptTimeoutLayer::new`] (or [`AttemptTimeoutLayer::deadline_only`] for `None`),
    /// recording telemetry as `telemetry` says.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::{telemetry::Telemetry, timeout::AttemptTimeoutLayer};
    /// let l = AttemptTimeoutLayer::with_telemetry(Some(Duration::from_secs(1)), &Telemetry::new().name("db"))?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn with_telemetry(
        timeout: Option<Duration>,
        telemetry: &Telemetry,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            timeout: validate(timeout)?,
            shared: Shared::new(telemetry),
            _error: PhantomData,
        })
    }

    /// Services that fail with `E` instead of [`BoxError`](crate::BoxError): the inner error
    /// by `Into<E>`, and [`Elapsed`](super::Elapsed) and
    /// [`DeadlineExceeded`](crate::deadline::DeadlineExceeded) by `From`, so that an attempt
    /// cut off by its timeout or by the deadline allocates nothing (see
    /// [`error_type`](crate::error_type)). A retry layer above reads `E` through its classifier
    /// ([`AsErrorRef`](crate::classify::AsErrorRef) for the default one).
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use std::time::Duration;
    /// use steadfast_layers::deadline::DeadlineExceeded;
    /// use steadfast_layers::timeout::{AttemptTimeoutLayer, Elapsed};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// #[derive(Debug)]
    /// enum CallError {
    ///     Elapsed(Elapsed),
    ///     Deadline(DeadlineExceeded),
    /// }
    /// impl From<Elapsed> for CallError {
    ///     fn from(e: Elapsed) -> Self { CallError::Elapsed(e) }
    /// }
    /// impl From<DeadlineExceeded> for CallError {
    ///     fn from(e: DeadlineExceeded) -> Self { CallError::Deadline(e) }
    /// }
    /// impl From<Infallible> for CallError {
    ///     fn from(e: Infallible) -> Self { match e {} }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::ConfigError> {
    /// let layer = AttemptTimeoutLayer::new(Duration::from_millis(100))?.with_error::<CallError>();
    /// let stuck = service_fn(|()| std::future::pending::<Result<(), Infallible>>());
    /// match layer.layer(stuck).oneshot(()).await {
    ///     Err(CallError::Elapsed(e)) => assert_eq!(e.timeout(), Duration::from_millis(100)),
    ///     other => panic!("expected the attempt to time out, got {other:?}"),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn with_error<E>(self) -> AttemptTimeoutLayer<Typed<E>> {
        AttemptTimeoutLayer {
            timeout: self.timeout,
            shared: self.shared,
            _error: PhantomData,
        }
    }
}

impl<K> AttemptTimeoutLayer<K> {
    /// The configured per-attempt timeout.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::timeout::AttemptTimeoutLayer;
    /// assert_eq!(AttemptTimeoutLayer::new(Duration::from_secs(3))?.timeout(), Some(Duration::from_secs(3)));
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
}

pub(crate) fn validate(timeout: Option<Duration>) -> Result<Option<Duration>, ConfigError> {
    match timeout {
        Some(t) if t.is_zero() => Err(ConfigError::zero("attempt_timeout")),
        Some(t) if t > MAX_TIMEOUT => Err(ConfigError::out_of_range(
            "attempt_timeout",
            t,
            "(0, 99999999 h]",
        )),
        other => Ok(other),
    }
}

impl<S, K> Layer<S> for AttemptTimeoutLayer<K> {
    type Service = AttemptTimeout<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptTimeout {
            inner,
            timeout: self.timeout,
            shared: self.shared.clone(),
            _error: PhantomData,
        }
    }
}
