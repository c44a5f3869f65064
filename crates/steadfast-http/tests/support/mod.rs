//! Shared test helpers: an in-memory "wire" between services, a drop probe, a metrics capture
//! on the OpenTelemetry SDK's in-memory exporter, and a tracing capture.
#![allow(dead_code, unreachable_pub, missing_docs)]
#![allow(clippy::unwrap_used)]

pub mod grpc;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{Request, Response};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use steadfast_layers::BoxError;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

/// Sends a request to `server` as a network hop would: only the method, URI, version, headers
/// and body cross (no extensions), and the server runs in its own task (no task-local scope).
/// Dropping the returned future aborts the server's task, as a closed connection would.
pub fn hop<S, B, R>(
    server: S,
) -> impl Service<
    Request<B>,
    Response = Response<R>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<R>, BoxError>> + Send,
> + Clone
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
    R: Send + 'static,
{
    tower::service_fn(move |req: Request<B>| {
        let (parts, body) = req.into_parts();
        let mut wire = Request::new(body);
        *wire.method_mut() = parts.method;
        *wire.uri_mut() = parts.uri;
        *wire.version_mut() = parts.version;
        *wire.headers_mut() = parts.headers;
        let server = server.clone();
        let task = AbortOnDrop(tokio::spawn(async move {
            server.oneshot(wire).await.map_err(Into::into)
        }));
        async move { task.await? }
    })
}

/// A join handle that aborts its task when dropped.
pub struct AbortOnDrop<T>(pub JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, BoxError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map_err(Into::into)
    }
}

/// Records when it is dropped: put one in a handler's future to see when its work stops.
pub struct DropProbe(pub Arc<Mutex<Option<Instant>>>);

impl Drop for DropProbe {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

/// Metrics recorded on a real SDK pipeline with the in-memory exporter, installed as the
/// global meter provider (this crate records on the global `steadfast` meter).
pub struct Metrics {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
}

impl Metrics {
    pub fn install_global() -> Self {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_reader(PeriodicReader::builder(exporter.clone()).build())
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        Self { provider, exporter }
    }

    /// The value of counter `name` summed over points whose attributes include all of `attrs`.
    pub fn counter(&self, name: &str, attrs: &[(&str, &str)]) -> u64 {
        self.provider.force_flush().unwrap();
        let all = self.exporter.get_finished_metrics().unwrap();
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
}

/// One captured tracing event: its target and fields.
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

/// Captures every event while installed as the thread's default subscriber.
#[derive(Clone, Default)]
pub struct Traces {
    pub events: Arc<Mutex<Vec<Event>>>,
}

impl Traces {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        use tracing_subscriber::layer::SubscriberExt;
        // tracing-core caches each callsite's interest globally; while at most one dispatcher is
        // registered it asks only the registering thread's subscriber, so a callsite first hit by
        // a parallel test without a subscriber would be cached as disabled here too. Two
        // dispatchers kept alive for the whole binary make every interest "sometimes" (as in
        // steadfast-layers' test support).
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
}
