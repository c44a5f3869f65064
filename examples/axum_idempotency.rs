//! An axum server with server-side idempotency keys stored in Redis, and a client that sends
//! the same keyed `POST /orders` twice: the order is created once and the second answer is a
//! replay (`Idempotent-Replayed: true`). Then the same key with another body (422), and a POST
//! without a key (400), both RFC 9457 problem details.
//!
//! Needs Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`). Run it with
//! `cargo run --example axum_idempotency`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use steadfast::layers::telemetry::Telemetry;
use steadfast::layers::BoxError;
use steadfast::net::codec::idempotency_key::{IdempotencyKey, IDEMPOTENCY_KEY};
use steadfast::net::idempotency::{HeaderPrincipal, IdempotencyLayer, RedisStore};
use tower::ServiceBuilder;

async fn create_order(State(orders): State<Arc<AtomicU64>>, body: String) -> (StatusCode, String) {
    let id = orders.fetch_add(1, Ordering::SeqCst) + 1;
    println!("  handler: creating order #{id} for {body}");
    (
        StatusCode::CREATED,
        format!("{{\"order\":{id},\"request\":{body}}}"),
    )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter("steadfast=debug")
        .with_target(false)
        .init();

    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let store = RedisStore::connect(&url)
        .await
        .map_err(|e| format!("this example needs Redis at {url}: {e}"))?;

    // Keys are scoped per tenant (here a header a gateway would have verified).
    let idempotency = IdempotencyLayer::builder(store)
        .principal(HeaderPrincipal::new(axum::http::HeaderName::from_static(
            "x-tenant",
        )))
        .telemetry(Telemetry::new().name("orders"))
        .build()?;
    let stats = idempotency.clone();

    let orders = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/orders", post(create_order))
        .with_state(orders.clone())
        .layer(
            ServiceBuilder::new()
                // The layer's own answers are responses; only the handler's errors get here.
                .layer(HandleErrorLayer::new(|e: BoxError| async move {
                    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                }))
                .layer(idempotency),
        );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let key = IdempotencyKey::generate();
    let send = |key: Option<&IdempotencyKey>, body: &'static str| {
        let mut req =
            axum::http::Request::post(format!("http://{addr}/orders")).header("x-tenant", "acme");
        if let Some(key) = key {
            req = req.header(IDEMPOTENCY_KEY, key.to_header_value());
        }
        let req = req.body(Full::new(Bytes::from_static(body.as_bytes())));
        let client = client.clone();
        async move {
            let res = client.request(req?).await?;
            let (parts, body) = res.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, BoxError>((parts, body))
        }
    };

    println!("POST /orders with Idempotency-Key: {}", key.encode());
    for attempt in 1..=2 {
        let (parts, body) = send(Some(&key), "{\"sku\":\"tea\",\"qty\":2}").await?;
        println!(
            "  attempt {attempt}: {} replayed={} expires={:?} body={}",
            parts.status,
            parts.headers.get("idempotent-replayed").is_some(),
            parts.headers.get("idempotency-key-expires"),
            String::from_utf8_lossy(&body)
        );
    }
    let (parts, body) = send(Some(&key), "{\"sku\":\"tea\",\"qty\":5}").await?;
    println!(
        "same key, other body: {} {}",
        parts.status,
        String::from_utf8_lossy(&body)
    );
    let (parts, body) = send(None, "{}").await?;
    println!(
        "no key: {} {}",
        parts.status,
        String::from_utf8_lossy(&body)
    );

    let s = stats.stats();
    println!(
        "orders created: {}; layer stats: executions {}, replays {}, mismatches {}, rejections {}",
        orders.load(Ordering::SeqCst),
        s.executions,
        s.replays,
        s.mismatches,
        s.rejections
    );
    assert_eq!(
        orders.load(Ordering::SeqCst),
        1,
        "the order was created once"
    );
    Ok(())
}
