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

pub use steadfast_testkit::services::{
    database_url, redis_url, required as require_services, skip,
};

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

pub use steadfast_testkit::{Event, Metrics, Traces};
