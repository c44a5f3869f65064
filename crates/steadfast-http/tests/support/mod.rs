//! Shared test helpers: an in-memory "wire" between services and a drop probe; metrics and
//! trace capture come from `steadfast-testkit`.
#![allow(dead_code, unreachable_pub, missing_docs, unused_imports)]
#![allow(clippy::unwrap_used)]

pub mod grpc;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{Request, Response};
use steadfast_layers::BoxError;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// Sends a request to `server` as a network hop would: only the method, URI, version, headers
/// and body cross (no extensions), and the server runs in its own task (no task-local scope).
/// Dropping the returned future aborts the server's task, as a closed connection would.
pub fn hop<S, B, R>(
    server: S,
) -> impl Service<
    Request<B>,
    Response = Response<R>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<R>, BoxError>> + Send,
> + Clone
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    tower::service_fn(move |req: Request<B>| {
        let (parts, body) = req.into_parts();
        let mut wire = Request::new(body);
        *wire.method_mut() = parts.method;
        *wire.uri_mut() = parts.uri;
        *wire.version_mut() = parts.version;
        *wire.headers_mut() = parts.headers;
        let server = server.clone();
        let task = AbortOnDrop(tokio::spawn(async move {
            server.oneshot(wire).await.map_err(Into::into)
        }));
        async move { task.await? }
    })
}

/// A join handle that aborts its task when dropped.
pub struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, BoxError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map_err(Into::into)
    }
}

/// Records when it is dropped: put one in a handler's future to see when its work stops.
pub struct DropProbe(pub Arc<Mutex<Option<Instant>>>);

impl Drop for DropProbe {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

pub use steadfast_testkit::{Event, Metrics, Traces};
