//! Client policies from a TOML file: `examples/policies.toml` names two policies that share one
//! retry budget; this example loads it, builds the `payments` policy's stack over a hyper-util
//! client, and calls a tiny local hyper server (127.0.0.1, an OS-chosen port) whose `/payments`
//! answers 503 once before it succeeds: the policy's retry rides it out.
//!
//! A mistake in the file is reported with the field's path, e.g.
//! `invalid configuration: `policies.payments.retry.max_attempts` must not be zero`.
//!
//! Run it with `cargo run --example policy_file --features serde,http`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
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

/// The server's `/payments`: busy (503) on its first call, then fine.
async fn handle(
    _req: Request<Incoming>,
    calls: Arc<AtomicU32>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let n = calls.fetch_add(1, Ordering::SeqCst);
    println!("  server: call {}", n + 1);
    let status = if n == 0 { 503 } else { 200 };
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::from_static(b"paid")))?)
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

    let addr = start_server().await?;
    let payments = policies
        .policy("payments")
        .ok_or("no payments policy in the file")?;
    println!(
        "payments: {} attempts within {:?}",
        payments.max_attempts(),
        payments.timeout()
    );
    let client = payments.clone().layer(hyper_client::<Full<Bytes>>());

    let req = Request::post(format!("http://{addr}/payments/42"))
        .body(Full::new(Bytes::from_static(b"{\"amount\": 10}")))?;
    let res = client.oneshot(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await?.to_bytes();
    println!("  client: {status} {:?}", String::from_utf8_lossy(&body));
    assert_eq!(status, StatusCode::OK);

    // The same file with a mistake: the error names the field.
    let broken = POLICIES.replace("max_attempts = 3", "max_attempts = 0");
    let err = PolicySet::from_toml_str(&broken).expect_err("zero attempts");
    println!("a broken file: {err}");
    assert_eq!(err.path(), "policies.payments.retry.max_attempts");
    Ok(())
}
