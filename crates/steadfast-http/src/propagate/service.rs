use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use steadfast_layers::deadline::{Carrier, Deadline, HttpExtensions};
use steadfast_layers::telemetry::duration_ms as ms;
use steadfast_layers::BoxError;
use tokio::time::Instant;
use tower_service::Service;

use super::layer::{ClientShared, ServerShared};
use super::{PropagationFuture, ServerFuture};
use crate::codec::{
    decode_grpc_timeout, decode_timeout_ms, encode_grpc_timeout, encode_timeout_ms, is_grpc,
    GRPC_TIMEOUT,
};

/// The deadline a request inherits in-process: the earlier of its extension and the task-local
/// scope's.
fn inherited<B>(req: &Request<B>) -> Option<Deadline> {
    match (HttpExtensions.get(req), Deadline::current()) {
        (Some(a), b) => Some(a.shrink(b)),
        (None, b) => b,
    }
}

/// The service made by [`DeadlineServerLayer`](super::DeadlineServerLayer).
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_http::propagate::DeadlineServerLayer;
/// use steadfast_layers::deadline::Deadline;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let handler = service_fn(|req: http::Request<()>| async move {
///     // The caller's deadline is on the request and in scope.
///     assert_eq!(req.extensions().get::<Deadline>().copied(), Deadline::current());
///     let left = Deadline::current().unwrap().remaining();
///     Ok::<_, std::convert::Infallible>(http::Response::new(format!("{}", left.as_millis())))
/// });
/// let svc = DeadlineServerLayer::new().layer(handler);
/// let req = http::Request::builder().header("x-request-timeout-ms", "750").body(()).unwrap();
/// assert_eq!(svc.oneshot(req).await.unwrap().into_body(), "750");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct DeadlineServer<S> {
    pub(super) inner: S,
    pub(super) shared: Arc<ServerShared>,
}

impl<S> DeadlineServer<S> {
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

/// The layer's own answers (a spent deadline) are responses, so the inner service's error type
/// passes through unchanged: an `Infallible` handler (an axum `Router`, a tonic server) stays
/// `Infallible`.
impl<S, ReqB, ResB> Service<Request<ReqB>> for DeadlineServer<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Default,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ServerFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqB>) -> Self::Future {
        let shared = &self.shared;
        let grpc = is_grpc(req.headers());
        let wire = match shared.wire_timeout(req.headers(), grpc) {
            Ok(wire) => wire,
            Err(malformed) => return ServerFuture::malformed(grpc, &malformed),
        };
        let inherited = inherited(&req);
        if wire.is_none() && inherited.is_none() {
            return ServerFuture::passthrough(self.inner.call(req));
        }
        let now = Instant::now();
        let deadline = match wire.and_then(|t| Deadline::from_timeout_at(now, t)) {
            Some(d) => d.shrink(inherited),
            None => match inherited {
                Some(d) => d,
                // The clock cannot represent now + the (clamped) timeout: no deadline.
                None => return ServerFuture::passthrough(self.inner.call(req)),
            },
        };
        let name = shared.telemetry.instance_name();
        if deadline.is_expired_at(now) {
            shared.count_exceeded("arrival");
            tracing::debug!(
                target: "steadfast::propagate",
                instance = name,
                reason = "arrival",
                grpc,
                "deadline exceeded before the call: rejected without calling the handler"
            );
            return ServerFuture::rejected(grpc);
        }
        // Only when a subscriber wants it (a disabled span still costs through tracing's `log`
        // fallback when a dependency enables it).
        let span = if tracing::enabled!(target: "steadfast::propagate", tracing::Level::DEBUG) {
            tracing::debug_span!(
                target: "steadfast::propagate",
                "steadfast.deadline_server",
                instance = name,
                deadline_remaining_ms = ms(deadline.timeout_at(now)),
                grpc,
            )
        } else {
            tracing::Span::none()
        };
        HttpExtensions.set(&mut req, deadline);
        let inner = &mut self.inner;
        let fut = span.in_scope(|| deadline.sync_scope(|| inner.call(req)));
        ServerFuture::scoped(
            deadline.scope(fut),
            deadline,
            grpc,
            span,
            Arc::clone(shared),
        )
    }
}

/// The service made by [`DeadlinePropagationLayer`](super::DeadlinePropagationLayer).
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_http::propagate::DeadlinePropagationLayer;
/// use steadfast_layers::deadline::Deadline;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let wire = service_fn(|req: http::Request<()>| async move {
///     Ok::<_, std::convert::Infallible>(req.headers()["grpc-timeout"].clone())
/// });
/// let client = DeadlinePropagationLayer::builder().margin(Duration::from_millis(100)).build().unwrap().layer(wire);
/// let req = http::Request::builder().header("content-type", "application/grpc").body(()).unwrap();
/// let sent = Deadline::after(Duration::from_secs(1)).unwrap().scope(client.oneshot(req)).await.unwrap();
/// assert_eq!(sent, "900000u"); // 1 s minus the 100 ms margin
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct DeadlinePropagation<S> {
    pub(super) inner: S,
    pub(super) shared: Arc<ClientShared>,
}

impl<S> DeadlinePropagation<S> {
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

impl<S, B> Service<Request<B>> for DeadlinePropagation<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = PropagationFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let shared = &self.shared;
        let deadline = inherited(&req);
        let timeout = match deadline {
            Some(d) => {
                let left = d.timeout_at(Instant::now()).saturating_sub(shared.margin);
                Some(shared.max_timeout.map_or(left, |max| left.min(max)))
            }
            None => shared.max_timeout,
        };
        let Some(timeout) = timeout else {
            return PropagationFuture::passthrough(self.inner.call(req));
        };
        let grpc = is_grpc(req.headers());
        // Whole milliseconds on plain HTTP: under 1 ms is nothing left.
        let nothing_left = if grpc {
            timeout.is_zero()
        } else {
            timeout.as_millis() == 0
        };
        if nothing_left {
            shared.count_exceeded();
            tracing::debug!(
                target: "steadfast::propagate",
                instance = shared.telemetry.instance_name(),
                reason = "propagate",
                margin_ms = ms(shared.margin),
                "deadline exceeded before sending: request not sent"
            );
            return PropagationFuture::exceeded();
        }
        let headers = req.headers_mut();
        if grpc {
            // Keep a shorter timeout the caller set itself (e.g. tonic's `Request::set_timeout`).
            let keep = headers
                .get(GRPC_TIMEOUT)
                .and_then(|v| decode_grpc_timeout(v).ok())
                .is_some_and(|own| own <= timeout);
            if !keep {
                headers.insert(GRPC_TIMEOUT, encode_grpc_timeout(timeout));
            }
        } else {
            let keep = headers
                .get(&shared.header)
                .and_then(|v| decode_timeout_ms(v).ok())
                .is_some_and(|own| own <= timeout);
            if !keep {
                headers.insert(shared.header.clone(), encode_timeout_ms(timeout));
            }
        }
        PropagationFuture::passthrough(self.inner.call(req))
    }
}
