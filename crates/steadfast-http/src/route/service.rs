use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use steadfast_layers::BoxError;
use tower_service::Service;

use super::{NoRoute, ResponseFuture, RouteMatch};

/// One stack per route, built by [`RouteLayer`](super::RouteLayer): sends each request to the
/// stack of the first route that matches it, or to the fallback.
///
/// **Readiness is per route.** `poll_ready` is always ready: the router does not know yet
/// which route the next request takes, and waiting for every route would let one route at its
/// limit (or with an open breaker) hold up the others. Each call clones the chosen stack and
/// drives its `poll_ready` inside the [`ResponseFuture`], then calls it, as axum's `Router` and
/// tower's `Oneshot` do. So backpressure (a concurrency limit waiting for a slot) is applied
/// per request, inside its future, and clones of a route's stack share its state (breaker,
/// limits), as every steadfast layer's clones do.
///
/// Errors are boxed ([`BoxError`]), the inner stack's or [`NoRoute`].
///
/// ```
/// use std::time::Duration;
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_http::route::{NoRoute, RouteLayer, RouteMatch};
/// use steadfast_layers::timeout::AttemptTimeoutLayer;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let transport = service_fn(|req: http::Request<()>| async move {
///     if req.uri().path() == "/slow" { tokio::time::sleep(Duration::from_secs(1)).await; }
///     Ok::<_, std::io::Error>(http::Response::new(()))
/// });
/// let router = RouteLayer::builder()
///     .route(RouteMatch::http("/slow")?, AttemptTimeoutLayer::new(Duration::from_millis(100))?)
///     .route(RouteMatch::http("/{any}")?, AttemptTimeoutLayer::new(Duration::from_secs(5))?)
///     .build()?
///     .layer(transport);
/// assert!(router.clone().oneshot(http::Request::get("/fast").body(())?).await.is_ok());
/// assert!(router.clone().oneshot(http::Request::get("/slow").body(())?).await.is_err()); // 100 ms
/// let err = router.oneshot(http::Request::get("/a/b").body(())?).await.unwrap_err();
/// assert!(err.is::<NoRoute>());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Router<T> {
    table: Arc<Table<T>>,
}

#[derive(Debug)]
struct Table<T> {
    matches: Arc<[RouteMatch]>,
    routes: Vec<T>,
    fallback: Option<T>,
}

/// Cloning a router clones one `Arc` (no allocation); each call clones its route's stack.
impl<T> Clone for Router<T> {
    fn clone(&self) -> Self {
        Router {
            table: Arc::clone(&self.table),
        }
    }
}

impl<T> Router<T> {
    pub(super) fn new(matches: Arc<[RouteMatch]>, routes: Vec<T>, fallback: Option<T>) -> Self {
        debug_assert_eq!(matches.len(), routes.len());
        Router {
            table: Arc::new(Table {
                matches,
                routes,
                fallback,
            }),
        }
    }

    /// The index of the route that takes a request with `method` and `path` (`None`: the
    /// fallback, or [`NoRoute`]).
    ///
    /// ```
    /// # use http::Method;
    /// # use steadfast_http::route::{RouteLayer, RouteMatch};
    /// # use tower_layer::{Identity, Layer};
    /// let router = RouteLayer::builder()
    ///     .route(RouteMatch::http("/a/{x}")?, Identity::new())
    ///     .route(RouteMatch::http("/a/b")?, Identity::new()) // never taken: first match wins
    ///     .build()?
    ///     .layer(());
    /// assert_eq!(router.route_of(&Method::GET, "/a/b"), Some(0));
    /// assert_eq!(router.route_of(&Method::GET, "/c"), None);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn route_of(&self, method: &http::Method, path: &str) -> Option<usize> {
        self.table
            .matches
            .iter()
            .position(|m| m.matches(method, path))
    }

    /// The stack of route `index` (in the order the routes were added).
    ///
    /// ```
    /// # use steadfast_http::route::{RouteLayer, RouteMatch};
    /// # use tower_layer::{Identity, Layer};
    /// let router = RouteLayer::builder().route(RouteMatch::http("/a")?, Identity::new()).build()?.layer(7u8);
    /// assert_eq!(router.route(0), Some(&7));
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn route(&self, index: usize) -> Option<&T> {
        self.table.routes.get(index)
    }

    /// The fallback stack, if the table has one.
    ///
    /// ```
    /// # use steadfast_http::route::RouteLayer;
    /// # use tower_layer::{Identity, Layer};
    /// let router = RouteLayer::builder().fallback(Identity::new()).build()?.layer(7u8);
    /// assert_eq!(router.fallback(), Some(&7));
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn fallback(&self) -> Option<&T> {
        self.table.fallback.as_ref()
    }
}

impl<T, B> Service<Request<B>> for Router<T>
where
    T: Service<Request<B>> + Clone,
    T::Error: Into<BoxError>,
{
    type Response = T::Response;
    type Error = BoxError;
    type Future = ResponseFuture<T, Request<B>>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each route's readiness is driven inside its call's future.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        let chosen = match self.route_of(req.method(), path) {
            Some(i) => self.table.routes.get(i),
            None => self.table.fallback.as_ref(),
        };
        match chosen {
            Some(svc) => ResponseFuture::new(svc.clone(), req),
            None => ResponseFuture::no_route(NoRoute::new(req.method().clone(), path)),
        }
    }
}
