use std::task::{Context, Poll};
use std::time::Duration;

use tower_service::Service;

use super::layer::Shared;
use super::ResponseFuture;
use crate::telemetry::SharedRef;
use crate::BoxError;

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
pub struct AttemptTimeout<S> {
    pub(super) inner: S,
    pub(super) timeout: Option<Duration>,
    pub(super) shared: SharedRef<Shared>,
}

impl<S> AttemptTimeout<S> {
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

impl<S, Req> Service<Req> for AttemptTimeout<S>
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

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        // The deadline is read from the scope the attempt is polled in, when the timer is armed:
        // an attempt that completes on its first poll reads neither the deadline nor the clock.
        self.shared.calls.add(1, self.shared.attrs.base());
        ResponseFuture::new(self.inner.call(req), self.timeout, self.shared.clone())
    }
}
