//! The standard and hedging client stacks end to end, on a paused clock with in-memory peers.
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
use steadfast_http::codec::idempotency_key::{IdempotencyKey, IDEMPOTENCY_KEY};
use steadfast_http::codec::{GRPC_TIMEOUT, REQUEST_TIMEOUT_MS};
use steadfast_http::idempotency::{IdempotencyLayer, RequestBody, IDEMPOTENT_REPLAYED};
use steadfast_http::preset::{
    hedging_client, standard_client, HedgingClientLayer, StandardClientLayer,
};
use steadfast_layers::deadline::{Deadline, DeadlineExceeded};
use steadfast_layers::hedge::HedgeDelay;
use steadfast_layers::retry::{GaveUp, GiveUpReason, NotReplayable};
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

    fn calls(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The `Idempotency-Key` of every call seen (`None` where there was none).
    fn keys(&self) -> Vec<Option<String>> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|(h, _)| {
                h.get(IDEMPOTENCY_KEY)
                    .map(|v| v.to_str().unwrap().to_owned())
            })
            .collect()
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

#[tokio::test(start_paused = true)]
async fn the_grpc_preset_sends_no_idempotency_key() {
    let peer = Peer::default();
    let client = StandardClientLayer::builder()
        .grpc()
        .build()
        .unwrap()
        .layer(peer.service(&[], 200));
    client.oneshot(req("x")).await.unwrap();
    assert_eq!(peer.keys(), [None]);
}

// ------------------------------------------------------------ retry eligibility

/// The key layer is outermost: one key per call, the same on every attempt, a UUID v7.
#[tokio::test(start_paused = true)]
async fn a_post_gets_one_key_on_every_attempt() {
    let peer = Peer::default();
    let client = standard_client(peer.service(&[], 503)).unwrap();
    let res = client.clone().oneshot(req("order #1")).await.unwrap();
    assert_eq!(res.status(), 503);
    let keys = peer.keys();
    assert_eq!(keys.len(), 3, "{keys:?}");
    let first = keys[0].clone().expect("the POST was keyed");
    assert!(
        keys.iter().all(|k| k.as_deref() == Some(first.as_str())),
        "{keys:?}"
    );
    let key = IdempotencyKey::decode(first.as_bytes()).unwrap();
    let uuid = uuid::Uuid::parse_str(key.as_str()).unwrap();
    assert_eq!(uuid.get_version_num(), 7);

    // The next call is another logical request: another key.
    client.oneshot(req("order #2")).await.unwrap();
    let keys = peer.keys();
    assert_eq!(keys.len(), 6);
    assert_ne!(keys[3], keys[0]);
}

/// A key the caller set is kept, and makes the request retryable even with the key layer off.
#[tokio::test(start_paused = true)]
async fn a_key_the_caller_set_is_kept_and_retried() {
    let peer = Peer::default();
    for keys_on in [true, false] {
        let client = StandardClientLayer::builder()
            .idempotency_keys(keys_on)
            .build()
            .unwrap()
            .layer(peer.service(&[], 503));
        let mut r = req("x");
        r.headers_mut()
            .insert(IDEMPOTENCY_KEY, "\"order-42\"".parse().unwrap());
        client.oneshot(r).await.unwrap();
    }
    assert_eq!(peer.keys(), vec![Some("\"order-42\"".to_owned()); 6]);
}

#[tokio::test(start_paused = true)]
async fn an_unkeyed_post_is_not_retried_when_the_key_layer_is_off() {
    let peer = Peer::default();
    let client = StandardClientLayer::builder()
        .idempotency_keys(false)
        .build()
        .unwrap()
        .layer(peer.service(&[], 503));
    let res = client.oneshot(req("x")).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(peer.keys(), [None]);
    assert_eq!(
        res.extensions().get::<RetryGaveUp>(),
        Some(&RetryGaveUp {
            reason: GiveUpReason::NotReplayable(NotReplayable::new(
                "not idempotent and no Idempotency-Key"
            )),
            attempts: 1
        })
    );

    // A hung attempt is not retried either: the timeout ends the call.
    let peer = Peer::default();
    let client = StandardClientLayer::builder()
        .idempotency_keys(false)
        .attempt_timeout(Duration::from_millis(100))
        .build()
        .unwrap()
        .layer(peer.service(&[0], 200));
    let err = client.oneshot(req("x")).await.unwrap_err();
    let gave_up = err.downcast_ref::<GaveUp>().expect("GaveUp");
    assert_eq!(gave_up.attempts(), 1);
    assert!(
        matches!(gave_up.reason(), GiveUpReason::NotReplayable(_)),
        "{err}"
    );
    assert_eq!(peer.calls(), 1);

    // Turning `idempotent_only` off retries it (the caller's choice).
    let peer = Peer::default();
    let client = StandardClientLayer::builder()
        .idempotency_keys(false)
        .idempotent_only(false)
        .build()
        .unwrap()
        .layer(peer.service(&[], 503));
    client.oneshot(req("x")).await.unwrap();
    assert_eq!(peer.keys(), [None, None, None]);
}

#[tokio::test(start_paused = true)]
async fn a_get_is_retried_without_a_key() {
    for keys_on in [true, false] {
        let peer = Peer::default();
        let client = StandardClientLayer::builder()
            .idempotency_keys(keys_on)
            .attempt_timeout(Duration::from_millis(100))
            .build()
            .unwrap()
            .layer(peer.service(&[0], 200));
        let get = Request::get("/orders/7")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = client.oneshot(get).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(peer.keys(), [None, None], "keys on: {keys_on}");
    }
}

// ------------------------------------------------------------ the hedging client

fn hedging(delay_ms: u64) -> steadfast_http::preset::HedgingClientBuilder {
    HedgingClientLayer::builder()
        .hedge(|h| h.delay(HedgeDelay::fixed(Duration::from_millis(delay_ms))))
}

#[tokio::test(start_paused = true)]
async fn a_slow_primary_loses_to_a_hedge_with_the_same_key() {
    let peer = Peer::default();
    let client = hedging(20).build().unwrap().layer(peer.service(&[0], 201));
    let t0 = Instant::now();
    let res = client.oneshot(req("order #1")).await.unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(t0.elapsed(), Duration::from_millis(20));
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "order #1"
    );
    let keys = peer.keys();
    assert_eq!(keys.len(), 2);
    assert!(keys[0].is_some());
    assert_eq!(keys[0], keys[1]);
    // Each copy is told the attempt timeout (3 s), capped by what is left of the deadline.
    assert_eq!(peer.header(0, &REQUEST_TIMEOUT_MS), "3000");
    assert_eq!(peer.header(1, &REQUEST_TIMEOUT_MS), "3000");
}

#[tokio::test(start_paused = true)]
async fn an_unkeyed_post_is_never_hedged_but_a_get_is() {
    let peer = Peer::default();
    let client = hedging(20)
        .idempotency_keys(false)
        .attempt_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
        .layer(peer.service(&[0], 201));
    let t0 = Instant::now();
    let err = client.oneshot(req("x")).await.unwrap_err();
    assert!(err.is::<Elapsed>(), "{err}");
    assert_eq!(t0.elapsed(), Duration::from_millis(500));
    assert_eq!(peer.keys(), [None]);

    // A GET is: the hedging preset asks the one eligibility rule (`may_resend`), as the
    // standard preset's retries do.
    let peer = Peer::default();
    let client = hedging(20)
        .attempt_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
        .layer(peer.service(&[0], 200));
    let get = Request::get("/").body(Full::new(Bytes::new())).unwrap();
    let t0 = Instant::now();
    let res = client.oneshot(get).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(t0.elapsed(), Duration::from_millis(20));
    assert_eq!(peer.keys(), [None, None]);
}

#[tokio::test(start_paused = true)]
async fn the_default_hedges_nothing_until_it_has_learned_the_percentile() {
    assert_eq!(
        HedgingClientLayer::builder()
            .build()
            .unwrap()
            .current_delay(),
        None
    );
    let peer = Peer::default();
    let client = hedging_client(peer.service(&[0], 200)).unwrap();
    let err = client.oneshot(req("x")).await.unwrap_err();
    assert!(err.is::<Elapsed>(), "{err}");
    assert_eq!(peer.calls(), 1);
}

/// Every call is slow; hedges stay within 5 % of calls plus the burst.
#[tokio::test(start_paused = true)]
async fn hedges_stay_within_the_budget() {
    let sent = Arc::new(AtomicU32::new(0));
    let s = sent.clone();
    let slow = service_fn(move |_req: Req| {
        s.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, BoxError>(Response::new(Full::new(Bytes::new())))
        }
    });
    let client = hedging(10)
        .hedge(|h| h.budget_burst(1))
        .build()
        .unwrap()
        .layer(slow);
    let calls = 400;
    for i in 0..calls {
        let res = client.clone().oneshot(req("x")).await.unwrap();
        assert_eq!(res.status(), 200, "call {i}");
    }
    let hedges = sent.load(Ordering::SeqCst) - calls;
    // At most the burst (1) plus 5 % of the calls, and the budget was used.
    assert!(hedges <= 1 + calls * 5 / 100, "{hedges} hedges");
    assert!(hedges >= calls * 5 / 100 - 1, "{hedges} hedges");
}

/// A hedge that reaches an idempotency server while the original is still executing there is
/// answered 409 at once: that answer must not win; the original's does, and the handler runs once.
#[tokio::test(start_paused = true)]
async fn an_in_flight_409_never_wins_over_the_original() {
    let executions = Arc::new(AtomicU32::new(0));
    let e = executions.clone();
    let handler = service_fn(move |req: Request<RequestBody<ReplayBody<Full<Bytes>>>>| {
        let n = e.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            let body = req.into_body().collect().await?.to_bytes();
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, BoxError>(
                Response::builder()
                    .status(201)
                    .body(Full::new(Bytes::from(format!(
                        "{} #{n}",
                        String::from_utf8_lossy(&body)
                    ))))
                    .unwrap(),
            )
        }
    });
    let server_layer = IdempotencyLayer::builder(steadfast_http::idempotency::MemoryStore::new())
        .single_tenant()
        .build()
        .unwrap();
    let server = server_layer.layer(handler);
    let client = hedging(10).build().unwrap().layer(support::hop(server));
    let t0 = Instant::now();
    let res = client.clone().oneshot(req("order")).await.unwrap();
    assert_eq!(res.status(), 201);
    assert!(res.headers().get(IDEMPOTENT_REPLAYED).is_none());
    assert_eq!(t0.elapsed(), Duration::from_millis(100));
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "order #1"
    );
    assert_eq!(executions.load(Ordering::SeqCst), 1);
    let stats = server_layer.stats();
    assert_eq!((stats.executions, stats.conflicts), (1, 1));
}

/// A peer whose first answer is `503` and every later one `200`, counting sends.
fn down_once(
    calls: Arc<AtomicU32>,
) -> impl Service<Req, Response = Response<Full<Bytes>>, Error = BoxError, Future = impl Send> + Clone
{
    service_fn(move |_req: Req| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        async move {
            let status = if n == 0 { 503 } else { 200 };
            Ok::<_, BoxError>(
                Response::builder()
                    .status(status)
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
        }
    })
}

fn breaker(
) -> steadfast_layers::breaker::CircuitBreakerLayer<steadfast_http::classify::HttpClassifier> {
    use steadfast_layers::breaker::{BreakDuration, CircuitBreakerLayer};
    CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .break_duration(BreakDuration::constant(Duration::from_secs(1)))
        .classifier(steadfast_http::classify::HttpClassifier::new())
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_retry_above_an_open_breaker_in_the_slot_waits_out_the_break() {
    use steadfast_layers::retry::Backoff;
    let calls = Arc::new(AtomicU32::new(0));
    let client = StandardClientLayer::builder()
        .timeout(Duration::from_secs(5))
        .retry(|r| {
            r.no_budget()
                .backoff(Backoff::constant(Duration::from_millis(10)))
        })
        .breaker(breaker())
        .build()
        .unwrap()
        .layer(down_once(calls.clone()));
    let t0 = Instant::now();
    let res = client
        .oneshot(Request::get("/").body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    // 503 at 0 opens the breaker; the retry at 10 ms is refused locally and waits the rest of
    // the break (990 ms, not the backoff); the probe at 1 s is answered.
    assert_eq!(res.status(), 200);
    assert_eq!(t0.elapsed(), Duration::from_secs(1));
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the refusal sent nothing");
}

#[tokio::test(start_paused = true)]
async fn a_retry_above_an_open_breaker_stops_naming_the_circuit_when_the_deadline_cannot_wait() {
    use steadfast_layers::retry::Backoff;
    let calls = Arc::new(AtomicU32::new(0));
    let client = StandardClientLayer::builder()
        .timeout(Duration::from_millis(300))
        .retry(|r| {
            r.max_attempts(5)
                .no_budget()
                .backoff(Backoff::constant(Duration::from_millis(10)))
        })
        .breaker(breaker())
        .build()
        .unwrap()
        .layer(down_once(calls.clone()));
    let t0 = Instant::now();
    let err = client
        .oneshot(Request::get("/").body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap_err();
    let gave_up = err.downcast_ref::<GaveUp>().unwrap();
    // One refusal, not four: the retry does not burn its attempts against the open circuit.
    assert_eq!(gave_up.attempts(), 2);
    assert_eq!(gave_up.reason(), &GiveUpReason::Deadline);
    assert_eq!(gave_up.last_reason(), Some("circuit_open"));
    assert!(err.to_string().contains("circuit open"), "{err}");
    assert_eq!(t0.elapsed(), Duration::from_millis(10));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
