//! Telemetry conventions shared by every layer: one `tracing` span per call per deciding layer,
//! an event per decision, and OpenTelemetry metrics from an injectable meter.
//!
//! Every builder takes a [`Telemetry`]: which [`Meter`] to record on (the global meter provider's
//! `steadfast` meter by default, captured when the layer is built), an optional instance name that
//! becomes the `steadfast.name` attribute on every metric, and whether to record call durations
//! (off by default: a duration costs two clock reads per call, the largest cost on a hot path).
//! The full list of spans, events and metrics is in `docs/observability.md`.
//!
//! ```
//! use opentelemetry::global;
//! use steadfast_layers::telemetry::Telemetry;
//! let t = Telemetry::new()
//!     .meter(global::meter("my-service"))
//!     .name("payments")
//!     .record_duration(true);
//! assert_eq!(t.instance_name(), Some("payments"));
//! ```

use std::sync::Arc;

use opentelemetry::metrics::Meter;
use opentelemetry::{KeyValue, StringValue, Value};

/// The attribute key naming a layer instance on every metric.
pub const NAME_KEY: &str = "steadfast.name";
/// The attribute key carrying a decision's reason.
pub const REASON_KEY: &str = "reason";

/// Where and how a layer records its telemetry.
#[derive(Clone, Debug, Default)]
pub struct Telemetry {
    meter: Option<Meter>,
    name: Option<Arc<str>>,
    record_duration: bool,
}

impl Telemetry {
    /// The default: global meter, no name, no durations.
    ///
    /// ```
    /// # use steadfast_layers::telemetry::Telemetry;
    /// assert_eq!(Telemetry::new().instance_name(), None);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Records metrics on `meter` instead of the global provider's `steadfast` meter.
    ///
    /// ```
    /// # use steadfast_layers::telemetry::Telemetry;
    /// let t = Telemetry::new().meter(opentelemetry::global::meter("svc"));
    /// # let _ = t;
    /// ```
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Names this layer instance: the `steadfast.name` attribute on its metrics and field on its
    /// spans.
    ///
    /// ```
    /// # use steadfast_layers::telemetry::Telemetry;
    /// assert_eq!(Telemetry::new().name("db").instance_name(), Some("db"));
    /// ```
    pub fn name(mut self, name: impl AsRef<str>) -> Self {
        self.name = Some(Arc::from(name.as_ref()));
        self
    }

    /// Records a duration histogram per call (two clock reads per call).
    ///
    /// ```
    /// # use steadfast_layers::telemetry::Telemetry;
    /// let t = Telemetry::new().record_duration(true);
    /// assert!(t.records_duration());
    /// ```
    pub fn record_duration(mut self, yes: bool) -> Self {
        self.record_duration = yes;
        self
    }

    /// The instance name, if any.
    ///
    /// ```
    /// # use steadfast_layers::telemetry::Telemetry;
    /// assert_eq!(Telemetry::new().name("x").instance_name(), Some("x"));
    /// ```
    pub fn instance_name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Whether durations are recorded.
    ///
    /// ```
    /// # use steadfast_layers::telemetry::Telemetry;
    /// assert!(!Telemetry::new().records_duration());
    /// ```
    pub fn records_duration(&self) -> bool {
        self.record_duration
    }

    pub(crate) fn resolve_meter(&self) -> Meter {
        self.meter
            .clone()
            .unwrap_or_else(|| opentelemetry::global::meter("steadfast"))
    }

    /// The base attributes (the name, when set), built once.
    pub(crate) fn base_attributes(&self) -> Attrs {
        Attrs {
            name: self
                .name
                .as_ref()
                .map(|n| KeyValue::new(NAME_KEY, Value::String(StringValue::from(Arc::clone(n))))),
        }
    }

    pub(crate) fn span_name(&self) -> &str {
        self.name.as_deref().unwrap_or("")
    }
}

/// Precomputed attributes of one layer instance.
#[derive(Clone, Debug)]
pub(crate) struct Attrs {
    name: Option<KeyValue>,
}

impl Attrs {
    /// The base attributes alone (no clone, no allocation).
    pub(crate) fn base(&self) -> &[KeyValue] {
        self.name.as_slice()
    }

    /// The base attributes plus `key = value`, passed to `f` (no allocation).
    pub(crate) fn with<R>(
        &self,
        key: &'static str,
        value: &'static str,
        f: impl FnOnce(&[KeyValue]) -> R,
    ) -> R {
        let extra = KeyValue::new(key, value);
        match &self.name {
            Some(name) => f(&[name.clone(), extra]),
            None => f(&[extra]),
        }
    }
}

/// Milliseconds of a duration as a float, for event fields.
pub(crate) fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
