use std::fmt;

/// No route of a [`Router`](super::Router) matched the request and the table has no fallback.
///
/// A router sits on the client side, over a transport, so a request it cannot place fails
/// before anything is sent, as an error the caller can match (the way a tower `Steer` or an
/// unknown host does): give the table a [`fallback`](super::RouteLayerBuilder::fallback) to
/// send every request somewhere. Through a tonic client it reads as `UNKNOWN` with this text;
/// the gRPC service-config router always has a fallback.
///
/// ```
/// use steadfast_http::route::NoRoute;
/// let e = NoRoute::new(http::Method::GET, "/nowhere");
/// assert_eq!(e.to_string(), "no route for GET /nowhere");
/// assert_eq!(e.path(), "/nowhere");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoRoute {
    method: http::Method,
    path: String,
}

impl NoRoute {
    /// The error for a request with `method` and `path`.
    ///
    /// ```
    /// # use steadfast_http::route::NoRoute;
    /// assert_eq!(NoRoute::new(http::Method::PUT, "/x").method(), http::Method::PUT);
    /// ```
    pub fn new(method: http::Method, path: impl Into<String>) -> Self {
        NoRoute {
            method,
            path: path.into(),
        }
    }

    /// The request's method.
    ///
    /// ```
    /// # use steadfast_http::route::NoRoute;
    /// assert_eq!(NoRoute::new(http::Method::GET, "/").method(), http::Method::GET);
    /// ```
    pub fn method(&self) -> http::Method {
        self.method.clone()
    }

    /// The request's path.
    ///
    /// ```
    /// # use steadfast_http::route::NoRoute;
    /// assert_eq!(NoRoute::new(http::Method::GET, "/a").path(), "/a");
    /// ```
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for NoRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no route for {} {}", self.method, self.path)
    }
}

impl std::error::Error for NoRoute {}
