use std::task::{Context, Poll};

use http::Request;
use http_body::Body;
use steadfast_layers::BoxError;
use tower_service::Service;

use super::{ReplayBody, ResponseFuture};

/// The service made by [`ReplayBodyLayer`](super::ReplayBodyLayer): wraps each request body in
/// a [`ReplayBody`].
///
/// ```
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_http::body::{ReplayBody, ReplayBodyLayer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = ReplayBodyLayer::with_limit(1).unwrap().layer(service_fn(|req: http::Request<ReplayBody<String>>| async move {
///     Ok::<_, std::convert::Infallible>(req.body().limit())
/// }));
/// assert_eq!(svc.oneshot(http::Request::new(String::new())).await.unwrap(), 1);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct WithReplayBody<S> {
    pub(super) inner: S,
    pub(super) limit: usize,
}

impl<S> WithReplayBody<S> {
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

impl<S, B> Service<Request<B>> for WithReplayBody<S>
where
    S: Service<Request<ReplayBody<B>>>,
    S::Error: Into<BoxError>,
    B: Body,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let limit = self.limit;
        let req = req.map(|b| ReplayBody::with_limit(b, limit));
        ResponseFuture {
            inner: self.inner.call(req),
        }
    }
}
