//! The one eligibility rule, pinned as a table: method x key (valid / invalid / absent) x use
//! (retry through the standard preset, hedge through the hedging preset), on a paused clock.
//! Every cell also checks the rule's three spellings agree: `may_resend`, the hedge policy and
//! `HttpReplay::idempotent_only`.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use steadfast_http::body::{HttpReplay, ReplayBody};
use steadfast_http::idempotency::{may_resend, IdempotentOrKeyed};
use steadfast_http::preset::{HedgingClientLayer, StandardClientLayer};
use steadfast_layers::hedge::{HedgeDelay, HedgePolicy};
use steadfast_layers::retry::Replay;
use steadfast_layers::BoxError;
use tower::{service_fn, Layer, ServiceExt};

const METHODS: [(&str, bool); 8] = [
    ("GET", true),
    ("HEAD", true),
    ("OPTIONS", true),
    ("TRACE", true),
    ("PUT", true),
    ("DELETE", true),
    ("POST", false),
    ("PATCH", false),
];

#[derive(Clone, Copy, Debug)]
enum Key {
    Valid,
    Invalid,
    Absent,
}

fn request(method: &str, key: Key) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(method).uri("/things/7");
    match key {
        Key::Valid => b = b.header("idempotency-key", "\"k-7\""),
        // Not a Structured Field string: the server would reject it, so it does not count.
        Key::Invalid => b = b.header("idempotency-key", "k-7"),
        Key::Absent => {}
    }
    b.body(Full::new(Bytes::from_static(b"body"))).unwrap()
}

/// Sends are counted; the first answers 503 (retry) or hangs for a second (hedge).
fn peer(
    calls: Arc<AtomicU32>,
    first: &'static str,
) -> impl tower::Service<
    Request<ReplayBody<Full<Bytes>>>,
    Response = Response<Full<Bytes>>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    service_fn(move |_req: Request<ReplayBody<Full<Bytes>>>| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let status = match (n, first) {
                (0, "503") => 503,
                (0, _) => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    200
                }
                _ => 200,
            };
            let mut res = Response::new(Full::new(Bytes::new()));
            *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
            Ok::<_, BoxError>(res)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn method_by_key_by_use() {
    let mut rows = Vec::new();
    for (method, idempotent) in METHODS {
        for key in [Key::Valid, Key::Invalid, Key::Absent] {
            let expected = idempotent || matches!(key, Key::Valid);

            // The rule, spelled three ways.
            let req = request(method, key);
            assert_eq!(may_resend(&req), expected, "{method} {key:?}");
            assert_eq!(IdempotentOrKeyed::new().can_hedge(&req), expected);
            let mut replayable = req.map(ReplayBody::new);
            assert_eq!(
                HttpReplay::idempotent_only()
                    .replay(&mut replayable)
                    .is_ok(),
                expected,
                "{method} {key:?}"
            );

            // Retry, through the standard preset (no key layer: the caller's key, or none).
            let calls = Arc::new(AtomicU32::new(0));
            let client = StandardClientLayer::builder()
                .idempotency_keys(false)
                .retry(|r| r.no_budget().seed(1))
                .build()
                .unwrap()
                .layer(peer(calls.clone(), "503"));
            let res = client.oneshot(request(method, key)).await.unwrap();
            let retried = calls.load(Ordering::SeqCst) == 2;
            assert_eq!(res.status(), if retried { 200 } else { 503 });

            // Hedge, through the hedging preset.
            let calls = Arc::new(AtomicU32::new(0));
            let client = HedgingClientLayer::builder()
                .idempotency_keys(false)
                .hedge(|h| {
                    h.delay(HedgeDelay::fixed(Duration::from_millis(20)))
                        .no_budget()
                })
                .build()
                .unwrap()
                .layer(peer(calls.clone(), "hang"));
            let t0 = tokio::time::Instant::now();
            assert_eq!(
                client.oneshot(request(method, key)).await.unwrap().status(),
                200
            );
            let hedged = calls.load(Ordering::SeqCst) == 2;
            assert_eq!(
                t0.elapsed(),
                Duration::from_millis(if hedged { 20 } else { 1000 })
            );

            rows.push((method, key, expected, retried, hedged));
        }
    }
    for (method, key, expected, retried, hedged) in &rows {
        assert_eq!(
            (retried, hedged),
            (expected, expected),
            "{method} with key {key:?}: retry and hedge must both follow the rule"
        );
    }
    assert_eq!(rows.len(), 24);
}
