use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::Either;
use tower_service::Service;

use super::future::ResponseFuture;
use super::layer::Core;
use super::{PrincipalExtractor, Rejection, RequestBody, ResponseBody};
use crate::codec::idempotency_key::IdempotencyKey;
use crate::idempotency::store::IdempotencyStore;

/// The service made by [`IdempotencyLayer`](super::IdempotencyLayer).
///
/// Requests whose method the layer handles (`POST` and `PATCH` by default) and that carry an
/// `Idempotency-Key` are executed at most once per principal and key; all others pass through.
/// The inner service receives [`RequestBody<B>`] (the keyed request's body, buffered) and its
/// responses come back as [`ResponseBody`].
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http_body_util::{BodyExt, Full};
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_http::idempotency::{IdempotencyLayer, RequestBody, store::MemoryStore};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let layer = IdempotencyLayer::builder(MemoryStore::new()).single_tenant().build().unwrap();
/// let svc = layer.layer(service_fn(|_req: http::Request<RequestBody<Full<Bytes>>>| async {
///     Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("created"))))
/// }));
/// let post = || http::Request::post("/orders")
///     .header("idempotency-key", "\"k-1\"")
///     .body(Full::new(Bytes::from("{}")))
///     .unwrap();
/// let first = svc.clone().oneshot(post()).await.unwrap();
/// assert!(first.headers().get("idempotent-replayed").is_none());
/// let again = svc.oneshot(post()).await.unwrap();
/// assert_eq!(again.headers()["idempotent-replayed"], "true");
/// assert_eq!(again.into_body().collect().await.unwrap().to_bytes(), "created");
/// # }
/// ```
#[derive(Debug)]
pub struct Idempotency<S, St, P> {
    pub(super) inner: S,
    pub(super) core: Arc<Core<St>>,
    pub(super) principal: Arc<P>,
}

impl<S: Clone, St, P> Clone for Idempotency<S, St, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            core: Arc::clone(&self.core),
            principal: Arc::clone(&self.principal),
        }
    }
}

impl<S, St, P> Idempotency<S, St, P> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }
}

impl<S, St, P, ReqB, ResB> Service<Request<ReqB>> for Idempotency<S, St, P>
where
    S: Service<Request<RequestBody<ReqB>>, Response = Response<ResB>> + Clone,
    ReqB: Body<Data = Bytes>,
    ResB: Body<Data = Bytes>,
    St: IdempotencyStore,
    P: PrincipalExtractor,
{
    type Response = Response<ResponseBody<ResB>>;
    /// The inner service's error, unchanged: every answer the layer makes itself (a problem, a
    /// replay) is a response, so an `Infallible` handler (an axum `Router`) stays `Infallible`.
    type Error = S::Error;
    type Future = ResponseFuture<S, St, ReqB, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let core = &self.core;
        if !core.methods.contains(req.method()) {
            return ResponseFuture::passthrough(self.inner.call(req.map(Either::Right)));
        }
        let key = match IdempotencyKey::from_headers(req.headers(), core.max_key_len) {
            Ok(Some(key)) => key,
            Ok(None) if !core.key_required => {
                return ResponseFuture::passthrough(self.inner.call(req.map(Either::Right)));
            }
            Ok(None) => return ResponseFuture::rejected(Arc::clone(core), Rejection::KeyMissing),
            Err(e) => {
                return ResponseFuture::rejected(Arc::clone(core), Rejection::KeyInvalid(e));
            }
        };
        let (parts, body) = req.into_parts();
        let Some(principal) = self.principal.principal(&parts) else {
            return ResponseFuture::rejected(Arc::clone(core), Rejection::PrincipalMissing);
        };
        if body.size_hint().lower() > core.max_request_body as u64 {
            return ResponseFuture::rejected(
                Arc::clone(core),
                Rejection::BodyTooLarge {
                    limit: core.max_request_body,
                },
            );
        }
        // The service that was driven to readiness serves this call; a clone takes its place.
        let clone = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::keyed(
            Arc::clone(core),
            service,
            parts,
            body,
            Arc::from(principal),
            key,
        )
    }
}
