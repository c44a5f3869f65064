use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;
use tracing::Span;

use super::layer::{Shared, Slots};
use super::{OverloadReason, Overloaded, ResponseFuture};
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::gate::{Gate, Registered};
use crate::keyed::{Global, KeyExtractor};

/// The service made by [`ConcurrencyLimitLayer`](super::ConcurrencyLimitLayer).
///
/// Every clone shares the layer's permits. Readiness is the inner service's: the permit is taken
/// when the call is made (so an idle, ready clone holds none) and released when the response
/// future completes or is dropped. Waiting calls keep the service that was driven to readiness
/// and call it once they hold a permit, which is why the inner service must be `Clone`.
///
/// ```
/// use tower::{service_fn, Layer, Service, ServiceExt};
/// use steadfast_layers::limit::{ConcurrencyLimitLayer, OverloadReason, Overloaded};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let (tx, rx) = tokio::sync::oneshot::channel::<()>();
/// let rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
/// let inner = service_fn(move |_: ()| {
///     let rx = rx.clone();
///     async move {
///         if let Some(rx) = rx.lock().await.take() { let _ = rx.await; }
///         Ok::<_, std::convert::Infallible>("done")
///     }
/// });
/// let mut svc = ConcurrencyLimitLayer::new(1).unwrap().layer(inner);
///
/// let first = svc.ready().await.unwrap().call(());
/// // The only permit is held by `first`, even through a clone of the service.
/// let err = svc.clone().oneshot(()).await.unwrap_err();
/// assert_eq!(err.downcast_ref::<Overloaded>().unwrap().reason(), OverloadReason::AtCapacity);
/// let _ = tx.send(());
/// assert_eq!(first.await.unwrap(), "done");
/// assert_eq!(svc.oneshot(()).await.unwrap(), "done");
/// # }
/// ```
pub struct ConcurrencyLimit<S, X = Global, K = Boxed> {
    pub(super) inner: S,
    pub(super) extractor: X,
    pub(super) shared: Arc<Shared>,
    /// The error type its calls fail with (see
    /// [`ConcurrencyLimitLayer::with_error`](super::ConcurrencyLimitLayer::with_error)).
    pub(super) _error: PhantomData<fn() -> K>,
}

impl<S: Clone, X: Clone, K> Clone for ConcurrencyLimit<S, X, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            extractor: self.extractor.clone(),
            shared: Arc::clone(&self.shared),
            _error: PhantomData,
        }
    }
}

impl<S: fmt::Debug, X: fmt::Debug, K> fmt::Debug for ConcurrencyLimit<S, X, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConcurrencyLimit")
            .field("inner", &self.inner)
            .field("extractor", &self.extractor)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, X, K> ConcurrencyLimit<S, X, K> {
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

    /// How many calls hold a permit now, over every clone (and every key).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight() as usize
    }
}

impl<S, X, K, Req> Service<Req> for ConcurrencyLimit<S, X, K>
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

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &*self.shared;
        shared.calls.add(1, shared.attrs.base());
        // The hot path: one CAS and one `Arc` clone (into the permit); no span, no event, no
        // clock read.
        if let Slots::Global(g) = &shared.slots {
            if let Some(permit) = g.try_acquire() {
                return ResponseFuture::called(self.inner.call(req), permit);
            }
        }
        let gate = match &shared.slots {
            Slots::Global(g) => Arc::clone(g),
            Slots::Keyed(map) => {
                let key = map.digest(&self.extractor.key(&req));
                let found = map.with(
                    key,
                    Arc::clone,
                    || Arc::new(Gate::new(shared.max_in_flight.load(Ordering::SeqCst))),
                    // Only the table holds it: no permit out, nobody waiting.
                    |g| Arc::strong_count(g) == 1,
                );
                match found {
                    Some(g) => g,
                    None => return reject(shared, OverloadReason::TooManyKeys),
                }
            }
        };
        let registered = if shared.wait {
            gate.register()
        } else {
            match gate.try_acquire() {
                Some(permit) => Registered::Acquired(permit),
                None => return reject(shared, OverloadReason::AtCapacity),
            }
        };
        match registered {
            // The hot path: no span, no event, no clock read.
            Registered::Acquired(permit) => ResponseFuture::called(self.inner.call(req), permit),
            // The limit's gate has no queue bound.
            Registered::Full => reject(shared, OverloadReason::QueueFull),
            Registered::Queued(queued) => {
                let now =
                    (shared.max_wait.is_some() || shared.wait_time.is_some()).then(Instant::now);
                let deadline = match (now, shared.max_wait) {
                    (Some(now), Some(w)) => now.checked_add(w),
                    _ => None,
                };
                // A call that waits gets a span: the wait and the call show in traces.
                let span = tracing::debug_span!(
                    target: "steadfast::limit",
                    "steadfast.limit",
                    instance = shared.telemetry.span_name(),
                    max_in_flight = shared.max_in_flight.load(Ordering::Relaxed),
                );
                span.in_scope(|| {
                    tracing::debug!(
                        target: "steadfast::limit",
                        max_wait_ms = shared.max_wait.map(crate::telemetry::ms),
                        "concurrency limit reached: waiting for a permit"
                    );
                });
                // The service that was driven to readiness serves this call once it has a
                // permit; a clone takes its place for the caller's next `poll_ready`.
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                ResponseFuture::waiting(
                    queued,
                    deadline,
                    now,
                    service,
                    req,
                    Arc::clone(&self.shared),
                    span,
                )
            }
        }
    }
}

fn reject<S: Service<Req>, Req, K>(
    shared: &Shared,
    reason: OverloadReason,
) -> ResponseFuture<S, Req, K> {
    shared.reject(reason, None);
    ResponseFuture::rejected(Overloaded::new("limit", reason), Span::none())
}
