use std::convert::Infallible;
use std::error::Error;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};
use steadfast_layers::breaker::CircuitOpen;
use steadfast_layers::deadline::DeadlineExceeded;
use steadfast_layers::overload::{OverloadReason, Overloaded};
use steadfast_layers::timeout::Elapsed;
use steadfast_layers::BoxError;
use tower_service::Service;

use super::ResponseFuture;
use crate::codec::{is_grpc, GrpcCode, GRPC_MESSAGE, GRPC_STATUS};

/// The service made by [`RespondLayer`](super::RespondLayer).
///
/// ```
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_http::respond::RespondLayer;
/// use steadfast_layers::overload::{OverloadReason, Overloaded};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let full = service_fn(|_req: http::Request<()>| async {
///     Err::<http::Response<String>, _>(steadfast_layers::BoxError::from(Overloaded::new("limit", OverloadReason::AtCapacity)))
/// });
/// let res = RespondLayer::new().layer(full).oneshot(http::Request::new(())).await.unwrap();
/// assert_eq!(res.status(), 503);
/// # }
/// ```
#[derive(Debug)]
pub struct Respond<S> {
    pub(super) inner: S,
    /// The inner service's readiness error, answered as the next call's response.
    pub(super) failed: Option<BoxError>,
}

impl<S: Clone> Clone for Respond<S> {
    fn clone(&self) -> Self {
        Respond {
            inner: self.inner.clone(),
            failed: None,
        }
    }
}

impl<S> Respond<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for Respond<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.failed.is_some() {
            return Poll::Ready(Ok(()));
        }
        // A readiness error (a layer that refuses while not ready) has a request to answer:
        // the next call's. Ready, then, and `call` answers it.
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(e)) => {
                self.failed = Some(e.into());
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    #[inline]
    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let grpc = is_grpc(req.headers());
        match self.failed.take() {
            Some(e) => ResponseFuture::refused(e, grpc),
            None => ResponseFuture::new(self.inner.call(req), grpc),
        }
    }
}

/// What a refusal means on the wire: status, gRPC code, and when to come back.
fn refusal_of(err: &(dyn Error + 'static)) -> (StatusCode, GrpcCode, Option<Duration>) {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(o) = e.downcast_ref::<Overloaded>() {
            return match o.reason() {
                OverloadReason::RateLimited => (
                    StatusCode::TOO_MANY_REQUESTS,
                    GrpcCode::ResourceExhausted,
                    o.retry_after(),
                ),
                _ => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    GrpcCode::Unavailable,
                    o.retry_after(),
                ),
            };
        }
        if let Some(open) = e.downcast_ref::<CircuitOpen>() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                GrpcCode::Unavailable,
                open.remaining(),
            );
        }
        if e.is::<DeadlineExceeded>() || e.is::<Elapsed>() {
            return (
                StatusCode::GATEWAY_TIMEOUT,
                GrpcCode::DeadlineExceeded,
                None,
            );
        }
        cur = e.source();
    }
    (StatusCode::INTERNAL_SERVER_ERROR, GrpcCode::Internal, None)
}

/// The response for `err` (see the [module docs](super) for the table): an empty body,
/// `Retry-After` in whole seconds rounded up where the refusal says when, and for gRPC a
/// Trailers-Only answer with `grpc-status` and `grpc-message`.
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::respond::refusal_response;
/// use steadfast_layers::overload::Overloaded;
/// let res: http::Response<()> = refusal_response(&Overloaded::rate_limited("rate", Duration::from_millis(1500)), false);
/// assert_eq!(res.status(), 429);
/// assert_eq!(res.headers()["retry-after"], "2"); // 1.5 s, rounded up
/// let res: http::Response<()> = refusal_response(&Overloaded::rate_limited("rate", Duration::from_millis(1500)), true);
/// assert_eq!(res.headers()["grpc-status"], "8");
/// ```
pub fn refusal_response<B: Default>(err: &(dyn Error + 'static), grpc: bool) -> Response<B> {
    let (status, code, after) = refusal_of(err);
    let mut res = Response::new(B::default());
    let h = res.headers_mut();
    if let Some(after) = after {
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    if grpc {
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(GRPC_STATUS, code.to_header_value());
        // The noun's text is ASCII (steadfast writes it); anything else is left out.
        if let Ok(v) = HeaderValue::from_str(&err.to_string()) {
            h.insert(GRPC_MESSAGE, v);
        }
    } else {
        *res.status_mut() = status;
    }
    res
}
