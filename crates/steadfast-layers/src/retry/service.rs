use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;
use tower_service::Service;

use super::future::Kept;
use super::layer::Shared;
use super::{CloneReplay, Replay, ResponseFuture, RetryBudget};
use crate::classify::{Classifier, RetryOnError};
use crate::BoxError;

/// The service made by [`RetryLayer`](super::RetryLayer).
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::sync::Arc;
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_layers::retry::RetryLayer;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let calls = Arc::new(AtomicU32::new(0));
/// let c = calls.clone();
/// let flaky = service_fn(move |x: u32| {
///     let n = c.fetch_add(1, Ordering::SeqCst);
///     async move { if n < 2 { Err("transient") } else { Ok(x * 2) } }
/// });
/// let svc = RetryLayer::builder().max_attempts(3).seed(1).build().unwrap().layer(flaky);
/// assert_eq!(svc.oneshot(21).await.unwrap(), 42);
/// assert_eq!(calls.load(Ordering::SeqCst), 3);
/// # }
/// ```
#[derive(Debug)]
pub struct Retry<S, C = RetryOnError, R = CloneReplay> {
    pub(super) inner: S,
    pub(super) classifier: C,
    pub(super) replay: R,
    pub(super) shared: Arc<Shared>,
}

impl<S: Clone, C: Clone, R: Clone> Clone for Retry<S, C, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            classifier: self.classifier.clone(),
            replay: self.replay.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, C, R> Retry<S, C, R> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The budget this service draws on, if any.
    pub fn budget(&self) -> Option<&Arc<dyn RetryBudget>> {
        self.shared.budget.as_ref()
    }
}

impl<S, C, R, Req> Service<Req> for Retry<S, C, R>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classifier<S::Response, BoxError> + Clone,
    R: Replay<Req> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, C, R, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let shared = &self.shared;
        shared.calls.add(1, shared.attrs.base());
        if let Some(budget) = &shared.budget {
            budget.deposit();
        }
        // One relaxed load: the setting this call keeps to the end.
        let max_attempts = shared.max_attempts.load(Ordering::Relaxed);
        let mut template = req;
        let (first, template) = if max_attempts > 1 {
            match self.replay.replay(&mut template) {
                Ok(copy) => (copy, Kept::Template(template)),
                Err(e) => (template, Kept::NotReplayable(e)),
            }
        } else {
            (template, Kept::Spent)
        };
        // The service that was driven to readiness serves this call; a clone serves retries.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        // Only when a subscriber wants it: a disabled span still costs through tracing's `log`
        // fallback when some dependency enables it.
        let span = if tracing::enabled!(target: "steadfast::retry", tracing::Level::DEBUG) {
            Some(tracing::debug_span!(
                target: "steadfast::retry",
                "steadfast.retry",
                instance = shared.telemetry.span_name(),
                max_attempts,
            ))
        } else {
            None
        };
        shared.attempts.add(1, shared.attrs.base());
        let started = shared.duration.as_ref().map(|_| Instant::now());
        // Built in place: the first attempt's future is written straight into the response
        // future (copies of it are most of this layer's cost).
        ResponseFuture::first(
            service,
            first,
            self.classifier.clone(),
            self.replay.clone(),
            template,
            max_attempts,
            Arc::clone(shared),
            span,
            started,
        )
    }
}
