use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use super::future::Hedging;
use super::layer::Shared;
use super::{HedgePolicy, IdempotentOnly, ResponseFuture};
use crate::classify::{Classifier, RetryOnError};
use crate::retry::{CloneReplay, Replay};
use crate::telemetry::ms;
use crate::BoxError;

/// The service made by [`HedgeLayer`](super::HedgeLayer).
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_layers::hedge::{HedgeAny, HedgeDelay, HedgeLayer};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// // The first copy is stuck for a second; the hedge, sent after 10 ms, answers in 1 ms.
/// let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
/// let c = calls.clone();
/// let peer = service_fn(move |x: u32| {
///     let n = c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
///     async move {
///         let d = if n == 0 { 1000 } else { 1 };
///         tokio::time::sleep(Duration::from_millis(d)).await;
///         Ok::<_, std::convert::Infallible>(x)
///     }
/// });
/// let svc = HedgeLayer::builder()
///     .delay(HedgeDelay::fixed(Duration::from_millis(10)))
///     .policy(HedgeAny)
///     .build()
///     .unwrap()
///     .layer(peer);
/// let start = tokio::time::Instant::now();
/// assert_eq!(svc.oneshot(7).await.unwrap(), 7);
/// assert_eq!(start.elapsed(), Duration::from_millis(11));
/// # }
/// ```
#[derive(Debug)]
pub struct Hedge<S, P = IdempotentOnly, C = RetryOnError, R = CloneReplay> {
    pub(super) inner: S,
    pub(super) policy: P,
    pub(super) classifier: C,
    pub(super) replay: R,
    pub(super) shared: Arc<Shared>,
}

impl<S: Clone, P: Clone, C: Clone, R: Clone> Clone for Hedge<S, P, C, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, P, C, R> Hedge<S, P, C, R> {
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

    /// The delay a call starting now would hedge after (see
    /// [`HedgeLayer::current_delay`](super::HedgeLayer::current_delay)).
    pub fn current_delay(&self) -> Option<Duration> {
        self.shared.current_delay()
    }
}

impl<S, P, C, R, Req> Service<Req> for Hedge<S, P, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: HedgePolicy<Req> + Clone,
    C: Classifier<S::Response, S::Error> + Clone,
    R: Replay<Req> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, P, C, R, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        shared.calls.add(1, shared.attrs.base());
        if let Some(budget) = &shared.budget {
            budget.deposit();
        }
        let name = shared.telemetry.span_name();
        if !self.policy.can_hedge(&req) {
            shared.skip("not_idempotent");
            tracing::debug!(
                target: "steadfast::hedge",
                instance = name,
                reason = "not_idempotent",
                "hedge skipped: the request is not marked safe to send twice"
            );
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        let Some(delay) = shared.current_delay() else {
            shared.skip("warming_up");
            tracing::debug!(
                target: "steadfast::hedge",
                instance = name,
                reason = "warming_up",
                "hedge skipped: too few latency samples to learn the delay"
            );
            return ResponseFuture::measured(self.inner.call(req), Arc::clone(shared));
        };
        let mut template = req;
        let first = match self.replay.replay(&mut template) {
            Ok(copy) => copy,
            Err(why) => {
                shared.skip("not_replayable");
                tracing::debug!(
                    target: "steadfast::hedge",
                    instance = name,
                    reason = "not_replayable",
                    why = why.reason(),
                    "hedge skipped: the request cannot be copied"
                );
                let fut = self.inner.call(template);
                return match shared.tracker() {
                    Some(_) => ResponseFuture::measured(fut, Arc::clone(shared)),
                    None => ResponseFuture::passthrough(fut),
                };
            }
        };
        // The service that was driven to readiness serves the original; a clone serves hedges.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        // Only when a subscriber wants it (a disabled span still costs through tracing's `log`
        // fallback when a dependency enables it).
        let span = if tracing::enabled!(target: "steadfast::hedge", tracing::Level::DEBUG) {
            tracing::debug_span!(
                target: "steadfast::hedge",
                "steadfast.hedge",
                instance = name,
                max_hedges = shared.max_hedges,
                delay_ms = ms(delay),
            )
        } else {
            tracing::Span::none()
        };
        let primary_span = super::future::attempt_span(&span, 0);
        let fut = primary_span.in_scope(|| service.call(first));
        ResponseFuture::hedged(
            fut,
            Hedging::new(
                service,
                self.policy.clone(),
                self.classifier.clone(),
                self.replay.clone(),
                template,
                delay,
            ),
            Arc::clone(shared),
            span,
            primary_span,
        )
    }
}
