//! Exporting steadfast's metrics and traces: to Prometheus (`opentelemetry-prometheus`), or over
//! OTLP (`opentelemetry-otlp`, HTTP/protobuf) with the layers' `tracing` spans bridged to
//! OpenTelemetry by `tracing-opentelemetry`.
//!
//! A flaky in-process peer (every fourth call fails) sits behind a deadline, a retry layer, a
//! circuit breaker and a per-attempt timeout. The layers record on the global meter provider's
//! `steadfast` meter, captured when each layer is built: install your provider first.
//!
//! ```text
//! cargo run --example metrics_export                     # Prometheus: print the scrape
//! cargo run --example metrics_export -- --serve 127.0.0.1:9464
//!                                                        # Prometheus: serve /metrics until killed
//! cargo run --example metrics_export -- --otlp           # OTLP to http://127.0.0.1:4318
//! cargo run --example metrics_export -- --otlp http://collector:4318
//! ```
//!
//! The names Prometheus shows (`steadfast_retry_attempts_total`, ...) are listed in
//! docs/observability.md; docs/dashboards/steadfast.json is a Grafana dashboard over them.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use prometheus::{Encoder, TextEncoder};
use steadfast::layers::breaker::CircuitBreakerLayer;
use steadfast::layers::deadline::DeadlineLayer;
use steadfast::layers::retry::RetryLayer;
use steadfast::layers::timeout::AttemptTimeoutLayer;
use steadfast::layers::BoxError;
use tower::util::BoxService;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

enum Mode {
    /// Print the Prometheus scrape once.
    Print,
    /// Serve `/metrics` on this address while calls keep flowing.
    Serve(String),
    /// Send metrics and traces to this OTLP/HTTP endpoint.
    Otlp(String),
}

fn mode() -> Result<Mode, BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => Ok(Mode::Print),
        ["--serve", addr] => Ok(Mode::Serve(addr.to_owned())),
        ["--otlp"] => Ok(Mode::Otlp("http://127.0.0.1:4318".to_owned())),
        ["--otlp", url] => Ok(Mode::Otlp(url.trim_end_matches('/').to_owned())),
        _ => Err("usage: metrics_export [--serve HOST:PORT | --otlp [URL]]".into()),
    }
}

fn resource() -> Resource {
    Resource::builder()
        .with_service_name("metrics-export-example")
        .build()
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    match mode()? {
        Mode::Print => {
            let registry = install_prometheus()?;
            let mut client = client()?;
            calls(&mut client, 200).await?;
            // What a Prometheus scraping this process would read: steadfast's series (the
            // gauges of the layers alive now included).
            for line in scrape(&registry)?.lines() {
                if line.contains("steadfast_") {
                    println!("{line}");
                }
            }
        }
        Mode::Serve(addr) => {
            let registry = install_prometheus()?;
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            println!("serving http://{}/metrics", listener.local_addr()?);
            tokio::spawn(serve(listener, registry));
            let mut client = client()?;
            loop {
                calls(&mut client, 100).await?;
            }
        }
        Mode::Otlp(endpoint) => otlp(&endpoint).await?,
    }
    Ok(())
}

/// A meter provider whose reader is the Prometheus exporter, installed as the global provider.
fn install_prometheus() -> Result<prometheus::Registry, BoxError> {
    let registry = prometheus::Registry::new();
    let exporter = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()?;
    let provider = SdkMeterProvider::builder()
        .with_reader(exporter)
        .with_resource(resource())
        .build();
    opentelemetry::global::set_meter_provider(provider);
    Ok(registry)
}

fn scrape(registry: &prometheus::Registry) -> Result<String, BoxError> {
    let mut buf = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buf)?;
    Ok(String::from_utf8(buf)?)
}

/// `GET /metrics` on a small hyper server.
async fn serve(listener: tokio::net::TcpListener, registry: prometheus::Registry) {
    while let Ok((stream, _)) = listener.accept().await {
        let registry = registry.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                let body = scrape(&registry).unwrap_or_else(|e| format!("# error: {e}\n"));
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("content-type", "text/plain; version=0.0.4")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap_or_default(),
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// The stack: a 1 s deadline, 3 attempts, a circuit breaker, 100 ms per attempt, around a peer
/// whose every fourth call fails. Build it once: each layer registers its gauges when built.
fn client() -> Result<Client, BoxError> {
    let seen = Arc::new(AtomicU32::new(0));
    let peer = service_fn(move |order: u32| {
        let k = seen.fetch_add(1, Ordering::Relaxed);
        async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if k % 4 == 3 {
                return Err::<u32, BoxError>("peer unavailable".into());
            }
            Ok(order)
        }
    });
    Ok(BoxService::new(
        ServiceBuilder::new()
            .layer(DeadlineLayer::new(Duration::from_secs(1))?)
            .layer(RetryLayer::builder().max_attempts(3).seed(7).build()?)
            .layer(CircuitBreakerLayer::builder().build()?)
            .layer(AttemptTimeoutLayer::new(Duration::from_millis(100))?)
            .service(peer),
    ))
}

type Client = BoxService<u32, u32, BoxError>;

/// `n` calls through the stack, each in its own span.
async fn calls(client: &mut Client, n: u32) -> Result<(), BoxError> {
    let mut failed = 0;
    for order in 0..n {
        let span = tracing::info_span!("place_order", order);
        let call = client.ready().await?.call(order);
        if call.instrument(span).await.is_err() {
            failed += 1;
        }
    }
    eprintln!("{n} calls, {failed} failed");
    Ok(())
}

/// Metrics and traces over OTLP/HTTP: a periodic metric reader and a batch span processor, the
/// layers' spans bridged by `tracing-opentelemetry`.
async fn otlp(endpoint: &str) -> Result<(), BoxError> {
    let http = OnRuntime::new();
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_http_client(http.clone())
        .with_endpoint(format!("{endpoint}/v1/metrics"))
        .build()?;
    let meters = SdkMeterProvider::builder()
        .with_periodic_exporter(metrics)
        .with_resource(resource())
        .build();
    opentelemetry::global::set_meter_provider(meters.clone());
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(http)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .build()?;
    let tracers = SdkTracerProvider::builder()
        .with_batch_exporter(spans)
        .with_resource(resource())
        .build();
    // The layers' spans are DEBUG spans with `steadfast::*` targets.
    tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new(
            "steadfast=debug,metrics_export=info",
        ))
        .with(tracing_opentelemetry::layer().with_tracer(tracers.tracer("metrics_export")))
        .init();

    calls(&mut client()?, 200).await?;

    // Flush both pipelines. Shutdown blocks this thread until the exporters' threads are done,
    // and they send through this runtime: off the runtime's workers.
    let flushed = tokio::task::spawn_blocking(move || {
        let traces = tracers.shutdown();
        let metrics = meters.shutdown();
        (traces, metrics)
    })
    .await?;
    match flushed {
        (Ok(()), Ok(())) => println!("metrics and traces sent to {endpoint}"),
        (traces, metrics) => {
            return Err(format!(
                "export to {endpoint} failed (is an OTLP/HTTP receiver listening?): \
                 traces {traces:?}, metrics {metrics:?}"
            )
            .into())
        }
    }
    Ok(())
}

/// The OTLP exporters send from their own threads, and hyper's client needs a Tokio runtime:
/// each request runs on the runtime this was created in.
#[derive(Clone, Debug)]
struct OnRuntime {
    runtime: tokio::runtime::Handle,
    client: opentelemetry_http::hyper::HyperClient,
}

impl OnRuntime {
    fn new() -> Self {
        OnRuntime {
            runtime: tokio::runtime::Handle::current(),
            client: opentelemetry_http::hyper::HyperClient::with_default_connector(
                Duration::from_secs(10),
                None,
            ),
        }
    }
}

impl HttpClient for OnRuntime {
    // `HttpClient` is an `async_trait`: this is its desugared signature.
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let sent = self
            .runtime
            .spawn(async move { client.send_bytes(request).await });
        Box::pin(async move { sent.await? })
    }
}
