//! Fault injection, on a paused clock: rates within tolerance over many seeded calls, exact replay
//! for a seed, each fault's semantics, the run-time switch, telemetry and configuration errors.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use steadfast_layers::chaos::{ChaosLayer, ChaosLayerBuilder, FaultKind, InjectedFault};
use steadfast_layers::telemetry::Telemetry;
use steadfast_layers::{BoxError, Problem};
use support::{Metrics, Traces};
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An echo service counting the calls it receives and the ones it completes.
#[derive(Clone, Default)]
struct Echo {
    received: Arc<AtomicU32>,
    completed: Arc<AtomicU32>,
}

impl Echo {
    fn service(
        &self,
    ) -> impl Service<u32, Response = u32, Error = BoxError, Future = impl Send> + Clone {
        let (r, c) = (self.received.clone(), self.completed.clone());
        service_fn(move |x: u32| {
            r.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            async move {
                tokio::time::sleep(ms(1)).await;
                c.fetch_add(1, Ordering::SeqCst);
                Ok::<_, BoxError>(x)
            }
        })
    }
}

/// Which of `n` calls met which fault (`None`: passed), with the total time spent.
async fn run(builder: ChaosLayerBuilder, n: u32) -> (Vec<Option<FaultKind>>, Duration) {
    let echo = Echo::default();
    let svc = builder.build().unwrap().layer(echo.service());
    let t0 = Instant::now();
    let mut out = Vec::new();
    for x in 0..n {
        out.push(match svc.clone().oneshot(x).await {
            Ok(y) => {
                assert_eq!(x, y);
                None
            }
            Err(e) => Some(e.downcast_ref::<InjectedFault>().unwrap().kind()),
        });
    }
    (out, t0.elapsed())
}

fn count(v: &[Option<FaultKind>], kind: FaultKind) -> usize {
    v.iter().filter(|f| **f == Some(kind)).count()
}

#[tokio::test(start_paused = true)]
async fn injected_rates_match_the_probabilities() {
    let n = 10_000;
    let (faults, _) = run(ChaosLayer::builder().error(0.2).abort(0.05).seed(11), n).await;
    // Binomial standard deviations: 40 and ~22; allow five.
    let errors = count(&faults, FaultKind::Error);
    let aborts = count(&faults, FaultKind::Abort);
    assert!((1800..=2200).contains(&errors), "{errors}");
    assert!((390..=610).contains(&aborts), "{aborts}");
}

#[tokio::test(start_paused = true)]
async fn a_seed_replays_exactly() {
    let builder = || {
        ChaosLayer::builder()
            .latency(0.3, ms(10))
            .error(0.1)
            .abort(0.1)
    };
    let (a, ta) = run(builder().seed(42), 2000).await;
    let (b, tb) = run(builder().seed(42), 2000).await;
    assert_eq!(a, b);
    assert_eq!(ta, tb);
    let (c, _) = run(builder().seed(43), 2000).await;
    assert_ne!(a, c);
}

#[tokio::test(start_paused = true)]
async fn injected_latency_delays_calls() {
    // Every call: 10 ms injected + 1 ms of service.
    let (_, t) = run(ChaosLayer::builder().latency(1.0, ms(10)).seed(1), 10).await;
    assert_eq!(t, ms(110));
    // Half the calls, over 1000 calls: about 500 x 10 ms on top of 1000 x 1 ms.
    let (_, t) = run(ChaosLayer::builder().latency(0.5, ms(10)).seed(1), 1000).await;
    let injected = (t - ms(1000)).as_millis();
    assert!((4200..=5800).contains(&injected), "{injected}");
    assert_eq!(injected % 10, 0);
}

#[tokio::test(start_paused = true)]
async fn an_error_never_reaches_the_inner_service() {
    let echo = Echo::default();
    let svc = ChaosLayer::builder()
        .error(1.0)
        .seed(1)
        .build()
        .unwrap()
        .layer(echo.service());
    let t0 = Instant::now();
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<InjectedFault>().unwrap().kind(),
        FaultKind::Error
    );
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(echo.received.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn an_abort_sends_the_request_and_drops_the_response() {
    let echo = Echo::default();
    let svc = ChaosLayer::builder()
        .abort(1.0)
        .seed(1)
        .build()
        .unwrap()
        .layer(echo.service());
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<InjectedFault>().unwrap().kind(),
        FaultKind::Abort
    );
    assert_eq!(err.to_string(), "injected fault: the response was dropped");
    // The request was served in full: only its answer was lost.
    assert_eq!(echo.received.load(Ordering::SeqCst), 1);
    assert_eq!(echo.completed.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn off_unless_configured_and_switchable_at_run_time() {
    // No faults configured: nothing is injected.
    let (faults, t) = run(ChaosLayer::builder().seed(1), 100).await;
    assert!(faults.iter().all(Option::is_none));
    assert_eq!(t, ms(100));

    let echo = Echo::default();
    let layer = ChaosLayer::builder()
        .error(1.0)
        .enabled(false)
        .seed(1)
        .build()
        .unwrap();
    let svc = layer.layer(echo.service());
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
    // Switched on through the layer's handle: every service made by the layer injects.
    layer.handle().enable();
    assert!(svc.clone().oneshot(2).await.is_err());
    // Switched off through a service's handle: the layer's other services stop too.
    let other = layer.layer(echo.service());
    svc.handle().disable();
    assert_eq!(other.oneshot(3).await.unwrap(), 3);
    assert!(!layer.handle().is_enabled());
}

async fn delayed_aborts(telemetry: Telemetry) {
    let echo = Echo::default();
    let svc = ChaosLayer::builder()
        .latency(1.0, ms(5))
        .abort(1.0)
        .seed(1)
        .telemetry(telemetry)
        .build()
        .unwrap()
        .layer(echo.service());
    for x in 0..3 {
        assert!(svc.clone().oneshot(x).await.is_err());
    }
}

#[tokio::test(start_paused = true)]
async fn faults_are_counted_and_traced() {
    let metrics = Metrics::new();
    let traces = Traces::default();
    let _g = traces.install();
    delayed_aborts(Telemetry::new().meter(metrics.meter()).name("lab")).await;
    assert_eq!(
        metrics.counter(
            "steadfast.chaos.injected",
            &[("steadfast.chaos.fault", "latency")]
        ),
        3
    );
    assert_eq!(
        metrics.counter(
            "steadfast.chaos.injected",
            &[
                ("steadfast.chaos.fault", "abort"),
                ("steadfast.name", "lab")
            ]
        ),
        3
    );
    let latency = traces.with_message("chaos: latency injected");
    assert_eq!(latency.len(), 3);
    assert_eq!(latency[0].target, "steadfast::chaos");
    assert_eq!(latency[0].fields["delay_ms"], "5.0");
    assert_eq!(traces.with_message("chaos: response dropped").len(), 3);
    assert!(traces
        .spans
        .lock()
        .unwrap()
        .iter()
        .any(|s| s == "steadfast.chaos"));
}

#[test]
fn builders_reject_nonsense() {
    let field = |b: ChaosLayerBuilder| b.build().unwrap_err().path().to_owned();
    for bad in [-0.1, 1.1, f64::NAN, f64::INFINITY] {
        assert_eq!(field(ChaosLayer::builder().error(bad)), "error_probability");
        assert_eq!(field(ChaosLayer::builder().abort(bad)), "abort_probability");
        assert_eq!(
            field(ChaosLayer::builder().latency(bad, ms(1))),
            "latency_probability"
        );
    }
    assert_eq!(
        field(ChaosLayer::builder().latency(0.5, Duration::ZERO)),
        "latency"
    );
    assert_eq!(
        field(ChaosLayer::builder().latency(0.5, Duration::from_secs(7200))),
        "latency"
    );
    let e = ChaosLayer::builder()
        .error(0.7)
        .abort(0.4)
        .build()
        .unwrap_err();
    assert_eq!(e.path(), "abort_probability");
    assert!(matches!(e.problem(), Problem::Conflict(_)));
    let e = ChaosLayer::builder().error(f64::NAN).build().unwrap_err();
    assert_eq!(e.problem(), &Problem::NotFinite);
    // The bounds themselves are fine.
    assert!(ChaosLayer::builder()
        .error(0.0)
        .abort(1.0)
        .latency(1.0, ms(1))
        .build()
        .is_ok());
}
