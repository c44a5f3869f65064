use std::marker::PhantomData;
use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use super::layer::Shared;
use super::{Elapsed, ResponseFuture};
use crate::deadline::DeadlineExceeded;
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::telemetry::SharedRef;

/// The service made by [`AttemptTimeoutLayer`](super::AttemptTimeoutLayer).
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_layers::timeout::{AttemptTimeoutLayer, Elapsed};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let slow = service_fn(|()| async {
///     tokio::time::sleep(Duration::from_secs(1)).await;
///     Ok::<_, std::convert::Infallible>(())
/// });
/// let svc = AttemptTimeoutLayer::new(Duration::from_millis(100)).unwrap().layer(slow);
/// let err = svc.oneshot(()).await.unwrap_err();
/// assert!(err.is::<Elapsed>());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AttemptTimeout<S, K = Boxed> {
    pub(super) inner: S,
    pub(super) timeout: Option<Duration>,
    pub(super) shared: SharedRef<Shared>,
    pub(super) _error: PhantomData<fn() -> K>,
}

impl<S, K> AttemptTimeout<S, K> {
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

impl<S, K, Req> Service<Req> for AttemptTimeout<S, K>
where
    S: Service<Req>,
    K: MakeRefusal<S::Error, Elapsed> + MakeRefusal<S::Error, DeadlineExceeded>,
{
    type Response = S::Response;
    type Error = <K as MakeError<S::Error>>::Error;
    type Future = ResponseFuture<S::Future, K>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(K::inner)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        // The deadline is read from the scope the attempt is polled in, when the timer is armed:
        // an attempt that completes on its first poll reads neither the deadline nor the clock.
        self.shared.calls.add(1, self.shared.attrs.base());
        ResponseFuture::new(self.inner.call(req), self.timeout, self.shared.clone())
    }
}
