//! Deadline propagation across hops, on a paused clock with in-memory transports: each hop
//! drops extensions and runs the callee in its own task, so only headers carry the deadline.
#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderValue, Request, Response, StatusCode};
use steadfast_http::codec::{GRPC_STATUS, GRPC_TIMEOUT, REQUEST_TIMEOUT_MS};
use steadfast_http::propagate::{DeadlinePropagationLayer, DeadlineServerLayer, MalformedDeadline};
use steadfast_layers::deadline::{
    Deadline, DeadlineExceeded, DeadlineLayer, HttpExtensions, MAX_TIMEOUT,
};
use steadfast_layers::BoxError;
use support::{hop, DropProbe};
use tokio::time::Instant;
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};

type Res = Response<String>;

/// What a hop's handler saw.
#[derive(Clone, Debug, Default)]
struct Seen {
    header: Option<HeaderValue>,
    remaining: Option<Duration>,
    at: Option<Instant>,
}

fn record(seen: &Arc<Mutex<Seen>>, req: &Request<()>, header: &http::HeaderName) {
    let mut s = seen.lock().unwrap();
    s.header = req.headers().get(header).cloned();
    // The extension and the task-local scope agree.
    assert_eq!(
        req.extensions().get::<Deadline>().copied(),
        Deadline::current()
    );
    s.remaining = Deadline::current().map(|d| d.remaining());
    s.at = Some(Instant::now());
}

/// A → B → C. A allows 1 s. B works `b_work`, then calls C. C works 5 s (too long).
/// Returns A's result, what B and C saw, when C's work was dropped, and A's start.
async fn chain(
    grpc: bool,
    b_work: Duration,
) -> (Result<Res, BoxError>, Seen, Seen, Option<Instant>, Instant) {
    let header = if grpc {
        GRPC_TIMEOUT
    } else {
        REQUEST_TIMEOUT_MS
    };
    let seen_b = Arc::new(Mutex::new(Seen::default()));
    let seen_c = Arc::new(Mutex::new(Seen::default()));
    let c_dropped = Arc::new(Mutex::new(None));

    let (sc, dc, h) = (seen_c.clone(), c_dropped.clone(), header.clone());
    let c = DeadlineServerLayer::new().layer(service_fn(move |req: Request<()>| {
        record(&sc, &req, &h);
        let probe = DropProbe(dc.clone());
        async move {
            let _probe = probe;
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<Res, Infallible>(Response::new("c done".into()))
        }
    }));
    let to_c = DeadlinePropagationLayer::new().layer(hop(c));

    let (sb, h) = (seen_b.clone(), header.clone());
    let b = DeadlineServerLayer::new().layer(service_fn(move |req: Request<()>| {
        record(&sb, &req, &h);
        let to_c = to_c.clone();
        async move {
            tokio::time::sleep(b_work).await;
            let mut out = Request::new(());
            if grpc {
                out.headers_mut()
                    .insert("content-type", HeaderValue::from_static("application/grpc"));
            }
            to_c.oneshot(out).await
        }
    }));

    // A: a 1 s deadline (on the request and in scope), propagated to B.
    let a = ServiceBuilder::new()
        .layer(
            DeadlineLayer::builder()
                .timeout(Duration::from_secs(1))
                .carrier(HttpExtensions)
                .build()
                .unwrap(),
        )
        .layer(DeadlinePropagationLayer::new())
        .service(hop(b));
    let mut req = Request::new(());
    if grpc {
        req.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
    }
    let start = Instant::now();
    let res = a.oneshot(req).await;
    tokio::task::yield_now().await;
    let b = seen_b.lock().unwrap().clone();
    let c = seen_c.lock().unwrap().clone();
    let dropped = *c_dropped.lock().unwrap();
    (res, b, c, dropped, start)
}

#[tokio::test(start_paused = true)]
async fn http_chain_shrinks_the_deadline_per_hop_and_stops_c_in_time() {
    let (res, b, c, c_dropped, start) = chain(false, Duration::ZERO).await;
    // Each hop shaves the 10 ms margin, and the header is in whole milliseconds.
    assert_eq!(b.header.unwrap(), "990");
    assert_eq!(c.header.unwrap(), "980");
    assert_eq!(b.remaining, Some(Duration::from_millis(990)));
    assert_eq!(c.remaining, Some(Duration::from_millis(980)));
    // C's work is dropped exactly at its deadline, before A's time is up.
    assert_eq!(c_dropped.unwrap() - start, Duration::from_millis(980));
    // C answered 504, which B passed on; A got it inside its own 1 s.
    let res = res.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(Instant::now() - start, Duration::from_millis(980));
}

#[tokio::test(start_paused = true)]
async fn grpc_chain_uses_grpc_timeout_and_answers_deadline_exceeded() {
    let (res, b, c, c_dropped, start) = chain(true, Duration::ZERO).await;
    assert_eq!(b.header.unwrap(), "990000u");
    assert_eq!(c.header.unwrap(), "980000u");
    assert_eq!(c_dropped.unwrap() - start, Duration::from_millis(980));
    let res = res.unwrap();
    // Trailers-Only DEADLINE_EXCEEDED.
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[GRPC_STATUS], "4");
    assert_eq!(res.headers()["content-type"], "application/grpc");
}

#[tokio::test(start_paused = true)]
async fn time_spent_in_b_is_taken_off_what_c_gets() {
    let (_res, _b, c, c_dropped, start) = chain(true, Duration::from_millis(300)).await;
    // 1 s - 10 ms (A) - 300 ms (B's work) - 10 ms (B).
    assert_eq!(c.header.unwrap(), "680000u");
    assert_eq!(c.at.unwrap() - start, Duration::from_millis(300));
    assert_eq!(c_dropped.unwrap() - start, Duration::from_millis(980));
}

fn counting_handler(
    calls: Arc<Mutex<u32>>,
) -> impl tower::Service<Request<()>, Response = Res, Error = Infallible, Future = impl Send> + Clone
{
    service_fn(move |_req: Request<()>| {
        *calls.lock().unwrap() += 1;
        async { Ok::<Res, Infallible>(Response::new("handled".into())) }
    })
}

#[tokio::test(start_paused = true)]
async fn expired_requests_are_rejected_without_calling_the_handler() {
    let calls = Arc::new(Mutex::new(0));
    let svc = DeadlineServerLayer::new().layer(counting_handler(calls.clone()));

    let http = Request::builder()
        .header(REQUEST_TIMEOUT_MS, "0")
        .body(())
        .unwrap();
    let res = svc.clone().oneshot(http).await.unwrap();
    assert_eq!(res.status(), StatusCode::GATEWAY_TIMEOUT);

    let grpc = Request::builder()
        .header("content-type", "application/grpc+proto")
        .header(GRPC_TIMEOUT, "0n")
        .body(())
        .unwrap();
    let res = svc.clone().oneshot(grpc).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[GRPC_STATUS], "4");
    assert_eq!(res.headers()["grpc-message"], "deadline exceeded");

    // An in-process deadline that has already passed counts too.
    let mut late = Request::new(());
    late.extensions_mut().insert(Deadline::at(Instant::now()));
    assert_eq!(svc.clone().oneshot(late).await.unwrap().status(), 504);

    assert_eq!(*calls.lock().unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_is_read_only_on_grpc_requests_and_the_earlier_deadline_wins() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let svc = DeadlineServerLayer::new().layer(service_fn(move |_req: Request<()>| {
        s.lock()
            .unwrap()
            .push(Deadline::current().map(|d| d.remaining()));
        async { Ok::<Res, Infallible>(Response::new(String::new())) }
    }));
    let send = |req: Request<()>| svc.clone().oneshot(req);

    // A plain HTTP request's grpc-timeout is not a deadline.
    send(
        Request::builder()
            .header(GRPC_TIMEOUT, "1S")
            .body(())
            .unwrap(),
    )
    .await
    .unwrap();
    // gRPC: both headers, the earlier wins.
    send(
        Request::builder()
            .header("content-type", "application/grpc")
            .header(GRPC_TIMEOUT, "2S")
            .header(REQUEST_TIMEOUT_MS, "1500")
            .body(())
            .unwrap(),
    )
    .await
    .unwrap();
    // The wire and an in-process deadline: the earlier wins.
    let mut req = Request::builder()
        .header(REQUEST_TIMEOUT_MS, "900")
        .body(())
        .unwrap();
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_millis(400)).unwrap());
    send(req).await.unwrap();
    // A timeout beyond any deadline is clamped to the longest (MAX_TIMEOUT).
    send(
        Request::builder()
            .header(REQUEST_TIMEOUT_MS, "18446744073709551615")
            .body(())
            .unwrap(),
    )
    .await
    .unwrap();

    assert_eq!(
        *seen.lock().unwrap(),
        [
            None,
            Some(Duration::from_millis(1500)),
            Some(Duration::from_millis(400)),
            Some(MAX_TIMEOUT)
        ]
    );
}

/// By default a malformed deadline header fails the call without running the handler: gRPC
/// `INTERNAL` "malformed grpc-timeout" (HTTP 200, Trailers-Only, as grpc-go answers), plain
/// HTTP `400`; each is traced.
#[tokio::test(start_paused = true)]
async fn malformed_deadline_headers_are_rejected_and_traced() {
    let traces = support::Traces::default();
    let _guard = traces.install();
    let calls = Arc::new(Mutex::new(0));
    let svc = DeadlineServerLayer::new().layer(counting_handler(calls.clone()));
    let grpc = |value: &'static [u8]| {
        Request::builder()
            .header("content-type", "application/grpc")
            .header(GRPC_TIMEOUT, HeaderValue::from_bytes(value).unwrap())
            .body(())
            .unwrap()
    };
    // No unit, more than 8 digits, a sign, lowercase or unknown units, spaces, non-ASCII,
    // a fraction, empty.
    let bad: [(&[u8], &str); 12] = [
        (b"100", "missing or unknown unit"),
        (b"100000000n", "more than 8 digits"),
        (b"+1S", "not a decimal integer"),
        (b"-1S", "not a decimal integer"),
        (b"1s", "missing or unknown unit"),
        (b"1h", "missing or unknown unit"),
        (b"1x", "missing or unknown unit"),
        (b"1 S", "not a decimal integer"),
        (b" 1S", "not a decimal integer"),
        (b"1S ", "missing or unknown unit"),
        (b"\xd9\xa1S", "not a decimal integer"), // ARABIC-INDIC DIGIT ONE
        (b"", "empty value"),
    ];
    for (value, why) in bad {
        let started = Instant::now();
        let res = svc.clone().oneshot(grpc(value)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{value:?}");
        assert_eq!(res.headers()["content-type"], "application/grpc");
        assert_eq!(res.headers()[GRPC_STATUS], "13", "{value:?}");
        let message = res.headers()["grpc-message"].to_str().unwrap();
        assert!(
            message.starts_with("malformed grpc-timeout: ") && message.contains(why),
            "{value:?}: {message}"
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
    // The plain header: 400, on a plain request; INTERNAL on a gRPC one.
    for value in ["soon", "-5", "1.5", "99999999999999999999", "1e3", ""] {
        let req = Request::builder()
            .header(REQUEST_TIMEOUT_MS, value)
            .body(())
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{value:?}");
    }
    let req = Request::builder()
        .header("content-type", "application/grpc")
        .header(GRPC_TIMEOUT, "1S")
        .header(REQUEST_TIMEOUT_MS, "soon")
        .body(())
        .unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    assert_eq!(res.headers()[GRPC_STATUS], "13");
    assert_eq!(
        res.headers()["grpc-message"],
        "malformed x-request-timeout-ms: not a decimal integer"
    );
    // Any malformed value among several fails the call.
    let mut req = grpc(b"1S");
    req.headers_mut()
        .append(GRPC_TIMEOUT, HeaderValue::from_static("1"));
    assert_eq!(
        svc.clone().oneshot(req).await.unwrap().headers()[GRPC_STATUS],
        "13"
    );

    assert_eq!(*calls.lock().unwrap(), 0, "the handler never ran");
    let events = traces.with_message("malformed deadline header: request rejected");
    assert_eq!(events.len(), 12 + 6 + 1 + 1);
    assert!(events.iter().all(|e| e.fields["action"] == "rejected"));
    assert_eq!(events[0].fields["header"], "grpc-timeout");
    assert_eq!(
        events[0].fields["error"],
        "invalid grpc-timeout: missing or unknown unit (expected H M S m u n)"
    );
}

/// With `MalformedDeadline::Ignore` (the lenient opt-in), a malformed header is ignored,
/// counted and traced, and the other header still applies.
#[tokio::test(start_paused = true)]
async fn malformed_deadline_headers_are_ignored_and_traced_when_lenient() {
    let traces = support::Traces::default();
    let _guard = traces.install();
    let calls = Arc::new(Mutex::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (c, s) = (calls.clone(), seen.clone());
    let svc = DeadlineServerLayer::builder()
        .on_malformed(MalformedDeadline::Ignore)
        .build()
        .unwrap()
        .layer(service_fn(move |_req: Request<()>| {
            *c.lock().unwrap() += 1;
            s.lock()
                .unwrap()
                .push(Deadline::current().map(|d| d.remaining()));
            async { Ok::<Res, Infallible>(Response::new(String::new())) }
        }));
    let req = Request::builder()
        .header("content-type", "application/grpc")
        .header(GRPC_TIMEOUT, "1.5S")
        .header(REQUEST_TIMEOUT_MS, "soon")
        .body(())
        .unwrap();
    assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), 200);
    let req = Request::builder()
        .header("content-type", "application/grpc")
        .header(GRPC_TIMEOUT, "100000000n")
        .header(REQUEST_TIMEOUT_MS, "250")
        .body(())
        .unwrap();
    assert_eq!(svc.oneshot(req).await.unwrap().status(), 200);
    assert_eq!(*calls.lock().unwrap(), 2);
    assert_eq!(
        *seen.lock().unwrap(),
        [None, Some(Duration::from_millis(250))]
    );
    let events = traces.with_message("malformed deadline header ignored");
    let headers: Vec<_> = events.iter().map(|e| e.fields["header"].clone()).collect();
    assert_eq!(
        headers,
        ["grpc-timeout", "x-request-timeout-ms", "grpc-timeout"]
    );
    assert!(events.iter().all(|e| e.fields["action"] == "ignored"));
}

/// The case: a malformed `grpc-timeout` on a 400 ms handler. Rejected at once by
/// default; with the lenient opt-in it runs to the end, unbounded by any deadline.
#[tokio::test(start_paused = true)]
async fn a_malformed_grpc_timeout_no_longer_removes_the_deadline() {
    let handler = || {
        service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            Ok::<Res, Infallible>(Response::new("done".into()))
        })
    };
    let req = || {
        Request::builder()
            .header("content-type", "application/grpc")
            .header(GRPC_TIMEOUT, "100000000n")
            .body(())
            .unwrap()
    };
    let started = Instant::now();
    let res = DeadlineServerLayer::new()
        .layer(handler())
        .oneshot(req())
        .await
        .unwrap();
    assert_eq!(res.headers()[GRPC_STATUS], "13");
    assert_eq!(started.elapsed(), Duration::ZERO);

    let lenient = DeadlineServerLayer::builder()
        .on_malformed(MalformedDeadline::Ignore)
        .build()
        .unwrap()
        .layer(handler());
    let res = lenient.oneshot(req()).await.unwrap();
    assert_eq!(res.into_body(), "done");
    assert_eq!(started.elapsed(), Duration::from_millis(400));
}

#[tokio::test(start_paused = true)]
async fn without_enforcement_the_handler_may_overrun() {
    let svc = DeadlineServerLayer::builder()
        .enforce(false)
        .build()
        .unwrap()
        .layer(service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok::<Res, Infallible>(Response::new("late".into()))
        }));
    let req = Request::builder()
        .header(REQUEST_TIMEOUT_MS, "100")
        .body(())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.into_body(), "late");
}

/// A client-side wire that reports the headers it was given.
fn echo_headers() -> impl tower::Service<
    Request<()>,
    Response = http::HeaderMap,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(|req: Request<()>| async move { Ok::<_, Infallible>(req.headers().clone()) })
}

fn grpc_request() -> Request<()> {
    Request::builder()
        .header("content-type", "application/grpc")
        .body(())
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn client_fails_fast_when_nothing_is_left() {
    let calls = Arc::new(Mutex::new(0));
    let c = calls.clone();
    let wire = service_fn(move |_req: Request<()>| {
        *c.lock().unwrap() += 1;
        async { Ok::<_, Infallible>(()) }
    });
    let client = DeadlinePropagationLayer::new().layer(wire); // 10 ms margin
    let deadline = Deadline::after(Duration::from_millis(10)).unwrap();
    let err = deadline
        .scope(client.clone().oneshot(grpc_request()))
        .await
        .unwrap_err();
    let exceeded = err.downcast_ref::<DeadlineExceeded>().unwrap();
    assert!(exceeded.on_arrival());
    // Plain HTTP carries whole milliseconds: 10.5 ms - 10 ms is nothing left.
    let deadline = Deadline::after(Duration::from_micros(10_500)).unwrap();
    let err = deadline
        .scope(client.clone().oneshot(Request::new(())))
        .await
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_eq!(*calls.lock().unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn client_writes_nanoseconds_for_grpc_and_reads_the_request_extension() {
    let client = DeadlinePropagationLayer::new().layer(echo_headers());
    // gRPC keeps sub-millisecond precision.
    let deadline = Deadline::after(Duration::from_micros(10_500)).unwrap();
    let sent = deadline
        .scope(client.clone().oneshot(grpc_request()))
        .await
        .unwrap();
    assert_eq!(sent[GRPC_TIMEOUT], "500000n");
    // The deadline may travel in the request's extensions only (e.g. after a channel hop).
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(Deadline::after(Duration::from_secs(3)).unwrap());
    let sent = client.clone().oneshot(req).await.unwrap();
    assert_eq!(sent[REQUEST_TIMEOUT_MS], "2990");
    assert!(sent.get(GRPC_TIMEOUT).is_none());
    // No deadline, no cap: nothing written.
    let sent = client.oneshot(Request::new(())).await.unwrap();
    assert!(sent.get(REQUEST_TIMEOUT_MS).is_none());
}

#[tokio::test(start_paused = true)]
async fn client_keeps_a_shorter_timeout_already_set_and_replaces_a_longer_one() {
    let client = DeadlinePropagationLayer::new().layer(echo_headers());
    let deadline = Deadline::after(Duration::from_secs(1)).unwrap();
    let mut shorter = grpc_request();
    shorter
        .headers_mut()
        .insert(GRPC_TIMEOUT, HeaderValue::from_static("200m"));
    let sent = deadline
        .scope(client.clone().oneshot(shorter))
        .await
        .unwrap();
    assert_eq!(sent[GRPC_TIMEOUT], "200m");
    let mut longer = grpc_request();
    longer
        .headers_mut()
        .insert(GRPC_TIMEOUT, HeaderValue::from_static("5S"));
    let sent = deadline
        .scope(client.clone().oneshot(longer))
        .await
        .unwrap();
    assert_eq!(sent[GRPC_TIMEOUT], "990000u");
    let mut longer_http = Request::new(());
    longer_http
        .headers_mut()
        .insert(REQUEST_TIMEOUT_MS, HeaderValue::from_static("60000"));
    let sent = deadline.scope(client.oneshot(longer_http)).await.unwrap();
    assert_eq!(sent[REQUEST_TIMEOUT_MS], "990");
}

#[tokio::test(start_paused = true)]
async fn max_timeout_caps_what_is_propagated_deadline_or_not() {
    let client = DeadlinePropagationLayer::builder()
        .max_timeout(Duration::from_millis(250))
        .header(http::HeaderName::from_static("x-deadline-ms"))
        .build()
        .unwrap()
        .layer(echo_headers());
    let sent = client.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(sent["x-deadline-ms"], "250");
    let deadline = Deadline::after(Duration::from_millis(100)).unwrap();
    let sent = deadline
        .scope(client.oneshot(grpc_request()))
        .await
        .unwrap();
    assert_eq!(sent[GRPC_TIMEOUT], "90000000n");
}
