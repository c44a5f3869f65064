//! The propagation layers' metrics and events: on the OpenTelemetry SDK's in-memory exporter
//! installed as the global provider (one test in this binary uses it: the global provider is
//! process-wide), and on a meter given with `Telemetry::meter`.
#![allow(clippy::unwrap_used)]

mod support;

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use steadfast_http::codec::REQUEST_TIMEOUT_MS;
use steadfast_http::propagate::{DeadlinePropagationLayer, DeadlineServerLayer, MalformedDeadline};
use steadfast_layers::deadline::Deadline;
use steadfast_layers::telemetry::Telemetry;
use tower::{service_fn, Layer, ServiceExt};

#[tokio::test(start_paused = true)]
async fn deadline_exceeded_and_invalid_headers_are_counted() {
    let metrics = support::Metrics::install_global();
    let server = DeadlineServerLayer::builder()
        .telemetry(Telemetry::new().name("api"))
        .build()
        .unwrap()
        .layer(service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, Infallible>(Response::new(()))
        }));
    let send = |v: &'static str| {
        let req = Request::builder()
            .header(REQUEST_TIMEOUT_MS, v)
            .body(())
            .unwrap();
        server.clone().oneshot(req)
    };
    assert_eq!(send("0").await.unwrap().status(), 504); // arrival
    assert_eq!(send("100").await.unwrap().status(), 504); // in flight
    assert_eq!(send("nope").await.unwrap().status(), 400); // rejected
    let lenient = DeadlineServerLayer::builder()
        .telemetry(Telemetry::new().name("api"))
        .on_malformed(MalformedDeadline::Ignore)
        .build()
        .unwrap()
        .layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(()))
        }));
    let req = Request::builder()
        .header(REQUEST_TIMEOUT_MS, "soon")
        .body(())
        .unwrap();
    assert_eq!(lenient.oneshot(req).await.unwrap().status(), 200); // ignored

    let client = DeadlinePropagationLayer::builder()
        .telemetry(Telemetry::new().name("to-b"))
        .build()
        .unwrap()
        .layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(())
        }));
    let deadline = Deadline::after(Duration::from_millis(5)).unwrap();
    assert!(deadline
        .scope(client.oneshot(Request::new(())))
        .await
        .is_err());

    let exceeded = "steadfast.deadline.exceeded";
    let api = ("steadfast.name", "api");
    assert_eq!(
        metrics.counter(exceeded, &[api, ("steadfast.reason", "arrival")]),
        1
    );
    assert_eq!(
        metrics.counter(exceeded, &[api, ("steadfast.reason", "in_flight")]),
        1
    );
    assert_eq!(
        metrics.counter(
            exceeded,
            &[
                ("steadfast.name", "to-b"),
                ("steadfast.reason", "propagate")
            ]
        ),
        1
    );
    for action in ["rejected", "ignored"] {
        assert_eq!(
            metrics.counter(
                "steadfast.deadline.invalid_header",
                &[
                    api,
                    ("steadfast.deadline.header", "x-request-timeout-ms"),
                    ("steadfast.deadline.action", action)
                ]
            ),
            1,
            "{action}"
        );
    }
}

/// `Telemetry::meter` is honoured: both propagation layers record on the meter they are given
/// (an SDK pipeline of their own, not the global provider).
#[tokio::test(start_paused = true)]
async fn the_meter_given_by_telemetry_is_used() {
    let metrics = support::Metrics::new();
    let telemetry = |name: &str| Telemetry::new().meter(metrics.meter()).name(name);
    let server = DeadlineServerLayer::builder()
        .telemetry(telemetry("api"))
        .build()
        .unwrap()
        .layer(service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, Infallible>(Response::new(()))
        }));
    let req = |v: &'static str| {
        Request::builder()
            .header(REQUEST_TIMEOUT_MS, v)
            .body(())
            .unwrap()
    };
    assert_eq!(
        server.clone().oneshot(req("0")).await.unwrap().status(),
        504
    );
    assert_eq!(server.oneshot(req("100")).await.unwrap().status(), 504);
    let client = DeadlinePropagationLayer::builder()
        .telemetry(telemetry("to-b"))
        .build()
        .unwrap()
        .layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(())
        }));
    let deadline = Deadline::after(Duration::from_millis(5)).unwrap();
    assert!(deadline
        .scope(client.oneshot(Request::new(())))
        .await
        .is_err());

    let exceeded = "steadfast.deadline.exceeded";
    let api = ("steadfast.name", "api");
    assert_eq!(
        metrics.counter(exceeded, &[api, ("steadfast.reason", "arrival")]),
        1
    );
    assert_eq!(
        metrics.counter(exceeded, &[api, ("steadfast.reason", "in_flight")]),
        1
    );
    let to_b = ("steadfast.name", "to-b");
    assert_eq!(
        metrics.counter(exceeded, &[to_b, ("steadfast.reason", "propagate")]),
        1
    );
}

/// The HTTP layers' events follow the shared shapes: `instance` absent when unnamed, durations
/// in milliseconds rounded to the microsecond.
#[tokio::test(start_paused = true)]
async fn events_have_the_shared_shapes() {
    let traces = support::Traces::default();
    let _g = traces.install();
    // A meter of its own, so that the global test in this binary counts only its own calls.
    let metrics = support::Metrics::new();
    let local = || Telemetry::new().meter(metrics.meter());
    let arrive_late = |telemetry: Telemetry| {
        DeadlineServerLayer::builder()
            .telemetry(telemetry)
            .build()
            .unwrap()
            .layer(service_fn(|_req: Request<()>| async {
                Ok::<_, Infallible>(Response::new(()))
            }))
            .oneshot(
                Request::builder()
                    .header(REQUEST_TIMEOUT_MS, "0")
                    .body(())
                    .unwrap(),
            )
    };
    assert_eq!(arrive_late(local()).await.unwrap().status(), 504);
    assert_eq!(
        arrive_late(local().name("api")).await.unwrap().status(),
        504
    );
    let rejected = traces.containing("deadline exceeded before the call");
    assert_eq!(rejected.len(), 2);
    assert!(!rejected[0].fields.contains_key("instance"), "{rejected:?}");
    assert_eq!(rejected[1].fields["instance"], "api");

    // A margin of 14.164039 ms with less than that left: the client's event rounds it.
    let client = DeadlinePropagationLayer::builder()
        .margin(Duration::from_nanos(14_164_039))
        .telemetry(local())
        .build()
        .unwrap()
        .layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(())
        }));
    let deadline = Deadline::after(Duration::from_millis(5)).unwrap();
    assert!(deadline
        .scope(client.oneshot(Request::new(())))
        .await
        .is_err());
    let not_sent = traces.containing("deadline exceeded before sending");
    assert_eq!(not_sent.len(), 1);
    assert_eq!(not_sent[0].fields["margin_ms"], "14.164");
    assert!(!not_sent[0].fields.contains_key("instance"));
}
