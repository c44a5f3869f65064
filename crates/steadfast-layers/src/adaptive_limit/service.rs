use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;

use super::future::InFlight;
use super::layer::Core;
use super::{Algorithm, LimitHandle, OverloadReason, Overloaded, ResponseFuture, Vegas};
use crate::classify::{AsErrorRef, Classifier, RetryOnError};
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::telemetry::REASON_KEY;

/// The service made by [`AdaptiveLimitLayer`](super::AdaptiveLimitLayer).
///
/// A call is admitted if fewer calls than the current limit are in flight (over every clone),
/// and refused at once with [`Overloaded`] (`at_capacity`) otherwise. An admitted call's
/// round-trip time and outcome feed the algorithm when it completes; a call whose future is
/// dropped first frees its slot and counts as a drop, its wait a lower bound of its round-trip
/// time (see
/// [`cancelled_as_drops`](super::AdaptiveLimitLayerBuilder::cancelled_as_drops)).
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_layers::adaptive_limit::{AdaptiveLimitLayer, Aimd};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let layer = AdaptiveLimitLayer::builder()
///     .algorithm(Aimd::builder().initial_limit(4).build().unwrap())
///     .window(Duration::ZERO) // update after every call
///     .min_samples(1)
///     .build()
///     .unwrap();
/// let handle = layer.handle();
/// let svc = layer.layer(service_fn(|fail: bool| async move {
///     tokio::time::sleep(Duration::from_millis(5)).await;
///     if fail { Err(steadfast_layers::BoxError::from("overloaded")) } else { Ok(()) }
/// }));
/// svc.clone().oneshot(true).await.unwrap_err(); // a drop: 4 × 0.9 → 3
/// assert_eq!(handle.limit(), 3);
/// # }
/// ```
pub struct AdaptiveLimit<S, A = Vegas, C = RetryOnError, K = Boxed> {
    pub(super) inner: S,
    pub(super) classifier: C,
    pub(super) core: Arc<Core<A>>,
    /// The error type its calls fail with (see
    /// [`AdaptiveLimitLayer::with_error`](super::AdaptiveLimitLayer::with_error)).
    pub(super) _error: PhantomData<fn() -> K>,
}

impl<S: Clone, A, C: Clone, K> Clone for AdaptiveLimit<S, A, C, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            classifier: self.classifier.clone(),
            core: Arc::clone(&self.core),
            _error: PhantomData,
        }
    }
}

impl<S: fmt::Debug, A, C: fmt::Debug, K> fmt::Debug for AdaptiveLimit<S, A, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("inner", &self.inner)
            .field("classifier", &self.classifier)
            .field("core", &self.core)
            .finish()
    }
}

impl<S, A, C, K> AdaptiveLimit<S, A, C, K> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the layer's service, returning the inner one.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A view of the shared limit.
    pub fn handle(&self) -> LimitHandle {
        self.core.handle()
    }
}

impl<S, A, C, K, Req> Service<Req> for AdaptiveLimit<S, A, C, K>
where
    S: Service<Req>,
    K: MakeRefusal<S::Error, Overloaded>,
    <K as MakeError<S::Error>>::Error: AsErrorRef,
    A: Algorithm,
    C: Classifier<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = <K as MakeError<S::Error>>::Error;
    type Future = ResponseFuture<S::Future, C, A, K>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(K::inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let core = &*self.core;
        core.calls.add(1, core.attrs.base());
        let Some(in_flight) = core.gate.try_take() else {
            let reason = OverloadReason::AtCapacity;
            core.attrs.with(REASON_KEY, reason.label(), |a| {
                core.rejected.add(1, a);
            });
            tracing::debug!(
                target: "steadfast::adaptive",
                instance = core.telemetry.span_name(),
                reason = reason.label(),
                limit = core.gate.max(),
                "adaptive limit reached: call rejected"
            );
            return ResponseFuture::rejected(Overloaded::new("adaptive_limit", reason));
        };
        // The slot is released by the guard even if `call` panics or the future is dropped.
        let guard = InFlight::new(Arc::clone(&self.core), Instant::now(), in_flight);
        let fut = self.inner.call(req);
        ResponseFuture::admitted(fut, self.classifier.clone(), guard)
    }
}
