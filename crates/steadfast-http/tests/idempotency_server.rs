//! The server layer on the in-memory store (paused clock): the IETF draft's answers, tenant
//! isolation, storage policy and limits, leases, fencing, store failures and telemetry.
#![allow(clippy::unwrap_used, missing_docs)]

mod idempotency_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use http::{HeaderName, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use idempotency_support::*;
use proptest::prelude::*;
use steadfast_http::idempotency::store::{
    BeginOutcome, BeginRequest, IdempotencyStore, Lease, MemoryStore, StoreError, StoreErrorKind,
    StoreFuture, StoredResponse,
};
use steadfast_http::idempotency::{
    HeaderPrincipal, IdempotencyLayer, IdempotencyLayerBuilder, NoPrincipal, RequestBody,
    StoreResponses,
};
use steadfast_layers::BoxError;
use tokio::sync::Notify;
use tower::util::BoxCloneService;
use tower::{service_fn, Layer, ServiceExt};

fn builder<St: IdempotencyStore>(store: St) -> IdempotencyLayerBuilder<St, HeaderPrincipal> {
    let b: IdempotencyLayerBuilder<St, NoPrincipal> = IdempotencyLayer::builder(store);
    b.principal(HeaderPrincipal::new(HeaderName::from_static("x-tenant")))
}

fn layer() -> IdempotencyLayer<MemoryStore, HeaderPrincipal> {
    builder(MemoryStore::new()).build().unwrap()
}

/// A counting handler whose first execution never finishes on its own (a holder that hangs
/// until it is aborted or cut off); the later ones answer as [`counting`] does.
fn first_call_hangs(calls: Arc<AtomicUsize>) -> Handler {
    scripted(calls, |n, _| async move {
        if n == 1 {
            std::future::pending::<()>().await;
        }
        Ok(())
    })
}

#[tokio::test(start_paused = true)]
async fn first_request_executes_and_duplicates_replay() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = layer();
    let svc = layer.layer(counting(calls.clone()));

    let first = send(&svc, post(Some("k1"), "acme", "{\"qty\":1}")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.replayed());
    assert_eq!(first.text(), "created #1: {\"qty\":1}");
    let expires = first.headers["idempotency-key-expires"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        expires.ends_with(" GMT") && expires.len() == 29,
        "{expires}"
    );

    for _ in 0..3 {
        let again = send(&svc, post(Some("k1"), "acme", "{\"qty\":1}")).await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert!(again.replayed());
        assert_eq!(again.body, first.body);
        assert_eq!(again.headers["x-order"], "1");
        assert_eq!(again.headers["idempotency-key-expires"], expires.as_str());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = layer.stats();
    assert_eq!((stats.executions, stats.replays), (1, 3));

    // Another key executes again.
    let other = send(&svc, post(Some("k2"), "acme", "{\"qty\":1}")).await;
    assert!(!other.replayed());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn missing_and_malformed_keys_get_400_problem_details() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = layer();
    let svc = layer.layer(counting(calls.clone()));

    let missing = send(&svc, post(None, "acme", "{}")).await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing.problem()["type"],
        "urn:steadfast:idempotency:key-missing"
    );

    let bad_values: [&[u8]; 7] = [
        b"unquoted",
        b"\"unterminated",
        b"\"bad\\escape\"",
        b"\"a\";param=1",
        b"\"\"",
        b"\"tab\there\"",
        b"\"\xc3\xa9\"",
    ];
    for v in bad_values {
        let req = Request::post("/orders")
            .header("x-tenant", "acme")
            .header("idempotency-key", http::HeaderValue::from_bytes(v).unwrap())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = send(&svc, req).await;
        assert_eq!(res.status, StatusCode::BAD_REQUEST, "{v:?}");
        assert_eq!(
            res.problem()["type"],
            "urn:steadfast:idempotency:key-invalid"
        );
    }
    let too_long = format!("\"{}\"", "k".repeat(256));
    let req = Request::post("/orders")
        .header("x-tenant", "acme")
        .header("idempotency-key", too_long)
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(&svc, req).await.status, StatusCode::BAD_REQUEST);
    let req = Request::post("/orders")
        .header("x-tenant", "acme")
        .header("idempotency-key", "\"a\"")
        .header("idempotency-key", "\"b\"")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let two = send(&svc, req).await;
    assert_eq!(two.status, StatusCode::BAD_REQUEST);
    assert!(two.problem()["detail"]
        .as_str()
        .unwrap()
        .contains("more than one"));

    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no rejected request reaches the handler"
    );
    assert_eq!(layer.stats().rejections, 10);

    // Methods the layer does not handle pass through without a key.
    let get = Request::get("/orders")
        .header("x-tenant", "acme")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(send(&svc, get).await.status, StatusCode::CREATED);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn optional_keys_pass_unkeyed_requests_through() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = builder(MemoryStore::new())
        .key_required(false)
        .build()
        .unwrap()
        .layer(counting(calls.clone()));
    for _ in 0..2 {
        assert!(!send(&svc, post(None, "acme", "{}")).await.replayed());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Arbitrary `Idempotency-Key` bytes: the layer answers (400 problem details or an
    /// execution), never panics.
    #[test]
    fn arbitrary_key_headers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let Ok(value) = http::HeaderValue::from_bytes(&bytes) else { return Ok(()) };
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(async {
            let calls = Arc::new(AtomicUsize::new(0));
            let svc = layer().layer(counting(calls.clone()));
            let req = Request::post("/orders")
                .header("x-tenant", "acme")
                .header("idempotency-key", value)
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap();
            let res = send(&svc, req).await;
            if res.status == StatusCode::BAD_REQUEST {
                res.problem();
                assert_eq!(calls.load(Ordering::SeqCst), 0);
            } else {
                assert_eq!(res.status, StatusCode::CREATED);
                assert_eq!(calls.load(Ordering::SeqCst), 1);
            }
        });
    }
}

#[tokio::test(start_paused = true)]
async fn reuse_with_another_request_gets_422() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = layer();
    let svc = layer.layer(counting(calls.clone()));
    send(&svc, post(Some("k"), "acme", "{\"qty\":1}")).await;

    let other_body = send(&svc, post(Some("k"), "acme", "{\"qty\":2}")).await;
    assert_eq!(other_body.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        other_body.problem()["type"],
        "urn:steadfast:idempotency:key-reused"
    );

    let other_path = Request::post("/refunds")
        .header("x-tenant", "acme")
        .header("idempotency-key", "\"k\"")
        .body(Full::new(Bytes::from_static(b"{\"qty\":1}")))
        .unwrap();
    assert_eq!(
        send(&svc, other_path).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    let other_method = Request::patch("/orders")
        .header("x-tenant", "acme")
        .header("idempotency-key", "\"k\"")
        .body(Full::new(Bytes::from_static(b"{\"qty\":1}")))
        .unwrap();
    assert_eq!(
        send(&svc, other_method).await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().mismatches, 3);
    // The original request still replays.
    assert!(send(&svc, post(Some("k"), "acme", "{\"qty\":1}"))
        .await
        .replayed());
}

#[tokio::test(start_paused = true)]
async fn tenants_never_see_each_others_keys() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer().layer(counting(calls.clone()));

    let a = send(&svc, post(Some("same"), "tenant-a", "pay 10")).await;
    let b = send(&svc, post(Some("same"), "tenant-b", "pay 10")).await;
    assert!(!a.replayed() && !b.replayed());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_ne!(a.headers["x-order"], b.headers["x-order"]);

    // Each replays its own; a different body under tenant B's key is B's mismatch only.
    let a2 = send(&svc, post(Some("same"), "tenant-a", "pay 10")).await;
    let b2 = send(&svc, post(Some("same"), "tenant-b", "pay 10")).await;
    assert_eq!((a2.replayed(), a2.body.clone()), (true, a.body.clone()));
    assert_eq!((b2.replayed(), b2.body.clone()), (true, b.body.clone()));
    let c = send(&svc, post(Some("same"), "tenant-c", "pay 99")).await;
    assert!(!c.replayed());
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    // Scopes are not confused by separators: tenant "a:b" + key "c" vs tenant "a" + key "b:c".
    send(&svc, post(Some("c"), "a:b", "x")).await;
    let other = send(&svc, post(Some("b:c"), "a", "x")).await;
    assert!(!other.replayed());

    // No principal: refused, fail closed.
    let anonymous = Request::post("/orders")
        .header("idempotency-key", "\"same\"")
        .body(Full::new(Bytes::from_static(b"pay 10")))
        .unwrap();
    let res = send(&svc, anonymous).await;
    assert_eq!(res.status, StatusCode::FORBIDDEN);
    res.problem();
}

#[tokio::test(start_paused = true)]
async fn in_flight_duplicates_get_409_with_retry_after() {
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Notify::new());
    let g = gate.clone();
    let handler = scripted(calls.clone(), move |_, _| {
        let g = g.clone();
        async move {
            g.notified().await;
            Ok(())
        }
    });
    let layer = layer();
    let svc = layer.layer(handler);
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("k"), "acme", "{}")).await }
    });
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let dup = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.problem()["type"], "urn:steadfast:idempotency:in-flight");
    assert_eq!(
        dup.headers["retry-after"], "28",
        "the rest of the 30 s lease, rounded up"
    );
    // A mismatching duplicate in flight is a 422, not a 409.
    assert_eq!(
        send(&svc, post(Some("k"), "acme", "{\"other\":1}"))
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    gate.notify_one();
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(send(&svc, post(Some("k"), "acme", "{}")).await.replayed());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().conflicts, 1);
}

#[tokio::test(start_paused = true)]
async fn a_killed_holder_is_taken_over_after_its_lease_and_exactly_one_retry_executes() {
    let calls = Arc::new(AtomicUsize::new(0));
    // The first holder hangs until its task is aborted.
    let layer = layer();
    let svc = layer.layer(first_call_hangs(calls.clone()));
    let holder = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("k"), "acme", "{}")).await }
    });
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());

    // Until the lease expires, retries are told to wait.
    tokio::time::sleep(Duration::from_secs(29)).await;
    let early = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert_eq!(early.status, StatusCode::CONFLICT);
    assert_eq!(early.headers["retry-after"], "1");

    tokio::time::sleep(Duration::from_secs(2)).await;
    let retries = join_all((0..20).map(|_| {
        let svc = svc.clone();
        tokio::spawn(async move { send(&svc, post(Some("k"), "acme", "{}")).await })
    }))
    .await;
    let answers: Vec<Answer> = retries.into_iter().map(Result::unwrap).collect();
    let executed = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED && !a.replayed())
        .count();
    let replayed = answers.iter().filter(|a| a.replayed()).count();
    let conflicts = answers
        .iter()
        .filter(|a| a.status == StatusCode::CONFLICT)
        .count();
    assert_eq!(executed, 1);
    assert_eq!(replayed + conflicts, 19);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the dead holder and exactly one retry"
    );
    assert_eq!(layer.stats().lease_takeovers, 1);
}

#[tokio::test(start_paused = true)]
async fn a_taken_over_holder_cannot_overwrite_the_result() {
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = scripted(calls.clone(), |n, _| async move {
        if n == 1 {
            // Slower than its lease.
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Ok(())
    });
    let traces = Traces::default();
    let _guard = traces.install();
    // Without renewal, as if the slow holder were frozen (a paused VM, a long GC).
    let layer = builder(MemoryStore::new())
        .renew_leases(false)
        .build()
        .unwrap();
    let svc = layer.layer(handler);
    let slow = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, post(Some("k"), "acme", "{}")).await }
    });
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_secs(31)).await;
    let second = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert!(!second.replayed());
    assert_eq!(second.headers["x-order"], "2");

    let slow = slow.await.unwrap();
    // The slow holder's client still gets its own answer...
    assert_eq!(slow.headers["x-order"], "1");
    // ...but the stored result is the new holder's.
    let replay = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert!(replay.replayed());
    assert_eq!(replay.headers["x-order"], "2");
    let stats = layer.stats();
    assert_eq!((stats.lease_takeovers, stats.leases_lost), (1, 1));
    let lost = traces.containing("lease lost");
    assert_eq!(lost.len(), 1);
    assert_eq!(lost[0].fields["epoch"], "1");
    assert_eq!(lost[0].fields["op"], "complete");
}

#[tokio::test(start_paused = true)]
async fn a_live_holder_renews_its_lease_so_a_slow_handler_is_not_taken_over() {
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = scripted(calls.clone(), |_, _| async {
        // Three times the 30 s lease.
        tokio::time::sleep(Duration::from_secs(90)).await;
        Ok(())
    });
    let layer = layer();
    let svc = layer.layer(handler);
    let slow = tokio::spawn(send(&svc, post(Some("k"), "acme", "{}")));
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let dup = send(&svc, post(Some("k"), "acme", "{}")).await;
        assert_eq!(dup.status, StatusCode::CONFLICT);
        let retry_after: u64 = dup.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((10..=30).contains(&retry_after), "{retry_after}");
    }
    let first = slow.await.unwrap();
    assert_eq!(
        (first.status, first.replayed()),
        (StatusCode::CREATED, false)
    );
    assert!(send(&svc, post(Some("k"), "acme", "{}")).await.replayed());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = layer.stats();
    assert_eq!((stats.lease_takeovers, stats.leases_lost), (0, 0));
    assert_eq!(stats.lease_renewals, 8, "every 10 s for 90 s");
}

#[tokio::test(start_paused = true)]
async fn client_errors_are_replayed_server_errors_are_not_stored() {
    for (status, stored) in [
        (StatusCode::NOT_FOUND, true),
        (StatusCode::BAD_REQUEST, true),
        (StatusCode::OK, true),
        (StatusCode::TOO_MANY_REQUESTS, false),
        (StatusCode::INTERNAL_SERVER_ERROR, false),
        (StatusCode::SERVICE_UNAVAILABLE, false),
    ] {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = layer();
        let svc = layer.layer(answering(calls.clone(), status, "answer"));
        let first = send(&svc, post(Some("k"), "acme", "{}")).await;
        assert_eq!(first.status, status);
        let second = send(&svc, post(Some("k"), "acme", "{}")).await;
        assert_eq!(second.status, status);
        assert_eq!(second.replayed(), stored, "{status}");
        assert_eq!(
            calls.load(Ordering::SeqCst),
            if stored { 1 } else { 2 },
            "{status}"
        );
        assert_eq!(layer.stats().not_stored, if stored { 0 } else { 2 });
    }

    // "Everything once execution began": 5xx are stored too.
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = builder(MemoryStore::new())
        .store_responses(StoreResponses::All)
        .build()
        .unwrap()
        .layer(answering(
            calls.clone(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "boom",
        ));
    send(&svc, post(Some("k"), "acme", "{}")).await;
    let again = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert_eq!(
        (again.status, again.replayed()),
        (StatusCode::INTERNAL_SERVER_ERROR, true)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_release_the_key() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let handler: Handler = BoxCloneService::new(service_fn(
        move |_req: Request<RequestBody<Full<Bytes>>>| {
            let n = c.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err::<Response<Body>, BoxError>("handler crashed".into())
                } else {
                    Ok(Response::new(full("ok")))
                }
            }
        },
    ));
    let layer = layer();
    let svc = layer.layer(handler);
    let err = svc
        .clone()
        .oneshot(post(Some("k"), "acme", "{}"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "handler crashed");
    let retry = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert_eq!((retry.status, retry.replayed()), (StatusCode::OK, false));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// A handler whose response body streams `chunks` then, optionally, fails or sends trailers.
fn streaming(
    calls: Arc<AtomicUsize>,
    chunks: Vec<&'static str>,
    end: Option<&'static str>,
) -> Handler {
    BoxCloneService::new(service_fn(
        move |_req: Request<RequestBody<Full<Bytes>>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            let mut frames: Vec<Result<http_body::Frame<Bytes>, BoxError>> = chunks
                .iter()
                .map(|c| Ok(http_body::Frame::data(Bytes::from_static(c.as_bytes()))))
                .collect();
            match end {
                Some("error") => frames.push(Err("stream broke".into())),
                Some("trailers") => {
                    let mut t = http::HeaderMap::new();
                    t.insert("x-checksum", "abc".parse().unwrap());
                    frames.push(Ok(http_body::Frame::trailers(t)));
                }
                _ => {}
            }
            let body: Body = StreamBody::new(futures::stream::iter(frames)).boxed();
            async move { Ok::<_, BoxError>(Response::new(body)) }
        },
    ))
}

#[tokio::test(start_paused = true)]
async fn oversized_responses_pass_through_and_release_the_key() {
    let calls = Arc::new(AtomicUsize::new(0));
    let traces = Traces::default();
    let _guard = traces.install();
    let layer = builder(MemoryStore::new())
        .max_response_body(10)
        .build()
        .unwrap();
    let svc = layer.layer(streaming(
        calls.clone(),
        vec!["0123456", "789abc", "def"],
        None,
    ));
    let first = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert_eq!(first.text(), "0123456789abcdef", "passed through whole");
    let second = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert!(!second.replayed());
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the key was released");
    assert_eq!(layer.stats().not_stored, 2);
    let events = traces.containing("response not stored");
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].fields["reason"], "too_large");

    // Fits exactly: stored.
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = builder(MemoryStore::new())
        .max_response_body(16)
        .build()
        .unwrap()
        .layer(streaming(
            calls.clone(),
            vec!["0123456", "789abc", "def"],
            None,
        ));
    send(&svc, post(Some("k"), "acme", "{}")).await;
    let replay = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert_eq!(
        (replay.replayed(), replay.text()),
        (true, "0123456789abcdef".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn response_body_errors_and_trailers_are_passed_on_not_stored() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = layer();
    let svc = layer.layer(streaming(calls.clone(), vec!["part"], Some("error")));
    let res = svc
        .clone()
        .oneshot(post(Some("k"), "acme", "{}"))
        .await
        .unwrap();
    let err = res.into_body().collect().await.unwrap_err();
    assert_eq!(err.to_string(), "stream broke");
    let res = svc
        .clone()
        .oneshot(post(Some("k"), "acme", "{}"))
        .await
        .unwrap();
    assert!(res.headers().get("idempotent-replayed").is_none());
    drop(res);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let calls = Arc::new(AtomicUsize::new(0));
    let svc = layer.layer(streaming(calls.clone(), vec!["data"], Some("trailers")));
    let res = svc
        .clone()
        .oneshot(post(Some("t"), "acme", "{}"))
        .await
        .unwrap();
    let collected = res.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["x-checksum"], "abc");
    assert_eq!(collected.to_bytes(), "data");
}

#[tokio::test(start_paused = true)]
async fn request_bodies_over_the_limit_get_413() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = builder(MemoryStore::new())
        .max_request_body(8)
        .build()
        .unwrap()
        .layer(counting(calls.clone()));
    let res = send(&svc, post(Some("k"), "acme", "0123456789")).await;
    assert_eq!(res.status, StatusCode::PAYLOAD_TOO_LARGE);
    res.problem();
    assert_eq!(
        send(&svc, post(Some("k"), "acme", "01234567")).await.status,
        StatusCode::CREATED
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A store whose operations fail (or hang) on demand.
#[derive(Clone, Default)]
struct BrokenStore {
    inner: MemoryStore,
    begin: Option<fn() -> StoreError>,
    complete: Option<fn() -> StoreError>,
    hang: bool,
}

impl IdempotencyStore for BrokenStore {
    fn begin(&self, request: BeginRequest) -> StoreFuture<BeginOutcome> {
        if self.hang {
            return Box::pin(std::future::pending());
        }
        match self.begin {
            Some(e) => Box::pin(std::future::ready(Err(e()))),
            None => self.inner.begin(request),
        }
    }
    fn complete(
        &self,
        lease: &Lease,
        response: StoredResponse,
        expiry: Duration,
    ) -> StoreFuture<()> {
        match self.complete {
            Some(e) => Box::pin(std::future::ready(Err(e()))),
            None => self.inner.complete(lease, response, expiry),
        }
    }
    fn release(&self, lease: &Lease) -> StoreFuture<()> {
        self.inner.release(lease)
    }
    fn renew(&self, lease: &Lease, duration: Duration) -> StoreFuture<()> {
        self.inner.renew(lease, duration)
    }
}

/// A failed `begin` never executes the request. Transient errors (unreachable, timed out, full)
/// are `503` with `Retry-After: 1`; permanent ones (corrupt record, refused operation) are `500`
/// without `Retry-After`, so that nobody is told to retry what cannot succeed.
#[tokio::test(start_paused = true)]
async fn store_failures_answer_503_if_transient_500_if_not_without_executing() {
    let traces = Traces::default();
    let _guard = traces.install();
    let cases: [(BrokenStore, &str, StatusCode); 5] = [
        (
            BrokenStore {
                begin: Some(|| StoreError::unavailable("connection refused")),
                ..Default::default()
            },
            "unavailable",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            BrokenStore {
                begin: Some(|| StoreError::new(StoreErrorKind::Capacity, "full")),
                ..Default::default()
            },
            "capacity",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            BrokenStore {
                hang: true,
                ..Default::default()
            },
            "timeout",
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            BrokenStore {
                begin: Some(|| StoreError::corrupt("bad row")),
                ..Default::default()
            },
            "corrupt",
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
        (
            BrokenStore {
                begin: Some(|| StoreError::refused("relation does not exist")),
                ..Default::default()
            },
            "refused",
            StatusCode::INTERNAL_SERVER_ERROR,
        ),
    ];
    for (store, reason, status) in cases {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = builder(store)
            .store_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let svc = layer.layer(counting(calls.clone()));
        let t0 = tokio::time::Instant::now();
        let res = send(&svc, post(Some("k"), "acme", "{}")).await;
        assert_eq!(res.status, status, "{reason}");
        let doc = res.problem();
        assert!(doc["detail"].as_str().unwrap().contains(reason), "{doc}");
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(res.headers["retry-after"], "1", "{reason}");
            assert_eq!(doc["type"], "urn:steadfast:idempotency:store-unavailable");
        } else {
            assert!(res.headers.get("retry-after").is_none(), "{reason}");
            assert_eq!(doc["type"], "urn:steadfast:idempotency:store-failed");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(layer.stats().store_errors, 1);
        if reason == "timeout" {
            assert_eq!(t0.elapsed(), Duration::from_secs(2));
        }
    }
    let events = traces.containing("idempotency store failed");
    assert_eq!(events.len(), 5);
    let statuses: Vec<_> = events.iter().map(|e| e.fields["status"].clone()).collect();
    assert_eq!(statuses, ["503", "503", "503", "500", "500"]);

    // A failed completion still answers the executed response.
    let calls = Arc::new(AtomicUsize::new(0));
    let store = BrokenStore {
        complete: Some(|| StoreError::unavailable("gone")),
        ..Default::default()
    };
    let layer = builder(store).build().unwrap();
    let svc = layer.layer(counting(calls.clone()));
    let res = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert_eq!(res.status, StatusCode::CREATED);
    assert_eq!(layer.stats().store_errors, 1);
}

#[tokio::test(start_paused = true)]
async fn keys_expire_and_hop_by_hop_headers_are_not_stored() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let handler: Handler = BoxCloneService::new(service_fn(
        move |_req: Request<RequestBody<Full<Bytes>>>| {
            c.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut res = Response::new(full("ok"));
                res.headers_mut()
                    .insert("connection", "close".parse().unwrap());
                res.headers_mut()
                    .insert("set-cookie", "a=1".parse().unwrap());
                Ok::<_, BoxError>(res)
            }
        },
    ));
    let svc = builder(MemoryStore::new())
        .expiry(Duration::from_secs(3600))
        .lease(Duration::from_secs(10))
        .build()
        .unwrap()
        .layer(handler);
    send(&svc, post(Some("k"), "acme", "{}")).await;
    tokio::time::sleep(Duration::from_secs(3599)).await;
    let replay = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert!(replay.replayed());
    assert!(replay.headers.get("connection").is_none());
    assert_eq!(replay.headers["set-cookie"], "a=1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Expired: the key is free again, even for another body.
    let fresh = send(&svc, post(Some("k"), "acme", "{\"new\":1}")).await;
    assert!(!fresh.replayed());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_key_expiry_is_published_as_an_http_date() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = builder(MemoryStore::new())
        .wall_clock(steadfast_http::classify::WallClock::new(|| {
            std::time::UNIX_EPOCH + Duration::from_secs(784_111_777)
        }))
        .build()
        .unwrap()
        .layer(counting(calls));
    let first = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert_eq!(
        first.headers["idempotency-key-expires"],
        "Mon, 07 Nov 1994 08:49:37 GMT"
    );
    let replay = send(&svc, post(Some("k"), "acme", "{}")).await;
    assert_eq!(
        replay.headers["idempotency-key-expires"],
        "Mon, 07 Nov 1994 08:49:37 GMT"
    );
    // Not published when switched off.
    let svc = builder(MemoryStore::new())
        .publish_expiry(false)
        .build()
        .unwrap()
        .layer(counting(Arc::default()));
    assert!(send(&svc, post(Some("k"), "acme", "{}"))
        .await
        .headers
        .get("idempotency-key-expires")
        .is_none());
}

/// A wall clock at either end of what an HTTP-date expresses gives the nearest date it can
/// (1970 or the last second of 9999), not `httpdate`'s panic; the response is stored as usual.
#[tokio::test(start_paused = true)]
async fn the_key_expiry_outside_the_http_date_range_is_clamped() {
    use std::time::UNIX_EPOCH;
    use steadfast_http::classify::WallClock;
    let cases = [
        // 9999-12-31 23:00:00 UTC: the expiry takes it past the last HTTP-date.
        (
            WallClock::new(|| UNIX_EPOCH + Duration::from_secs(253_402_297_200)),
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ),
        // The latest reading a `SystemTime` holds: adding the expiry overflows.
        (
            WallClock::new(|| UNIX_EPOCH + Duration::new(i64::MAX as u64, 0)),
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ),
        // Before 1970 even once the expiry is added.
        (
            WallClock::new(|| UNIX_EPOCH - Duration::from_secs(400 * 86_400)),
            "Thu, 01 Jan 1970 00:00:00 GMT",
        ),
    ];
    for (clock, want) in cases {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = builder(MemoryStore::new())
            .wall_clock(clock)
            .build()
            .unwrap()
            .layer(counting(calls.clone()));
        let first = send(&svc, post(Some("k"), "acme", "{}")).await;
        assert!(first.status.is_success(), "{:?}", first.status);
        assert_eq!(first.headers["idempotency-key-expires"], want);
        let replay = send(&svc, post(Some("k"), "acme", "{}")).await;
        assert!(replay.replayed());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn telemetry_counts_and_traces_every_decision() {
    let metrics = Metrics::new();
    let traces = Traces::default();
    let _guard = traces.install();
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = builder(MemoryStore::new())
        .telemetry(
            steadfast_layers::telemetry::Telemetry::new()
                .meter(metrics.meter())
                .name("orders"),
        )
        .build()
        .unwrap();
    let svc = layer.layer(counting(calls.clone()));
    send(&svc, post(Some("k"), "acme", "{}")).await;
    send(&svc, post(Some("k"), "acme", "{}")).await;
    send(&svc, post(Some("k"), "acme", "other")).await;
    send(&svc, post(None, "acme", "{}")).await;

    let named = [
        ("steadfast.name", "orders"),
        ("steadfast.idempotency.store", "memory"),
    ];
    assert_eq!(
        metrics.counter("steadfast.idempotency.executions", &named),
        1
    );
    assert_eq!(metrics.counter("steadfast.idempotency.replays", &named), 1);
    assert_eq!(
        metrics.counter("steadfast.idempotency.mismatches", &named),
        1
    );
    assert_eq!(
        metrics.counter(
            "steadfast.idempotency.rejections",
            &[("steadfast.reason", "key_missing")]
        ),
        1
    );
    assert_eq!(metrics.counter("steadfast.idempotency.conflicts", &[]), 0);
    let spans = traces.spans.lock().unwrap().clone();
    assert_eq!(
        spans
            .iter()
            .filter(|s| *s == "steadfast.idempotency")
            .count(),
        4
    );
    assert_eq!(traces.containing("replayed the stored response").len(), 1);
    assert_eq!(traces.containing("answered 422").len(), 1);
    assert!(traces
        .containing("request rejected")
        .iter()
        .all(|e| e.target == "steadfast::idempotency"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_layer_config_errors_are_typed() {
    let err = builder(MemoryStore::new())
        .max_key_len(9000)
        .build()
        .unwrap_err();
    assert_eq!(err.path(), "max_key_len");
    let err = builder(MemoryStore::new())
        .store_timeout(Duration::from_secs(61))
        .build()
        .unwrap_err();
    assert_eq!(err.path(), "store_timeout");
    assert!(MemoryStore::builder().capacity(0).build().is_err());
}

/// `DeadlineServerLayer` outside the idempotency layer, the order the module docs advise: an
/// attempt that arrives with no time left is answered without taking its key, and a handler cut
/// off by its deadline leaves the key in flight until its lease expires, like a crashed holder.
#[tokio::test(start_paused = true)]
async fn behind_the_deadline_layer_expired_attempts_take_no_key_and_cut_off_handlers_hold_it_for_a_lease(
) {
    use steadfast_http::codec::REQUEST_TIMEOUT_MS;
    use steadfast_http::propagate::DeadlineServerLayer;

    let calls = Arc::new(AtomicUsize::new(0));
    let layer = layer();
    let svc = DeadlineServerLayer::new().layer(layer.layer(first_call_hangs(calls.clone())));
    let send = |timeout_ms: &str| {
        let mut req = post(Some("k"), "acme", "{}");
        req.headers_mut()
            .insert(REQUEST_TIMEOUT_MS, timeout_ms.parse().unwrap());
        let fut: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> =
            Box::pin(svc.clone().oneshot(req));
        async move { read(fut.await.unwrap()).await }
    };

    // No time left on arrival: refused before the idempotency layer, the key untouched.
    let expired = send("0").await;
    assert_eq!(expired.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(layer.stats().executions, 0);

    // 100 ms: the key is taken, the handler runs and is cut off at the deadline.
    let t0 = tokio::time::Instant::now();
    let cut_off = send("100").await;
    assert_eq!(cut_off.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Nobody knows whether its effect took place: copies wait out the lease (30 s)...
    let early = send("5000").await;
    assert_eq!(early.status, StatusCode::CONFLICT);
    assert!(early.headers.contains_key("retry-after"));
    tokio::time::sleep(Duration::from_secs(30)).await;
    // ... then one executes and its answer is the key's.
    let after = send("5000").await;
    assert_eq!(after.status, StatusCode::CREATED);
    assert!(!after.replayed());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let again = send("5000").await;
    assert!(again.replayed());
    assert_eq!(again.body, after.body);
}

#[tokio::test(start_paused = true)]
async fn the_inner_error_type_passes_through_and_a_repoll_is_a_500_problem() {
    use std::convert::Infallible;
    use std::future::Future;
    use std::task::{Context, Poll};
    use tower::Service;

    // An infallible handler makes an infallible layered service (what axum's `Router::layer`
    // requires): the layer's own answers are responses.
    let handler = service_fn(|_req: Request<RequestBody<Full<Bytes>>>| async {
        Ok::<_, Infallible>(Response::new(full("ok")))
    });
    fn infallible<S: Service<Request<Full<Bytes>>, Error = Infallible>>(_: &S) {}
    let mut svc = layer().layer(handler);
    infallible(&svc);
    let missing_key = svc.ready().await.unwrap().call(post(None, "acme", "{}"));
    let mut fut = std::pin::pin!(missing_key);
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let Poll::Ready(Ok(first)) = fut.as_mut().poll(&mut cx) else {
        panic!("a rejection is ready at once");
    };
    assert_eq!(first.status(), StatusCode::BAD_REQUEST);
    // Polled again after completion: no panic and no error of the handler's type, a 500.
    let Poll::Ready(Ok(again)) = fut.as_mut().poll(&mut cx) else {
        panic!("a completed future answers at once");
    };
    assert_eq!(again.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(again.headers()["content-type"], "application/problem+json");
    let doc: serde_json::Value =
        serde_json::from_slice(&again.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(doc["type"], "urn:steadfast:idempotency:internal");
}
