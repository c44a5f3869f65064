//! The shape of event fields shared by every layer (`docs/observability.md`): durations are
//! milliseconds rounded to the microsecond (`14.164`, never `14.164038999999999`), and the
//! `instance` field is absent when a layer is unnamed. Paused clock.
#![allow(clippy::unwrap_used, missing_docs)]

mod support;

use std::convert::Infallible;
use std::time::Duration;

use steadfast_layers::chaos::ChaosLayer;
use steadfast_layers::deadline::Deadline;
use steadfast_layers::limit::ConcurrencyLimitLayer;
use steadfast_layers::retry::{Backoff, RetryLayer};
use steadfast_layers::telemetry::{duration_ms, Telemetry};
use steadfast_layers::BoxError;
use support::Traces;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

/// 14.164039 ms: as `as_secs_f64() * 1e3` it reads `14.164038999999999`.
const ODD: Duration = Duration::from_nanos(14_164_039);

#[test]
fn the_odd_duration_is_odd_unrounded_and_plain_rounded() {
    assert_eq!(
        format!("{:?}", ODD.as_secs_f64() * 1e3),
        "14.164038999999999"
    );
    assert_eq!(format!("{:?}", duration_ms(ODD)), "14.164");
    // Rounded to the nearest microsecond, exactly representable or not.
    assert_eq!(
        format!("{:?}", duration_ms(Duration::from_nanos(999_999_999))),
        "1000.0"
    );
    assert_eq!(
        format!("{:?}", duration_ms(Duration::from_nanos(1_000_499))),
        "1.0"
    );
    assert_eq!(
        format!("{:?}", duration_ms(Duration::from_nanos(1_000_500))),
        "1.001"
    );
    assert_eq!(
        format!("{:?}", duration_ms(Duration::from_nanos(100))),
        "0.0"
    );
    assert_eq!(
        format!("{:?}", duration_ms(Duration::from_micros(3_600_000_123))),
        "3600000.123"
    );
    // Every whole number of microseconds up to a day prints with at most three decimals.
    for micros in (0..86_400_000_000u64).step_by(999_983) {
        let text = format!("{:?}", duration_ms(Duration::from_micros(micros)));
        let decimals = text.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(decimals <= 3, "{micros} us -> {text}");
    }
}

#[tokio::test(start_paused = true)]
async fn durations_in_events_are_rounded_in_every_layer() {
    let traces = Traces::default();
    let _g = traces.install();

    // Concurrency limit: `max_wait_ms` while waiting, `waited_ms` on the rejection.
    let slow = service_fn(|_: u32| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, Infallible>(())
    });
    let mut limited = ConcurrencyLimitLayer::builder(1)
        .max_wait(ODD)
        .build()
        .unwrap()
        .layer(slow);
    let _held = limited.ready().await.unwrap().call(1);
    assert!(limited.ready().await.unwrap().call(2).await.is_err());
    let waiting = traces.with_message("concurrency limit reached: waiting for a permit");
    assert_eq!(waiting[0].fields["max_wait_ms"], "14.164");
    let rejected = traces.with_message("concurrency limit: call rejected");
    assert_eq!(rejected[0].fields["waited_ms"], "14.164");

    // Chaos: `delay_ms` of injected latency.
    let chaos = ChaosLayer::builder()
        .latency(1.0, ODD)
        .seed(1)
        .build()
        .unwrap()
        .layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }));
    chaos.oneshot(1).await.unwrap();
    let latency = traces.with_message("chaos: latency injected");
    assert_eq!(latency[0].fields["delay_ms"], "14.164");

    // Retry: `delay_ms` of the backoff and `deadline_remaining_ms`.
    let failing = service_fn(|_: u32| async { Err::<u32, BoxError>("refused".into()) });
    let retry = RetryLayer::builder()
        .max_attempts(2)
        .backoff(Backoff::constant(ODD))
        .build()
        .unwrap()
        .layer(failing);
    let deadline = Deadline::at(Instant::now() + Duration::from_nanos(1_234_567_891));
    let _ = deadline.scope(retry.oneshot(1)).await;
    let scheduled = traces.with_message("retry scheduled");
    assert_eq!(scheduled[0].fields["delay_ms"], "14.164");
    assert_eq!(scheduled[0].fields["deadline_remaining_ms"], "1234.568");
}

#[tokio::test(start_paused = true)]
async fn instance_is_absent_when_the_layer_is_unnamed() {
    let traces = Traces::default();
    let _g = traces.install();
    let refuse_second = |telemetry: Telemetry| async move {
        let slow = service_fn(|_: u32| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, Infallible>(())
        });
        let mut svc = ConcurrencyLimitLayer::builder(1)
            .telemetry(telemetry)
            .build()
            .unwrap()
            .layer(slow);
        let _held = svc.ready().await.unwrap().call(1);
        assert!(svc.ready().await.unwrap().call(2).await.is_err());
    };
    refuse_second(Telemetry::new()).await;
    refuse_second(Telemetry::new().name("db")).await;
    let rejected = traces.with_message("concurrency limit: call rejected");
    assert_eq!(rejected.len(), 2);
    assert!(
        !rejected[0].fields.contains_key("instance"),
        "unnamed: {:?}",
        rejected[0].fields
    );
    assert_eq!(rejected[1].fields["instance"], "db");
}
