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
/// The attribute key carrying a decision's reason (a short, low-cardinality label such as
/// `attempts_exhausted` or `at_capacity`).
pub const REASON_KEY: &str = "steadfast.reason";
/// The attribute key of the class of error a counted failure ended with (OpenTelemetry's
/// semantic convention `error.type`): the classifier's label, such as `timeout` or
/// `unavailable`, on the counters that count failures.
pub const ERROR_TYPE_KEY: &str = "error.type";

/// The bucket boundaries, in seconds, of every duration histogram the layers record (`unit = "s"`):
/// OpenTelemetry's recommended boundaries for HTTP request durations, 5 ms to 10 s. (The SDK's
/// default boundaries are meant for milliseconds and would put every call under 5 s in one bucket.)
///
/// ```
/// let b = steadfast_layers::telemetry::DURATION_BOUNDARIES;
/// assert!(b.windows(2).all(|w| w[0] < w[1]));
/// assert_eq!((b[0], b[b.len() - 1]), (0.005, 10.0));
/// ```
pub const DURATION_BOUNDARIES: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

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

    /// The meter to record on: the one given, or the global provider's `steadfast` meter.
    ///
    /// ```
    /// # use steadfast_layers::telemetry::Telemetry;
    /// let counter = Telemetry::new().resolve_meter().u64_counter("my.counter").build();
    /// counter.add(1, &[]);
    /// ```
    pub fn resolve_meter(&self) -> Meter {
        self.meter
            .clone()
            .unwrap_or_else(|| opentelemetry::global::meter("steadfast"))
    }

    /// Whether this is the default configuration (global meter, no name, no durations). Layers
    /// built with it share one process-wide set of instruments, so their calls clone nothing.
    ///
    /// ```
    /// # use steadfast_layers::telemetry::Telemetry;
    /// assert!(Telemetry::new().is_default());
    /// assert!(!Telemetry::new().name("x").is_default());
    /// ```
    pub fn is_default(&self) -> bool {
        self.meter.is_none() && self.name.is_none() && !self.record_duration
    }

    /// The base attributes of every metric (the name, when set), built once.
    ///
    /// ```
    /// # use steadfast_layers::telemetry::Telemetry;
    /// let attrs = Telemetry::new().name("db").base_attributes();
    /// assert_eq!(attrs.base().len(), 1);
    /// ```
    pub fn base_attributes(&self) -> Attrs {
        Attrs {
            name: self
                .name
                .as_ref()
                .map(|n| KeyValue::new(NAME_KEY, Value::String(StringValue::from(Arc::clone(n))))),
        }
    }

    /// The `instance` field of spans and events: the name, or nothing (the field is absent
    /// when the layer is unnamed).
    pub(crate) fn span_name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// Precomputed attributes of one layer instance.
///
/// ```
/// # use steadfast_layers::telemetry::{Telemetry, REASON_KEY};
/// let attrs = Telemetry::new().name("db").base_attributes();
/// attrs.with(REASON_KEY, "timeout", |a| assert_eq!(a.len(), 2));
/// ```
#[derive(Clone, Debug)]
pub struct Attrs {
    name: Option<KeyValue>,
}

impl Attrs {
    /// The base attributes alone (no clone, no allocation).
    ///
    /// ```
    /// # use steadfast_layers::telemetry::Telemetry;
    /// assert!(Telemetry::new().base_attributes().base().is_empty());
    /// ```
    pub fn base(&self) -> &[KeyValue] {
        self.name.as_slice()
    }

    /// The base attributes plus `key = value`, passed to `f` (no allocation).
    ///
    /// ```
    /// # use steadfast_layers::telemetry::Telemetry;
    /// Telemetry::new().base_attributes().with("reason", "x", |a| assert_eq!(a.len(), 1));
    /// ```
    pub fn with<R>(
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

    /// The base attributes plus `key = value`, built once (for hot rejection paths: recording
    /// with a prebuilt set neither builds nor drops a `KeyValue` per call).
    pub(crate) fn joined(&self, key: &'static str, value: &'static str) -> Box<[KeyValue]> {
        self.with(key, value, |a| a.to_vec().into_boxed_slice())
    }
}

/// A duration as milliseconds for a span or event field (`*_ms`), rounded to the nearest
/// microsecond: at most three decimals (`14.164`, never `14.164038999999999`). Every layer's
/// events, and steadfast-http's, record durations through this one function.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::telemetry::duration_ms;
/// assert_eq!(duration_ms(Duration::from_nanos(14_164_039_000)), 14164.039);
/// assert_eq!(duration_ms(Duration::from_nanos(14_164_039)), 14.164);
/// assert_eq!(duration_ms(Duration::from_nanos(14_164_500)), 14.165); // half up
/// assert_eq!(format!("{:?}", duration_ms(Duration::from_millis(20))), "20.0");
/// ```
pub fn duration_ms(d: std::time::Duration) -> f64 {
    // Whole microseconds, rounded half up; below 2^53 µs (285 years) the quotient is the f64
    // nearest to a 3-decimal number, which prints with at most three decimals.
    let micros = d.as_nanos().saturating_add(500) / 1_000;
    micros as f64 / 1e3
}

pub(crate) use duration_ms as ms;

/// The telemetry of a layer that counts its calls and the calls it refuses (the deadline, the
/// load shed): its two counters, the base attributes and the telemetry they came from.
#[derive(Debug)]
pub(crate) struct CallCounts {
    /// Every call made through the layer.
    pub(crate) calls: opentelemetry::metrics::Counter<u64>,
    /// The calls it refused (a deadline exceeded, a call shed), by reason.
    pub(crate) refused: opentelemetry::metrics::Counter<u64>,
    pub(crate) attrs: Attrs,
    pub(crate) telemetry: Telemetry,
}

/// A counter's name and description, for [`CallCounts::build`].
pub(crate) type CounterName = (&'static str, &'static str);

impl CallCounts {
    /// The counters named `calls` and `refused` (both in `{call}`), on `telemetry`'s meter.
    pub(crate) fn build(telemetry: Telemetry, calls: CounterName, refused: CounterName) -> Self {
        let meter = telemetry.resolve_meter();
        let counter = |(name, description): CounterName| {
            meter
                .u64_counter(name)
                .with_unit("{call}")
                .with_description(description)
                .build()
        };
        CallCounts {
            calls: counter(calls),
            refused: counter(refused),
            attrs: telemetry.base_attributes(),
            telemetry,
        }
    }
}

/// Per-layer shared state: a process-wide `&'static` for layers built with default telemetry
/// (cloning it is a copy), an `Arc` otherwise.
pub(crate) enum SharedRef<T: 'static> {
    Static(&'static T),
    Owned(std::sync::Arc<T>),
}

/// The global meter provider, as OpenTelemetry hands it out.
type GlobalProvider = dyn opentelemetry::metrics::MeterProvider + Send + Sync;

/// The state shared by the layers of one kind built with default telemetry, and the global meter
/// provider it was made on. Default telemetry records on the global provider as it is when the
/// layer is built; a layer built after the provider was replaced records on the new one, with
/// state of its own. (Only the provider's place is kept, to tell it from a later one: a weak
/// reference holds the place without keeping the provider alive, so a replaced provider still
/// shuts down when dropped.)
pub(crate) struct DefaultShared<T>(std::sync::OnceLock<(std::sync::Weak<GlobalProvider>, T)>);

impl<T> DefaultShared<T> {
    /// Not made yet: made by the first layer of its kind built with default telemetry.
    pub(crate) const fn new() -> Self {
        Self(std::sync::OnceLock::new())
    }

    /// The state made on the provider current at the first call, and whether `provider` is it.
    fn get_or_init(
        &self,
        provider: &std::sync::Arc<GlobalProvider>,
        build: impl FnOnce(Telemetry) -> T,
    ) -> (&T, bool) {
        let (made_on, shared) = self.0.get_or_init(|| {
            (
                std::sync::Arc::downgrade(provider),
                build(Telemetry::default()),
            )
        });
        (
            shared,
            std::ptr::addr_eq(made_on.as_ptr(), std::sync::Arc::as_ptr(provider)),
        )
    }

    /// The state every layer of this kind with default telemetry shares, made now on the
    /// current provider if no such layer was built yet.
    #[inline]
    pub(crate) fn get(&self, build: impl FnOnce(Telemetry) -> T) -> &T {
        match self.0.get() {
            Some((_, shared)) => shared,
            None => {
                self.get_or_init(&opentelemetry::global::meter_provider(), build)
                    .0
            }
        }
    }
}

impl<T> SharedRef<T> {
    /// For default telemetry, the state in `cell` if it was made on the current global meter
    /// provider (made now if it was not made yet); else, and for any other telemetry, a fresh
    /// `Arc` of `build(telemetry)`.
    pub(crate) fn new(
        telemetry: Telemetry,
        cell: &'static DefaultShared<T>,
        build: impl Fn(Telemetry) -> T,
    ) -> Self {
        if telemetry.is_default() {
            let provider = opentelemetry::global::meter_provider();
            // A provider read before the state is made, and compared with the one it was made
            // on: set concurrently, a new provider is at worst taken for a change and given
            // state of its own, never recorded on through the old one's instruments.
            if let (shared, true) = cell.get_or_init(&provider, &build) {
                return SharedRef::Static(shared);
            }
        }
        SharedRef::Owned(std::sync::Arc::new(build(telemetry)))
    }
}

impl<T> Clone for SharedRef<T> {
    #[inline]
    fn clone(&self) -> Self {
        match self {
            SharedRef::Static(r) => SharedRef::Static(r),
            SharedRef::Owned(a) => SharedRef::Owned(std::sync::Arc::clone(a)),
        }
    }
}

impl<T> std::ops::Deref for SharedRef<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        match self {
            SharedRef::Static(r) => r,
            SharedRef::Owned(a) => a,
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for SharedRef<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// The outcome's label on `span`; a failure also as `error.type`, with the span's status an
/// error (tracing-opentelemetry reads `otel.status_code`).
pub(crate) fn mark_outcome(span: &tracing::Span, outcome: &crate::classify::Outcome) {
    span.record("steadfast.outcome", outcome.reason());
    if outcome.is_failure() {
        span.record("error.type", outcome.reason());
        span.record("otel.status_code", "ERROR");
    }
}
