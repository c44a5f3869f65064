use std::fmt;
use std::sync::Arc;

use opentelemetry::metrics::Counter;
use tower_layer::Layer;

use super::{AnyError, AsyncFallback, Fallback, OnError, OnFailure, SyncFallback};
use crate::error::ConfigError;
use crate::telemetry::{Attrs, Telemetry};
use crate::BoxError;

/// Replaces chosen failures with an alternative response from a function.
///
/// Built by [`FallbackLayer::from_fn`] (synchronous), [`FallbackLayer::from_async_fn`]
/// (asynchronous) or [`FallbackLayer::builder`] (any [`FallbackAction`](super::FallbackAction)),
/// then told which failures to replace: any error by default, [`on_error`](FallbackLayerBuilder::on_error),
/// [`on_failure`](FallbackLayerBuilder::on_failure) or any [`policy`](FallbackLayerBuilder::policy).
///
/// ```
/// use steadfast_layers::deadline::DeadlineExceeded;
/// use steadfast_layers::fallback::{Failure, FallbackLayer};
/// use steadfast_layers::BoxError;
///
/// let layer = FallbackLayer::from_fn(|_f: Failure<&'static str>| "cached")
///     .on_error(|e: &BoxError| e.is::<DeadlineExceeded>())
///     .build()?;
/// # let _ = layer;
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
pub struct FallbackLayer<A, P = AnyError> {
    shared: Arc<Shared<A, P>>,
}

impl<A, P> Clone for FallbackLayer<A, P> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<A, P> fmt::Debug for FallbackLayer<A, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("instance", &self.shared.telemetry.instance_name())
            .finish_non_exhaustive()
    }
}

/// What every clone of one fallback layer shares.
pub(super) struct Shared<A, P> {
    pub(super) action: A,
    pub(super) policy: P,
    pub(super) telemetry: Telemetry,
    pub(super) attrs: Attrs,
    pub(super) calls: Counter<u64>,
    pub(super) invoked: Counter<u64>,
    pub(super) failed: Counter<u64>,
}

impl FallbackLayer<(), AnyError> {
    /// A builder whose fallback is the synchronous, infallible `f`.
    ///
    /// ```
    /// # use steadfast_layers::fallback::{Failure, FallbackLayer};
    /// let l = FallbackLayer::from_fn(|f: Failure<String>| format!("degraded ({})", f.reason())).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn from_fn<F>(f: F) -> FallbackLayerBuilder<SyncFallback<F>> {
        Self::builder(SyncFallback::new(f))
    }

    /// A builder whose fallback is the asynchronous `f`, which may fail (its error comes back
    /// wrapped in [`FallbackFailed`](super::FallbackFailed)).
    ///
    /// ```
    /// # use steadfast_layers::{fallback::{Failure, FallbackLayer}, BoxError};
    /// let l = FallbackLayer::from_async_fn(|_f: Failure<u32>| async { Ok::<_, BoxError>(0) }).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn from_async_fn<F>(f: F) -> FallbackLayerBuilder<AsyncFallback<F>> {
        Self::builder(AsyncFallback::new(f))
    }

    /// A builder for any [`FallbackAction`](super::FallbackAction), falling back on every error
    /// until told otherwise.
    ///
    /// ```
    /// # use steadfast_layers::fallback::{Failure, FallbackLayer, SyncFallback};
    /// let l = FallbackLayer::builder(SyncFallback::new(|_f: Failure<u8>| 0)).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder<A>(action: A) -> FallbackLayerBuilder<A> {
        FallbackLayerBuilder {
            action,
            policy: AnyError,
            telemetry: Telemetry::default(),
        }
    }
}

impl<S, A, P> Layer<S> for FallbackLayer<A, P> {
    type Service = Fallback<S, A, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            inner,
            shared: Arc::clone(&self.shared),
            not_ready: None,
        }
    }
}

/// Builds a [`FallbackLayer`].
///
/// ```
/// # use steadfast_layers::{classify::Outcome, fallback::{Failure, FallbackLayer}, BoxError};
/// let l = FallbackLayer::from_fn(|_f: Failure<u16>| 200)
///     .on_failure(|r: &Result<u16, BoxError>| match r {
///         Ok(503) => Outcome::retryable("unavailable"),
///         Ok(_) => Outcome::Success,
///         Err(_) => Outcome::retryable("error"),
///     })
///     .build()?;
/// # let _ = l;
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
pub struct FallbackLayerBuilder<A, P = AnyError> {
    action: A,
    policy: P,
    telemetry: Telemetry,
}

impl<A, P> fmt::Debug for FallbackLayerBuilder<A, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayerBuilder")
            .field("telemetry", &self.telemetry)
            .finish_non_exhaustive()
    }
}

impl<A, P> FallbackLayerBuilder<A, P> {
    /// Falls back on the errors `predicate` accepts (e.g. `e.is::<DeadlineExceeded>()`), and on no
    /// response. Replaces any previous choice.
    ///
    /// ```
    /// # use steadfast_layers::{fallback::{Failure, FallbackLayer}, timeout::Elapsed, BoxError};
    /// let l = FallbackLayer::from_fn(|_f: Failure<u8>| 0)
    ///     .on_error(|e: &BoxError| e.is::<Elapsed>())
    ///     .build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn on_error<F>(self, predicate: F) -> FallbackLayerBuilder<A, OnError<F>>
    where
        F: Fn(&BoxError) -> bool,
    {
        self.policy(OnError(predicate))
    }

    /// Falls back on whatever `classifier` calls a failure, responses included (see
    /// [`crate::classify`]). Replaces any previous choice.
    ///
    /// ```
    /// # use steadfast_layers::{classify::RetryOnError, fallback::{Failure, FallbackLayer}};
    /// let l = FallbackLayer::from_fn(|_f: Failure<u8>| 0).on_failure(RetryOnError).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn on_failure<C>(self, classifier: C) -> FallbackLayerBuilder<A, OnFailure<C>> {
        self.policy(OnFailure(classifier))
    }

    /// Falls back as `policy` decides (see [`FallbackPolicy`](super::FallbackPolicy); combine
    /// two with [`Or`](super::Or)). Replaces any previous choice.
    ///
    /// ```
    /// # use steadfast_layers::{fallback::{Failure, FallbackLayer}, BoxError};
    /// let l = FallbackLayer::from_fn(|_f: Failure<u16>| 0)
    ///     .policy(|r: &Result<u16, BoxError>| matches!(r, Ok(s) if *s >= 500).then_some("server_error"))
    ///     .build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn policy<P2>(self, policy: P2) -> FallbackLayerBuilder<A, P2> {
        FallbackLayerBuilder {
            action: self.action,
            policy,
            telemetry: self.telemetry,
        }
    }

    /// Where and how to record telemetry.
    ///
    /// ```
    /// # use steadfast_layers::{fallback::{Failure, FallbackLayer}, telemetry::Telemetry};
    /// let l = FallbackLayer::from_fn(|_f: Failure<u8>| 0).telemetry(Telemetry::new().name("prices")).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Builds the layer (nothing here can be invalid today; the `Result` keeps every builder
    /// alike).
    ///
    /// ```
    /// # use steadfast_layers::fallback::{Failure, FallbackLayer};
    /// assert!(FallbackLayer::from_fn(|_f: Failure<u8>| 0).build().is_ok());
    /// ```
    pub fn build(self) -> Result<FallbackLayer<A, P>, ConfigError> {
        let meter = self.telemetry.resolve_meter();
        Ok(FallbackLayer {
            shared: Arc::new(Shared {
                action: self.action,
                policy: self.policy,
                attrs: self.telemetry.base_attributes(),
                calls: meter
                    .u64_counter("steadfast.fallback.calls")
                    .with_unit("{call}")
                    .with_description("Calls made through the fallback layer")
                    .build(),
                invoked: meter
                    .u64_counter("steadfast.fallback.invoked")
                    .with_unit("{call}")
                    .with_description("Failures replaced by the fallback, by error.type")
                    .build(),
                failed: meter
                    .u64_counter("steadfast.fallback.failed")
                    .with_unit("{call}")
                    .with_description("Fallbacks that failed themselves, by reason")
                    .build(),
                telemetry: self.telemetry,
            }),
        })
    }
}
