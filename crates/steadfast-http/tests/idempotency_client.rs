//! The client layer: one key per logical request, outside retries.
#![allow(clippy::unwrap_used, missing_docs)]

use std::sync::{Arc, Mutex};

use http::{HeaderValue, Method, Request};
use steadfast_http::codec::idempotency_key::IdempotencyKey;
use steadfast_http::idempotency::{may_resend, IdempotencyKeyLayer, IdempotentOrKeyed};
use steadfast_layers::retry::{CloneReplay, GaveUp, GiveUpReason, NotReplayable, RetryLayer};
use steadfast_layers::BoxError;
use tower::{service_fn, ServiceBuilder, ServiceExt};

type Seen = Arc<Mutex<Vec<Option<HeaderValue>>>>;

/// A peer that records each attempt's key and fails the first `failures` attempts.
fn flaky_peer(
    seen: Seen,
    failures: usize,
) -> impl tower::Service<Request<String>, Response = u16, Error = BoxError, Future = impl Send> + Clone
{
    service_fn(move |req: Request<String>| {
        let n = {
            let mut s = seen.lock().unwrap();
            s.push(req.headers().get("idempotency-key").cloned());
            s.len()
        };
        async move {
            if n <= failures {
                Err::<u16, BoxError>("connection reset".into())
            } else {
                Ok(201)
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn every_retry_attempt_carries_the_same_key() {
    let seen = Seen::default();
    let client = ServiceBuilder::new()
        .layer(IdempotencyKeyLayer::new())
        .layer(
            RetryLayer::builder()
                .max_attempts(4)
                .no_budget()
                .seed(3)
                .build()
                .unwrap(),
        )
        .service(flaky_peer(seen.clone(), 3));
    let status = client
        .clone()
        .oneshot(Request::post("/orders").body(String::from("{}")).unwrap())
        .await
        .unwrap();
    assert_eq!(status, 201);
    let first_call: Vec<_> = seen.lock().unwrap().drain(..).collect();
    assert_eq!(first_call.len(), 4);
    let key = first_call[0].clone().expect("a key was added");
    assert!(first_call.iter().all(|k| k.as_ref() == Some(&key)));
    let parsed = IdempotencyKey::try_from(&key).unwrap();
    assert_eq!(
        uuid::Uuid::parse_str(parsed.as_str())
            .unwrap()
            .get_version_num(),
        7
    );

    // The next logical request gets a new key.
    client
        .oneshot(Request::post("/orders").body(String::from("{}")).unwrap())
        .await
        .unwrap();
    let second: Vec<_> = seen.lock().unwrap().drain(..).collect();
    assert_eq!(second.len(), 4);
    assert!(second.iter().all(|k| k == &second[0]));
    assert_ne!(second[0].as_ref(), Some(&key));
}

#[tokio::test]
async fn methods_and_existing_keys() {
    let seen = Seen::default();
    let layer = IdempotencyKeyLayer::builder()
        .methods([Method::POST, Method::PATCH, Method::DELETE])
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(flaky_peer(seen.clone(), 0));
    for method in [Method::GET, Method::PUT, Method::PATCH, Method::DELETE] {
        let req = Request::builder()
            .method(method)
            .uri("/")
            .body(String::new())
            .unwrap();
        svc.clone().oneshot(req).await.unwrap();
    }
    let req = Request::post("/")
        .header("idempotency-key", "\"mine\"")
        .body(String::new())
        .unwrap();
    svc.oneshot(req).await.unwrap();
    let seen = seen.lock().unwrap();
    let keyed: Vec<bool> = seen.iter().map(Option::is_some).collect();
    assert_eq!(keyed, [false, false, true, true, true]);
    assert_eq!(
        seen[4].as_ref().unwrap(),
        "\"mine\"",
        "a caller's key is kept"
    );
}

#[tokio::test(start_paused = true)]
async fn unkeyed_posts_are_not_retried_through_idempotent_or_keyed() {
    let seen = Seen::default();
    // No key layer: a bare POST must not be sent twice.
    let client = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .max_attempts(3)
                .no_budget()
                .replay(IdempotentOrKeyed::wrap(CloneReplay))
                .build()
                .unwrap(),
        )
        .service(flaky_peer(seen.clone(), 5));
    let err = client
        .clone()
        .oneshot(Request::post("/").body(String::new()).unwrap())
        .await
        .unwrap_err();
    let gave_up = err.downcast_ref::<GaveUp>().unwrap();
    assert_eq!(
        gave_up.reason(),
        &GiveUpReason::NotReplayable(NotReplayable::new("not idempotent and no Idempotency-Key"))
    );
    assert_eq!(seen.lock().unwrap().len(), 1);

    // A GET is retried.
    seen.lock().unwrap().clear();
    let _ = client
        .oneshot(Request::get("/").body(String::new()).unwrap())
        .await;
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn the_original_and_its_hedges_carry_one_key() {
    use std::time::Duration;
    use steadfast_layers::hedge::{HedgeDelay, HedgeLayer, Idempotent};

    let seen = Seen::default();
    let s = seen.clone();
    // The first replica asked is stuck; the others answer in 10 ms.
    let replicas = service_fn(move |req: Request<String>| {
        let n = {
            let mut s = s.lock().unwrap();
            s.push(req.headers().get("idempotency-key").cloned());
            s.len()
        };
        assert!(
            req.extensions().get::<Idempotent>().is_some(),
            "keyed requests are marked"
        );
        async move {
            let wait = if n == 1 { 5_000 } else { 10 };
            tokio::time::sleep(Duration::from_millis(wait)).await;
            Ok::<u16, BoxError>(201)
        }
    });
    let client = ServiceBuilder::new()
        .layer(IdempotencyKeyLayer::new())
        .layer(
            HedgeLayer::builder()
                .delay(HedgeDelay::fixed(Duration::from_millis(50)))
                .max_hedges(2)
                .budget_ratio(1.0)
                .build()
                .unwrap(),
        )
        .service(replicas);
    let status = client
        .oneshot(Request::post("/orders").body(String::from("{}")).unwrap())
        .await
        .unwrap();
    assert_eq!(status, 201);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "the original and one hedge");
    assert!(seen[0].is_some());
    assert_eq!(seen[0], seen[1]);
}

#[tokio::test]
async fn marking_can_be_turned_off_and_malformed_keys_are_not_marked() {
    use steadfast_layers::hedge::Idempotent;
    let marks = Arc::new(Mutex::new(Vec::new()));
    let m = marks.clone();
    let peer = service_fn(move |req: Request<()>| {
        m.lock()
            .unwrap()
            .push(req.extensions().get::<Idempotent>().is_some());
        async { Ok::<_, BoxError>(()) }
    });
    let marked = ServiceBuilder::new()
        .layer(IdempotencyKeyLayer::new())
        .service(peer.clone());
    let unmarked = ServiceBuilder::new()
        .layer(
            IdempotencyKeyLayer::builder()
                .mark_idempotent(false)
                .build()
                .unwrap(),
        )
        .service(peer);
    marked
        .clone()
        .oneshot(Request::post("/").body(()).unwrap())
        .await
        .unwrap();
    let bad = Request::post("/")
        .header("idempotency-key", "unquoted")
        .body(())
        .unwrap();
    marked.clone().oneshot(bad).await.unwrap();
    marked
        .oneshot(Request::get("/").body(()).unwrap())
        .await
        .unwrap();
    unmarked
        .oneshot(Request::post("/").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(*marks.lock().unwrap(), [true, false, false, false]);
}

#[test]
fn the_eligibility_predicate() {
    let req = |m: Method, key: Option<&str>| {
        let mut b = Request::builder().method(m).uri("/");
        if let Some(k) = key {
            b = b.header("idempotency-key", k);
        }
        b.body(()).unwrap()
    };
    assert!(may_resend(&req(Method::GET, None)));
    assert!(may_resend(&req(Method::HEAD, None)));
    assert!(may_resend(&req(Method::OPTIONS, None)));
    assert!(may_resend(&req(Method::PUT, None)));
    assert!(may_resend(&req(Method::DELETE, None)));
    assert!(!may_resend(&req(Method::POST, None)));
    assert!(!may_resend(&req(Method::PATCH, None)));
    assert!(may_resend(&req(Method::POST, Some("\"k\""))));
    assert!(
        !may_resend(&req(Method::POST, Some("k"))),
        "malformed keys do not count"
    );
    assert!(!may_resend(&req(Method::POST, Some("\"\""))));
    let mut two = req(Method::POST, Some("\"a\""));
    two.headers_mut()
        .append("idempotency-key", HeaderValue::from_static("\"b\""));
    assert!(!may_resend(&two), "two keys do not count");
}
