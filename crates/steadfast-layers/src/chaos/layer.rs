use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::metrics::Counter;
use tower_layer::Layer;

use super::Chaos;
use crate::error::{check_f64, ConfigError};
use crate::rng::{default_rng, RandomSource, SeededRng, SharedRng};
use crate::telemetry::{Attrs, Telemetry};

/// The longest latency a chaos layer injects: one hour.
pub const MAX_INJECTED_LATENCY: Duration = Duration::from_secs(3600);

/// Injects faults into calls, each with its own probability: added latency, an error instead of
/// the call, or a dropped response.
///
/// Built by [`ChaosLayer::builder`]; injects nothing unless faults are configured, and nothing
/// while switched off through its [`ChaosHandle`]. See the [module docs](super).
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::chaos::ChaosLayer;
///
/// let layer = ChaosLayer::builder()
///     .latency(0.1, Duration::from_millis(200))
///     .error(0.05)
///     .seed(42)
///     .build()?;
/// let handle = layer.handle();
/// assert!(handle.is_enabled());
/// handle.disable(); // every clone of the layer and its services stops injecting
/// assert!(!layer.handle().is_enabled());
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ChaosLayer {
    shared: Arc<Shared>,
}

/// What every clone of one chaos layer shares.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) enabled: Arc<AtomicBool>,
    pub(super) latency_probability: f64,
    pub(super) latency: Duration,
    pub(super) error_probability: f64,
    pub(super) abort_probability: f64,
    pub(super) rng: SharedRng,
    pub(super) telemetry: Telemetry,
    pub(super) attrs: Attrs,
    pub(super) calls: Counter<u64>,
    pub(super) injected: Counter<u64>,
}

impl Shared {
    /// A handle on the switch.
    pub(super) fn handle(&self) -> ChaosHandle {
        ChaosHandle {
            enabled: Arc::clone(&self.enabled),
        }
    }

    /// Whether any fault is configured.
    pub(super) fn armed(&self) -> bool {
        self.latency_probability > 0.0
            || self.error_probability > 0.0
            || self.abort_probability > 0.0
    }
}

impl ChaosLayer {
    /// A builder that injects nothing until faults are added; enabled once built (see
    /// [`ChaosLayerBuilder::enabled`]).
    ///
    /// ```
    /// # use steadfast_layers::chaos::ChaosLayer;
    /// let inert = ChaosLayer::builder().build()?;
    /// # let _ = inert;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn builder() -> ChaosLayerBuilder {
        ChaosLayerBuilder {
            latency: None,
            error: 0.0,
            abort: 0.0,
            enabled: true,
            rng: None,
            telemetry: Telemetry::default(),
        }
    }

    /// The switch shared by this layer, its clones and every service they made.
    ///
    /// ```
    /// # use steadfast_layers::chaos::ChaosLayer;
    /// let layer = ChaosLayer::builder().error(0.5).enabled(false).build()?;
    /// layer.handle().enable();
    /// assert!(layer.handle().is_enabled());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn handle(&self) -> ChaosHandle {
        self.shared.handle()
    }
}

impl<S> Layer<S> for ChaosLayer {
    type Service = Chaos<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Chaos {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Switches a chaos layer on and off at run time, atomically, for every clone at once.
///
/// ```
/// use steadfast_layers::chaos::ChaosLayer;
/// let layer = ChaosLayer::builder().error(1.0).build()?;
/// let handle = layer.handle();
/// handle.set_enabled(false);
/// assert!(!handle.is_enabled());
/// handle.enable();
/// assert!(handle.clone().is_enabled());
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ChaosHandle {
    enabled: Arc<AtomicBool>,
}

impl ChaosHandle {
    /// Starts injecting faults.
    pub fn enable(&self) {
        self.set_enabled(true);
    }

    /// Stops injecting faults: calls pass through untouched (one atomic load each).
    pub fn disable(&self) {
        self.set_enabled(false);
    }

    /// Switches fault injection on or off.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Release);
    }

    /// Whether faults are being injected.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }
}

/// Builds a [`ChaosLayer`], validating its configuration.
///
/// ```
/// # use steadfast_layers::chaos::ChaosLayer;
/// assert_eq!(ChaosLayer::builder().error(1.5).build().unwrap_err().path(), "error_probability");
/// assert_eq!(ChaosLayer::builder().error(0.6).abort(0.6).build().unwrap_err().path(), "abort_probability");
/// ```
#[derive(Debug)]
pub struct ChaosLayerBuilder {
    latency: Option<(f64, Duration)>,
    error: f64,
    abort: f64,
    enabled: bool,
    rng: Option<SharedRng>,
    telemetry: Telemetry,
}

impl ChaosLayerBuilder {
    /// Delays a call by `delay` before it starts, with `probability` in `[0, 1]` (`delay`
    /// non-zero, at most [`MAX_INJECTED_LATENCY`]). Combines with the other faults: a call can be
    /// delayed and then fail.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::chaos::ChaosLayer;
    /// assert!(ChaosLayer::builder().latency(0.3, Duration::from_millis(50)).build().is_ok());
    /// assert!(ChaosLayer::builder().latency(0.3, Duration::ZERO).build().is_err());
    /// ```
    pub fn latency(mut self, probability: f64, delay: Duration) -> Self {
        self.latency = Some((probability, delay));
        self
    }

    /// Fails a call with [`InjectedFault`](super::InjectedFault) of kind
    /// [`Error`](super::FaultKind::Error), without calling the inner service, with `probability`
    /// in `[0, 1]`.
    ///
    /// ```
    /// # use steadfast_layers::chaos::ChaosLayer;
    /// assert!(ChaosLayer::builder().error(f64::NAN).build().is_err());
    /// ```
    pub fn error(mut self, probability: f64) -> Self {
        self.error = probability;
        self
    }

    /// Sends the request but drops its response, failing the call with
    /// [`InjectedFault`](super::InjectedFault) of kind [`Abort`](super::FaultKind::Abort), with
    /// `probability` in `[0, 1]`. The error and abort probabilities are exclusive and together at
    /// most 1.
    ///
    /// ```
    /// # use steadfast_layers::chaos::ChaosLayer;
    /// assert!(ChaosLayer::builder().abort(0.01).build().is_ok());
    /// assert!(ChaosLayer::builder().abort(-0.01).build().is_err());
    /// ```
    pub fn abort(mut self, probability: f64) -> Self {
        self.abort = probability;
        self
    }

    /// Whether the layer starts enabled (default `true`); flip it later with
    /// [`ChaosLayer::handle`].
    ///
    /// ```
    /// # use steadfast_layers::chaos::ChaosLayer;
    /// let l = ChaosLayer::builder().error(0.1).enabled(false).build()?;
    /// assert!(!l.handle().is_enabled());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }

    /// Draws from a [`SeededRng`] seeded with `seed`: the same seed and the same order of calls
    /// inject the same faults.
    ///
    /// ```
    /// # use steadfast_layers::chaos::ChaosLayer;
    /// let l = ChaosLayer::builder().error(0.1).seed(7).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = Some(Arc::new(SeededRng::new(seed)));
        self
    }

    /// Draws from `rng`, shared by every clone of the layer.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_layers::{chaos::ChaosLayer, rng::SeededRng};
    /// let l = ChaosLayer::builder().error(0.1).rng(Arc::new(SeededRng::new(1))).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn rng<G: RandomSource>(mut self, rng: Arc<G>) -> Self {
        self.rng = Some(rng);
        self
    }

    /// Where and how to record telemetry.
    ///
    /// ```
    /// # use steadfast_layers::{chaos::ChaosLayer, telemetry::Telemetry};
    /// let l = ChaosLayer::builder().telemetry(Telemetry::new().name("lab")).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Validates and builds the layer.
    ///
    /// ```
    /// # use steadfast_layers::chaos::ChaosLayer;
    /// assert!(ChaosLayer::builder().error(0.2).abort(0.3).build().is_ok());
    /// ```
    pub fn build(self) -> Result<ChaosLayer, ConfigError> {
        let (latency_probability, latency) = match self.latency {
            Some((p, d)) => {
                let p = check_f64("latency_probability", p, 0.0, 1.0, "[0, 1]")?;
                if d.is_zero() && p > 0.0 {
                    return Err(ConfigError::zero("latency"));
                }
                if d > MAX_INJECTED_LATENCY {
                    return Err(ConfigError::out_of_range("latency", d, "(0, 1 h]"));
                }
                (p, d)
            }
            None => (0.0, Duration::ZERO),
        };
        let error = check_f64("error_probability", self.error, 0.0, 1.0, "[0, 1]")?;
        let abort = check_f64("abort_probability", self.abort, 0.0, 1.0, "[0, 1]")?;
        if error + abort > 1.0 {
            return Err(ConfigError::conflict(
                "abort_probability",
                "the error and abort probabilities are exclusive and add up to more than 1",
            ));
        }
        let meter = self.telemetry.resolve_meter();
        Ok(ChaosLayer {
            shared: Arc::new(Shared {
                enabled: Arc::new(AtomicBool::new(self.enabled)),
                latency_probability,
                latency,
                error_probability: error,
                abort_probability: abort,
                rng: self.rng.unwrap_or_else(default_rng),
                attrs: self.telemetry.base_attributes(),
                calls: meter
                    .u64_counter("steadfast.chaos.calls")
                    .with_unit("{call}")
                    .with_description("Calls made through the chaos layer")
                    .build(),
                injected: meter
                    .u64_counter("steadfast.chaos.injected")
                    .with_unit("{fault}")
                    .with_description("Faults injected, by fault")
                    .build(),
                telemetry: self.telemetry,
            }),
        })
    }
}
