//! Per-route policies over a real hyper client, against a real hyper server on 127.0.0.1: each
//! route has its own policy and its own breaker. Real sockets need the real clock: each
//! scenario is bounded, and the assertions are on statuses, counts and errors, which hold at
//! any speed (the breakers' breaks are far longer than any run).
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use steadfast_http::classify::HttpClassifier;
use steadfast_http::preset::{hyper_client, StandardClientLayer};
use steadfast_http::route::{NoRoute, RouteLayer, RouteMatch};
use steadfast_layers::breaker::{BreakDuration, CircuitBreakerLayer, CircuitOpen};
use steadfast_layers::BoxError;
use tower::{Layer, Service, ServiceExt};

/// Requests seen by the server, per path.
type Seen = Arc<Mutex<HashMap<String, u32>>>;

/// `/search/...` answers `503` on the first request for each path and `200` after;
/// `/payments/...` always `500`; anything else `200`.
async fn serve(seen: Seen) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let n = {
                            let mut seen = seen.lock().unwrap();
                            let n = seen.entry(path.clone()).or_default();
                            *n += 1;
                            *n
                        };
                        let status = if path.starts_with("/search/") {
                            if n == 1 {
                                StatusCode::SERVICE_UNAVAILABLE
                            } else {
                                StatusCode::OK
                            }
                        } else if path.starts_with("/payments/") {
                            StatusCode::INTERNAL_SERVER_ERROR
                        } else {
                            StatusCode::OK
                        };
                        let mut res = Response::new(Full::new(Bytes::from(path)));
                        *res.status_mut() = status;
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn seen(seen: &Seen, path: &str) -> u32 {
    seen.lock().unwrap().get(path).copied().unwrap_or(0)
}

/// The breaker every route gets: opens after `failures` failures in a row, for an hour.
fn breaker(failures: u32) -> CircuitBreakerLayer<HttpClassifier> {
    CircuitBreakerLayer::builder()
        .consecutive_failures(failures)
        .break_duration(BreakDuration::constant(Duration::from_secs(3600)))
        .classifier(HttpClassifier::new())
        .build()
        .unwrap()
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), f)
        .await
        .expect("the scenario is bounded")
}

fn req(method: Method, addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_has_its_own_policy_and_its_own_breaker() {
    bounded(async {
        let log: Seen = Arc::default();
        let addr = serve(log.clone()).await;
        // The same shape for every route (the standard preset with a breaker in its slot),
        // different numbers: /search retried 3 times behind a lenient breaker, /payments tried
        // once behind a breaker that opens after 3 failures.
        let search = StandardClientLayer::builder()
            .retry(|r| r.max_attempts(3).no_budget().seed(1))
            .breaker(breaker(1000))
            .build()
            .unwrap();
        let payments = StandardClientLayer::builder()
            .retry(|r| r.max_attempts(1))
            .breaker(breaker(3))
            .build()
            .unwrap();
        let client = RouteLayer::builder()
            .route(RouteMatch::http("/search/{query}").unwrap(), search)
            .route(
                RouteMatch::http("/payments/{id}")
                    .unwrap()
                    .method(Method::POST),
                payments,
            )
            .build()
            .unwrap()
            .layer(hyper_client::<Empty<Bytes>>());

        // /search: the 503 is retried, the caller sees the 200.
        let res = client
            .clone()
            .oneshot(req(Method::GET, addr, "/search/books"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(seen(&log, "/search/books"), 2, "retried once");

        // /payments: tried once each, three failures open its breaker.
        for i in 1..=3 {
            let res = client
                .clone()
                .oneshot(req(Method::POST, addr, "/payments/7"))
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(seen(&log, "/payments/7"), i, "never retried");
        }
        let err = client
            .clone()
            .oneshot(req(Method::POST, addr, "/payments/7"))
            .await
            .unwrap_err();
        assert!(
            std::iter::successors(Some(&*err as &(dyn std::error::Error + 'static)), |e| e
                .source())
            .any(|e| e.is::<CircuitOpen>()),
            "refused by the open breaker: {err}"
        );
        assert_eq!(
            seen(&log, "/payments/7"),
            3,
            "the open breaker sent nothing"
        );

        // /search is untouched by the payments breaker.
        let res = client
            .clone()
            .oneshot(req(Method::GET, addr, "/search/films"))
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(seen(&log, "/search/films"), 2);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"/search/films");

        // GET /payments/7 matches no route (the route is POST only) and there is no fallback.
        let err = client
            .oneshot(req(Method::GET, addr, "/payments/7"))
            .await
            .unwrap_err();
        let no_route = err.downcast_ref::<NoRoute>().unwrap();
        assert_eq!(no_route.path(), "/payments/7");
        assert_eq!(seen(&log, "/payments/7"), 3);
    })
    .await;
}

/// A layer whose services are not ready until their gate opens (as a breaker in readiness mode
/// or a limiter that waits in `poll_ready` would be).
#[derive(Clone)]
struct GateLayer(Arc<Gate>);

#[derive(Default)]
struct Gate {
    open: std::sync::atomic::AtomicBool,
    waiting: Mutex<Vec<std::task::Waker>>,
}

impl Gate {
    fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
        for w in self.waiting.lock().unwrap().drain(..) {
            w.wake();
        }
    }
}

#[derive(Clone)]
struct Gated<S>(Arc<Gate>, S);

impl<S> Layer<S> for GateLayer {
    type Service = Gated<S>;
    fn layer(&self, inner: S) -> Gated<S> {
        Gated(self.0.clone(), inner)
    }
}

impl<S: tower::Service<R>, R> tower::Service<R> for Gated<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        if !self.0.open.load(std::sync::atomic::Ordering::SeqCst) {
            self.0.waiting.lock().unwrap().push(cx.waker().clone());
            if !self.0.open.load(std::sync::atomic::Ordering::SeqCst) {
                return std::task::Poll::Pending;
            }
        }
        self.1.poll_ready(cx)
    }
    fn call(&mut self, req: R) -> S::Future {
        self.1.call(req)
    }
}

#[tokio::test(start_paused = true)]
async fn a_route_that_is_not_ready_does_not_hold_up_the_others() {
    let transport = tower::service_fn(|req: Request<()>| async move {
        Ok::<_, BoxError>(Response::new(req.uri().path().to_owned()))
    });
    let slow = Arc::new(Gate::default());
    let fast = Arc::new(Gate::default());
    fast.open();
    let client = RouteLayer::builder()
        .route(RouteMatch::http("/slow").unwrap(), GateLayer(slow.clone()))
        .fallback(GateLayer(fast))
        .build()
        .unwrap()
        .layer(transport);
    let get = |p: &str| Request::get(p).body(()).unwrap();

    // The call to /slow waits for its route inside its own future...
    let mut waiting = tokio::spawn(client.clone().oneshot(get("/slow")));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiting.is_finished());
    // ...while the router stays ready and the other route answers.
    let mut other = client.clone();
    let res = other
        .ready()
        .await
        .unwrap()
        .call(get("/fast"))
        .await
        .unwrap();
    assert_eq!(res.body(), "/fast");
    assert!(
        tokio::time::timeout(Duration::from_millis(1), &mut waiting)
            .await
            .is_err(),
        "/slow is still waiting for its route"
    );
    slow.open();
    assert_eq!(waiting.await.unwrap().unwrap().body(), "/slow");
}

#[tokio::test(start_paused = true)]
async fn the_first_matching_route_wins_and_the_fallback_takes_the_rest() {
    let transport =
        tower::service_fn(|_req: Request<()>| async move { Ok::<_, BoxError>(Response::new(())) });
    #[derive(Clone)]
    struct Tag(&'static str);
    impl<S> Layer<S> for Tag {
        type Service = tower::util::MapResponse<S, fn(Response<()>) -> Response<()>>;
        fn layer(&self, inner: S) -> Self::Service {
            let f: fn(Response<()>) -> Response<()> = match self.0 {
                "specific" => |mut r| {
                    r.headers_mut().insert("route", "specific".parse().unwrap());
                    r
                },
                "general" => |mut r| {
                    r.headers_mut().insert("route", "general".parse().unwrap());
                    r
                },
                _ => |mut r| {
                    r.headers_mut().insert("route", "fallback".parse().unwrap());
                    r
                },
            };
            tower::util::MapResponse::new(inner, f)
        }
    }
    let client = RouteLayer::builder()
        .route(RouteMatch::http("/users/me").unwrap(), Tag("specific"))
        .route(RouteMatch::http("/users/{id}").unwrap(), Tag("general"))
        // Never taken: the general route above matches first.
        .route(RouteMatch::http("/users/admin").unwrap(), Tag("specific"))
        .fallback(Tag("fallback"))
        .build()
        .unwrap()
        .layer(transport);
    let route = |p: &'static str| {
        let c = client.clone();
        async move {
            let res = c.oneshot(Request::get(p).body(()).unwrap()).await.unwrap();
            res.headers()["route"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(route("/users/me").await, "specific");
    assert_eq!(route("/users/7").await, "general");
    assert_eq!(route("/users/admin").await, "general");
    assert_eq!(route("/users").await, "fallback");
    assert_eq!(route("/users/7/posts").await, "fallback");
    assert_eq!(client.route_of(&Method::GET, "/users/admin"), Some(1));
}

/// A budget shared by two routes is one budget: retries spent on one route are gone for the
/// other, while each route keeps its own retry policy.
#[tokio::test(start_paused = true)]
async fn routes_given_the_same_budget_share_it() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use steadfast_layers::retry::{Backoff, RetryBudget, TokenBucket};

    let sent = Arc::new(AtomicU32::new(0));
    let s = sent.clone();
    // Every request fails with 503.
    let transport = tower::service_fn(
        move |_req: Request<steadfast_http::body::ReplayBody<Full<Bytes>>>| {
            s.fetch_add(1, Ordering::SeqCst);
            async {
                let mut res = Response::new(Full::new(Bytes::new()));
                *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                Ok::<_, BoxError>(res)
            }
        },
    );
    // 4 tokens: retries only while more than 2 are left.
    let bucket = Arc::new(TokenBucket::builder().max_tokens(4.0).build().unwrap());
    let policy = || {
        StandardClientLayer::builder()
            .retry(|r| {
                r.max_attempts(5)
                    .budget(bucket.clone())
                    .backoff(Backoff::constant(Duration::from_millis(10)))
            })
            .build()
            .unwrap()
    };
    let client = RouteLayer::builder()
        .route(RouteMatch::http("/a").unwrap(), policy())
        .route(RouteMatch::http("/b").unwrap(), policy())
        .build()
        .unwrap()
        .layer(transport);
    let get = |p: &str| Request::get(p).body(Full::new(Bytes::new())).unwrap();
    // /a: fails (3 left, retry), fails (2 left, no more).
    let res = client.clone().oneshot(get("/a")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sent.swap(0, Ordering::SeqCst), 2);
    assert_eq!(bucket.tokens(), 2.0);
    // /b, another route with its own stack: the shared budget is spent, no retry.
    let res = client.clone().oneshot(get("/b")).await.unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(sent.load(Ordering::SeqCst), 1);
    assert!(!bucket.withdraw());
}
