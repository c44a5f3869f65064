use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::layer::Shared;
use super::{ChaosHandle, FaultKind, ResponseFuture};
use crate::telemetry::ms;
use crate::BoxError;

/// The service made by [`ChaosLayer`](super::ChaosLayer).
///
/// ```
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_layers::chaos::{ChaosLayer, InjectedFault};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let echo = service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) });
/// let svc = ChaosLayer::builder().error(1.0).seed(1).build().unwrap().layer(echo);
/// let err = svc.clone().oneshot(1).await.unwrap_err();
/// assert!(err.is::<InjectedFault>());
/// svc.handle().disable();
/// assert_eq!(svc.oneshot(2).await.unwrap(), 2);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Chaos<S> {
    pub(super) inner: S,
    pub(super) shared: Arc<Shared>,
}

impl<S> Chaos<S> {
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

    /// The switch shared with the layer that made this service.
    pub fn handle(&self) -> ChaosHandle {
        self.shared.handle()
    }
}

impl<S, Req> Service<Req> for Chaos<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        shared.calls.add(1, shared.attrs.base());
        if !shared.enabled.load(Ordering::Acquire) || !shared.armed() {
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        // A fixed number of draws per call for a given configuration: a seed replays exactly.
        let delay = (shared.latency_probability > 0.0
            && shared.rng.next_f64() < shared.latency_probability)
            .then_some(shared.latency);
        let fault = if shared.error_probability > 0.0 || shared.abort_probability > 0.0 {
            let u = shared.rng.next_f64();
            if u < shared.error_probability {
                Some(FaultKind::Error)
            } else if u < shared.error_probability + shared.abort_probability {
                Some(FaultKind::Abort)
            } else {
                None
            }
        } else {
            None
        };
        if delay.is_none() && fault.is_none() {
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        let span = tracing::debug_span!(
            target: "steadfast::chaos",
            "steadfast.chaos",
            instance = shared.telemetry.span_name(),
        );
        let _entered = span.enter();
        if let Some(d) = delay {
            shared.attrs.with("steadfast.chaos.fault", "latency", |a| {
                shared.injected.add(1, a)
            });
            tracing::debug!(
                target: "steadfast::chaos",
                fault = "latency",
                delay_ms = ms(d),
                "chaos: latency injected"
            );
        }
        if let Some(kind) = fault {
            shared
                .attrs
                .with("steadfast.chaos.fault", kind.label(), |a| {
                    shared.injected.add(1, a)
                });
            match kind {
                FaultKind::Abort => tracing::debug!(
                    target: "steadfast::chaos",
                    fault = "abort",
                    "chaos: the request is sent but its response will be dropped"
                ),
                _ => tracing::debug!(
                    target: "steadfast::chaos",
                    fault = kind.label(),
                    "chaos: error injected; the inner service is not called"
                ),
            }
        }
        let inner = match fault {
            Some(FaultKind::Error) => None,
            _ => Some(self.inner.call(req)),
        };
        drop(_entered);
        ResponseFuture::injected(inner, delay, fault, span)
    }
}
