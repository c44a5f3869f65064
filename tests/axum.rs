//! steadfast's server layers straight on an axum `Router`, through the facade crate, with
//! `Router::layer` and no `HandleErrorLayer`: `DeadlineServerLayer` and `IdempotencyLayer`
//! answer with responses and pass the router's `Infallible` through, so axum accepts them.
//!
//! The layering is the one the idempotency docs advise: the deadline layer outside the
//! idempotency layer (in axum the last `.layer(..)` is the outermost), so a request that arrives
//! after its deadline is answered `504` without taking its key.
//!
//! The deadline tests drive the `Router` with `tower::ServiceExt::oneshot` on a paused clock; the
//! last test serves it with `axum::serve` on 127.0.0.1 and calls it with hyper-util's client
//! (real clock, no sleeps: nothing in it waits for time).
#![cfg(all(feature = "layers", feature = "http"))]
#![allow(clippy::unwrap_used, missing_docs)]

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use steadfast::layers::deadline::Deadline;
use steadfast::net::codec::idempotency_key::IDEMPOTENCY_KEY;
use steadfast::net::codec::REQUEST_TIMEOUT_MS;
use steadfast::net::idempotency::{IdempotencyLayer, MemoryStore, IDEMPOTENT_REPLAYED};
use steadfast::net::propagate::DeadlineServerLayer;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

#[derive(Default)]
struct Counts {
    orders: AtomicU32,
    slow_finished: AtomicU32,
}

async fn create_order(State(counts): State<Arc<Counts>>, body: String) -> (StatusCode, String) {
    let n = counts.orders.fetch_add(1, Ordering::SeqCst) + 1;
    (StatusCode::CREATED, format!("order #{n} for {body}"))
}

async fn slow(State(counts): State<Arc<Counts>>) -> String {
    let left = Deadline::current().map(|d| d.remaining());
    tokio::time::sleep(Duration::from_secs(5)).await;
    counts.slow_finished.fetch_add(1, Ordering::SeqCst);
    format!("done, deadline was {left:?}")
}

/// The app under test: two routes, the idempotency layer, the deadline layer outermost.
fn app(counts: Arc<Counts>) -> Router {
    let idempotency = IdempotencyLayer::builder(MemoryStore::new())
        .single_tenant()
        .build()
        .unwrap();
    Router::new()
        .route("/orders", post(create_order))
        .route("/slow", get(slow))
        .with_state(counts)
        .layer(idempotency)
        .layer(DeadlineServerLayer::new())
}

/// The layered router is still an infallible service of axum requests.
fn assert_infallible<S: Service<Request<Body>, Error = Infallible>>(_: &S) {}

fn order(key: Option<&str>, timeout_ms: Option<&str>) -> Request<Body> {
    let mut req = Request::post("/orders");
    if let Some(key) = key {
        req = req.header(IDEMPOTENCY_KEY, key);
    }
    if let Some(t) = timeout_ms {
        req = req.header(REQUEST_TIMEOUT_MS, t);
    }
    req.body(Body::from("tea")).unwrap()
}

async fn text(res: http::Response<Body>) -> String {
    String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_handler_past_its_deadline_is_cut_off_with_504() {
    let counts = Arc::new(Counts::default());
    let app = app(Arc::clone(&counts));
    assert_infallible(&app);
    let start = Instant::now();
    let req = Request::get("/slow")
        .header(REQUEST_TIMEOUT_MS, "100")
        .body(Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    assert_eq!(
        counts.slow_finished.load(Ordering::SeqCst),
        0,
        "the handler was dropped"
    );

    // Without a deadline header the same route runs to the end.
    let res = app
        .oneshot(Request::get("/slow").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(text(res).await, "done, deadline was None");
    assert_eq!(counts.slow_finished.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_handler_sees_the_callers_deadline() {
    let counts = Arc::new(Counts::default());
    let res = app(Arc::clone(&counts))
        .oneshot(
            Request::get("/slow")
                .header(REQUEST_TIMEOUT_MS, "9000")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(text(res).await, "done, deadline was Some(9s)");
}

#[tokio::test(start_paused = true)]
async fn a_keyed_post_is_executed_once_and_replayed() {
    let counts = Arc::new(Counts::default());
    let app = app(Arc::clone(&counts));
    let first = app
        .clone()
        .oneshot(order(Some("\"k-1\""), None))
        .await
        .unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get(IDEMPOTENT_REPLAYED).is_none());
    assert_eq!(text(first).await, "order #1 for tea");

    let again = app
        .clone()
        .oneshot(order(Some("\"k-1\""), None))
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers()[IDEMPOTENT_REPLAYED], "true");
    assert_eq!(text(again).await, "order #1 for tea");
    assert_eq!(counts.orders.load(Ordering::SeqCst), 1);

    // The layer's rejections are responses too: no key, a malformed key.
    for key in [None, Some("not-a-structured-string")] {
        let res = app.clone().oneshot(order(key, None)).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "key {key:?}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(counts.orders.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_keyed_post_past_its_deadline_does_not_take_its_key() {
    let counts = Arc::new(Counts::default());
    let app = app(Arc::clone(&counts));
    // Already expired on arrival: the deadline layer (outermost) answers 504 at once.
    let late = app
        .clone()
        .oneshot(order(Some("\"k-2\""), Some("0")))
        .await
        .unwrap();
    assert_eq!(late.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(counts.orders.load(Ordering::SeqCst), 0);
    // The retry with the same key executes: the late attempt never reached the store.
    let retry = app
        .oneshot(order(Some("\"k-2\""), Some("1000")))
        .await
        .unwrap();
    assert_eq!(retry.status(), StatusCode::CREATED);
    assert!(retry.headers().get(IDEMPOTENT_REPLAYED).is_none());
    assert_eq!(counts.orders.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn served_over_loopback_a_duplicate_is_a_replay() {
    let counts = Arc::new(Counts::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = app(Arc::clone(&counts));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let send = || {
        let req = Request::post(format!("http://{addr}/orders"))
            .header(IDEMPOTENCY_KEY, "\"k-loopback\"")
            .header(REQUEST_TIMEOUT_MS, "10000")
            .body(Full::new(Bytes::from_static(b"tea")))
            .unwrap();
        client.request(req)
    };
    let bounded = async {
        let first = send().await.unwrap();
        assert_eq!(first.status(), StatusCode::CREATED);
        assert!(first.headers().get(IDEMPOTENT_REPLAYED).is_none());
        let second = send().await.unwrap();
        assert_eq!(second.status(), StatusCode::CREATED);
        assert_eq!(second.headers()[IDEMPOTENT_REPLAYED], "true");
        let body = second.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "order #1 for tea");
    };
    tokio::time::timeout(Duration::from_secs(20), bounded)
        .await
        .expect("the loopback exchange finished");
    assert_eq!(counts.orders.load(Ordering::SeqCst), 1);
    server.abort();
}

/// The generic layers (here a rate limit and a fail-fast concurrency limit) fail a refused call
/// with a noun; `RespondLayer` outside them answers it (`429` + `Retry-After`, `503`), so they
/// too go onto a `Router` with `Router::layer` and no `HandleErrorLayer`.
#[tokio::test(start_paused = true)]
async fn generic_layers_answer_their_refusals_through_respond_layer() {
    use steadfast::layers::limit::ConcurrencyLimitLayer;
    use steadfast::layers::rate::RateLimitLayer;
    use steadfast::net::respond::RespondLayer;

    let rate = RateLimitLayer::builder(1, Duration::from_secs(60))
        .build()
        .unwrap();
    let app: Router = Router::new()
        .route("/", get(|| async { "hello" }))
        .layer(RespondLayer::around(rate));
    let get_root = || Request::get("/").body(Body::empty()).unwrap();
    let first = app.clone().oneshot(get_root()).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let second = app.oneshot(get_root()).await.unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.headers()["retry-after"], "60");

    // One request at a time, fail fast: a second one while the first is in its handler is 503.
    let limit = ConcurrencyLimitLayer::new(1).unwrap();
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let entered = Arc::new(std::sync::Mutex::new(Some(entered_tx)));
    let app: Router = Router::new()
        .route(
            "/",
            get(move || {
                let entered = entered.clone();
                async move {
                    if let Some(tx) = entered.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    "slow hello"
                }
            }),
        )
        .layer(RespondLayer::around(limit));
    let busy = tokio::spawn(app.clone().oneshot(get_root()));
    entered_rx.await.unwrap();
    let refused = app.clone().oneshot(get_root()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(busy.await.unwrap().unwrap().status(), StatusCode::OK);
    // Capacity is back: the next one is served.
    assert_eq!(
        app.oneshot(get_root()).await.unwrap().status(),
        StatusCode::OK
    );
}
