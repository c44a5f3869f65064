//! The standard client stack end to end, on a paused clock with in-memory peers.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use steadfast_http::body::ReplayBody;
use steadfast_http::classify::RetryGaveUp;
use steadfast_http::codec::{GRPC_TIMEOUT, REQUEST_TIMEOUT_MS};
use steadfast_http::preset::{standard_client, StandardClientLayer};
use steadfast_layers::deadline::{Deadline, DeadlineExceeded};
use steadfast_layers::retry::GiveUpReason;
use steadfast_layers::timeout::Elapsed;
use steadfast_layers::BoxError;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

type Req = Request<ReplayBody<Full<Bytes>>>;

/// A peer that records each request's headers and time, hangs on the attempts listed in
/// `hang`, and otherwise answers `status` with the body it received.
#[derive(Clone, Default)]
struct Peer {
    seen: Arc<Mutex<Vec<(http::HeaderMap, Instant)>>>,
}

impl Peer {
    fn service(
        &self,
        hang: &'static [usize],
        status: u16,
    ) -> impl Service<Req, Response = Response<Full<Bytes>>, Error = BoxError, Future = impl Send> + Clone
    {
        let seen = self.seen.clone();
        service_fn(move |req: Req| {
            let n = {
                let mut s = seen.lock().unwrap();
                s.push((req.headers().clone(), Instant::now()));
                s.len() - 1
            };
            async move {
                if hang.contains(&n) {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                }
                let body = req.into_body().collect().await?.to_bytes();
                Ok::<_, BoxError>(
                    Response::builder()
                        .status(status)
                        .body(Full::new(body))
                        .unwrap(),
                )
            }
        })
    }

    fn header(&self, i: usize, name: &http::HeaderName) -> String {
        self.seen.lock().unwrap()[i].0[name]
            .to_str()
            .unwrap()
            .to_owned()
    }
}

fn req(body: &'static str) -> Request<Full<Bytes>> {
    Request::post("/orders")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_hung_attempt_times_out_and_is_retried_with_the_same_body() {
    let peer = Peer::default();
    let client = StandardClientLayer::builder()
        .timeout(Duration::from_secs(2))
        .attempt_timeout(Duration::from_millis(500))
        .retry(|r| r.seed(7))
        .build()
        .unwrap()
        .layer(peer.service(&[0], 200));
    let t0 = Instant::now();
    let res = client.oneshot(req("order #1")).await.unwrap();
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "order #1"
    );
    let seen = peer.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    // Each attempt is told it has the attempt timeout, not the whole deadline.
    assert_eq!(peer.header(0, &REQUEST_TIMEOUT_MS), "500");
    assert_eq!(peer.header(1, &REQUEST_TIMEOUT_MS), "500");
    let second = seen[1].1 - t0;
    assert!(
        second >= Duration::from_millis(500) && second < Duration::from_millis(525),
        "{second:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_propagated_timeout_is_what_is_left_of_the_deadline_when_it_is_shorter() {
    let peer = Peer::default();
    let client = StandardClientLayer::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .layer(peer.service(&[], 200));
    client.clone().oneshot(req("a")).await.unwrap();
    assert_eq!(peer.header(0, &REQUEST_TIMEOUT_MS), "290");
    // A deadline inherited from the server handler this client runs in wins when earlier.
    let inherited = Deadline::after(Duration::from_millis(120)).unwrap();
    inherited.scope(client.oneshot(req("b"))).await.unwrap();
    assert_eq!(peer.header(1, &REQUEST_TIMEOUT_MS), "110");
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_keeps_failing_comes_back_with_why() {
    let peer = Peer::default();
    let client = standard_client(peer.service(&[], 503)).unwrap();
    let res = client.oneshot(req("x")).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.extensions().get::<RetryGaveUp>(),
        Some(&RetryGaveUp {
            reason: GiveUpReason::AttemptsExhausted,
            attempts: 3
        })
    );
    assert_eq!(peer.seen.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_total_deadline_bounds_every_attempt_and_backoff() {
    let peer = Peer::default();
    let client = StandardClientLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(peer.service(&[0, 1, 2], 200));
    let t0 = Instant::now();
    let err = client.oneshot(req("x")).await.unwrap_err();
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    let mut chain: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
    let mut found = false;
    while let Some(e) = chain {
        found |= e.is::<DeadlineExceeded>();
        chain = e.source();
    }
    assert!(found, "{err}");
    assert_eq!(peer.seen.lock().unwrap().len(), 1);
}

/// The breaker slot sits between the retry layer and the attempt timeout: it sees every
/// attempt, and attempt timeouts as errors.
#[tokio::test(start_paused = true)]
async fn the_breaker_slot_sees_each_attempt_and_its_timeout() {
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<Result<u16, String>>>>);
    let seen = Seen::default();
    let s = seen.clone();
    let probe = tower::layer::layer_fn(move |inner| {
        let s = s.clone();
        tower::util::MapResult::new(inner, move |r: Result<Response<Full<Bytes>>, BoxError>| {
            s.0.lock().unwrap().push(match &r {
                Ok(res) => Ok(res.status().as_u16()),
                Err(e) if e.is::<Elapsed>() => Err("elapsed".into()),
                Err(e) => Err(e.to_string()),
            });
            r
        })
    });
    let peer = Peer::default();
    let client = StandardClientLayer::builder()
        .attempt_timeout(Duration::from_millis(100))
        .breaker(probe)
        .build()
        .unwrap()
        .layer(peer.service(&[0], 200));
    client.oneshot(req("x")).await.unwrap();
    assert_eq!(
        *seen.0.lock().unwrap(),
        [Err("elapsed".to_string()), Ok(200)]
    );
}

#[tokio::test(start_paused = true)]
async fn the_grpc_preset_retries_unavailable_and_writes_grpc_timeout() {
    let calls = Arc::new(AtomicU32::new(0));
    let timeouts = Arc::new(Mutex::new(Vec::new()));
    let (c, t) = (calls.clone(), timeouts.clone());
    let peer = service_fn(move |req: Req| {
        t.lock().unwrap().push(req.headers()[GRPC_TIMEOUT].clone());
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            let code = if n == 0 { "14" } else { "0" };
            Ok::<_, BoxError>(
                Response::builder()
                    .header("content-type", "application/grpc")
                    .header("grpc-status", code)
                    .body(())
                    .unwrap(),
            )
        }
    });
    let client = StandardClientLayer::builder()
        .grpc()
        .build()
        .unwrap()
        .layer(peer);
    let req = Request::post("/pkg.Svc/Call")
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let res = client.oneshot(req).await.unwrap();
    assert_eq!(res.headers()["grpc-status"], "0");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    // Capped at the 3 s attempt timeout.
    assert_eq!(timeouts.lock().unwrap()[0], "3000000u");
}
