//! A policy file's `routes` as a router ([`PolicySet::route_layer`]) over a hyper-util client,
//! against a real axum server on 127.0.0.1: each route gets its policy's stack, its own breaker
//! even when two routes name the same policy, and the budget the file shares is one budget.
//!
//! Real sockets need the real clock: each scenario is bounded, and the assertions are on
//! statuses, counts, errors and the budget's balance, which hold at any speed (the breaker's
//! break and the budget's window, 10 min and 60 s, are far longer than any run).
#![cfg(feature = "serde")]
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Empty};
use steadfast_http::config::PolicySet;
use steadfast_http::preset::hyper_client;
use steadfast_http::route::NoRoute;
use steadfast_layers::breaker::CircuitOpen;
use steadfast_layers::retry::RetryBudget;
use tower::{Layer, ServiceExt};

/// Requests seen by the server, per path.
type Seen = Arc<Mutex<HashMap<String, u32>>>;

/// `/flaky/{id}` answers 503 on the first request for each path and 200 after; `/broken/{id}`
/// always 500; `/spare/{id}` and `/other` 200.
async fn serve(seen: Seen) -> SocketAddr {
    async fn count(State(seen): State<Seen>, uri: Uri) -> (StatusCode, String) {
        let path = uri.path().to_owned();
        let n = {
            let mut seen = seen.lock().unwrap();
            let n = seen.entry(path.clone()).or_default();
            *n += 1;
            *n
        };
        let status = if path.starts_with("/flaky/") && n == 1 {
            StatusCode::SERVICE_UNAVAILABLE
        } else if path.starts_with("/broken/") {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::OK
        };
        (status, path)
    }
    let app = axum::Router::new()
        .route("/flaky/{id}", get(count))
        .route("/broken/{id}", get(count))
        .route("/spare/{id}", get(count))
        .route("/other", get(count))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn seen(seen: &Seen, path: &str) -> u32 {
    seen.lock().unwrap().get(path).copied().unwrap_or(0)
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the scenario is bounded")
}

fn get_req(addr: SocketAddr, path: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(Method::GET)
        .uri(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap()
}

fn refused_by_breaker(err: &steadfast_layers::BoxError) -> bool {
    std::iter::successors(Some(&**err as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .any(|e| e.is::<CircuitOpen>())
}

/// Two policies share the budget `shared` (no reserve: 0.4 retry per request, over 60 s).
/// `retried` retries up to 3 attempts; `guarded` tries once behind a breaker that opens after
/// 3 failures in a row. `/broken` and `/spare` both name `guarded`.
const FILE: &str = r#"
fallback = "retried"

[budgets.shared]
ratio = 0.4
min_retries_per_sec = 0
ttl = "60s"

[policies.retried]
retry = { max_attempts = 3, budget = "shared", backoff = { constant = "1ms" } }

[policies.guarded]
retry = { max_attempts = 1, budget = "shared" }
breaker = { consecutive_failures = 3, break_duration = "10m" }

[[routes]]
method = "GET"
path = "/flaky/{id}"
policy = "retried"

[[routes]]
path = "/broken/{id}"
policy = "guarded"

[[routes]]
path = "/spare/{id}"
policy = "guarded"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_files_routes_each_get_their_own_stack_and_share_the_named_budget() {
    bounded(async {
        let log: Seen = Arc::default();
        let addr = serve(log.clone()).await;
        let set = PolicySet::from_toml_str(FILE).unwrap();
        let budget = set.budget("shared").unwrap().clone();
        let client = set
            .route_layer()
            .unwrap()
            .layer(hyper_client::<Empty<Bytes>>());
        let call = |path: &'static str| {
            let client = client.clone();
            async move { client.oneshot(get_req(addr, path)).await }
        };

        // /flaky/a: its 503 is not retried, the shared budget being short (0.4 retry).
        let res = call("/flaky/a").await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(seen(&log, "/flaky/a"), 1, "no retry without budget");

        // /broken/1: tried once each (its policy has one attempt); three failures open the
        // breaker of this route.
        for i in 1..=3 {
            let res = call("/broken/1").await.unwrap();
            assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert_eq!(seen(&log, "/broken/1"), i, "never retried");
        }
        let err = call("/broken/1").await.unwrap_err();
        assert!(
            refused_by_breaker(&err),
            "refused by the open breaker: {err}"
        );
        assert_eq!(seen(&log, "/broken/1"), 3, "the open breaker sent nothing");

        // /spare names the same policy, yet has its own breaker, closed.
        let res = call("/spare/1").await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(seen(&log, "/spare/1"), 1);

        // /flaky/b: the requests to /broken and /spare paid into the shared budget, so this
        // route's 503 is now retried (its own two requests, 0.8, would not pay for it), and
        // the caller sees the 200.
        let res = call("/flaky/b").await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(seen(&log, "/flaky/b"), 2, "retried once");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"/flaky/b");

        // One budget for all routes: 7 requests paid 0.4 retry each, one retry taken.
        assert_eq!(budget.balance(), 1.0, "2.8 - 1, in whole retries");

        // /other matches no route: the fallback (`retried`, its own instance) serves it.
        let res = call("/other").await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(seen(&log, "/other"), 1);

        // The open breaker of /broken still refuses: the other routes did not touch it.
        let err = call("/broken/2").await.unwrap_err();
        assert!(refused_by_breaker(&err), "{err}");
        assert_eq!(seen(&log, "/broken/2"), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fallback_an_unrouted_request_fails_before_sending() {
    bounded(async {
        let log: Seen = Arc::default();
        let addr = serve(log.clone()).await;
        let file = FILE.replace("fallback = \"retried\"", "");
        let set = PolicySet::from_toml_str(&file).unwrap();
        assert_eq!(set.fallback(), None);
        let client = set
            .route_layer()
            .unwrap()
            .layer(hyper_client::<Empty<Bytes>>());
        let err = client
            .clone()
            .oneshot(get_req(addr, "/other"))
            .await
            .unwrap_err();
        assert_eq!(err.downcast_ref::<NoRoute>().unwrap().path(), "/other");
        assert_eq!(seen(&log, "/other"), 0);
        // A POST does not match the GET-only /flaky route either.
        let mut post = get_req(addr, "/flaky/a");
        *post.method_mut() = Method::POST;
        let err = client.oneshot(post).await.unwrap_err();
        assert!(err.is::<NoRoute>(), "{err}");
        assert_eq!(seen(&log, "/flaky/a"), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_call_of_route_layer_builds_new_breakers() {
    bounded(async {
        let log: Seen = Arc::default();
        let addr = serve(log.clone()).await;
        let set = PolicySet::from_toml_str(FILE).unwrap();
        let first = set
            .route_layer()
            .unwrap()
            .layer(hyper_client::<Empty<Bytes>>());
        for _ in 0..3 {
            let res = first
                .clone()
                .oneshot(get_req(addr, "/broken/1"))
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        let err = first.oneshot(get_req(addr, "/broken/1")).await.unwrap_err();
        assert!(refused_by_breaker(&err), "{err}");
        // A second router from the same set, and the set's own `guarded` stack: closed.
        let second = set
            .route_layer()
            .unwrap()
            .layer(hyper_client::<Empty<Bytes>>());
        let res = second.oneshot(get_req(addr, "/broken/1")).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let own = set
            .policy("guarded")
            .unwrap()
            .clone()
            .layer(hyper_client::<Empty<Bytes>>());
        let res = own.oneshot(get_req(addr, "/broken/1")).await.unwrap();
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(seen(&log, "/broken/1"), 5);
    })
    .await;
}
