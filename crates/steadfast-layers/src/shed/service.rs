use std::fmt;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use tower_service::Service;

use super::layer::Shared;
use super::{OverloadReason, Overloaded, ResponseFuture};
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::telemetry::{SharedRef, REASON_KEY};

/// The service made by [`LoadShedLayer`](super::LoadShedLayer).
///
/// ```
/// use std::task::{Context, Poll};
/// use tower::{Layer, Service, ServiceExt};
/// use steadfast_layers::shed::{LoadShedLayer, Overloaded};
///
/// /// A service that is never ready.
/// #[derive(Clone)]
/// struct Busy;
/// impl Service<()> for Busy {
///     type Response = ();
///     type Error = std::convert::Infallible;
///     type Future = std::future::Ready<Result<(), Self::Error>>;
///     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> { Poll::Pending }
///     fn call(&mut self, _: ()) -> Self::Future { unreachable!("never ready") }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let err = LoadShedLayer::new().layer(Busy).oneshot(()).await.unwrap_err();
/// assert!(err.is::<Overloaded>());
/// # }
/// ```
pub struct LoadShed<S, K = Boxed> {
    pub(super) inner: S,
    /// Whether the inner service answered ready to the last `poll_ready`.
    pub(super) ready: bool,
    pub(super) shared: SharedRef<Shared>,
    /// The error type its calls fail with (see
    /// [`LoadShedLayer::with_error`](super::LoadShedLayer::with_error)).
    pub(super) _error: PhantomData<fn() -> K>,
}

impl<S: Clone, K> Clone for LoadShed<S, K> {
    fn clone(&self) -> Self {
        // A clone has not been polled: it is not known to be ready.
        Self {
            inner: self.inner.clone(),
            ready: false,
            shared: self.shared.clone(),
            _error: PhantomData,
        }
    }
}

impl<S: fmt::Debug, K> fmt::Debug for LoadShed<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShed")
            .field("inner", &self.inner)
            .field("ready", &self.ready)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, K> LoadShed<S, K> {
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

impl<S, K, Req> Service<Req> for LoadShed<S, K>
where
    S: Service<Req>,
    K: MakeRefusal<S::Error, Overloaded>,
{
    type Response = S::Response;
    type Error = <K as MakeError<S::Error>>::Error;
    type Future = ResponseFuture<S::Future, K>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.ready = match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => true,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(K::inner(e))),
            Poll::Pending => false,
        };
        // Always ready: a call made now either goes through or is shed.
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.shared.calls.add(1, self.shared.attrs.base());
        if std::mem::take(&mut self.ready) {
            return ResponseFuture::called(self.inner.call(req));
        }
        shed(&self.shared)
    }
}

#[cold]
#[inline(never)]
fn shed<F, K>(shared: &Shared) -> ResponseFuture<F, K> {
    let reason = OverloadReason::NotReady;
    shared.attrs.with(REASON_KEY, reason.label(), |a| {
        shared.refused.add(1, a);
    });
    tracing::debug!(
        target: "steadfast::shed",
        instance = shared.telemetry.span_name(),
        reason = reason.label(),
        "inner service not ready: call shed"
    );
    ResponseFuture::shed()
}
