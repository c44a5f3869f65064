use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::metrics::Counter;
use tower_layer::Layer;

use super::{DeadlineService, TaskLocal, MAX_TIMEOUT};
use crate::error::ConfigError;
use crate::telemetry::{Attrs, SharedRef, Telemetry};

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
#[derive(Clone, Debug)]
pub struct DeadlineLayer<C = TaskLocal> {
    pub(super) timeout: Option<Duration>,
    pub(super) carrier: C,
    pub(super) shared: SharedRef<Shared>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) calls: Counter<u64>,
    pub(super) exceeded: Counter<u64>,
    pub(super) attrs: Attrs,
    pub(super) telemetry: Telemetry,
}

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
            shared: Shared::new(telemetry),
        }
    }
}

impl<C> DeadlineLayer<C> {
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

impl Shared {
    fn new(telemetry: Telemetry) -> SharedRef<Self> {
        static DEFAULT: OnceLock<Shared> = OnceLock::new();
        SharedRef::new(&telemetry.clone(), &DEFAULT, move || {
            let meter = telemetry.resolve_meter();
            Shared {
                calls: meter
                    .u64_counter("steadfast.deadline.calls")
                    .with_unit("{call}")
                    .with_description("Calls made through the deadline layer")
                    .build(),
                exceeded: meter
                    .u64_counter("steadfast.deadline.exceeded")
                    .with_unit("{call}")
                    .with_description("Calls that ran out of end-to-end deadline, by stage")
                    .build(),
                attrs: telemetry.base_attributes(),
                telemetry,
            }
        })
    }
}

impl<S, C: Clone> Layer<S> for DeadlineLayer<C> {
    type Service = DeadlineService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            timeout: self.timeout,
            carrier: self.carrier.clone(),
            shared: self.shared.clone(),
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
            shared: Shared::new(self.telemetry),
        })
    }
}
