//! Shared helpers for the idempotency tests: requests, a counting handler, response reading,
//! metrics and trace capture, and Redis/PostgreSQL fixtures that skip loudly (or fail under
//! `STEADFAST_REQUIRE_SERVICES=1`) when the service is unreachable.
#![allow(
    dead_code,
    unused_imports,
    unreachable_pub,
    missing_docs,
    missing_debug_implementations
)]
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use steadfast_http::idempotency::store::IdempotencyStore;
#[cfg(feature = "postgres")]
use steadfast_http::idempotency::store::PostgresStore;
#[cfg(feature = "redis")]
use steadfast_http::idempotency::store::RedisStore;
use steadfast_http::idempotency::{HeaderPrincipal, Idempotency, RequestBody, ResponseBody};
use steadfast_layers::BoxError;
use tower::util::BoxCloneService;
use tower::{service_fn, ServiceExt};

pub type Body = BoxBody<Bytes, BoxError>;
pub type Handler = BoxCloneService<Request<RequestBody<Full<Bytes>>>, Response<Body>, BoxError>;

pub fn full(s: impl Into<Bytes>) -> Body {
    Full::new(s.into()).map_err(|e| match e {}).boxed()
}

/// A POST to `/orders` for `tenant` with `key` (quoted here) and `body`.
pub fn post(key: Option<&str>, tenant: &str, body: &str) -> Request<Full<Bytes>> {
    let mut b = Request::post("/orders").header("x-tenant", tenant);
    if let Some(key) = key {
        b = b.header("idempotency-key", format!("\"{key}\""));
    }
    b.body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
        .unwrap()
}

/// A response read to the end.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn problem(&self) -> serde_json::Value {
        assert_eq!(
            self.headers["content-type"], "application/problem+json",
            "{self:?}"
        );
        let doc: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        assert_eq!(doc["status"], self.status.as_u16(), "{doc}");
        assert!(doc["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:steadfast:idempotency:"));
        assert!(doc["title"].is_string() && doc["detail"].is_string());
        doc
    }
}

/// The server layer over a test handler, scoped by the `x-tenant` header.
pub type Svc<St> = Idempotency<Handler, St, HeaderPrincipal>;

type Pending = Pin<Box<dyn Future<Output = Result<Response<ResponseBody<Body>>, BoxError>> + Send>>;

/// Sends `req` through a clone of `svc` and reads the answer.
pub fn send<St: IdempotencyStore>(
    svc: &Svc<St>,
    req: Request<Full<Bytes>>,
) -> impl Future<Output = Answer> + Send + 'static {
    // Boxed outside the async block: proving `Send` for the service's future inside it trips
    // rustc's higher-ranked lifetime limitation on `Into<BoxError>` bounds
    // (rust-lang/rust#102211, "implementation of `From` is not general enough").
    let fut: Pending = Box::pin(svc.clone().oneshot(req));
    async move { read(fut.await.unwrap()).await }
}

pub async fn read(res: Response<ResponseBody<Body>>) -> Answer {
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// A handler that counts its calls and answers `201 "created #n: <request body>"`.
pub fn counting(calls: Arc<AtomicUsize>) -> Handler {
    scripted(calls, |_, _| async { Ok(()) })
}

/// A handler that counts its calls, runs `before(n, body)` (n from 1), then answers
/// `201 "created #n: <body>"`.
pub fn scripted<F, Fut>(calls: Arc<AtomicUsize>, before: F) -> Handler
where
    F: Fn(usize, Bytes) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    BoxCloneService::new(service_fn(move |req: Request<RequestBody<Full<Bytes>>>| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let before = before.clone();
        async move {
            let body = req.into_body().collect().await?.to_bytes();
            before(n, body.clone()).await?;
            let text = format!("created #{n}: {}", String::from_utf8_lossy(&body));
            let mut res = Response::new(full(text));
            *res.status_mut() = StatusCode::CREATED;
            res.headers_mut()
                .insert("x-order", n.to_string().parse().unwrap());
            Ok(res)
        }
    }))
}

/// A handler that answers `status` with body `body` and counts calls.
pub fn answering(calls: Arc<AtomicUsize>, status: StatusCode, body: &'static str) -> Handler {
    BoxCloneService::new(service_fn(
        move |_req: Request<RequestBody<Full<Bytes>>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut res = Response::new(full(body));
                *res.status_mut() = status;
                Ok(res)
            }
        },
    ))
}

// ---------------------------------------------------------------- services

pub fn require_services() -> bool {
    std::env::var("STEADFAST_REQUIRE_SERVICES").as_deref() == Ok("1")
}

/// Skips loudly, or fails when services are required.
pub fn skip(what: &str, why: &dyn std::fmt::Display) {
    if require_services() {
        panic!("{what} is unreachable ({why}) and STEADFAST_REQUIRE_SERVICES=1");
    }
    // Straight to the process's stderr: libtest captures `eprintln!` of passing tests.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "\n**********\n*** SKIPPED: {what} is unreachable ({why}).\n*** Set STEADFAST_REQUIRE_SERVICES=1 to make this a failure.\n**********"
    );
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// A Redis store under a prefix unique to this test run, or `None` (skipped).
#[cfg(feature = "redis")]
pub async fn redis_store() -> Option<RedisStore> {
    let url = redis_url();
    let connect = async {
        let client = redis::Client::open(url.as_str())?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(1);
        redis::aio::ConnectionManager::new_with_config(client, config).await
    };
    match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(conn)) => {
            let prefix = format!("steadfast:test:{}:", uuid::Uuid::now_v7().simple());
            Some(RedisStore::builder(conn).prefix(prefix).build().unwrap())
        }
        Ok(Err(e)) => {
            skip(&format!("Redis at {url}"), &e);
            None
        }
        Err(_) => {
            skip(&format!("Redis at {url}"), &"connect timed out");
            None
        }
    }
}

/// Runs `f` on a fresh Redis store and deletes its keys afterwards, even if `f` panics.
#[cfg(feature = "redis")]
pub async fn with_redis<F, Fut>(f: F)
where
    F: FnOnce(RedisStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(store) = redis_store().await else {
        return;
    };
    let result = AssertUnwindSafe(f(store.clone())).catch_unwind().await;
    let _ = store.clear().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// A PostgreSQL store in a schema of its own (migrated), or `None` (skipped).
#[cfg(feature = "postgres")]
pub async fn pg_store() -> Option<PostgresStore> {
    let url = database_url();
    let connect = sqlx::postgres::PgPoolOptions::new()
        .max_connections(10)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url);
    let pool = match tokio::time::timeout(Duration::from_secs(5), connect).await {
        Ok(Ok(pool)) => pool,
        Ok(Err(e)) => {
            skip(&format!("PostgreSQL at {url}"), &e);
            return None;
        }
        Err(_) => {
            skip(&format!("PostgreSQL at {url}"), &"connect timed out");
            return None;
        }
    };
    let schema = format!("steadfast_test_{}", uuid::Uuid::now_v7().simple());
    let store = PostgresStore::builder(pool).schema(schema).build().unwrap();
    store.migrate().await.unwrap();
    Some(store)
}

/// Runs `f` on a fresh PostgreSQL store and drops its schema afterwards, even if `f` panics.
#[cfg(feature = "postgres")]
pub async fn with_pg<F, Fut>(f: F)
where
    F: FnOnce(PostgresStore) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(store) = pg_store().await else {
        return;
    };
    let result = AssertUnwindSafe(f(store.clone())).catch_unwind().await;
    let drop = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", store.schema());
    let _ = sqlx::query(&drop).execute(store.pool()).await;
    store.pool().close().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

// ---------------------------------------------------------------- telemetry

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

/// One captured tracing event.
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

/// Captures events and span names while installed as the thread's default subscriber.
#[derive(Clone, Default)]
pub struct Traces {
    pub events: Arc<Mutex<Vec<Event>>>,
    pub spans: Arc<Mutex<Vec<String>>>,
}

impl Traces {
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        use tracing_subscriber::layer::SubscriberExt;
        // tracing-core caches each callsite's interest globally when the callsite is first hit;
        // while at most one dispatcher is registered it asks only that thread's subscriber, so a
        // callsite first hit by a parallel test without a subscriber would be cached as disabled
        // here too. Two dispatchers kept alive for the whole binary make every interest
        // "sometimes" (as in steadfast-layers' test support).
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

    pub fn containing(&self, text: &str) -> Vec<Event> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.message().contains(text))
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
