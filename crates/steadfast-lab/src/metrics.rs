//! `--metrics-addr HOST:PORT`: the layers' OpenTelemetry metrics, served as Prometheus text on
//! `/metrics` while the scenarios run, so that a Prometheus (and a dashboard on it) can watch a
//! live run.
//!
//! [`PrometheusMetrics::install_global`] installs an OpenTelemetry SDK meter provider whose reader
//! is `opentelemetry-prometheus`'s exporter as the global provider. Every layer the scenarios
//! build records on the global provider's `steadfast` meter (the default `Telemetry`), so it must
//! run before the first layer is built. [`PrometheusMetrics::serve`] then answers
//! `GET /metrics` on a small hyper server; the names are those `opentelemetry-prometheus`
//! renders (dots become underscores, counters end in `_total`, a unit `s` adds `_seconds`),
//! listed in `docs/observability.md`.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> Result<(), steadfast_lab::BoxError> {
//! use steadfast_lab::metrics::PrometheusMetrics;
//! let metrics = PrometheusMetrics::install_global()?;
//! let server = metrics.serve("127.0.0.1:9464".parse()?).await?;
//! println!("scrape http://{}/metrics", server.local_addr());
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::Resource;
use prometheus::{Encoder, TextEncoder};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::BoxError;

/// The content type of the Prometheus text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A meter provider exporting to a Prometheus registry, installed as the global provider.
#[derive(Clone, Debug)]
pub struct PrometheusMetrics {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    /// `GET /metrics` answered so far (by every server of this pipeline).
    scrapes: Arc<AtomicU64>,
}

impl PrometheusMetrics {
    /// Builds the pipeline (resource `service.name = steadfast-lab`) and installs it as the
    /// global meter provider.
    ///
    /// ```no_run
    /// let metrics = steadfast_lab::metrics::PrometheusMetrics::install_global()?;
    /// # Ok::<(), steadfast_lab::BoxError>(())
    /// ```
    pub fn install_global() -> Result<Self, BoxError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()?;
        let provider = SdkMeterProvider::builder()
            .with_reader(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name("steadfast-lab")
                    .build(),
            )
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        Ok(PrometheusMetrics {
            registry,
            provider,
            scrapes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The provider (for code that takes a meter rather than the global one).
    pub fn provider(&self) -> &SdkMeterProvider {
        &self.provider
    }

    /// Everything recorded so far, in the Prometheus text format (what `/metrics` answers).
    ///
    /// ```no_run
    /// let metrics = steadfast_lab::metrics::PrometheusMetrics::install_global()?;
    /// assert!(metrics.render()?.contains("target_info"));
    /// # Ok::<(), steadfast_lab::BoxError>(())
    /// ```
    pub fn render(&self) -> Result<String, BoxError> {
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        Ok(String::from_utf8(buf)?)
    }

    /// Serves `GET /metrics` on `addr` (port 0: one the OS picks) until the returned server is
    /// dropped; any other path is a 404. Call it inside a tokio runtime.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), steadfast_lab::BoxError> {
    /// let metrics = steadfast_lab::metrics::PrometheusMetrics::install_global()?;
    /// let server = metrics.serve("127.0.0.1:0".parse()?).await?;
    /// assert_ne!(server.local_addr().port(), 0);
    /// # Ok(()) }
    /// ```
    pub async fn serve(self, addr: SocketAddr) -> Result<MetricsServer, BoxError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("--metrics-addr {addr}: cannot listen: {e}"))?;
        let local_addr = listener.local_addr()?;
        let scrapes = Arc::clone(&self.scrapes);
        let this = Arc::new(self);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let this = Arc::clone(&this);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let this = Arc::clone(&this);
                        async move { Ok::<_, Infallible>(this.answer(&req)) }
                    });
                    // A scraper that hangs up mid-answer is not the lab's problem.
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(MetricsServer {
            local_addr,
            task,
            scrapes,
        })
    }

    fn answer(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, content_type: &str, body: String| {
            let mut res = Response::new(Full::new(Bytes::from(body)));
            *res.status_mut() = status;
            if let Ok(v) = header::HeaderValue::from_str(content_type) {
                res.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            res
        };
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => match self.render() {
                Ok(text) => {
                    self.scrapes.fetch_add(1, Ordering::Relaxed);
                    reply(StatusCode::OK, CONTENT_TYPE, text)
                }
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    format!("cannot encode the metrics: {e}\n"),
                ),
            },
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                "the lab serves GET /metrics only\n".to_owned(),
            ),
        }
    }
}

/// The running `/metrics` server; it stops when dropped.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
    scrapes: Arc<AtomicU64>,
}

impl MetricsServer {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many times `/metrics` has been answered.
    pub fn scrapes(&self) -> u64 {
        self.scrapes.load(Ordering::Relaxed)
    }

    /// Waits, at most `max_wait`, until `/metrics` is answered once more, so that a scraper
    /// reads the run's last values before the lab exits. Returns at once when nobody has
    /// scraped yet (nobody is watching), and whether a scrape came.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() -> Result<(), steadfast_lab::BoxError> {
    /// # let server = steadfast_lab::metrics::PrometheusMetrics::install_global()?.serve("127.0.0.1:0".parse()?).await?;
    /// let scraped = server.final_scrape(std::time::Duration::from_secs(30)).await;
    /// # Ok(()) }
    /// ```
    pub async fn final_scrape(&self, max_wait: Duration) -> bool {
        let seen = self.scrapes();
        if seen == 0 {
            return false;
        }
        let waited = tokio::time::timeout(max_wait, async {
            while self.scrapes() == seen {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        waited.await.is_ok()
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
