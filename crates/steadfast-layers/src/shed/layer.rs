use std::sync::Arc;

use opentelemetry::metrics::Counter;
use tower_layer::Layer;

use super::LoadShed;
use crate::error::ConfigError;
use crate::telemetry::{Attrs, Telemetry};

/// Sheds calls made while the inner service is not ready.
///
/// ```
/// use steadfast_layers::{shed::LoadShedLayer, telemetry::Telemetry};
/// let layer = LoadShedLayer::builder().telemetry(Telemetry::new().name("search")).build()?;
/// # let _ = layer;
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct LoadShedLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) calls: Counter<u64>,
    pub(super) rejected: Counter<u64>,
    pub(super) attrs: Attrs,
    pub(super) telemetry: Telemetry,
}

impl LoadShedLayer {
    /// A load-shedding layer with default telemetry.
    ///
    /// ```
    /// # use steadfast_layers::shed::LoadShedLayer;
    /// let layer = LoadShedLayer::new();
    /// # let _ = layer;
    /// ```
    pub fn new() -> Self {
        Self::with(Telemetry::default())
    }

    /// A builder (the only setting is telemetry).
    ///
    /// ```
    /// # use steadfast_layers::shed::LoadShedLayer;
    /// assert!(LoadShedLayer::builder().build().is_ok());
    /// ```
    pub fn builder() -> LoadShedLayerBuilder {
        LoadShedLayerBuilder {
            telemetry: Telemetry::default(),
        }
    }

    fn with(telemetry: Telemetry) -> Self {
        let meter = telemetry.resolve_meter();
        Self {
            shared: Arc::new(Shared {
                calls: meter
                    .u64_counter("steadfast.shed.calls")
                    .with_unit("{call}")
                    .with_description(
                        "Calls made through the load-shedding layer, shed ones included",
                    )
                    .build(),
                rejected: meter
                    .u64_counter("steadfast.shed.rejected")
                    .with_unit("{call}")
                    .with_description("Calls shed because the inner service was not ready")
                    .build(),
                attrs: telemetry.base_attributes(),
                telemetry,
            }),
        }
    }
}

impl Default for LoadShedLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for LoadShedLayer {
    type Service = LoadShed<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            ready: false,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Builds a [`LoadShedLayer`].
///
/// ```
/// # use steadfast_layers::{shed::LoadShedLayer, telemetry::Telemetry};
/// let l = LoadShedLayer::builder().telemetry(Telemetry::new()).build()?;
/// # let _ = l;
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct LoadShedLayerBuilder {
    telemetry: Telemetry,
}

impl LoadShedLayerBuilder {
    /// Where and how to record telemetry.
    ///
    /// ```
    /// # use steadfast_layers::{shed::LoadShedLayer, telemetry::Telemetry};
    /// let l = LoadShedLayer::builder().telemetry(Telemetry::new().name("x")).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Builds the layer (there is nothing that can be misconfigured yet; the `Result` keeps
    /// the signature of every other builder).
    ///
    /// ```
    /// # use steadfast_layers::shed::LoadShedLayer;
    /// assert!(LoadShedLayer::builder().build().is_ok());
    /// ```
    pub fn build(self) -> Result<LoadShedLayer, ConfigError> {
        Ok(LoadShedLayer::with(self.telemetry))
    }
}
