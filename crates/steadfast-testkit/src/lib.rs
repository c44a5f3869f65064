//! Test helpers shared by the steadfast crates' own tests (not published):
//!
//! - [`Metrics`]: a real OpenTelemetry SDK pipeline on the in-memory exporter, read back as
//!   counter sums, histogram counts and gauge values;
//! - [`Traces`]: a `tracing` layer that captures events (with their fields) and span names;
//! - [`chain`]: an error's message chain;
//! - [`services`]: the "skip loudly, unless `STEADFAST_REQUIRE_SERVICES=1`" rule for tests that
//!   need PostgreSQL or Redis, and their URLs.
//!
//! ```
//! use steadfast_testkit::Metrics;
//! use opentelemetry::metrics::MeterProvider as _;
//! let metrics = Metrics::new();
//! metrics.meter().u64_counter("calls").build().add(2, &[]);
//! assert_eq!(metrics.counter("calls", &[]), 2);
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};

pub mod services;

/// Metrics recorded on a real SDK pipeline with the in-memory exporter.
#[derive(Debug)]
pub struct Metrics {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh pipeline; pass [`Metrics::meter`] to the code under test.
    pub fn new() -> Self {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        Self { provider, exporter }
    }

    /// A fresh pipeline installed as the global meter provider (for code that uses the global
    /// meter).
    pub fn install_global() -> Self {
        let metrics = Self::new();
        opentelemetry::global::set_meter_provider(metrics.provider.clone());
        metrics
    }

    /// A meter on this pipeline.
    pub fn meter(&self) -> Meter {
        self.provider.meter("steadfast-test")
    }

    /// Flushes and returns the last (cumulative) export.
    fn last(&self) -> Option<ResourceMetrics> {
        self.provider
            .force_flush()
            .expect("flush the test meter provider");
        self.exporter
            .get_finished_metrics()
            .expect("read the in-memory exporter")
            .pop()
    }

    /// The value of counter `name` summed over points whose attributes include all of `attrs`.
    pub fn counter(&self, name: &str, attrs: &[(&str, &str)]) -> u64 {
        let Some(last) = self.last() else { return 0 };
        let mut total = 0;
        for m in last.scope_metrics().flat_map(|s| s.metrics()) {
            if m.name() != name {
                continue;
            }
            if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                total += sum
                    .data_points()
                    .filter(|p| matches(p.attributes(), attrs))
                    .map(|p| p.value())
                    .sum::<u64>();
            }
        }
        total
    }

    /// The number of recordings of the `f64` histogram `name`.
    pub fn histogram_count(&self, name: &str) -> u64 {
        let Some(last) = self.last() else { return 0 };
        let mut n = 0;
        for m in last.scope_metrics().flat_map(|s| s.metrics()) {
            if m.name() == name {
                if let AggregatedMetrics::F64(MetricData::Histogram(h)) = m.data() {
                    n += h.data_points().map(|p| p.count()).sum::<u64>();
                }
            }
        }
        n
    }

    /// The value of the `i64` up-down counter `name` summed over points whose attributes include
    /// all of `attrs`.
    pub fn up_down(&self, name: &str, attrs: &[(&str, &str)]) -> i64 {
        let Some(last) = self.last() else { return 0 };
        let mut total = 0;
        for m in last.scope_metrics().flat_map(|s| s.metrics()) {
            if m.name() != name {
                continue;
            }
            if let AggregatedMetrics::I64(MetricData::Sum(sum)) = m.data() {
                total += sum
                    .data_points()
                    .filter(|p| matches(p.attributes(), attrs))
                    .map(|p| p.value())
                    .sum::<i64>();
            }
        }
        total
    }

    /// The number and the sum of the recordings of the `f64` histogram `name` on points whose
    /// attributes include all of `attrs`.
    pub fn histogram_with(&self, name: &str, attrs: &[(&str, &str)]) -> (u64, f64) {
        let Some(last) = self.last() else {
            return (0, 0.0);
        };
        let (mut n, mut sum) = (0, 0.0);
        for m in last.scope_metrics().flat_map(|s| s.metrics()) {
            if m.name() != name {
                continue;
            }
            if let AggregatedMetrics::F64(MetricData::Histogram(h)) = m.data() {
                for p in h.data_points().filter(|p| matches(p.attributes(), attrs)) {
                    n += p.count();
                    sum += p.sum();
                }
            }
        }
        (n, sum)
    }

    /// The unit of the instrument `name`, once it has recorded something.
    pub fn unit(&self, name: &str) -> Option<String> {
        let last = self.last()?;
        let unit = last
            .scope_metrics()
            .flat_map(|s| s.metrics())
            .find(|m| m.name() == name)
            .map(|m| m.unit().to_string());
        unit
    }

    /// The value of gauge `name` (first point).
    pub fn gauge(&self, name: &str) -> Option<f64> {
        self.gauge_with(name, &[])
    }

    /// The value of gauge `name` (u64, i64 or f64) on a point whose attributes include all of
    /// `attrs`, as observed by a collection made now (observable gauges run their callbacks).
    pub fn gauge_with(&self, name: &str, attrs: &[(&str, &str)]) -> Option<f64> {
        let last = self.last()?;
        for m in last.scope_metrics().flat_map(|s| s.metrics()) {
            if m.name() != name {
                continue;
            }
            let found = match m.data() {
                AggregatedMetrics::U64(MetricData::Gauge(g)) => g
                    .data_points()
                    .find(|p| matches(p.attributes(), attrs))
                    .map(|p| p.value() as f64),
                AggregatedMetrics::I64(MetricData::Gauge(g)) => g
                    .data_points()
                    .find(|p| matches(p.attributes(), attrs))
                    .map(|p| p.value() as f64),
                AggregatedMetrics::F64(MetricData::Gauge(g)) => g
                    .data_points()
                    .find(|p| matches(p.attributes(), attrs))
                    .map(|p| p.value()),
                _ => None,
            };
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

/// Whether the point's attributes include every `key = value` of `attrs`.
fn matches<'a>(point: impl Iterator<Item = &'a KeyValue>, attrs: &[(&str, &str)]) -> bool {
    let kv: BTreeMap<String, String> = point
        .map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect();
    attrs
        .iter()
        .all(|(k, v)| kv.get(*k).map(String::as_str) == Some(*v))
}

/// One captured tracing event: its target and fields (the message under `message`).
#[derive(Clone, Debug)]
pub struct Event {
    /// The event's target.
    pub target: String,
    /// Its fields, formatted (strings without quotes).
    pub fields: BTreeMap<String, String>,
}

impl Event {
    /// The event's message.
    pub fn message(&self) -> &str {
        self.fields.get("message").map(String::as_str).unwrap_or("")
    }
}

/// Captures every event (all levels) and every span name while installed as the thread's
/// default subscriber.
#[derive(Clone, Debug, Default)]
pub struct Traces {
    /// The events seen so far.
    pub events: Arc<Mutex<Vec<Event>>>,
    /// The names of the spans created so far.
    pub spans: Arc<Mutex<Vec<String>>>,
}

impl Traces {
    /// Installs the capture as this thread's default subscriber until the guard drops.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        use tracing_subscriber::layer::SubscriberExt;
        // tracing-core caches each callsite's interest globally, computed when the callsite is
        // first hit. While at most one dispatcher is registered it asks only the registering
        // thread's subscriber, so a callsite first hit by a parallel test without a subscriber
        // would be cached as disabled for this one too. Two dispatchers kept alive for the
        // whole test binary make every registration consult all live dispatchers.
        static KEEP: OnceLock<[tracing::Dispatch; 2]> = OnceLock::new();
        KEEP.get_or_init(|| {
            [
                tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()),
                tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()),
            ]
        });
        let subscriber = tracing_subscriber::registry().with(self.clone());
        tracing::subscriber::set_default(subscriber)
    }

    /// The events whose message is exactly `msg`.
    pub fn with_message(&self, msg: &str) -> Vec<Event> {
        self.filtered(|e| e.message() == msg)
    }

    /// The events whose message contains `text`.
    pub fn containing(&self, text: &str) -> Vec<Event> {
        self.filtered(|e| e.message().contains(text))
    }

    fn filtered(&self, keep: impl Fn(&Event) -> bool) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|e| keep(e))
            .cloned()
            .collect()
    }
}

struct Visitor<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_string(),
            format!("{value:?}").trim_matches('"').to_string(),
        );
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Traces {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut fields = BTreeMap::new();
        event.record(&mut Visitor(&mut fields));
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Event {
                target: event.metadata().target().to_string(),
                fields,
            });
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.spans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(attrs.metadata().name().to_string());
    }
}

/// The chain of error messages, outermost first.
///
/// ```
/// let e = std::io::Error::other("inner");
/// assert_eq!(steadfast_testkit::chain(&e), ["inner"]);
/// ```
pub fn chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push(e.to_string());
        cur = e.source();
    }
    out
}
