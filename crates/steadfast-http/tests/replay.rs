//! `ReplayBody` and `HttpReplay` under steadfast's retry layer, with bodies that stream in over
//! time (paused clock).
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use steadfast_http::body::{HttpReplay, ReplayBody, ReplayBodyLayer};
use steadfast_http::classify::{HttpClassifier, RetryGaveUp};
use steadfast_layers::deadline::Deadline;
use steadfast_layers::retry::{GiveUpReason, NotReplayable, RetryLayer};
use steadfast_layers::BoxError;
use tokio::time::Instant;
use tower::{service_fn, ServiceBuilder, ServiceExt};

type Frames = Result<Frame<Bytes>, std::io::Error>;

/// `n` chunks of `size` bytes each (chunk `i` filled with byte `i`), one every 10 ms, then
/// optional trailers.
fn slow_body(
    n: u8,
    size: usize,
    trailers: Option<HeaderMap>,
) -> StreamBody<impl Stream<Item = Frames>> {
    let stream = futures::stream::unfold((0u8, trailers), move |(i, trailers)| async move {
        if i < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let chunk = Bytes::from(vec![i; size]);
            return Some((Ok(Frame::data(chunk)), (i + 1, trailers)));
        }
        let t = trailers?;
        Some((Ok(Frame::trailers(t)), (i, None)))
    });
    StreamBody::new(stream)
}

/// What the peer received on each attempt: the body bytes (or the error reading it) and the
/// trailers, and when.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Attempt>>>);

/// One attempt as the peer saw it: the body (or the error reading it), the trailers, when.
type Attempt = (Result<Bytes, String>, Option<HeaderMap>, Instant);

/// A peer that reads `read` data frames of each request (all of them if `None`), then answers
/// with `statuses[attempt]` (the last repeats).
fn peer<B>(
    received: Received,
    read: Option<usize>,
    statuses: Vec<u16>,
) -> impl tower::Service<
    Request<ReplayBody<B>>,
    Response = Response<()>,
    Error = BoxError,
    Future = impl Send,
> + Clone
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    service_fn(move |req: Request<ReplayBody<B>>| {
        let received = received.clone();
        let statuses = statuses.clone();
        async move {
            let mut body = req.into_body();
            let mut bytes = Vec::new();
            let mut trailers = None;
            let mut frames = 0;
            let outcome = loop {
                if read.is_some_and(|n| frames >= n) {
                    break Ok(());
                }
                match body.frame().await {
                    None => break Ok(()),
                    Some(Err(e)) => break Err(e),
                    Some(Ok(f)) => match f.into_data() {
                        Ok(d) => {
                            frames += 1;
                            bytes.extend_from_slice(&d);
                        }
                        Err(f) => trailers = f.into_trailers().ok(),
                    },
                }
            };
            let n = {
                let mut r = received.0.lock().unwrap();
                r.push((
                    outcome
                        .as_ref()
                        .map(|()| Bytes::from(bytes))
                        .map_err(|e| e.to_string()),
                    trailers,
                    Instant::now(),
                ));
                r.len() - 1
            };
            outcome?;
            let status = statuses[n.min(statuses.len() - 1)];
            Ok::<_, BoxError>(Response::builder().status(status).body(()).unwrap())
        }
    })
}

fn retry(max_attempts: u32) -> RetryLayer<HttpClassifier, HttpReplay> {
    RetryLayer::builder()
        .max_attempts(max_attempts)
        .no_budget()
        .seed(1)
        .classifier(HttpClassifier::new())
        .replay(HttpReplay::new())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_retried_streaming_request_resends_identical_bytes_and_trailers() {
    let received = Received::default();
    let client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new())
        .layer(retry(3))
        .service(peer(received.clone(), None, vec![503, 502, 200]));
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let req = Request::put("/blob")
        .body(slow_body(5, 1000, Some(trailers)))
        .unwrap();
    let t0 = Instant::now();
    let res = client.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);

    let got = received.0.lock().unwrap();
    assert_eq!(got.len(), 3);
    let first = got[0].0.as_ref().unwrap();
    assert_eq!(first.len(), 5000);
    for (bytes, trailers, _) in got.iter() {
        assert_eq!(bytes.as_ref().unwrap(), first);
        assert_eq!(trailers.as_ref().unwrap()["x-checksum"], "abc");
    }
    // The first attempt streamed in real time (5 × 10 ms); the retries replayed the buffer at once.
    assert_eq!(got[0].2 - t0, Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_a_partly_read_body_sends_all_of_it() {
    // The first attempt reads two chunks and answers 503 while the body is still streaming.
    let received = Received::default();
    let reads = Arc::new(AtomicU32::new(0));
    let r = reads.clone();
    let inner = peer(received.clone(), None, vec![200]);
    let partial = peer(received.clone(), Some(2), vec![503]);
    let svc = service_fn(move |req| {
        let first = r.fetch_add(1, Ordering::SeqCst) == 0;
        let (p, i) = (partial.clone(), inner.clone());
        async move {
            if first {
                p.oneshot(req).await
            } else {
                i.oneshot(req).await
            }
        }
    });
    let client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new())
        .layer(retry(3))
        .service(svc);
    let res = client
        .oneshot(Request::post("/").body(slow_body(4, 3, None)).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let got = received.0.lock().unwrap();
    assert_eq!(got[0].0.as_ref().unwrap().as_ref(), [0, 0, 0, 1, 1, 1]);
    assert_eq!(
        got[1].0.as_ref().unwrap().as_ref(),
        [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_streamed_past_the_limit_is_not_retried() {
    let traces = support::Traces::default();
    let _guard = traces.install();
    let received = Received::default();
    let client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::with_limit(4096).unwrap())
        .layer(retry(3))
        .service(peer(received.clone(), None, vec![503, 200]));
    // 5 × 1000 bytes, no size hint: it only overflows while streaming.
    let res = client
        .oneshot(Request::post("/").body(slow_body(5, 1000, None)).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 503, "the failed response comes back");
    assert_eq!(received.0.lock().unwrap().len(), 1, "not retried");
    assert_eq!(
        res.extensions().get::<RetryGaveUp>(),
        Some(&RetryGaveUp {
            reason: GiveUpReason::NotReplayable(NotReplayable::new("body exceeds replay buffer")),
            attempts: 1
        })
    );
    // The reason is traced.
    let overflow = traces
        .with_message("request body exceeds the replay buffer: the request will not be retried");
    assert_eq!(overflow.len(), 1);
    assert_eq!(overflow[0].fields["limit"], "4096");
    assert_eq!(
        traces.with_message("request not replayed")[0].fields["reason"],
        "body exceeds replay buffer"
    );
}

#[tokio::test(start_paused = true)]
async fn a_body_known_to_exceed_the_limit_is_never_buffered_nor_retried() {
    let received = Received::default();
    let client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::with_limit(1024).unwrap())
        .layer(retry(2))
        .service(peer(received.clone(), None, vec![503]));
    let big = Full::new(Bytes::from(vec![7u8; 2048]));
    let res = client
        .oneshot(Request::post("/").body(big).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(received.0.lock().unwrap().len(), 1);
    assert!(matches!(
        res.extensions().get::<RetryGaveUp>().unwrap().reason,
        GiveUpReason::NotReplayable(_)
    ));
}

/// The last attempt sends the kept request itself; `HttpReplay::last` refuses it when its body
/// overflowed the replay buffer while streaming, so nothing truncated is ever sent.
#[tokio::test(start_paused = true)]
async fn the_last_attempt_of_an_overflowed_body_is_not_sent() {
    let received = Received::default();
    let client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::with_limit(1500).unwrap())
        .layer(retry(2))
        .service(peer(received.clone(), None, vec![503]));
    let res = client
        .oneshot(Request::post("/").body(slow_body(2, 1000, None)).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(
        res.extensions().get::<RetryGaveUp>().unwrap().reason,
        GiveUpReason::NotReplayable(NotReplayable::new("body exceeds replay buffer"))
    );
    let got = received.0.lock().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0.as_ref().unwrap().len(), 2000);
}

#[tokio::test(start_paused = true)]
async fn concurrent_copies_all_get_every_byte() {
    // Hedging reads two copies at once while the original still streams.
    let body = ReplayBody::new(slow_body(6, 10, None));
    let copy = body.try_clone().unwrap();
    let late = body.try_clone().unwrap();
    let (a, b) = tokio::join!(body.collect(), copy.collect());
    let (a, b) = (a.unwrap().to_bytes(), b.unwrap().to_bytes());
    assert_eq!(a.len(), 60);
    assert_eq!(a, b);
    assert_eq!(late.collect().await.unwrap().to_bytes(), a);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_copy_does_not_strand_the_others() {
    let body = ReplayBody::new(slow_body(3, 1, None));
    let mut first = body.try_clone().unwrap();
    // One copy waits on the original body in its own task...
    let collector = tokio::spawn(body.collect());
    tokio::task::yield_now().await;
    // ...then another copy polls it (the original body now wakes that one) and is dropped.
    let poll = tokio::time::timeout(Duration::from_millis(5), first.frame()).await;
    assert!(poll.is_err());
    drop(first);
    let all = tokio::time::timeout(Duration::from_secs(1), collector)
        .await
        .expect("the remaining copy was woken")
        .unwrap()
        .unwrap();
    assert_eq!(all.to_bytes().as_ref(), [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn replayed_requests_carry_method_uri_headers_and_extensions() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let svc = service_fn(move |req: Request<ReplayBody<Full<Bytes>>>| {
        s.lock().unwrap().push((
            req.method().clone(),
            req.uri().clone(),
            req.headers().clone(),
            req.extensions().get::<Deadline>().copied(),
        ));
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            Ok::<_, BoxError>(
                Response::builder()
                    .status(if n == 0 { 503 } else { 200 })
                    .body(())
                    .unwrap(),
            )
        }
    });
    let client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new())
        .layer(retry(3))
        .service(svc);
    let deadline = Deadline::after(Duration::from_secs(5)).unwrap();
    let mut req = Request::delete("http://svc.invalid/items/1")
        .header("x-request-id", "r-1")
        .body(Full::new(Bytes::new()))
        .unwrap();
    req.extensions_mut().insert(deadline);
    client.oneshot(req).await.unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], seen[1]);
    assert_eq!(seen[1].0, http::Method::DELETE);
    assert_eq!(seen[1].2["x-request-id"], "r-1");
    assert_eq!(seen[1].3, Some(deadline));
}

#[tokio::test(start_paused = true)]
async fn idempotent_only_does_not_retry_a_plain_post() {
    let received = Received::default();
    let client = ServiceBuilder::new()
        .layer(ReplayBodyLayer::new())
        .layer(
            RetryLayer::builder()
                .no_budget()
                .classifier(HttpClassifier::new())
                .replay(HttpReplay::idempotent_only())
                .build()
                .unwrap(),
        )
        .service(peer(received.clone(), None, vec![503]));
    let res = client
        .clone()
        .oneshot(
            Request::post("/")
                .body(Full::new(Bytes::from_static(b"x")))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(received.0.lock().unwrap().len(), 1);
    assert!(matches!(
        res.extensions().get::<RetryGaveUp>().unwrap().reason,
        GiveUpReason::NotReplayable(_)
    ));
    // With an Idempotency-Key it is retried.
    let req = Request::post("/")
        .header("idempotency-key", "\"k\"")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    client.oneshot(req).await.unwrap();
    assert_eq!(received.0.lock().unwrap().len(), 4);
}
