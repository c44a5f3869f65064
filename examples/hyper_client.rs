//! A hyper-util client wrapped in steadfast's standard client stack, against a tiny local hyper
//! server that this example starts itself on 127.0.0.1 (an OS-chosen port).
//!
//! The server misbehaves on purpose: `/flaky` answers 503 twice, `/slow` hangs on its first
//! call, `/upload` answers 503 to the first upload after reading it. The stack (2 s total
//! deadline, retries with budget and jitter, 500 ms per attempt, deadline propagation, replayable
//! bodies) rides it out, and the server, behind `DeadlineServerLayer`, sees each attempt's
//! deadline. Last, a port nobody listens on: the refused connections are re-sent transparently
//! (never reached the server) and the call gives up with the reason.
//!
//! Run it with `cargo run --example hyper_client` (add `RUST_LOG=steadfast=debug` to see every
//! decision).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use steadfast::layers::deadline::Deadline;
use steadfast::layers::retry::GaveUp;
use steadfast::layers::BoxError;
use steadfast::net::body::ReplayBody;
use steadfast::net::classify::RetryGaveUp;
use steadfast::net::codec::REQUEST_TIMEOUT_MS;
use steadfast::net::preset::StandardClientLayer;
use steadfast::net::propagate::DeadlineServerLayer;
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceExt};

#[derive(Default)]
struct Counts {
    flaky: AtomicU32,
    slow: AtomicU32,
    upload: AtomicU32,
}

/// The server's handler: behind `DeadlineServerLayer`, so the caller's deadline is in scope.
async fn handle(
    req: Request<Incoming>,
    counts: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, BoxError> {
    let seen = format!(
        "header {}={}, deadline in scope: {:?}",
        REQUEST_TIMEOUT_MS,
        req.headers()
            .get(REQUEST_TIMEOUT_MS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-"),
        Deadline::current().map(|d| d.remaining().as_millis()),
    );
    let path = req.uri().path().to_owned();
    let reply = |status: u16, body: String| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from(body)))
            .map_err(BoxError::from)
    };
    match path.as_str() {
        "/flaky" => {
            let n = counts.flaky.fetch_add(1, Ordering::SeqCst);
            println!("  server: /flaky call {} ({seen})", n + 1);
            if n < 2 {
                return reply(503, "try again".into());
            }
            reply(200, "flaky finally answered".into())
        }
        "/slow" => {
            let n = counts.slow.fetch_add(1, Ordering::SeqCst);
            println!("  server: /slow call {} ({seen})", n + 1);
            if n == 0 {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            reply(200, "slow answered on a retry".into())
        }
        "/upload" => {
            let body = req.into_body().collect().await?.to_bytes();
            let n = counts.upload.fetch_add(1, Ordering::SeqCst);
            println!(
                "  server: /upload call {} got {} bytes ({seen})",
                n + 1,
                body.len()
            );
            if n == 0 {
                return reply(503, "busy".into());
            }
            reply(200, format!("stored {} bytes", body.len()))
        }
        _ => reply(404, "no such path".into()),
    }
}

async fn start_server() -> Result<SocketAddr, BoxError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let counts = Arc::new(Counts::default());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counts = counts.clone();
            let svc = DeadlineServerLayer::new()
                .layer(service_fn(move |req| handle(req, counts.clone())));
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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "steadfast=info".into()),
        )
        .with_target(false)
        .init();

    let addr = start_server().await?;
    println!("server listening on http://{addr}");

    // The transport: hyper-util's pooled client. Its body type is the stack's replayable body.
    let hyper_client: Client<_, ReplayBody<Full<Bytes>>> =
        Client::builder(TokioExecutor::new()).build_http();
    let client = StandardClientLayer::builder()
        .timeout(Duration::from_secs(2))
        .attempt_timeout(Duration::from_millis(500))
        .retry(|r| r.max_attempts(3).seed(42))
        .build()?
        .layer(hyper_client);

    for (method, path, body) in [
        ("GET", "/flaky", ""),
        ("GET", "/slow", ""),
        (
            "POST",
            "/upload",
            "a request body that the retry sends again, byte for byte",
        ),
    ] {
        println!("{method} {path}");
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))?;
        let start = Instant::now();
        let res = client.clone().oneshot(req).await?;
        let status = res.status();
        let gave_up = res.extensions().get::<RetryGaveUp>().copied();
        let text = res.into_body().collect().await?.to_bytes();
        println!(
            "  client: {status} {:?} after {} ms{}",
            String::from_utf8_lossy(&text),
            start.elapsed().as_millis(),
            gave_up.map_or(String::new(), |g| format!(
                " (gave up: {} after {})",
                g.reason, g.attempts
            )),
        );
        assert_eq!(status, StatusCode::OK);
    }

    // Nobody listens on this port: every connection is refused before anything is sent.
    let dead = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        l.local_addr()?
    };
    println!("GET http://{dead}/ (nobody listening)");
    let req = Request::get(format!("http://{dead}/")).body(Full::new(Bytes::new()))?;
    let start = Instant::now();
    let err = client
        .oneshot(req)
        .await
        .expect_err("nothing listens there");
    match err.downcast_ref::<GaveUp>() {
        Some(g) => println!(
            "  client: gave up after {} counted attempt(s) in {} ms: {}; last error: {}",
            g.attempts(),
            start.elapsed().as_millis(),
            g.reason(),
            g.last_error().map_or(String::new(), |e| e.to_string())
        ),
        None => println!("  client: {err}"),
    }
    Ok(())
}
