//! Shared test helpers: a scripted service, a metrics capture on the OTel SDK's in-memory
//! exporter, and a tracing capture.
#![allow(dead_code, unreachable_pub, missing_docs)]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use steadfast_layers::BoxError;
use tokio::time::Instant;
use tower::service_fn;
use tower::util::BoxCloneService;

/// What one scripted attempt does.
#[derive(Clone, Debug)]
pub enum Step {
    Ok(u16),
    Err(&'static str),
    /// Sleep, then answer.
    Slow(Duration, u16),
}

/// A service that plays `steps` in order (the last one repeats) and records when each call
/// started.
#[derive(Clone, Default)]
pub struct Script {
    pub calls: Arc<Mutex<Vec<Instant>>>,
}

impl Script {
    pub fn service(&self, steps: Vec<Step>) -> BoxCloneService<u32, u16, BoxError> {
        let calls = self.calls.clone();
        let steps = Arc::new(steps);
        BoxCloneService::new(service_fn(move |_req: u32| {
            let n = {
                let mut c = calls.lock().unwrap();
                c.push(Instant::now());
                c.len() - 1
            };
            let step = steps[n.min(steps.len() - 1)].clone();
            async move {
                match step {
                    Step::Ok(s) => Ok(s),
                    Step::Err(e) => Err(BoxError::from(format!("{e} #{}", n + 1))),
                    Step::Slow(d, s) => {
                        tokio::time::sleep(d).await;
                        Ok(s)
                    }
                }
            }
        }))
    }

    pub fn count(&self) -> usize {
        self.calls.lock().unwrap().len()
    }

    /// Offsets of each call from `t0`.
    pub fn offsets(&self, t0: Instant) -> Vec<Duration> {
        self.calls.lock().unwrap().iter().map(|t| *t - t0).collect()
    }
}

/// Metrics recorded on a real SDK pipeline with the in-memory exporter.
pub struct Metrics {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
}

impl Metrics {
    pub fn new() -> Self {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        Self { provider, exporter }
    }

    pub fn meter(&self) -> Meter {
        self.provider.meter("steadfast-test")
    }

    /// The value of counter `name` summed over points whose attributes include all of `attrs`.
    pub fn counter(&self, name: &str, attrs: &[(&str, &str)]) -> u64 {
        self.provider.force_flush().unwrap();
        let all = self.exporter.get_finished_metrics().unwrap();
        // Cumulative temporality: the last export holds the totals.
        let Some(last) = all.last() else { return 0 };
        let mut total = 0;
        for scope in last.scope_metrics() {
            for m in scope.metrics() {
                if m.name() != name {
                    continue;
                }
                if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                    for p in sum.data_points() {
                        let kv: BTreeMap<String, String> = p
                            .attributes()
                            .map(|kv| (kv.key.to_string(), kv.value.to_string()))
                            .collect();
                        if attrs
                            .iter()
                            .all(|(k, v)| kv.get(*k).map(String::as_str) == Some(*v))
                        {
                            total += p.value();
                        }
                    }
                }
            }
        }
        total
    }

    /// The number of recordings of histogram `name`.
    pub fn histogram_count(&self, name: &str) -> u64 {
        self.provider.force_flush().unwrap();
        let all = self.exporter.get_finished_metrics().unwrap();
        let Some(last) = all.last() else { return 0 };
        let mut n = 0;
        for scope in last.scope_metrics() {
            for m in scope.metrics() {
                if m.name() == name {
                    if let AggregatedMetrics::F64(MetricData::Histogram(h)) = m.data() {
                        n += h.data_points().map(|p| p.count()).sum::<u64>();
                    }
                }
            }
        }
        n
    }
}

impl Metrics {
    /// The latest value of the `f64` gauge `name` (observable gauges are read at each flush).
    pub fn gauge(&self, name: &str) -> Option<f64> {
        self.provider.force_flush().unwrap();
        let all = self.exporter.get_finished_metrics().unwrap();
        let last = all.last()?;
        for scope in last.scope_metrics() {
            for m in scope.metrics() {
                if m.name() == name {
                    if let AggregatedMetrics::F64(MetricData::Gauge(g)) = m.data() {
                        return g.data_points().next().map(|p| p.value());
                    }
                }
            }
        }
        None
    }
}

/// One captured tracing event: its target, message and fields.
#[derive(Clone, Debug)]
pub struct Event {
    pub target: String,
    pub fields: BTreeMap<String, String>,
}

impl Event {
    pub fn message(&self) -> &str {
        self.fields.get("message").map(String::as_str).unwrap_or("")
    }
}

/// Captures every event (all levels) while installed as the thread's default subscriber.
#[derive(Clone, Default)]
pub struct Traces {
    pub events: Arc<Mutex<Vec<Event>>>,
    pub spans: Arc<Mutex<Vec<String>>>,
}

impl Traces {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        use tracing_subscriber::layer::SubscriberExt;
        // tracing-core caches each callsite's interest globally, computed when the callsite is
        // first hit (never before a dispatcher exists: the global max level starts at OFF).
        // While at most one dispatcher is registered, it asks only the registering thread's
        // subscriber, so a callsite first hit on another test's thread (no subscriber) would be
        // cached as disabled for this one too. Two dispatchers kept alive for the whole test
        // binary make every registration consult all live dispatchers, under tracing-core's lock.
        static KEEP: std::sync::OnceLock<[tracing::Dispatch; 2]> = std::sync::OnceLock::new();
        KEEP.get_or_init(|| {
            [
                tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()),
                tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default()),
            ]
        });
        let subscriber = tracing_subscriber::registry().with(self.clone());
        tracing::subscriber::set_default(subscriber)
    }

    pub fn with_message(&self, msg: &str) -> Vec<Event> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.message() == msg)
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
        self.events.lock().unwrap().push(Event {
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
            .unwrap()
            .push(attrs.metadata().name().to_string());
    }
}

/// The chain of error messages, outermost first.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push(e.to_string());
        cur = e.source();
    }
    out
}

impl Metrics {
    /// The value of gauge `name` (u64, i64 or f64) on a point whose attributes include all of
    /// `attrs`, as observed by a collection made now (observable gauges run their callbacks).
    pub fn gauge_with(&self, name: &str, attrs: &[(&str, &str)]) -> Option<f64> {
        fn matches(kvs: &[&opentelemetry::KeyValue], attrs: &[(&str, &str)]) -> bool {
            attrs.iter().all(|(k, v)| {
                kvs.iter()
                    .any(|kv| kv.key.as_str() == *k && kv.value.to_string() == *v)
            })
        }
        self.provider.force_flush().unwrap();
        let all = self.exporter.get_finished_metrics().unwrap();
        let last = all.last()?;
        for scope in last.scope_metrics() {
            for m in scope.metrics() {
                if m.name() != name {
                    continue;
                }
                let found = match m.data() {
                    AggregatedMetrics::U64(MetricData::Gauge(g)) => g
                        .data_points()
                        .find(|p| matches(&p.attributes().collect::<Vec<_>>(), attrs))
                        .map(|p| p.value() as f64),
                    AggregatedMetrics::I64(MetricData::Gauge(g)) => g
                        .data_points()
                        .find(|p| matches(&p.attributes().collect::<Vec<_>>(), attrs))
                        .map(|p| p.value() as f64),
                    AggregatedMetrics::F64(MetricData::Gauge(g)) => g
                        .data_points()
                        .find(|p| matches(&p.attributes().collect::<Vec<_>>(), attrs))
                        .map(|p| p.value()),
                    _ => None,
                };
                if found.is_some() {
                    return found;
                }
            }
        }
        None
    }
}
