//! Heap allocations per routed call: none. The router adds no allocation to a call (it picks
//! the route, clones that route's stack, and drives it inside its named future), as the layers'
//! own allocation tests require of every layer.
//!
//! `allocation-counter` counts this thread's allocations while a current-thread runtime drives
//! the calls; the requests are built before counting. The control case proves the counter
//! works: an inner service that allocates a `Box` per call is seen allocating.
#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::future::ready;
use std::hint::black_box;
use std::time::Duration;

use allocation_counter::AllocationInfo;
use http::{Method, Request, Response, Uri};
use steadfast_http::route::{RouteLayer, RouteMatch};
use steadfast_layers::timeout::AttemptTimeoutLayer;
use tower::{service_fn, Layer, Service, ServiceExt};

const CALLS: usize = 1_000;
const WARM_UP: usize = 100;

fn requests(n: usize) -> Vec<Request<()>> {
    let paths = ["/search/books/1", "/payments/7", "/other"];
    (0..n)
        .map(|i| {
            let mut req = Request::new(());
            *req.uri_mut() = Uri::from_static(paths[i % paths.len()]);
            if i % 2 == 0 {
                *req.method_mut() = Method::POST;
            }
            req
        })
        .collect()
}

async fn drive<S>(svc: &mut S, reqs: Vec<Request<()>>)
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    for req in reqs {
        svc.ready().await.unwrap().call(req).await.unwrap();
    }
}

fn count<S>(mut svc: S) -> AllocationInfo
where
    S: Service<Request<()>, Response = Response<()>>,
    S::Error: std::fmt::Debug,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(drive(&mut svc, requests(WARM_UP)));
    let reqs = requests(CALLS);
    let info = allocation_counter::measure(|| rt.block_on(drive(&mut svc, reqs)));
    drop(svc);
    drop(rt);
    info
}

/// Three routes and a fallback, each an attempt timeout (a layer that allocates nothing).
fn router<S: Clone>(inner: S) -> <RouteLayer<AttemptTimeoutLayer> as Layer<S>>::Service {
    let t = || AttemptTimeoutLayer::new(Duration::from_secs(1)).unwrap();
    RouteLayer::builder()
        .route(RouteMatch::http("/search/{index}/*").unwrap(), t())
        .route(
            RouteMatch::http("/payments/{id}")
                .unwrap()
                .method(Method::POST),
            t(),
        )
        .route(RouteMatch::grpc("pkg.Svc", None).unwrap(), t())
        .fallback(t())
        .build()
        .unwrap()
        .layer(inner)
}

#[test]
fn a_routed_call_allocates_nothing() {
    let echo = service_fn(|_req: Request<()>| ready(Ok::<_, Infallible>(Response::new(()))));
    let info = count(router(echo));
    println!(
        "router: {} allocations over {CALLS} calls",
        info.count_total
    );
    assert_eq!(info.count_total, 0, "{} bytes", info.bytes_total);
}

#[test]
fn control_a_boxing_service_under_the_router_is_seen_allocating() {
    let boxing = service_fn(|_req: Request<()>| {
        black_box(Box::new(1_u64));
        ready(Ok::<_, Infallible>(Response::new(())))
    });
    let info = count(router(boxing));
    assert!(info.count_total >= CALLS as u64, "{}", info.count_total);
}
