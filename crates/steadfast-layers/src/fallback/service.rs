use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

use super::layer::Shared;
use super::{FallbackAction, FallbackPolicy, ResponseFuture};
use crate::BoxError;

/// The service made by [`FallbackLayer`](super::FallbackLayer).
///
/// ```
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_layers::fallback::{Failure, FallbackLayer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let broken = service_fn(|_: ()| async { Err::<&'static str, _>(std::io::Error::other("down")) });
/// let svc = FallbackLayer::from_fn(|_f: Failure<&'static str>| "default")
///     .build()
///     .unwrap()
///     .layer(broken);
/// assert_eq!(svc.oneshot(()).await.unwrap(), "default");
/// # }
/// ```
pub struct Fallback<S, A, P> {
    pub(super) inner: S,
    pub(super) shared: Arc<Shared<A, P>>,
    /// A readiness failure the policy chose: the next call is answered by the fallback.
    pub(super) not_ready: Option<BoxError>,
}

impl<S: Clone, A, P> Clone for Fallback<S, A, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            not_ready: None,
        }
    }
}

impl<S: fmt::Debug, A, P> fmt::Debug for Fallback<S, A, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, A, P> Fallback<S, A, P> {
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

impl<S, A, P, Req> Service<Req> for Fallback<S, A, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    A: FallbackAction<S::Response>,
    P: FallbackPolicy<S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, A, P, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.not_ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(e)) => {
                // A readiness failure the policy chooses (an open breaker in readiness mode, say)
                // is answered at the next call, as tower's `LoadShed` answers overload.
                let failed: Result<S::Response, BoxError> = Err(e.into());
                if self.shared.policy.check(&failed).is_some() {
                    self.not_ready = failed.err();
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(failed.map(|_| ()))
                }
            }
            other => other.map_err(Into::into),
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.shared.calls.add(1, self.shared.attrs.base());
        match self.not_ready.take() {
            None => ResponseFuture::new(self.inner.call(req), Arc::clone(&self.shared)),
            Some(e) => ResponseFuture::rejected(e, Arc::clone(&self.shared)),
        }
    }
}
