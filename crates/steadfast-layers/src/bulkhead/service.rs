use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;
use tracing::Span;

use super::layer::Shared;
use super::{OverloadReason, Overloaded, ResponseFuture};
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::gate::Registered;
use crate::telemetry::{ms, REASON_KEY};

/// The service made by [`BulkheadLayer`](super::BulkheadLayer).
///
/// Readiness is the inner service's; the slot is taken when the call is made and held until the
/// response future completes or is dropped. A queued call keeps the service that was driven to
/// readiness and calls it once it has a slot, which is why the inner service must be `Clone`.
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_layers::bulkhead::{BulkheadLayer, OverloadReason, Overloaded};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let slow = service_fn(|()| async {
///     tokio::time::sleep(Duration::from_secs(1)).await;
///     Ok::<_, std::convert::Infallible>(())
/// });
/// let svc = BulkheadLayer::builder(1).max_queue(0).build().unwrap().layer(slow);
/// let first = tokio::spawn(svc.clone().oneshot(()));
/// tokio::task::yield_now().await;
/// let err = svc.clone().oneshot(()).await.unwrap_err();
/// assert_eq!(err.downcast_ref::<Overloaded>().unwrap().reason(), OverloadReason::QueueFull);
/// first.await.unwrap().unwrap();
/// # }
/// ```
pub struct Bulkhead<S, K = Boxed> {
    pub(super) inner: S,
    pub(super) shared: Arc<Shared>,
    /// The error type its calls fail with (see
    /// [`BulkheadLayer::with_error`](super::BulkheadLayer::with_error)).
    pub(super) _error: PhantomData<fn() -> K>,
}

impl<S: Clone, K> Clone for Bulkhead<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            _error: PhantomData,
        }
    }
}

impl<S: fmt::Debug, K> fmt::Debug for Bulkhead<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, K> Bulkhead<S, K> {
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

    /// Calls in flight now, over every clone.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Calls waiting now, over every clone.
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }
}

impl<S, K, Req> Service<Req> for Bulkhead<S, K>
where
    S: Service<Req> + Clone,
    K: MakeRefusal<S::Error, Overloaded>,
{
    type Response = S::Response;
    type Error = <K as MakeError<S::Error>>::Error;
    type Future = ResponseFuture<S, Req, K>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(K::inner)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        shared.calls.add(1, shared.attrs.base());
        if let Some(permit) = shared.gate.try_acquire() {
            // The hot path: one CAS, one `Arc` clone; no span, no event, no clock read.
            return ResponseFuture::called(self.inner.call(req), permit, Span::none());
        }
        let queued = match shared.gate.register() {
            // A slot was freed meanwhile (and nobody waits for it): no need to queue.
            Registered::Acquired(permit) => {
                return ResponseFuture::called(self.inner.call(req), permit, Span::none());
            }
            Registered::Queued(queued) => queued,
            Registered::Full => return reject_queue_full(shared),
        };
        let now = Instant::now();
        // A queued call gets a span: the wait and the call show in traces.
        let span = tracing::debug_span!(
            target: "steadfast::bulkhead",
            "steadfast.bulkhead",
            instance = shared.telemetry.span_name(),
            max_concurrent = shared.gate.max(),
        );
        span.in_scope(|| {
            tracing::debug!(
                target: "steadfast::bulkhead",
                queued = shared.queued(),
                max_wait_ms = ms(shared.max_wait),
                "bulkhead full: call queued"
            );
        });
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::queued(queued, now, service, req, Arc::clone(shared), span)
    }
}

/// Counts, traces and returns a call refused because `max_queue` calls already wait.
fn reject_queue_full<S: Service<Req>, Req, K>(shared: &Shared) -> ResponseFuture<S, Req, K> {
    let reason = OverloadReason::QueueFull;
    shared.attrs.with(REASON_KEY, reason.label(), |a| {
        shared.rejected.add(1, a);
    });
    tracing::debug!(
        target: "steadfast::bulkhead",
        instance = shared.telemetry.span_name(),
        reason = reason.label(),
        max_queue = shared.max_queue,
        "bulkhead full: call rejected"
    );
    ResponseFuture::rejected(Overloaded::new("bulkhead", reason), Span::none())
}
