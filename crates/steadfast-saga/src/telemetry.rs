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

use opentelemetry::metrics::{Counter, Histogram, Meter, UpDownCounter};
use opentelemetry::KeyValue;

/// The attribute naming an orchestrator instance on every metric.
pub const NAME_KEY: &str = "steadfast.name";
/// The attribute carrying the saga type.
pub const SAGA_TYPE_KEY: &str = "steadfast.saga.type";
/// The attribute carrying a step's name (`steadfast.saga.steps`, `steadfast.saga.step.duration`).
pub const STEP_KEY: &str = "steadfast.saga.step";
/// The attribute carrying a step's phase: `forward` or `compensation`.
pub const PHASE_KEY: &str = "steadfast.saga.phase";
/// The attribute carrying a step's outcome.
pub const OUTCOME_KEY: &str = "steadfast.saga.outcome";
/// The attribute carrying how a saga ended (`steadfast.saga.duration`).
pub const STATUS_KEY: &str = "steadfast.saga.status";
/// The attribute carrying an operator action's reason (`steadfast.saga.takeovers`), shared with
/// the layers' `steadfast.reason`.
pub const REASON_KEY: &str = "steadfast.reason";

/// The bucket boundaries of `steadfast.saga.duration`, in seconds: 50 ms to a day (a saga may
/// wait out retries, recoveries and operators).
///
/// ```
/// let b = steadfast_saga::telemetry::SAGA_DURATION_BOUNDARIES;
/// assert!(b.windows(2).all(|w| w[0] < w[1]));
/// assert_eq!(b.last(), Some(&86_400.0));
/// ```
pub const SAGA_DURATION_BOUNDARIES: [f64; 16] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 43200.0,
    86400.0,
];

/// The bucket boundaries of `steadfast.saga.step.duration`, in seconds: OpenTelemetry's
/// recommended boundaries for HTTP request durations, 5 ms to 10 s (a step attempt is one
/// participant call). The SDK's defaults are meant for milliseconds.
///
/// ```
/// let b = steadfast_saga::telemetry::STEP_DURATION_BOUNDARIES;
/// assert!(b.windows(2).all(|w| w[0] < w[1]));
/// ```
pub const STEP_DURATION_BOUNDARIES: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

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
    takeovers: Counter<u64>,
    cancelled: Counter<u64>,
    in_flight: UpDownCounter<i64>,
    steps: Counter<u64>,
    step_duration: Histogram<f64>,
    duration: Histogram<f64>,
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
    Cancelled,
}

impl Metrics {
    pub(crate) fn new(t: &SagaTelemetry) -> Self {
        let meter = t
            .meter
            .clone()
            .unwrap_or_else(|| opentelemetry::global::meter("steadfast"));
        let sagas = |name: &'static str, what: &'static str| {
            meter
                .u64_counter(name)
                .with_unit("{saga}")
                .with_description(what)
                .build()
        };
        Metrics {
            started: sagas("steadfast.saga.started", "sagas created"),
            completed: sagas(
                "steadfast.saga.completed",
                "sagas whose every step succeeded",
            ),
            compensated: sagas(
                "steadfast.saga.compensated",
                "sagas that failed (or were cancelled) and were fully compensated",
            ),
            needs_attention: sagas(
                "steadfast.saga.needs_attention",
                "sagas stopped for an operator",
            ),
            recoveries: sagas(
                "steadfast.saga.recoveries",
                "sagas claimed after their lease expired",
            ),
            fenced: sagas(
                "steadfast.saga.fenced",
                "saga runs stopped because another orchestrator took over",
            ),
            takeovers: sagas(
                "steadfast.saga.takeovers",
                "sagas whose lease an operator action took over",
            ),
            cancelled: sagas(
                "steadfast.saga.cancelled",
                "sagas that stopped before their next step to compensate, on an operator's cancel",
            ),
            in_flight: meter
                .i64_up_down_counter("steadfast.saga.in_flight")
                .with_unit("{saga}")
                .with_description("saga runs in progress on this orchestrator")
                .build(),
            steps: meter
                .u64_counter("steadfast.saga.steps")
                .with_unit("{step}")
                .with_description("step phases (action or compensation) ended, by outcome")
                .build(),
            step_duration: meter
                .f64_histogram("steadfast.saga.step.duration")
                .with_unit("s")
                .with_description("duration of each step attempt (action or compensation)")
                .with_boundaries(STEP_DURATION_BOUNDARIES.to_vec())
                .build(),
            duration: meter
                .f64_histogram("steadfast.saga.duration")
                .with_unit("s")
                .with_description(
                    "time from a saga's creation to its end (completed, compensated or \
                     needs attention), on the store's clock, across recoveries",
                )
                .with_boundaries(SAGA_DURATION_BOUNDARIES.to_vec())
                .build(),
            name: t
                .name
                .as_ref()
                .map(|n| KeyValue::new(NAME_KEY, Arc::clone(n))),
        }
    }

    /// The first two attributes of a measurement of `saga_type`: the instance name (a
    /// placeholder when it has none) and the saga type, and how many of them to leave out (1:
    /// the placeholder). Every value is shared: no allocation per measurement.
    fn head(&self, saga_type: &Arc<str>) -> ([KeyValue; 2], usize) {
        let ty = KeyValue::new(SAGA_TYPE_KEY, Arc::clone(saga_type));
        match &self.name {
            Some(n) => ([n.clone(), ty], 0),
            None => ([KeyValue::new(NAME_KEY, ""), ty], 1),
        }
    }

    /// Every saga counter of `saga_type` at zero, from the orchestrator's start: a series that
    /// first appears at 1 hides its first event from `increase()` and `rate()` (Prometheus has
    /// no earlier sample), so an alert on `steadfast.saga.needs_attention` would miss it.
    pub(crate) fn start_at_zero(&self, saga_type: &Arc<str>) {
        let ([n, ty], skip) = self.head(saga_type);
        let attrs = &[n, ty][skip..];
        for c in [
            &self.started,
            &self.completed,
            &self.compensated,
            &self.needs_attention,
            &self.recoveries,
            &self.fenced,
            &self.cancelled,
        ] {
            c.add(0, attrs);
        }
    }

    pub(crate) fn count(&self, which: SagaCounter, saga_type: &Arc<str>) {
        let ([n, ty], skip) = self.head(saga_type);
        let c = match which {
            SagaCounter::Started => &self.started,
            SagaCounter::Completed => &self.completed,
            SagaCounter::Compensated => &self.compensated,
            SagaCounter::NeedsAttention => &self.needs_attention,
            SagaCounter::Recovered => &self.recoveries,
            SagaCounter::Fenced => &self.fenced,
            SagaCounter::Cancelled => &self.cancelled,
        };
        c.add(1, &[n, ty][skip..]);
    }

    /// An operator action took a saga's lease over (`reason`: the action).
    pub(crate) fn takeover(&self, saga_type: &Arc<str>, reason: &'static str) {
        let ([n, ty], skip) = self.head(saga_type);
        let attrs = [n, ty, KeyValue::new(REASON_KEY, reason)];
        self.takeovers.add(1, &attrs[skip..]);
    }

    /// A saga run began (`+1`) or ended (`-1`) on this orchestrator.
    pub(crate) fn in_flight(&self, saga_type: &Arc<str>, delta: i64) {
        let ([n, ty], skip) = self.head(saga_type);
        self.in_flight.add(delta, &[n, ty][skip..]);
    }

    /// A step phase ended: `outcome` is `succeeded`, `failed`, `stuck` or `cancelled`.
    pub(crate) fn step_ended(
        &self,
        saga_type: &Arc<str>,
        step: &Arc<str>,
        phase: &'static str,
        outcome: &'static str,
    ) {
        let ([n, ty], skip) = self.head(saga_type);
        let attrs = [
            n,
            ty,
            KeyValue::new(STEP_KEY, Arc::clone(step)),
            KeyValue::new(PHASE_KEY, phase),
            KeyValue::new(OUTCOME_KEY, outcome),
        ];
        self.steps.add(1, &attrs[skip..]);
    }

    /// A saga ended with `status` this long after its creation.
    pub(crate) fn saga_duration(&self, saga_type: &Arc<str>, status: &'static str, secs: f64) {
        let ([n, ty], skip) = self.head(saga_type);
        let attrs = [n, ty, KeyValue::new(STATUS_KEY, status)];
        self.duration.record(secs, &attrs[skip..]);
    }

    pub(crate) fn step_duration(
        &self,
        saga_type: &Arc<str>,
        step: &Arc<str>,
        phase: &'static str,
        outcome: &'static str,
        secs: f64,
    ) {
        let ([n, ty], skip) = self.head(saga_type);
        let attrs = [
            n,
            ty,
            KeyValue::new(STEP_KEY, Arc::clone(step)),
            KeyValue::new(PHASE_KEY, phase),
            KeyValue::new(OUTCOME_KEY, outcome),
        ];
        self.step_duration.record(secs, &attrs[skip..]);
    }
}
