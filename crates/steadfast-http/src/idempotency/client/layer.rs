use std::sync::Arc;

use http::Method;
use tower_layer::Layer;

use super::AddIdempotencyKey;
use crate::idempotency::error::IdempotencyConfigError;

/// Adds an `Idempotency-Key` (a fresh UUID v7) to requests of the configured methods (`POST`
/// and `PATCH` by default) that have none. A key the caller set is kept as it is.
///
/// ```
/// use http::Method;
/// use steadfast_http::idempotency::IdempotencyKeyLayer;
/// let layer = IdempotencyKeyLayer::builder().methods([Method::POST, Method::PATCH, Method::DELETE]).build()?;
/// assert!(layer.applies_to(&Method::DELETE));
/// assert!(!layer.applies_to(&Method::GET));
/// # Ok::<(), steadfast_http::idempotency::IdempotencyConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct IdempotencyKeyLayer {
    methods: Arc<[Method]>,
}

/// Builds an [`IdempotencyKeyLayer`].
///
/// ```
/// use steadfast_http::idempotency::IdempotencyKeyLayer;
/// assert_eq!(IdempotencyKeyLayer::builder().methods([]).build().unwrap_err().field(), "methods");
/// ```
#[derive(Debug)]
pub struct IdempotencyKeyLayerBuilder {
    methods: Vec<Method>,
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
        }
    }

    /// A builder (methods `POST`, `PATCH`).
    pub fn builder() -> IdempotencyKeyLayerBuilder {
        IdempotencyKeyLayerBuilder {
            methods: vec![Method::POST, Method::PATCH],
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

    /// Validates and builds the layer.
    pub fn build(self) -> Result<IdempotencyKeyLayer, IdempotencyConfigError> {
        if self.methods.is_empty() {
            return Err(IdempotencyConfigError::conflict(
                "methods",
                "at least one method must get keys",
            ));
        }
        Ok(IdempotencyKeyLayer {
            methods: Arc::from(self.methods),
        })
    }
}

impl<S> Layer<S> for IdempotencyKeyLayer {
    type Service = AddIdempotencyKey<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AddIdempotencyKey {
            inner,
            methods: Arc::clone(&self.methods),
        }
    }
}
