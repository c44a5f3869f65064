//! The HTTP and gRPC classifiers driving steadfast's retry layer, on a paused clock; plus the
//! one real-socket check that a refused connection is retried transparently.
#![allow(clippy::disallowed_types)] // SystemTime: a fixed wall clock for Retry-After dates
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use steadfast_http::classify::{GrpcClassifier, HttpClassifier, RetryGaveUp, WallClock};
use steadfast_http::codec::RetryAfter;
use steadfast_layers::classify::{Classifier, Outcome};
use steadfast_layers::deadline::DeadlineExceeded;
use steadfast_layers::retry::{GaveUp, GiveUpReason, RetryLayer};
use steadfast_layers::timeout::Elapsed;
use steadfast_layers::BoxError;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

/// A peer answering the scripted responses in order (the last repeats), recording call times.
#[derive(Clone)]
struct Peer {
    script: Arc<Vec<Response<()>>>,
    calls: Arc<Mutex<Vec<Instant>>>,
}

fn peer(script: Vec<Response<()>>) -> Peer {
    Peer {
        script: Arc::new(script),
        calls: Arc::default(),
    }
}

impl Peer {
    fn service(
        &self,
    ) -> impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future = impl Send> + Clone
    {
        let this = self.clone();
        service_fn(move |_req: Request<()>| {
            let n = {
                let mut c = this.calls.lock().unwrap();
                c.push(Instant::now());
                c.len() - 1
            };
            let template = &this.script[n.min(this.script.len() - 1)];
            let mut res = Response::new(());
            *res.status_mut() = template.status();
            *res.headers_mut() = template.headers().clone();
            async move { Ok::<_, BoxError>(res) }
        })
    }

    fn offsets(&self, t0: Instant) -> Vec<Duration> {
        self.calls.lock().unwrap().iter().map(|t| *t - t0).collect()
    }
}

fn status(code: u16, headers: &[(&str, &str)]) -> Response<()> {
    let mut b = Response::builder().status(code);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

fn grpc(code: &str, pushback: Option<&str>) -> Response<()> {
    let mut h = vec![("content-type", "application/grpc"), ("grpc-status", code)];
    if let Some(p) = pushback {
        h.push(("grpc-retry-pushback-ms", p));
    }
    status(200, &h)
}

fn fixed_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

async fn run<C>(classifier: C, p: &Peer) -> (Result<Response<()>, BoxError>, Vec<Duration>)
where
    C: Classifier<Response<()>, BoxError> + Clone,
{
    let client = RetryLayer::builder()
        .max_attempts(3)
        .no_budget()
        .seed(3)
        .classifier(classifier)
        .build()
        .unwrap()
        .layer(p.service());
    let t0 = Instant::now();
    let res = client.oneshot(Request::new(())).await;
    (res, p.offsets(t0))
}

#[tokio::test(start_paused = true)]
async fn http_retry_after_seconds_replaces_the_backoff() {
    let p = peer(vec![
        status(503, &[("retry-after", "2")]),
        status(429, &[("retry-after", "1")]),
        status(200, &[]),
    ]);
    let (res, at) = run(HttpClassifier::new(), &p).await;
    assert_eq!(res.unwrap().status(), 200);
    assert_eq!(
        at,
        [
            Duration::ZERO,
            Duration::from_secs(2),
            Duration::from_secs(3)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn http_retry_after_date_is_read_against_the_wall_clock() {
    let in_5s = RetryAfter::Date(fixed_now() + Duration::from_secs(5)).to_header_value();
    let p = peer(vec![
        status(503, &[("retry-after", in_5s.to_str().unwrap())]),
        status(200, &[]),
    ]);
    let c = HttpClassifier::builder()
        .wall_clock(WallClock::new(fixed_now))
        .build()
        .unwrap();
    let (res, at) = run(c, &p).await;
    assert_eq!(res.unwrap().status(), 200);
    assert_eq!(at, [Duration::ZERO, Duration::from_secs(5)]);
}

#[tokio::test(start_paused = true)]
async fn http_retry_after_beyond_the_cap_is_pushback_and_noted_on_the_response() {
    let p = peer(vec![status(503, &[("retry-after", "120")])]);
    let (res, at) = run(HttpClassifier::new(), &p).await;
    let res = res.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(at.len(), 1);
    assert_eq!(
        res.extensions().get::<RetryGaveUp>(),
        Some(&RetryGaveUp {
            reason: GiveUpReason::Pushback,
            attempts: 1
        })
    );
}

#[tokio::test(start_paused = true)]
async fn http_statuses_retryable_fatal_and_success() {
    // 5xx retried until attempts run out; the last 503 comes back with the reason.
    let p = peer(vec![status(503, &[])]);
    let (res, at) = run(HttpClassifier::new(), &p).await;
    let res = res.unwrap();
    assert_eq!(at.len(), 3);
    assert_eq!(
        res.extensions().get::<RetryGaveUp>(),
        Some(&RetryGaveUp {
            reason: GiveUpReason::AttemptsExhausted,
            attempts: 3
        })
    );
    // A 5xx taken out of the set is fatal.
    let p = peer(vec![status(500, &[])]);
    let c = HttpClassifier::builder()
        .no_retry_on(http::StatusCode::INTERNAL_SERVER_ERROR)
        .build()
        .unwrap();
    let (res, at) = run(c, &p).await;
    assert_eq!(at.len(), 1);
    assert_eq!(
        res.unwrap()
            .extensions()
            .get::<RetryGaveUp>()
            .unwrap()
            .reason,
        GiveUpReason::Fatal("internal_server_error")
    );
    // 408 is retryable; 404 is an answer.
    let p = peer(vec![status(408, &[]), status(404, &[])]);
    let (res, at) = run(HttpClassifier::new(), &p).await;
    let res = res.unwrap();
    assert_eq!((res.status().as_u16(), at.len()), (404, 2));
    assert!(res.extensions().get::<RetryGaveUp>().is_none());
    // A malformed Retry-After falls back to the computed backoff (under 25 ms, full jitter).
    let p = peer(vec![
        status(503, &[("retry-after", "soon")]),
        status(200, &[]),
    ]);
    let (_, at) = run(HttpClassifier::new(), &p).await;
    assert!(at[1] < Duration::from_millis(25));
}

#[test]
fn errors_are_classified_by_their_source_chain() {
    let c = HttpClassifier::new();
    let classify = |e: BoxError| Classifier::<Response<()>, BoxError>::classify(&c, &Err(e));
    assert_eq!(
        classify(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))),
        Outcome::NotSent {
            reason: "connection_refused"
        }
    );
    // Wrapped: found down the chain.
    let wrapped =
        std::io::Error::other(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    assert!(matches!(
        classify(Box::new(wrapped)),
        Outcome::NotSent { .. }
    ));
    assert_eq!(
        classify(Box::new(Elapsed::new(Duration::from_secs(1)))),
        Outcome::retryable("timeout")
    );
    assert_eq!(
        classify(Box::new(DeadlineExceeded::new())),
        Outcome::fatal("deadline_exceeded")
    );
    assert_eq!(
        classify("connection reset".into()),
        Outcome::retryable("error")
    );
    let strict = HttpClassifier::builder()
        .retry_errors(false)
        .build()
        .unwrap();
    assert_eq!(
        Classifier::<Response<()>, BoxError>::classify(&strict, &Err("reset".into())),
        Outcome::fatal("error")
    );
    let g = GrpcClassifier::new();
    assert_eq!(
        Classifier::<Response<()>, BoxError>::classify(
            &g,
            &Err(Box::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused
            )))
        ),
        Outcome::NotSent {
            reason: "connection_refused"
        }
    );
}

/// hyper-util's legacy client against a port nobody listens on: `is_connect()`, so the retry
/// layer re-sends once at once without counting an attempt (gRPC A6 transparent retry), then
/// treats the dead peer like any failure: counted attempts with backoff.
#[tokio::test(start_paused = true)]
async fn refused_connections_are_resent_once_then_backed_off() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // dropped: the port refuses connections
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let sends = Arc::new(AtomicU32::new(0));
    let s = sends.clone();
    let counted = service_fn(move |req: Request<Empty<Bytes>>| {
        s.fetch_add(1, Ordering::SeqCst);
        client.request(req)
    });
    let uri = format!("http://127.0.0.1:{port}/");
    let first = counted
        .clone()
        .oneshot(Request::get(&uri).body(Empty::new()).unwrap());
    let err = first.await.unwrap_err();
    assert!(err.is_connect());
    assert_eq!(
        Classifier::<Response<()>, _>::classify(
            &HttpClassifier::new(),
            &Err::<Response<()>, BoxError>(Box::new(err))
        ),
        Outcome::NotSent { reason: "connect" }
    );

    sends.store(0, Ordering::SeqCst);
    let retrying = RetryLayer::builder()
        .max_attempts(3)
        .no_budget()
        .backoff(steadfast_layers::retry::Backoff::constant(
            Duration::from_millis(25),
        ))
        .classifier(HttpClassifier::new())
        .build()
        .unwrap()
        .layer(counted);
    let req = Request::get(uri).body(Empty::new()).unwrap();
    let t0 = tokio::time::Instant::now();
    let err = retrying.oneshot(req).await.unwrap_err();
    let gave_up = err.downcast_ref::<GaveUp>().unwrap();
    // The first send, one transparent re-send, then attempts 2 and 3 after 25 ms backoffs.
    assert_eq!(gave_up.attempts(), 3);
    assert_eq!(gave_up.reason(), &GiveUpReason::AttemptsExhausted);
    assert_eq!(gave_up.last_reason(), Some("connect"));
    assert_eq!(sends.load(Ordering::SeqCst), 4);
    assert!(t0.elapsed() >= Duration::from_millis(50));
}

#[tokio::test(start_paused = true)]
async fn grpc_trailers_only_statuses_and_pushback() {
    // UNAVAILABLE is retried with the computed backoff; RESOURCE_EXHAUSTED waits the pushback.
    let p = peer(vec![
        grpc("14", None),
        grpc("8", Some("300")),
        grpc("0", None),
    ]);
    let (res, at) = run(GrpcClassifier::new(), &p).await;
    assert_eq!(res.unwrap().headers()["grpc-status"], "0");
    assert!(at[1] < Duration::from_millis(25));
    assert_eq!(at[2] - at[1], Duration::from_millis(300));

    // A negative pushback stops at once, even for a retryable code.
    let p = peer(vec![grpc("14", Some("-1"))]);
    let (res, at) = run(GrpcClassifier::new(), &p).await;
    assert_eq!(at.len(), 1);
    assert_eq!(
        res.unwrap()
            .extensions()
            .get::<RetryGaveUp>()
            .unwrap()
            .reason,
        GiveUpReason::Pushback
    );

    // RESOURCE_EXHAUSTED without pushback is fatal; a proxy's 503 is UNAVAILABLE.
    let p = peer(vec![grpc("8", None)]);
    assert_eq!(run(GrpcClassifier::new(), &p).await.1.len(), 1);
    let p = peer(vec![status(503, &[]), grpc("0", None)]);
    assert_eq!(run(GrpcClassifier::new(), &p).await.1.len(), 2);
}

type Frames = Vec<Result<Frame<Bytes>, std::io::Error>>;
type FrameBody =
    StreamBody<futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>>>;

fn streaming_grpc_response(code: &str) -> Response<FrameBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", code.parse().unwrap());
    let frames: Frames = vec![
        Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x02hi"))),
        Ok(Frame::trailers(trailers)),
    ];
    Response::builder()
        .header("content-type", "application/grpc")
        .body(StreamBody::new(futures::stream::iter(frames)))
        .unwrap()
}

/// A status in the trailers is only known after the body: the call is committed (not retried,
/// A6), and `observe` reports the trailers' outcome when they arrive.
#[tokio::test(start_paused = true)]
async fn grpc_status_in_trailers_is_observed_after_the_body() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let svc = service_fn(move |_req: Request<()>| {
        c.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, BoxError>(streaming_grpc_response("14")) }
    });
    let classifier = GrpcClassifier::new();
    let client = RetryLayer::builder()
        .no_budget()
        .classifier(classifier.clone())
        .build()
        .unwrap()
        .layer(svc);
    let res = client.oneshot(Request::new(())).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1, "committed: not retried");

    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let res = classifier.observe(res, move |o| s.lock().unwrap().push(o));
    assert!(
        seen.lock().unwrap().is_empty(),
        "unknown until the trailers"
    );
    let body = res.into_body().collect().await.unwrap();
    assert_eq!(body.trailers().unwrap()["grpc-status"], "14");
    assert_eq!(*seen.lock().unwrap(), [Outcome::retryable("unavailable")]);

    // Trailers-Only: reported at once, from the headers.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let _res = classifier.observe(
        grpc("8", Some("-1")).map(|()| Full::new(Bytes::new())),
        move |o| s.lock().unwrap().push(o),
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [Outcome::Pushback { reason: "pushback" }]
    );

    // A stream that ends without trailers has no status.
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let no_trailers = Response::builder()
        .header("content-type", "application/grpc")
        .body(Full::new(Bytes::from_static(b"x")))
        .unwrap();
    let res = classifier.observe(no_trailers, move |o| s.lock().unwrap().push(o));
    let _ = res.into_body().collect().await;
    assert_eq!(*seen.lock().unwrap(), [Outcome::fatal("missing_status")]);
}

#[test]
fn an_in_progress_409_is_retried_after_its_delay_and_a_plain_409_is_an_answer() {
    let c = HttpClassifier::new();
    // The idempotency server's "first request with this key still in progress".
    let busy: Result<Response<()>, BoxError> = Ok(status(409, &[("retry-after", "1")]));
    assert_eq!(
        c.classify(&busy),
        Outcome::retry_after("in_progress", Duration::from_secs(1))
    );
    let conflict: Result<Response<()>, BoxError> = Ok(status(409, &[]));
    assert_eq!(c.classify(&conflict), Outcome::Success);
}
