use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;
use tracing::Span;

use arc_swap::Cache;

use super::layer::{Active, ActiveOf, Refusal, Shared};
use super::{Overloaded, ResponseFuture};
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::keyed::{Global, KeyExtractor};
use crate::telemetry::ms;

/// The service made by [`RateLimitLayer`](super::RateLimitLayer).
///
/// Readiness is the inner service's: the rate is checked when the call is made. A call that
/// waits for a cell keeps the service that was driven to readiness and calls it once the cell is
/// taken, which is why the inner service must be `Clone`.
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_layers::rate::{Overloaded, RateLimitLayer};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let svc = RateLimitLayer::builder(2, Duration::from_secs(1))
///     .build()
///     .unwrap()
///     .layer(service_fn(|()| async { Ok::<_, std::convert::Infallible>(()) }));
/// svc.clone().oneshot(()).await.unwrap();
/// svc.clone().oneshot(()).await.unwrap(); // the burst of 2 is spent
/// let err = svc.clone().oneshot(()).await.unwrap_err();
/// let o = err.downcast_ref::<Overloaded>().unwrap();
/// assert_eq!(o.retry_after(), Some(Duration::from_millis(500)));
/// # }
/// ```
pub struct RateLimit<S, X = Global, K = Boxed> {
    pub(super) inner: S,
    pub(super) extractor: X,
    pub(super) shared: Arc<Shared>,
    /// The quota in force, as last seen: one relaxed load per call tells whether a handle has
    /// changed it since.
    pub(super) active: Cache<ActiveOf, Arc<Active>>,
    /// The error type its calls fail with (see
    /// [`RateLimitLayer::with_error`](super::RateLimitLayer::with_error)).
    pub(super) _error: PhantomData<fn() -> K>,
}

impl<S: Clone, X: Clone, K> Clone for RateLimit<S, X, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            extractor: self.extractor.clone(),
            shared: Arc::clone(&self.shared),
            active: self.active.clone(),
            _error: PhantomData,
        }
    }
}

impl<S: fmt::Debug, X: fmt::Debug, K> fmt::Debug for RateLimit<S, X, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("extractor", &self.extractor)
            .field("shared", &self.shared)
            .field("active", &self.active)
            .finish()
    }
}

impl<S, X, K> RateLimit<S, X, K> {
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
}

impl<S, X, K, Req> Service<Req> for RateLimit<S, X, K>
where
    S: Service<Req> + Clone,
    K: MakeRefusal<S::Error, Overloaded>,
    X: KeyExtractor<Req>,
{
    type Response = S::Response;
    type Error = <K as MakeError<S::Error>>::Error;
    type Future = ResponseFuture<S, Req, K>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(K::inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        shared.calls.add(1, shared.attrs.base());
        let key = shared.digest(|| self.extractor.key(&req));
        let wait = match shared.check_with(self.active.load(), key) {
            // The hot path: no span, no event.
            Ok(()) => return ResponseFuture::called(self.inner.call(req)),
            Err(Refusal::RateLimited(wait)) if shared.wait => wait,
            Err(refusal) => return ResponseFuture::refused(shared, refusal, Span::none()),
        };
        let now = Instant::now();
        let deadline = shared.max_wait.and_then(|w| now.checked_add(w));
        if deadline.is_some_and(|d| now + wait > d) {
            return ResponseFuture::refused(shared, Refusal::RateLimited(wait), Span::none());
        }
        // A call that waits gets a span: the wait and the call show in traces.
        let span = tracing::debug_span!(
            target: "steadfast::rate",
            "steadfast.rate",
            instance = shared.telemetry.span_name(),
        );
        span.in_scope(|| {
            tracing::debug!(
                target: "steadfast::rate",
                wait_ms = ms(wait),
                "rate limited: waiting for a cell"
            );
        });
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::waiting(
            now,
            wait,
            deadline,
            key,
            service,
            req,
            Arc::clone(&self.shared),
            span,
        )
    }
}
