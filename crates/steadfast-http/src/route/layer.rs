use std::sync::Arc;

use tower_layer::Layer;

use super::{RouteMatch, Router};
use crate::error::ConfigError;

/// A table of routes, each with its own layer: applied to a transport `S`, builds a
/// [`Router`] with one stack per route (`layer.layer(s.clone())`), so that each route has its
/// own breaker, limits and learned state. Budgets shared between routes are shared by giving
/// their layers the same `Arc` (e.g. [`RetryLayerBuilder::budget`]).
///
/// The first route whose [`RouteMatch`] matches takes the request (the order of
/// [`route`](RouteLayerBuilder::route) calls, as in Envoy's route tables); a request no route
/// matches goes to the [`fallback`](RouteLayerBuilder::fallback), or fails with
/// [`NoRoute`](super::NoRoute) when there is none.
///
/// [`RetryLayerBuilder::budget`]: steadfast_layers::retry::RetryLayerBuilder::budget
///
/// ```
/// use std::time::Duration;
/// use http::Method;
/// use steadfast_http::route::{RouteLayer, RouteMatch};
/// use steadfast_layers::timeout::AttemptTimeoutLayer;
///
/// let routes = RouteLayer::builder()
///     .route(RouteMatch::http("/search")?, AttemptTimeoutLayer::new(Duration::from_millis(200))?)
///     .route(RouteMatch::http("/payments/{id}")?.method(Method::POST), AttemptTimeoutLayer::new(Duration::from_secs(2))?)
///     .fallback(AttemptTimeoutLayer::new(Duration::from_secs(1))?)
///     .build()?;
/// assert_eq!(routes.len(), 2);
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RouteLayer<L> {
    matches: Arc<[RouteMatch]>,
    layers: Vec<L>,
    fallback: Option<L>,
}

impl<L> RouteLayer<L> {
    /// An empty table to fill.
    ///
    /// ```
    /// # use steadfast_http::route::RouteLayer;
    /// # use tower_layer::Identity;
    /// let l = RouteLayer::builder().fallback(Identity::new()).build()?;
    /// assert!(l.is_empty());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn builder() -> RouteLayerBuilder<L> {
        RouteLayerBuilder {
            routes: Vec::new(),
            fallback: None,
        }
    }

    /// How many routes the table holds (the fallback not counted).
    ///
    /// ```
    /// # use steadfast_http::route::{RouteLayer, RouteMatch};
    /// # use tower_layer::Identity;
    /// let l = RouteLayer::builder().route(RouteMatch::http("/a")?, Identity::new()).build()?;
    /// assert_eq!(l.len(), 1);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether the table holds no route (only a fallback).
    ///
    /// ```
    /// # use steadfast_http::route::{RouteLayer, RouteMatch};
    /// # use tower_layer::Identity;
    /// let l = RouteLayer::builder().route(RouteMatch::http("/a")?, Identity::new()).build()?;
    /// assert!(!l.is_empty());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

impl<S: Clone, L: Layer<S>> Layer<S> for RouteLayer<L> {
    type Service = Router<L::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        Router::new(
            Arc::clone(&self.matches),
            self.layers.iter().map(|l| l.layer(inner.clone())).collect(),
            self.fallback.as_ref().map(|l| l.layer(inner)),
        )
    }
}

/// Builds a [`RouteLayer`].
///
/// ```
/// # use steadfast_http::route::RouteLayer;
/// # use tower_layer::Identity;
/// let err = RouteLayer::<Identity>::builder().build().unwrap_err();
/// assert_eq!(err.path(), "routes");
/// ```
#[derive(Debug)]
pub struct RouteLayerBuilder<L> {
    routes: Vec<(RouteMatch, L)>,
    fallback: Option<L>,
}

impl<L> RouteLayerBuilder<L> {
    /// Adds a route after those already added: requests that `matches` and that no earlier
    /// route took go through `layer`'s stack.
    ///
    /// ```
    /// # use steadfast_http::route::{RouteLayer, RouteMatch};
    /// # use tower_layer::Identity;
    /// let l = RouteLayer::builder()
    ///     .route(RouteMatch::http("/a")?, Identity::new())
    ///     .route(RouteMatch::http("/b")?, Identity::new())
    ///     .build()?;
    /// assert_eq!(l.len(), 2);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn route(mut self, matches: RouteMatch, layer: L) -> Self {
        self.routes.push((matches, layer));
        self
    }

    /// The stack for requests no route matches (default: none, and such requests fail with
    /// [`NoRoute`](super::NoRoute)).
    ///
    /// ```
    /// # use steadfast_http::route::RouteLayer;
    /// # use tower_layer::Identity;
    /// assert!(RouteLayer::builder().fallback(Identity::new()).build().is_ok());
    /// ```
    pub fn fallback(mut self, layer: L) -> Self {
        self.fallback = Some(layer);
        self
    }

    /// Builds the table: it must hold at least one route or a fallback (path `routes`).
    ///
    /// ```
    /// # use steadfast_http::route::{RouteLayer, RouteMatch};
    /// # use tower_layer::Identity;
    /// assert!(RouteLayer::builder().route(RouteMatch::http("/")?, Identity::new()).build().is_ok());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn build(self) -> Result<RouteLayer<L>, ConfigError> {
        if self.routes.is_empty() && self.fallback.is_none() {
            return Err(ConfigError::conflict(
                "routes",
                "a route table needs at least one route or a fallback",
            ));
        }
        let (matches, layers): (Vec<_>, Vec<_>) = self.routes.into_iter().unzip();
        Ok(RouteLayer {
            matches: matches.into(),
            layers,
            fallback: self.fallback,
        })
    }
}
