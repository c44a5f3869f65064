use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;

use super::layer::Shared;
use super::{OverloadReason, Overloaded, ResponseFuture, ThrottleHandle};
use crate::classify::{Classifier, RetryOnError};
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::telemetry::REASON_KEY;

/// The service made by [`ThrottleLayer`](super::ThrottleLayer).
///
/// ```
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_layers::adaptive_throttle::{Overloaded, ThrottleLayer};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let layer = ThrottleLayer::builder().seed(1).build().unwrap();
/// let handle = layer.handle();
/// // A backend refusing everything.
/// let svc = layer.layer(service_fn(|()| async {
///     Err::<(), _>(steadfast_layers::BoxError::from("overloaded"))
/// }));
/// let mut local = 0;
/// for _ in 0..100 {
///     let err = svc.clone().oneshot(()).await.unwrap_err();
///     if err.is::<Overloaded>() { local += 1; }
/// }
/// // With no accepts the probability climbs towards 1: most calls never leave the client.
/// assert!(local > 80, "{local}");
/// assert!(handle.rejection_probability() > 0.95);
/// # }
/// ```
pub struct Throttle<S, C = RetryOnError, K = Boxed> {
    pub(super) inner: S,
    pub(super) classifier: C,
    pub(super) shared: Arc<Shared>,
    /// The error type its calls fail with (see
    /// [`ThrottleLayer::with_error`](super::ThrottleLayer::with_error)).
    pub(super) _error: PhantomData<fn() -> K>,
}

impl<S: Clone, C: Clone, K> Clone for Throttle<S, C, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            classifier: self.classifier.clone(),
            shared: Arc::clone(&self.shared),
            _error: PhantomData,
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug, K> fmt::Debug for Throttle<S, C, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Throttle")
            .field("inner", &self.inner)
            .field("classifier", &self.classifier)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, C, K> Throttle<S, C, K> {
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

    /// A view of the shared state.
    pub fn handle(&self) -> ThrottleHandle {
        ThrottleHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, C, K, Req> Service<Req> for Throttle<S, C, K>
where
    S: Service<Req>,
    K: MakeRefusal<S::Error, Overloaded>,
    C: Classifier<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = <K as MakeError<S::Error>>::Error;
    type Future = ResponseFuture<S::Future, C, K>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(K::inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        shared.calls.add(1, shared.attrs.base());
        let index = shared.window.index(Instant::now());
        let (requests, accepts) = shared.window.sums(index);
        let p = shared.probability(requests, accepts);
        shared.window.add_request(index);
        if p > 0.0 && shared.rng.next_f64() < p {
            let reason = OverloadReason::Throttled;
            shared.attrs.with(REASON_KEY, reason.label(), |a| {
                shared.rejected.add(1, a);
            });
            tracing::debug!(
                target: "steadfast::throttle",
                instance = shared.telemetry.span_name(),
                reason = reason.label(),
                probability = p,
                requests,
                accepts,
                "throttled: call rejected locally"
            );
            return ResponseFuture::rejected(Overloaded::new("adaptive_throttle", reason));
        }
        let fut = self.inner.call(req);
        ResponseFuture::called(
            fut,
            self.classifier.clone(),
            index,
            Arc::clone(&self.shared),
        )
    }
}
