//! Saga telemetry: a `tracing` span per saga run and per step attempt, events for compensation,
//! recovery, fencing and `NeedsAttention`, and OpenTelemetry metrics on an injected meter (the
//! same convention as `steadfast_layers::telemetry::Telemetry`). The full list is in
//! `docs/observability.md`.
//!
//! ```
//! use steadfast_saga::telemetry::SagaTelemetry;
//! let t = SagaTelemetry::new().meter(opentelemetry::global::meter("orders")).name("eu-1");
//! assert_eq!(t.instance_name(), Some("eu-1"));
//! ```

use std::sync::Arc;

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::KeyValue;

/// The attribute naming an orchestrator instance on every metric.
pub const NAME_KEY: &str = "steadfast.name";
/// The attribute carrying the saga type.
pub const SAGA_TYPE_KEY: &str = "saga_type";

/// Where the orchestrator records its metrics, and under which instance name.
#[derive(Clone, Debug, Default)]
pub struct SagaTelemetry {
    meter: Option<Meter>,
    name: Option<Arc<str>>,
}

impl SagaTelemetry {
    /// The global provider's `steadfast` meter, no name.
    ///
    /// ```
    /// assert_eq!(steadfast_saga::telemetry::SagaTelemetry::new().instance_name(), None);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Records on `meter`.
    ///
    /// ```
    /// let t = steadfast_saga::telemetry::SagaTelemetry::new()
    ///     .meter(opentelemetry::global::meter("x"));
    /// # let _ = t;
    /// ```
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Names this orchestrator instance (the `steadfast.name` attribute).
    ///
    /// ```
    /// let t = steadfast_saga::telemetry::SagaTelemetry::new().name("a");
    /// assert_eq!(t.instance_name(), Some("a"));
    /// ```
    pub fn name(mut self, name: impl AsRef<str>) -> Self {
        self.name = Some(Arc::from(name.as_ref()));
        self
    }

    /// The instance name.
    ///
    /// ```
    /// assert!(steadfast_saga::telemetry::SagaTelemetry::new().instance_name().is_none());
    /// ```
    pub fn instance_name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Metrics {
    started: Counter<u64>,
    completed: Counter<u64>,
    compensated: Counter<u64>,
    needs_attention: Counter<u64>,
    recoveries: Counter<u64>,
    fenced: Counter<u64>,
    step_duration: Histogram<f64>,
    name: Option<KeyValue>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum SagaCounter {
    Started,
    Completed,
    Compensated,
    NeedsAttention,
    Recovered,
    Fenced,
}

impl Metrics {
    pub(crate) fn new(t: &SagaTelemetry) -> Self {
        let meter = t
            .meter
            .clone()
            .unwrap_or_else(|| opentelemetry::global::meter("steadfast"));
        Metrics {
            started: meter
                .u64_counter("steadfast.saga.started")
                .with_description("sagas created")
                .build(),
            completed: meter
                .u64_counter("steadfast.saga.completed")
                .with_description("sagas whose every step succeeded")
                .build(),
            compensated: meter
                .u64_counter("steadfast.saga.compensated")
                .with_description("sagas that failed and were fully compensated")
                .build(),
            needs_attention: meter
                .u64_counter("steadfast.saga.needs_attention")
                .with_description("sagas stopped for an operator")
                .build(),
            recoveries: meter
                .u64_counter("steadfast.saga.recoveries")
                .with_description("sagas claimed after their lease expired")
                .build(),
            fenced: meter
                .u64_counter("steadfast.saga.fenced")
                .with_description("saga runs stopped because another orchestrator took over")
                .build(),
            step_duration: meter
                .f64_histogram("steadfast.saga.step.duration")
                .with_unit("s")
                .with_description("duration of each step attempt (action or compensation)")
                .build(),
            name: t
                .name
                .as_ref()
                .map(|n| KeyValue::new(NAME_KEY, n.to_string())),
        }
    }

    fn attrs(&self, saga_type: &str) -> Vec<KeyValue> {
        let mut v = Vec::with_capacity(2);
        v.extend(self.name.clone());
        v.push(KeyValue::new(SAGA_TYPE_KEY, saga_type.to_string()));
        v
    }

    pub(crate) fn count(&self, which: SagaCounter, saga_type: &str) {
        let attrs = self.attrs(saga_type);
        let c = match which {
            SagaCounter::Started => &self.started,
            SagaCounter::Completed => &self.completed,
            SagaCounter::Compensated => &self.compensated,
            SagaCounter::NeedsAttention => &self.needs_attention,
            SagaCounter::Recovered => &self.recoveries,
            SagaCounter::Fenced => &self.fenced,
        };
        c.add(1, &attrs);
    }

    pub(crate) fn step_duration(
        &self,
        saga_type: &str,
        step: &str,
        phase: &'static str,
        outcome: &'static str,
        secs: f64,
    ) {
        let mut attrs = self.attrs(saga_type);
        attrs.push(KeyValue::new("step", step.to_string()));
        attrs.push(KeyValue::new("phase", phase));
        attrs.push(KeyValue::new("outcome", outcome));
        self.step_duration.record(secs, &attrs);
    }
}
