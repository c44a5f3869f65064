//! Client policies from a TOML file: `examples/policies.toml` names two policies that share one
//! retry budget, the routes each serves and a fallback; this example loads it, builds a router
//! of its routes over a hyper-util client (`PolicySet::route_layer`: one stack per route), and
//! calls a tiny local hyper server (127.0.0.1, an OS-chosen port) whose `/payments/{id}`
//! answers 503 once before it succeeds: the `payments` route's retry rides it out. `/search`
//! goes through the `search` policy, and `/health`, which no route names, through the fallback.
//!
//! A mistake in the file is reported with the field's path, e.g.
//! `invalid configuration: `policies.payments.retry.max_attempts` must not be zero`.
//!
//! Run it with `cargo run --example policy_file --features serde,http`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use steadfast::layers::BoxError;
use steadfast::net::config::{PolicySet, RouteConfig};
use steadfast::net::preset::hyper_client;
use tower::{service_fn, Layer, ServiceExt};

/// The policy file, as a deployment would read it from disk.
const POLICIES: &str = include_str!("policies.toml");

/// The server: `/payments/...` busy (503) on its first call, then fine; anything else fine.
async fn handle(
    req: Request<Incoming>,
    payments: Arc<AtomicU32>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let path = req.uri().path().to_owned();
    let status = if path.starts_with("/payments/") {
        let n = payments.fetch_add(1, Ordering::SeqCst);
        if n == 0 {
            503
        } else {
            200
        }
    } else {
        200
    };
    println!("  server: {} {path} -> {status}", req.method());
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(path)))?)
}

async fn start_server() -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let calls = Arc::new(AtomicU32::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let calls = calls.clone();
            let svc = service_fn(move |req| handle(req, calls.clone()));
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                    .await;
            });
        }
    });
    Ok(addr)
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let policies = PolicySet::from_toml_str(POLICIES)?;
    println!("policies: {:?}", policies.names().collect::<Vec<_>>());
    for route in policies.routes() {
        match route {
            RouteConfig::Http {
                method,
                path,
                policy,
            } => {
                println!("  route {method:?} {path} -> {policy}");
            }
            RouteConfig::Grpc {
                service,
                method,
                policy,
            } => {
                println!("  route gRPC {service}/{method:?} -> {policy}");
            }
            _ => {}
        }
    }

    if let Some(fallback) = policies.fallback() {
        println!("  anything else -> {fallback}");
    }

    let addr = start_server().await?;
    // One stack per route, each with its own breaker and limits; the `backend` budget shared.
    let client = policies.route_layer()?.layer(hyper_client::<Full<Bytes>>());

    let calls = [
        (Method::POST, "/payments/42", "{\"amount\": 10}"),
        (Method::GET, "/search?q=lamps", ""),
        (Method::GET, "/health", ""),
    ];
    for (method, path, body) in calls {
        let req = Request::builder()
            .method(method.clone())
            .uri(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))?;
        let res = client.clone().oneshot(req).await?;
        let status = res.status();
        let body = res.into_body().collect().await?.to_bytes();
        println!(
            "  client: {method} {path} -> {status} {:?}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(status, StatusCode::OK);
    }

    // The same file with a mistake: the error names the field.
    let broken = POLICIES.replace("max_attempts = 3", "max_attempts = 0");
    let err = PolicySet::from_toml_str(&broken).expect_err("zero attempts");
    println!("a broken file: {err}");
    assert_eq!(err.path(), "policies.payments.retry.max_attempts");
    Ok(())
}
