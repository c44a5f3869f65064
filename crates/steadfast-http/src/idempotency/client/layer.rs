use std::sync::Arc;

use http::Method;
use tower_layer::Layer;

use super::AddIdempotencyKey;
use crate::ConfigError;

/// Adds an `Idempotency-Key` (a fresh UUID v7) to requests of the configured methods (`POST`
/// and `PATCH` by default) that have none. A key the caller set is kept as it is.
///
/// Keyed requests are also marked [`Idempotent`](steadfast_layers::hedge::Idempotent), so that a
/// [`HedgeLayer`](steadfast_layers::hedge::HedgeLayer) below may hedge them: the server
/// deduplicates concurrent copies (the second gets `409`, the first's answer wins). Turn it off
/// with [`mark_idempotent(false)`](IdempotencyKeyLayerBuilder::mark_idempotent).
///
/// ```
/// use http::Method;
/// use steadfast_http::idempotency::IdempotencyKeyLayer;
/// let layer = IdempotencyKeyLayer::builder().methods([Method::POST, Method::PATCH, Method::DELETE]).build()?;
/// assert!(layer.applies_to(&Method::DELETE));
/// assert!(!layer.applies_to(&Method::GET));
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct IdempotencyKeyLayer {
    methods: Arc<[Method]>,
    mark_idempotent: bool,
}

/// Builds an [`IdempotencyKeyLayer`].
///
/// ```
/// use steadfast_http::idempotency::IdempotencyKeyLayer;
/// assert_eq!(IdempotencyKeyLayer::builder().methods([]).build().unwrap_err().path(), "methods");
/// ```
#[derive(Debug)]
pub struct IdempotencyKeyLayerBuilder {
    methods: Vec<Method>,
    mark_idempotent: bool,
}

impl IdempotencyKeyLayer {
    /// Keys `POST` and `PATCH` requests.
    ///
    /// ```
    /// # use steadfast_http::idempotency::IdempotencyKeyLayer;
    /// assert!(IdempotencyKeyLayer::new().applies_to(&http::Method::POST));
    /// ```
    pub fn new() -> Self {
        Self {
            methods: Arc::from([Method::POST, Method::PATCH]),
            mark_idempotent: true,
        }
    }

    /// A builder (methods `POST`, `PATCH`).
    pub fn builder() -> IdempotencyKeyLayerBuilder {
        IdempotencyKeyLayerBuilder {
            methods: vec![Method::POST, Method::PATCH],
            mark_idempotent: true,
        }
    }

    /// Whether requests with `method` get a key.
    pub fn applies_to(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }
}

impl Default for IdempotencyKeyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl IdempotencyKeyLayerBuilder {
    /// The methods whose requests get a key.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.methods = methods.into_iter().collect();
        self
    }

    /// Whether keyed requests are marked [`Idempotent`](steadfast_layers::hedge::Idempotent)
    /// for the hedge layer (default `true`).
    ///
    /// ```
    /// # use steadfast_http::idempotency::IdempotencyKeyLayer;
    /// let layer = IdempotencyKeyLayer::builder().mark_idempotent(false).build()?;
    /// # let _ = layer;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn mark_idempotent(mut self, yes: bool) -> Self {
        self.mark_idempotent = yes;
        self
    }

    /// Validates and builds the layer.
    pub fn build(self) -> Result<IdempotencyKeyLayer, ConfigError> {
        if self.methods.is_empty() {
            return Err(ConfigError::conflict(
                "methods",
                "at least one method must get keys",
            ));
        }
        Ok(IdempotencyKeyLayer {
            methods: Arc::from(self.methods),
            mark_idempotent: self.mark_idempotent,
        })
    }
}

impl<S> Layer<S> for IdempotencyKeyLayer {
    type Service = AddIdempotencyKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AddIdempotencyKey {
            inner,
            methods: Arc::clone(&self.methods),
            mark_idempotent: self.mark_idempotent,
        }
    }
}
