use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request};
use tower_service::Service;

use steadfast_layers::hedge::Idempotent;

use super::is_keyed;
use crate::codec::idempotency_key::{IdempotencyKey, IDEMPOTENCY_KEY};

/// The service made by [`IdempotencyKeyLayer`](super::IdempotencyKeyLayer). Its future is the
/// inner service's: the layer costs one header insert (and a UUID) and one extension insert per
/// keyed request, and nothing else.
///
/// ```
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_http::idempotency::IdempotencyKeyLayer;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = IdempotencyKeyLayer::new().layer(service_fn(|req: http::Request<()>| async move {
///     Ok::<_, std::convert::Infallible>(req.headers().contains_key("idempotency-key"))
/// }));
/// assert!(svc.clone().oneshot(http::Request::post("/").body(()).unwrap()).await.unwrap());
/// assert!(!svc.oneshot(http::Request::get("/").body(()).unwrap()).await.unwrap());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct AddIdempotencyKey<S> {
    pub(super) inner: S,
    pub(super) methods: Arc<[Method]>,
    pub(super) mark_idempotent: bool,
}

impl<S> AddIdempotencyKey<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S, B> Service<Request<B>> for AddIdempotencyKey<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if self.methods.contains(req.method()) {
            let keyed = if req.headers().contains_key(IDEMPOTENCY_KEY) {
                is_keyed(&req)
            } else {
                req.headers_mut().insert(
                    IDEMPOTENCY_KEY,
                    IdempotencyKey::generate().to_header_value(),
                );
                true
            };
            if keyed && self.mark_idempotent {
                // The server deduplicates concurrent copies: safe to hedge.
                Idempotent::mark(&mut req);
            }
        }
        self.inner.call(req)
    }
}
