//! A flaky peer behind the standard client stack: a 1 s end-to-end deadline, then budgeted
//! retries with jittered backoff and a per-attempt timeout. Every decision is printed by a
//! `tracing` subscriber.
//!
//! Run it with `cargo run --example deadline_retry`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use steadfast::layers::classify::Outcome;
use steadfast::layers::deadline::DeadlineLayer;
use steadfast::layers::retry::{Backoff, GaveUp, Jitter, RetryLayer};
use steadfast::layers::timeout::AttemptTimeoutLayer;
use steadfast::layers::BoxError;
use tower::{service_fn, ServiceBuilder, ServiceExt};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter("steadfast=debug")
        .with_target(false)
        .init();

    // The peer: the first two calls answer 503, then it is slow (300 ms) but fine.
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let peer = service_fn(move |path: &'static str| {
        let n = c.fetch_add(1, Ordering::SeqCst);
        async move {
            if n < 2 {
                return Ok::<u16, BoxError>(503);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(if path == "/missing" { 404 } else { 200 })
        }
    });

    let client = ServiceBuilder::new()
        .layer(DeadlineLayer::new(Duration::from_secs(1))?)
        .layer(
            RetryLayer::builder()
                .max_attempts(4)
                .backoff(
                    Backoff::exponential(Duration::from_millis(25), Duration::from_millis(250))
                        .jitter(Jitter::Full),
                )
                .classifier(|r: &Result<u16, BoxError>| match r {
                    Ok(503) => Outcome::retryable("unavailable"),
                    Ok(_) => Outcome::Success,
                    Err(_) => Outcome::retryable("transport"),
                })
                .build()?,
        )
        // Each attempt gets 500 ms at most (and never more than the deadline leaves).
        .layer(AttemptTimeoutLayer::new(Duration::from_millis(500))?)
        .service(peer);

    let status = client.clone().oneshot("/orders").await?;
    println!(
        "GET /orders -> {status} after {} calls to the peer",
        calls.load(Ordering::SeqCst)
    );

    // A peer that is down for good: the retry layer gives up and says why.
    let down = ServiceBuilder::new()
        .layer(RetryLayer::builder().max_attempts(3).seed(1).build()?)
        .service(service_fn(|_: ()| async {
            Err::<(), _>(std::io::Error::other("connection refused"))
        }));
    let Err(err) = down.oneshot(()).await else {
        unreachable!("the peer always fails");
    };
    if let Some(g) = err.downcast_ref::<GaveUp>() {
        println!(
            "down peer: {err} (reason {}, last error: {})",
            g.reason().label(),
            g.last_error().map(|e| e.to_string()).unwrap_or_default()
        );
    }
    Ok(())
}
