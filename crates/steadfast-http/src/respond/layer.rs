use tower_layer::Layer;

use super::Respond;

/// Wraps a service whose refusals are steadfast's nouns so that they become responses (see the
/// [module docs](super) for the table).
///
/// ```
/// use steadfast_http::respond::RespondLayer;
/// let layer = RespondLayer::new();
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RespondLayer {
    _priv: (),
}

impl RespondLayer {
    /// The layer.
    ///
    /// ```
    /// # use steadfast_http::respond::RespondLayer;
    /// let _ = RespondLayer::new();
    /// ```
    pub const fn new() -> Self {
        RespondLayer { _priv: () }
    }

    /// `layer` with its refusals answered: one layer, as axum's `Router::layer` wants (it
    /// checks each layer's error type on its own, so a layer that fails with a `BoxError` must
    /// come already wrapped).
    ///
    /// ```
    /// use std::time::Duration;
    /// use steadfast_http::respond::RespondLayer;
    /// use steadfast_layers::rate::RateLimitLayer;
    /// let limited = RespondLayer::around(RateLimitLayer::builder(100, Duration::from_secs(1)).build()?);
    /// // axum: Router::new().route(..).layer(limited)
    /// # let _ = limited;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub const fn around<L>(layer: L) -> Around<L> {
        Around { layer }
    }
}

/// A layer whose refusals [`Respond`] answers: made by [`RespondLayer::around`].
#[derive(Clone, Copy, Debug)]
pub struct Around<L> {
    layer: L,
}

impl<S, L: Layer<S>> Layer<S> for Around<L> {
    type Service = Respond<L::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        Respond {
            inner: self.layer.layer(inner),
            failed: None,
        }
    }
}

impl<S> Layer<S> for RespondLayer {
    type Service = Respond<S>;

    fn layer(&self, inner: S) -> Respond<S> {
        Respond {
            inner,
            failed: None,
        }
    }
}
