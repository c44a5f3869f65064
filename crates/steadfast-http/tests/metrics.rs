//! The propagation layers' metrics, on the OpenTelemetry SDK's in-memory exporter installed as
//! the global provider (one test in this binary: the global provider is process-wide).
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
    assert_eq!(metrics.counter(exceeded, &[api, ("reason", "arrival")]), 1);
    assert_eq!(
        metrics.counter(exceeded, &[api, ("reason", "in_flight")]),
        1
    );
    assert_eq!(
        metrics.counter(
            exceeded,
            &[("steadfast.name", "to-b"), ("reason", "propagate")]
        ),
        1
    );
    for action in ["rejected", "ignored"] {
        assert_eq!(
            metrics.counter(
                "steadfast.deadline.invalid_header",
                &[api, ("header", "x-request-timeout-ms"), ("action", action)]
            ),
            1,
            "{action}"
        );
    }
}
