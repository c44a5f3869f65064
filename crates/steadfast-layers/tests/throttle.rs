//! Client-side adaptive throttling rules, on a paused clock: SRE's formula, K, the sliding
//! window, classification of accepts, seeded determinism, sharing across clones, convergence to
//! K × the backend's capacity, telemetry, configuration errors.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use steadfast_layers::adaptive_throttle::{OverloadReason, Overloaded, ThrottleLayer};
use steadfast_layers::classify::Outcome;
use steadfast_layers::telemetry::Telemetry;
use steadfast_layers::BoxError;
use support::{Metrics, Traces};
use tokio::time::{advance, Instant};
use tower::{service_fn, Layer, Service, ServiceExt};

/// The "backend": answers the status it is asked for (so each test scripts it), counting calls.
fn backend(
    calls: &Arc<AtomicUsize>,
) -> impl Service<u16, Response = u16, Error = BoxError, Future = impl Send> + Clone {
    let calls = calls.clone();
    service_fn(move |status: u16| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if status == 0 {
                Err(BoxError::from("connection reset"))
            } else {
                Ok(status)
            }
        }
    })
}

/// 503 and 429 are refusals for load; 400 is the caller's fault (the backend did answer); 1
/// stands for a request that never reached the backend.
fn by_status(r: &Result<u16, BoxError>) -> Outcome {
    match r {
        Ok(503) | Ok(429) => Outcome::retryable("unavailable"),
        Ok(1) => Outcome::NotSent { reason: "refused" },
        Ok(400) => Outcome::fatal("bad_request"),
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::retryable("error"),
    }
}

fn throttled(result: &Result<u16, BoxError>) -> bool {
    match result {
        Err(e) => match e.downcast_ref::<Overloaded>() {
            Some(o) => {
                assert_eq!(
                    (o.layer(), o.reason()),
                    ("adaptive_throttle", OverloadReason::Throttled)
                );
                true
            }
            None => false,
        },
        Ok(_) => false,
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_is_rejected_while_the_backend_accepts_more_than_one_in_k() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ThrottleLayer::builder()
        .classifier(by_status)
        .seed(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(backend(&calls));
    // Two refusals in five: 60 % of requests are accepted, more than 1 / K = 50 %, so requests
    // never exceed K × accepts.
    for i in 0..1000 {
        let status = if i % 5 < 2 { 503 } else { 200 };
        assert!(!throttled(&svc.clone().oneshot(status).await));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1000);
    assert_eq!((handle.requests(), handle.accepts()), (1000, 600));
    assert_eq!(handle.rejection_probability(), 0.0);
}

#[tokio::test(start_paused = true)]
async fn the_probability_is_sres_formula() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ThrottleLayer::builder()
        .classifier(by_status)
        .seed(3)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(backend(&calls));
    // 3 accepted, then refusals: 7 more requests (all sent: p stays 0 until requests > 6).
    for status in [200, 200, 200, 503, 503, 503, 503] {
        assert!(!throttled(&svc.clone().oneshot(status).await));
    }
    assert_eq!((handle.requests(), handle.accepts()), (7, 3));
    // (7 − 2 × 3) / (7 + 1)
    assert_eq!(handle.rejection_probability(), 1.0 / 8.0);
    let mut requests = 7;
    let mut accepts = 3;
    for _ in 0..50 {
        let r = svc.clone().oneshot(503).await;
        requests += 1;
        let _ = r;
        let expected =
            ((requests as f64 - 2.0 * accepts as f64) / (requests as f64 + 1.0)).max(0.0);
        assert_eq!(
            handle.requests(),
            requests,
            "locally rejected requests count too"
        );
        assert_eq!(handle.rejection_probability(), expected);
    }
    // A success counts as an accept once it gets through.
    loop {
        requests += 1;
        if svc.clone().oneshot(200).await.is_ok() {
            accepts += 1;
            break;
        }
    }
    assert_eq!((handle.requests(), handle.accepts()), (requests, accepts));
    let expected = (requests as f64 - 2.0 * accepts as f64) / (requests as f64 + 1.0);
    assert_eq!(handle.rejection_probability(), expected.max(0.0));
}

#[tokio::test(start_paused = true)]
async fn k_sets_how_many_refusals_are_tolerated() {
    // After 100 accepted calls the backend accepts 40 % of requests: K = 2 starts throttling once
    // requests exceed twice the accepts (after 500 more calls), K = 3 never does (40 % > 1/3).
    for (k, expect_throttling) in [(2.0, true), (3.0, false)] {
        let calls = Arc::new(AtomicUsize::new(0));
        let layer = ThrottleLayer::builder()
            .k(k)
            .classifier(by_status)
            .seed(5)
            .build()
            .unwrap();
        let handle = layer.handle();
        let svc = layer.layer(backend(&calls));
        for _ in 0..100 {
            svc.clone().oneshot(200).await.unwrap();
        }
        let mut local = 0;
        for i in 0..2000 {
            let status = if i % 5 < 3 { 503 } else { 200 };
            if throttled(&svc.clone().oneshot(status).await) {
                local += 1;
            }
            if i < 500 {
                assert_eq!(
                    local, 0,
                    "K = {k}: nothing throttled while 2 × accepts ≥ requests"
                );
            }
        }
        assert_eq!(
            local > 0,
            expect_throttling,
            "K = {k}: {local} rejected locally"
        );
        let (r, a) = (handle.requests() as f64, handle.accepts() as f64);
        assert_eq!(
            handle.rejection_probability(),
            ((r - k * a) / (r + 1.0)).max(0.0)
        );
    }
}

#[tokio::test(start_paused = true)]
async fn accepts_are_what_the_classifier_says() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ThrottleLayer::builder()
        .classifier(by_status)
        .seed(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(backend(&calls));
    // 200 and 400 (fatal: the backend answered) are accepts; 503, 429, errors and requests
    // never sent are not.
    for status in [200, 400, 503, 429, 0, 1] {
        let _ = svc.clone().oneshot(status).await;
    }
    assert_eq!((handle.requests(), handle.accepts()), (6, 2));
}

#[tokio::test(start_paused = true)]
async fn the_default_classifier_counts_responses_as_accepts_and_errors_as_refusals() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ThrottleLayer::builder().seed(1).build().unwrap();
    let handle = layer.handle();
    let svc = layer.layer(backend(&calls));
    let _ = svc.clone().oneshot(503).await;
    let _ = svc.clone().oneshot(0).await;
    assert_eq!((handle.requests(), handle.accepts()), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn the_window_slides_by_buckets() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ThrottleLayer::builder()
        .window(Duration::from_secs(10))
        .buckets(5)
        .classifier(by_status)
        .seed(1)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(backend(&calls));
    for status in [200, 200, 503, 503] {
        let _ = svc.clone().oneshot(status).await;
    }
    advance(Duration::from_secs(4)).await;
    svc.clone().oneshot(200).await.unwrap();
    assert_eq!((handle.requests(), handle.accepts()), (5, 3));
    // 9.9 s: the first bucket is still in the window.
    advance(Duration::from_millis(5_900)).await;
    assert_eq!(handle.requests(), 5);
    // 10 s: it has left; the bucket at 4 s stays until 14 s.
    advance(Duration::from_millis(100)).await;
    assert_eq!((handle.requests(), handle.accepts()), (1, 1));
    advance(Duration::from_secs(4)).await;
    assert_eq!((handle.requests(), handle.accepts()), (0, 0));
    assert_eq!(handle.rejection_probability(), 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_seed_replays_the_same_rejections() {
    async fn pattern(seed: u64) -> Vec<bool> {
        let calls = Arc::new(AtomicUsize::new(0));
        let svc = ThrottleLayer::builder()
            .classifier(by_status)
            .seed(seed)
            .build()
            .unwrap()
            .layer(backend(&calls));
        let mut out = Vec::new();
        for _ in 0..200 {
            out.push(throttled(&svc.clone().oneshot(503).await));
        }
        out
    }
    let a = pattern(9).await;
    assert_eq!(a, pattern(9).await);
    assert_ne!(a, pattern(10).await);
    assert!(a.iter().filter(|t| **t).count() > 150);
}

#[tokio::test(start_paused = true)]
async fn every_clone_shares_the_window() {
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ThrottleLayer::builder()
        .classifier(by_status)
        .seed(1)
        .build()
        .unwrap();
    let a = layer.clone().layer(backend(&calls));
    let b = layer.clone().layer(backend(&calls));
    let _ = a.clone().oneshot(503).await;
    let _ = b.clone().oneshot(200).await;
    assert_eq!(
        (layer.handle().requests(), layer.handle().accepts()),
        (2, 1)
    );
    assert_eq!(a.handle().requests(), 2);
}

/// A backend that can accept 20 calls per second and refuses the rest with 503, hit by a client
/// attempting 100 calls per second: with K = 2, the client settles on sending about
/// K × 20 = 40 calls per second, rejecting the other 60 % locally.
#[tokio::test(start_paused = true)]
async fn the_client_converges_to_k_times_the_backends_capacity() {
    let t0 = Instant::now();
    // (second, calls accepted in it)
    let accepted: Arc<Mutex<(u64, u32)>> = Arc::default();
    let sent = Arc::new(AtomicUsize::new(0));
    let backend = {
        let (accepted, sent) = (accepted.clone(), sent.clone());
        service_fn(move |()| {
            sent.fetch_add(1, Ordering::SeqCst);
            let second = t0.elapsed().as_secs();
            let mut a = accepted.lock().unwrap();
            if a.0 != second {
                *a = (second, 0);
            }
            let ok = a.1 < 20;
            if ok {
                a.1 += 1;
            }
            async move { Ok::<u16, BoxError>(if ok { 200 } else { 503 }) }
        })
    };
    let layer = ThrottleLayer::builder()
        .classifier(by_status)
        .seed(11)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(backend);
    let mut sent_at_2min = 0;
    for tick in 0..(100 * 240) {
        if tick == 100 * 120 {
            sent_at_2min = sent.load(Ordering::SeqCst);
        }
        let _ = svc.clone().oneshot(()).await;
        advance(Duration::from_millis(10)).await;
    }
    // Over the last two minutes (the window), sends per second:
    let rate = (sent.load(Ordering::SeqCst) - sent_at_2min) as f64 / 120.0;
    assert!((36.0..=44.0).contains(&rate), "{rate} calls/s sent");
    let p = handle.rejection_probability();
    assert!((0.55..=0.65).contains(&p), "{p}");
}

#[tokio::test(start_paused = true)]
async fn telemetry_counts_traces_and_gauges() {
    let metrics = Metrics::new();
    let traces = Traces::default();
    let _guard = traces.install();
    let calls = Arc::new(AtomicUsize::new(0));
    let layer = ThrottleLayer::builder()
        .classifier(by_status)
        .seed(2)
        .telemetry(Telemetry::new().meter(metrics.meter()).name("ads"))
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(backend(&calls));
    let mut local = 0;
    for _ in 0..100 {
        if throttled(&svc.clone().oneshot(503).await) {
            local += 1;
        }
    }
    assert!(local > 50);
    assert_eq!(
        metrics.counter(
            "steadfast.throttle.rejected",
            &[("steadfast.reason", "throttled"), ("steadfast.name", "ads")]
        ),
        local
    );
    let gauge = metrics
        .gauge_with(
            "steadfast.throttle.probability",
            &[("steadfast.name", "ads")],
        )
        .unwrap();
    assert_eq!(gauge, handle.rejection_probability());
    let events = traces.with_message("throttled: call rejected locally");
    assert_eq!(events.len() as u64, local);
    assert_eq!(events[0].target, "steadfast::throttle");
    assert_eq!(events[0].fields["reason"], "throttled");
    assert!(events[0].fields.contains_key("probability"));
    assert!(events[0].fields.contains_key("requests"));
    assert!(events[0].fields.contains_key("accepts"));
    // Decisions are instantaneous: events, no spans.
    assert_eq!(
        traces
            .spans
            .lock()
            .unwrap()
            .iter()
            .filter(|s| *s == "steadfast.throttle")
            .count(),
        0
    );
}

#[test]
fn bad_configuration_is_a_typed_error() {
    let b = ThrottleLayer::builder;
    let cases = [
        (b().k(0.99).build(), "k"),
        (b().k(f64::NAN).build(), "k"),
        (b().k(f64::INFINITY).build(), "k"),
        (b().k(-2.0).build(), "k"),
        (b().window(Duration::ZERO).build(), "window"),
        (b().window(Duration::from_secs(86_401)).build(), "window"),
        (b().buckets(0).build(), "buckets"),
        (b().buckets(1_001).build(), "buckets"),
        (
            b().window(Duration::from_millis(5)).buckets(10).build(),
            "buckets",
        ),
    ];
    for (result, field) in cases {
        assert_eq!(result.unwrap_err().path(), field);
    }
    assert!(b()
        .k(1.0)
        .window(Duration::from_millis(1))
        .buckets(1)
        .build()
        .is_ok());
}
