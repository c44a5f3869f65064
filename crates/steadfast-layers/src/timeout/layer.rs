use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::metrics::Counter;
use tower_layer::Layer;

use super::AttemptTimeout;
use crate::deadline::MAX_TIMEOUT;
use crate::error::ConfigError;
use crate::telemetry::{Attrs, SharedRef, Telemetry};

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
#[derive(Clone, Debug)]
pub struct AttemptTimeoutLayer {
    timeout: Option<Duration>,
    shared: SharedRef<Shared>,
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
        static DEFAULT: OnceLock<Shared> = OnceLock::new();
        SharedRef::new(telemetry, &DEFAULT, || Self::build(telemetry))
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
        })
    }

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

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptTimeout {
            inner,
            timeout: self.timeout,
            shared: self.shared.clone(),
        }
    }
}
