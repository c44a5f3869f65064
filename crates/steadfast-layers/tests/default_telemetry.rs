//! Default telemetry records on the global meter provider as it is when a layer is built, even
//! when an earlier layer of the same kind was built on another provider (the layers with default
//! telemetry share one process-wide state, made on the provider of the first one built).
//!
//! Its own test binary: it installs a global meter provider, which no other test may see.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use steadfast_layers::deadline::DeadlineLayer;
use steadfast_layers::shed::LoadShedLayer;
use steadfast_layers::timeout::AttemptTimeoutLayer;
use tower::{service_fn, Layer, ServiceExt};

const COUNTERS: [&str; 3] = [
    "steadfast.deadline.calls",
    "steadfast.shed.calls",
    "steadfast.timeout.calls",
];

/// One call through a deadline, a load shed and an attempt timeout, each built now with
/// default telemetry.
async fn call_through_new_layers() {
    let echo = service_fn(|x: u32| async move { Ok::<_, Infallible>(x) });
    let timeout = Duration::from_secs(1);
    let svc = DeadlineLayer::new(timeout)
        .expect("a valid deadline")
        .layer(
            LoadShedLayer::new().layer(
                AttemptTimeoutLayer::new(timeout)
                    .expect("a valid timeout")
                    .layer(echo),
            ),
        );
    assert_eq!(svc.oneshot(7).await.expect("the call succeeds"), 7);
}

/// The sum of every data point of each counter in `COUNTERS`, as last exported.
fn counts(provider: &SdkMeterProvider, exporter: &InMemoryMetricExporter) -> BTreeMap<String, u64> {
    provider.force_flush().expect("metrics flushed");
    let all = exporter.get_finished_metrics().expect("metrics exported");
    let mut out = BTreeMap::new();
    let Some(last) = all.last() else { return out };
    for scope in last.scope_metrics() {
        for m in scope.metrics().filter(|m| COUNTERS.contains(&m.name())) {
            if let AggregatedMetrics::U64(MetricData::Sum(sum)) = m.data() {
                let total: u64 = sum.data_points().map(|p| p.value()).sum();
                *out.entry(m.name().to_string()).or_default() += total;
            }
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn layers_built_after_the_global_provider_is_set_record_on_it() {
    // Built before any provider is set: these record on OpenTelemetry's no-op provider, and make
    // the process-wide state of each kind on it.
    call_through_new_layers().await;

    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    opentelemetry::global::set_meter_provider(provider.clone());

    // Built after: these record on the provider just set.
    call_through_new_layers().await;
    let want = |n: u64| {
        COUNTERS
            .iter()
            .map(|c| (c.to_string(), n))
            .collect::<BTreeMap<_, _>>()
    };
    assert_eq!(counts(&provider, &exporter), want(1));

    // And so do the ones built later still.
    call_through_new_layers().await;
    assert_eq!(counts(&provider, &exporter), want(2));
}
