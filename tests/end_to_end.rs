//! The whole promise, end to end, through the facade crate: steadfast's client presets on
//! hyper-util's pooled client, against a hyper server on 127.0.0.1 behind steadfast's
//! server layers (`DeadlineServerLayer`, `IdempotencyLayer` on the in-memory store).
//!
//! Each crate's own tests check its layers one by one on a paused clock; these check that the
//! pieces fit over a real socket, where a lost response is a closed connection and a hedge is a
//! second HTTP request:
//!
//! - a `POST` whose response is lost on the way back is retried with the same
//!   `Idempotency-Key`, and the server replays the stored response instead of executing the call
//!   again;
//! - many concurrent hedged `POST`s each reach the server twice with one key and execute once:
//!   the hedge meets the original in flight (`409`), and the client waits for the original.
//!
//! Real sockets need the real clock (a paused clock would jump to the next timer while the
//! runtime waits for the socket). Nothing here sleeps: the server's handler waits for events,
//! not for time, and the only timers are the client's (a backoff, a 20 ms hedge delay). Every
//! test is bounded by a timeout so that a regression fails instead of hanging.
#![cfg(all(feature = "layers", feature = "http"))]
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use steadfast::layers::deadline::{Deadline, DeadlineExceeded};
use steadfast::layers::hedge::HedgeDelay;
use steadfast::layers::BoxError;
use steadfast::net::body::ReplayBody;
use steadfast::net::classify::RetryGaveUp;
use steadfast::net::codec::idempotency_key::IDEMPOTENCY_KEY;
use steadfast::net::idempotency::{
    IdempotencyLayer, MemoryStore, RequestBody, ResponseBody, SingleTenant, IDEMPOTENT_REPLAYED,
};
use steadfast::net::preset::{hyper_client, HedgingClientLayer, StandardClientLayer};
use steadfast::net::propagate::DeadlineServerLayer;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::util::BoxCloneService;
use tower::{service_fn, Layer, ServiceExt};

/// A bound on every test: a regression fails with a message instead of hanging the suite.
const BOUND: Duration = Duration::from_secs(20);

/// What the server saw.
#[derive(Default)]
struct Seen {
    /// Requests that reached the server (before the idempotency layer), per key.
    arrivals: Mutex<HashMap<String, u32>>,
    /// Woken when a request has been answered `409`.
    answered: Notify,
    /// Executions of the handler.
    executions: AtomicU32,
    /// The deadline the handler found in scope, per execution.
    deadlines: Mutex<Vec<Option<Duration>>>,
    /// Responses still to be lost on the way back (the connection is closed instead).
    lose: AtomicU32,
    /// Requests answered `409` (their key in flight), per key.
    conflicts: Mutex<HashMap<String, u32>>,
    /// When set, an execution waits until a copy of its request has been answered `409`.
    wait_for_conflict: AtomicBool,
}

impl Seen {
    fn count(map: &Mutex<HashMap<String, u32>>, key: &str) {
        *map.lock().unwrap().entry(key.to_owned()).or_default() += 1;
    }

    fn conflicts(&self, key: &str) -> u32 {
        self.conflicts
            .lock()
            .unwrap()
            .get(key)
            .copied()
            .unwrap_or(0)
    }
}

fn key_of<B>(req: &Request<B>) -> String {
    req.headers()
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The handler, behind the idempotency layer: creates order #n and answers `201`.
async fn create_order(
    req: Request<RequestBody<Incoming>>,
    seen: Arc<Seen>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    seen.deadlines
        .lock()
        .unwrap()
        .push(Deadline::current().map(Deadline::remaining));
    if seen.wait_for_conflict.load(Ordering::SeqCst) {
        let key = key_of(&req);
        loop {
            let answered = seen.answered.notified();
            if seen.conflicts(&key) > 0 {
                break;
            }
            answered.await;
        }
    }
    let n = seen.executions.fetch_add(1, Ordering::SeqCst) + 1;
    Ok(Response::builder()
        .status(StatusCode::CREATED)
        .body(Full::new(Bytes::from(format!("order #{n}"))))
        .unwrap())
}

/// Starts the server: per connection, an outer service that counts arrivals and can lose a
/// response (after the idempotency layer stored it), then `DeadlineServerLayer`, then
/// `IdempotencyLayer`, then the handler.
async fn start_server(seen: Arc<Seen>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let idempotency: IdempotencyLayer<MemoryStore, SingleTenant> =
        IdempotencyLayer::builder(MemoryStore::new())
            .single_tenant()
            .build()
            .unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = Arc::clone(&seen);
            let handler_seen = Arc::clone(&seen);
            // The deadline layer outside the idempotency layer, as its docs advise.
            // Boxed, so that `front` can name it.
            let inner = BoxCloneService::new(DeadlineServerLayer::new().layer(idempotency.layer(
                service_fn(move |req: Request<RequestBody<Incoming>>| {
                    create_order(req, Arc::clone(&handler_seen))
                }),
            )));
            let svc = service_fn(move |req| front(req, Arc::clone(&seen), inner.clone()));
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc))
                    .await;
            });
        }
    });
    addr
}

/// Both server layers answer with responses: the handler's `Infallible` passes through them.
type Inner = BoxCloneService<Request<Incoming>, Response<ResponseBody<Full<Bytes>>>, Infallible>;

/// The front of the server: counts the request's arrival and `409` answers under its key, and
/// loses the response (closes the connection) while `lose` says so, after the layers below stored it.
async fn front(
    req: Request<Incoming>,
    seen: Arc<Seen>,
    inner: Inner,
) -> Result<Response<ResponseBody<Full<Bytes>>>, BoxError> {
    let key = key_of(&req);
    Seen::count(&seen.arrivals, &key);
    let res = inner.oneshot(req).await?;
    if res.status() == StatusCode::CONFLICT {
        Seen::count(&seen.conflicts, &key);
        seen.answered.notify_waiters();
    }
    let lost = seen
        .lose
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if lost {
        // hyper closes the connection without an answer.
        return Err("the response was lost on the way back".into());
    }
    Ok(res)
}

/// The transport as a user builds it: `hyper_client` gives a hyper-util client typed for the
/// presets' replayable bodies, while the caller sends ordinary `Full<Bytes>` requests.
fn transport() -> Client<hyper_util::client::legacy::connect::HttpConnector, ReplayBody<Full<Bytes>>>
{
    hyper_client::<Full<Bytes>>()
}

fn order(addr: SocketAddr) -> Request<Full<Bytes>> {
    Request::post(format!("http://{addr}/orders"))
        .body(Full::new(Bytes::from_static(b"{\"sku\":\"tea\"}")))
        .unwrap()
}

#[tokio::test]
async fn a_lost_response_is_retried_with_its_key_and_replayed_not_executed_again() {
    let seen = Arc::new(Seen::default());
    seen.lose.store(1, Ordering::SeqCst);
    let addr = start_server(Arc::clone(&seen)).await;
    let client = StandardClientLayer::builder()
        .timeout(Duration::from_secs(5))
        .attempt_timeout(Duration::from_secs(2))
        .retry(|r| r.max_attempts(3).seed(7))
        .build()
        .unwrap()
        .layer(transport());

    let res = tokio::time::timeout(BOUND, client.oneshot(order(addr)))
        .await
        .expect("bounded")
        .expect("the retry gets the stored answer");
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        res.headers().get(IDEMPOTENT_REPLAYED),
        Some(&HeaderValue::from_static("true")),
        "the second attempt was answered from the store"
    );
    assert!(res.extensions().get::<RetryGaveUp>().is_none());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "order #1", "the first execution's answer, replayed");

    assert_eq!(seen.executions.load(Ordering::SeqCst), 1, "executed once");
    let arrivals = seen.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 1, "one key for both attempts: {arrivals:?}");
    let (key, n) = arrivals.into_iter().next().unwrap();
    assert!(!key.is_empty(), "the client preset keyed the POST");
    assert_eq!(n, 2, "the lost attempt and its retry");
    // The handler ran under the caller's deadline, capped by the attempt timeout.
    let deadlines = seen.deadlines.lock().unwrap().clone();
    assert_eq!(deadlines.len(), 1);
    let left = deadlines[0].expect("a deadline in scope on the server");
    assert!(
        left > Duration::ZERO && left <= Duration::from_secs(2),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_hedged_posts_reach_the_server_twice_and_execute_once() {
    const CALLS: u32 = 40;
    let seen = Arc::new(Seen::default());
    // Each execution waits until the other copy of its request has been answered 409 (key in
    // flight), so every call is hedged whatever the machine's speed, and the copies always meet
    // at the server while the key executes.
    seen.wait_for_conflict.store(true, Ordering::SeqCst);
    let addr = start_server(Arc::clone(&seen)).await;
    let client = HedgingClientLayer::builder()
        .hedge(|h| {
            h.delay(HedgeDelay::fixed(Duration::from_millis(20)))
                .budget_ratio(1.0)
                .budget_burst(CALLS)
        })
        .timeout(Duration::from_secs(10))
        .attempt_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .layer(transport());

    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..CALLS {
        let client = client.clone();
        calls.spawn(async move {
            let res = client.oneshot(order(addr)).await?;
            let status = res.status();
            let replayed = res.headers().contains_key(IDEMPOTENT_REPLAYED);
            let body = res.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>((status, replayed, body))
        });
    }
    let mut bodies = Vec::new();
    tokio::time::timeout(BOUND, async {
        while let Some(joined) = calls.join_next().await {
            let (status, replayed, body) = joined.unwrap().unwrap();
            assert_eq!(status, StatusCode::CREATED, "{body:?}");
            assert!(
                !replayed,
                "the executing copy's own answer wins, not a replay"
            );
            bodies.push(body);
        }
    })
    .await
    .expect("bounded");

    assert_eq!(
        seen.executions.load(Ordering::SeqCst),
        CALLS,
        "once per call"
    );
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies.len(), CALLS as usize, "every call got its own order");
    let arrivals = seen.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), CALLS as usize, "one key per call");
    assert!(
        arrivals.iter().all(|(key, &n)| !key.is_empty() && n == 2),
        "each key reached the server twice, original and hedge: {arrivals:?}"
    );
    let conflicts = seen.conflicts.lock().unwrap().clone();
    assert_eq!(conflicts, arrivals.keys().map(|k| (k.clone(), 1)).collect());
}

/// A peer that takes connections and reads requests but never answers: the preset's deadline
/// ends the call, with the attempt timeout (longer, so capped by the deadline) holding the one
/// timer of the pending call (ADR 0008 decision 16) over a real hyper-util connection.
#[tokio::test]
async fn a_peer_that_never_answers_is_cut_off_at_the_deadline_through_the_preset() {
    let (addr, held) = support::silent_peer().await;
    let deadline = Duration::from_millis(300);
    let client = StandardClientLayer::builder()
        .timeout(deadline)
        .attempt_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .layer(transport());

    let started = tokio::time::Instant::now();
    let err = tokio::time::timeout(BOUND, client.oneshot(order(addr)))
        .await
        .expect("the deadline ends the call")
        .expect_err("the peer never answers");
    assert!(started.elapsed() >= deadline, "{:?}", started.elapsed());
    let root: &(dyn std::error::Error + 'static) = &*err;
    let found =
        std::iter::successors(Some(root), |e| e.source()).any(|e| e.is::<DeadlineExceeded>());
    assert!(found, "{err}");
    held.abort();
}
