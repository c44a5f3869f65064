//! Presets: the best-known layer order, built in one call with sane defaults.
//!
//! [`standard_client`] (or [`StandardClientLayer::builder`]) wraps an HTTP or gRPC transport in,
//! outermost first:
//!
//! 1. **Replay body** ([`ReplayBodyLayer`](crate::body::ReplayBodyLayer)): wraps the request
//!    body once, so that every attempt below can re-send it (up to 64 KiB).
//! 2. **Total deadline** ([`DeadlineLayer`](steadfast_layers::deadline::DeadlineLayer), default
//!    10 s, `HttpExtensions` carrier): outside the retries, because the caller's patience covers
//!    all attempts and backoffs; it is shrunk to any deadline inherited from a server handler
//!    (via [`DeadlineServerLayer`](crate::propagate::DeadlineServerLayer)), put on the request
//!    and in scope, and enforced.
//! 3. **Retry** ([`RetryLayer`](steadfast_layers::retry::RetryLayer): 3 attempts, exponential
//!    backoff 25..250 ms with full jitter, a Finagle retry budget shared by clones, the
//!    [`HttpClassifier`](crate::classify::HttpClassifier) or
//!    [`GrpcClassifier`](crate::classify::GrpcClassifier), [`HttpReplay`](crate::body::HttpReplay)):
//!    inside the deadline so it never sleeps past it; the budget caps the load retries add
//!    under overload; jitter keeps clients from retrying in lockstep.
//! 4. **Breaker slot** ([`StandardClientBuilder::breaker`], empty by default): below the retry
//!    layer so that a breaker sees (and can refuse) each attempt rather than each call, and
//!    above the attempt timeout so that timeouts count as failures. This is the documented
//!    extension point for the circuit breaker.
//! 5. **Per-attempt timeout** ([`AttemptTimeoutLayer`](steadfast_layers::timeout::AttemptTimeoutLayer),
//!    default 3 s, bounded by the deadline): inside the retry layer so that a slow attempt is
//!    abandoned and retried (`Elapsed` is retryable) instead of consuming the whole deadline.
//! 6. **Deadline propagation** ([`DeadlinePropagationLayer`](crate::propagate::DeadlinePropagationLayer),
//!    10 ms margin, capped at the attempt timeout): last, next to the wire, so that the timeout
//!    written is computed when the attempt is actually sent, after backoffs, and tells the
//!    callee exactly how long this attempt will be waited for.
//!
//! The result is a `tower::Service<http::Request<B>>` returning `BoxError`; errors are
//! steadfast's nouns (`GaveUp` wrapping the last error, `DeadlineExceeded`), and a response
//! returned after giving up carries [`RetryGaveUp`](crate::classify::RetryGaveUp).
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceExt};
//! use steadfast_http::preset::StandardClientLayer;
//! use tower::Layer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::BoxError> {
//! // A peer whose first attempt hangs, then answers 200 with the body it got.
//! let calls = Arc::new(AtomicU32::new(0));
//! let c = calls.clone();
//! let peer = service_fn(move |req: http::Request<_>| {
//!     let n = c.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         if n == 0 { tokio::time::sleep(Duration::from_secs(60)).await; }
//!         let body = BodyExt::collect(req.into_body()).await?.to_bytes();
//!         Ok::<_, steadfast_layers::BoxError>(http::Response::new(Full::new(body)))
//!     }
//! });
//! let client = StandardClientLayer::builder()
//!     .timeout(Duration::from_secs(2))
//!     .attempt_timeout(Duration::from_millis(500))
//!     .retry(|r| r.seed(1))
//!     .build()?
//!     .layer(peer);
//!
//! let start = tokio::time::Instant::now();
//! let res = client.oneshot(http::Request::new(Full::new(Bytes::from_static(b"payload")))).await?;
//! assert_eq!(res.into_body().collect().await?.to_bytes(), "payload");
//! assert_eq!(calls.load(Ordering::SeqCst), 2);
//! assert!(start.elapsed() < Duration::from_millis(800)); // 500 ms timeout + a jittered backoff
//! # Ok(()) }
//! ```

mod layer;

pub use layer::{
    standard_client, StandardClient, StandardClientBuilder, StandardClientLayer,
    DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_TIMEOUT,
};
