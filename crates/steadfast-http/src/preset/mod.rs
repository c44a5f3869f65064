//! Presets: the best-known layer order, built in one call with sane defaults.
//!
//! Two stacks: [`standard_client`] (retries) for most calls, and [`hedging_client`] (hedges) for
//! calls whose tail latency matters more than a few percent of extra load.
//!
//! # The standard client
//!
//! [`standard_client`] (or [`StandardClientLayer::builder`]) wraps an HTTP or gRPC transport in,
//! outermost first:
//!
//! 1. **Idempotency key** ([`IdempotencyKeyLayer`](crate::idempotency::IdempotencyKeyLayer),
//!    on by default, [`StandardClientBuilder::idempotency_keys`]): gives each `POST` and `PATCH`
//!    without one an `Idempotency-Key` (UUID v7). Outermost, because it must run **once per
//!    logical call**: every layer below copies the keyed request, so every attempt carries the
//!    same key, and a server that honours keys executes the call once however many attempts
//!    reach it. Below the retry layer, each attempt would get a new key and the server could not
//!    tell a retry from a new order.
//! 2. **Replay body** ([`ReplayBodyLayer`](crate::body::ReplayBodyLayer)): wraps the request
//!    body once, so that every attempt below can re-send it (up to 64 KiB).
//! 3. **Total deadline** ([`DeadlineLayer`](steadfast_layers::deadline::DeadlineLayer), default
//!    10 s, `HttpExtensions` carrier): outside the retries, because the caller's patience covers
//!    all attempts and backoffs; it is shrunk to any deadline inherited from a server handler
//!    (via [`DeadlineServerLayer`](crate::propagate::DeadlineServerLayer)), put on the request
//!    and in scope, and enforced.
//! 4. **Retry** ([`RetryLayer`](steadfast_layers::retry::RetryLayer): 3 attempts, exponential
//!    backoff 25..250 ms with full jitter, a Finagle retry budget shared by clones, the
//!    [`HttpClassifier`](crate::classify::HttpClassifier) or
//!    [`GrpcClassifier`](crate::classify::GrpcClassifier), [`HttpReplay`](crate::body::HttpReplay)):
//!    inside the deadline so it never sleeps past it; the budget caps the load retries add
//!    under overload; jitter keeps clients from retrying in lockstep. Retry eligibility is the
//!    **one rule** of [`may_resend`](crate::idempotency::may_resend): a request is sent again
//!    only if its method is idempotent (RFC 9110) or it carries one well-formed
//!    `Idempotency-Key` ([`HttpReplay::idempotent_only`](crate::body::HttpReplay::idempotent_only),
//!    [`StandardClientBuilder::idempotent_only`]). With the key layer on, `POST`s are keyed and
//!    so retried; with it off, an unkeyed `POST` is tried once, because a retry after a lost
//!    response could execute it twice. [`StandardClientBuilder::grpc`] turns both off: every
//!    gRPC call is a `POST`, and the gRPC classifier decides.
//! 5. **Breaker slot** ([`ClientBuilder::breaker`], empty by default): below the retry
//!    layer so that a breaker sees (and can refuse) each attempt rather than each call, and
//!    above the attempt timeout so that timeouts count as failures. The retry layer reads a
//!    refusal through the one error table: it waits out the rest of the break when the deadline
//!    allows, and otherwise stops with a `GaveUp` that names the circuit.
//! 6. **Per-attempt timeout** ([`AttemptTimeoutLayer`](steadfast_layers::timeout::AttemptTimeoutLayer),
//!    default 3 s, bounded by the deadline): inside the retry layer so that a slow attempt is
//!    abandoned and retried (`Elapsed` is retryable) instead of consuming the whole deadline.
//! 7. **Deadline propagation** ([`DeadlinePropagationLayer`](crate::propagate::DeadlinePropagationLayer),
//!    10 ms margin, capped at the attempt timeout): last, next to the wire, so that the timeout
//!    written is computed when the attempt is actually sent, after backoffs, and tells the
//!    callee exactly how long this attempt will be waited for.
//!
//! The result is a `tower::Service<http::Request<B>>` returning `BoxError`; errors are
//! steadfast's nouns (`GaveUp` wrapping the last error, `DeadlineExceeded`), and a response
//! returned after giving up carries [`RetryGaveUp`](crate::classify::RetryGaveUp).
//!
//! # Transports
//!
//! - **hyper-util**: the stack sends `http::Request<ReplayBody<B>>` (the body it can re-send) to
//!   the transport, so the client must be built for that body: [`hyper_client::<B>()`](hyper_client)
//!   does it in one call (`Client::builder(TokioExecutor::new()).build_http::<ReplayBody<B>>()`).
//!   Callers send ordinary `Request<Full<Bytes>>` (or `Empty`, or a boxed body).
//! - **tonic**: `StandardClientLayer::builder().tonic()` (feature `tonic`; facade feature
//!   `grpc`) takes a `tonic::transport::Channel` as it is, and its errors are `tonic::Status`es
//!   with the codes a gRPC caller expects (`DEADLINE_EXCEEDED` for a spent deadline,
//!   `UNAVAILABLE` for an open circuit, `RESOURCE_EXHAUSTED` for a rate limit): see `Tonic`.
//! - **anything else**: any `Service<http::Request<ReplayBody<B>>>`.
//!
//! ## Example
//!
//! A `GET` whose first attempt hangs: the attempt timeout abandons it and the retry answers.
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
//!
//! # The hedging client
//!
//! [`hedging_client`] (or [`HedgingClientLayer::builder`]) sends a copy of a slow call and takes
//! the first success ("The Tail at Scale"), outermost first:
//!
//! 1. **Idempotency key**, as above, for the same reason: once per logical call, so that the
//!    original and its hedges carry the **same** key. The key is what makes a `POST` hedgeable:
//!    a hedge runs *concurrently* with the original, and only a server that deduplicates by key
//!    makes two concurrent copies of a `POST` harmless.
//! 2. **Replay body**: so that the hedge can re-send the body (a body over 64 KiB is not hedged).
//! 3. **Total deadline** (default 10 s): outside the hedge, because the caller's patience covers
//!    the original and every hedge; the hedge layer sends no hedge once less than 1 ms is left.
//! 4. **Hedge** ([`HedgeLayer`](steadfast_layers::hedge::HedgeLayer)): one hedge after the
//!    learned **95th percentile** of attempt latencies (no hedge until 100 attempts are known),
//!    so that only the slowest ~5 % of calls are hedged; a **budget of 5 %** of requests (burst
//!    10) caps the extra load when the whole backend is slow, the case where hedging would
//!    otherwise double the load on an overloaded peer; only requests that the **one eligibility
//!    rule** allows are hedged ([`IdempotentOrKeyed`](crate::idempotency::IdempotentOrKeyed):
//!    an idempotent method, or a key, as for the standard client's retries). The classifier
//!    counts `409` as a failure, so that a hedge answered "in flight" by an
//!    [`IdempotencyLayer`](crate::idempotency::IdempotencyLayer) waits for the original instead
//!    of winning over it. Adjust it with [`HedgingClientBuilder::hedge`], as the standard
//!    client's retries with [`StandardClientBuilder::retry`].
//! 5. **Breaker slot**, as above.
//! 6. **Per-attempt timeout** (default 3 s): below the hedge, so that it bounds each copy, not
//!    the call, and the propagated deadline tells each callee how long its copy will be waited
//!    for.
//! 7. **Deadline propagation**: next to the wire, as above; each copy writes its own remaining
//!    time when it is sent.
//!
//! There is no retry layer: a call whose copies all failed returns the most informative failure.
//! Put a retry layer above if you need both (and share a budget between them with
//! the same `budget(Arc)` method on both:
//! [`HedgeLayerBuilder::budget`](steadfast_layers::hedge::HedgeLayerBuilder::budget)).
//!
//! ## Example
//!
//! A keyed `POST` whose first copy lands on a stuck replica: the hedge answers, with the same key.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_http::preset::HedgingClientLayer;
//! use steadfast_layers::hedge::HedgeDelay;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::BoxError> {
//! // Two replicas behind one address: the first copy lands on a stuck one.
//! let keys = Arc::new(Mutex::new(Vec::new()));
//! let k = keys.clone();
//! let replicas = service_fn(move |req: http::Request<_>| {
//!     let n = {
//!         let mut keys = k.lock().unwrap();
//!         keys.push(req.headers()["idempotency-key"].clone());
//!         keys.len()
//!     };
//!     async move {
//!         if n == 1 { tokio::time::sleep(Duration::from_secs(60)).await; }
//!         let body = BodyExt::collect(req.into_body()).await?.to_bytes();
//!         Ok::<_, steadfast_layers::BoxError>(http::Response::new(Full::new(body)))
//!     }
//! });
//! let client = HedgingClientLayer::builder()
//!     // A fixed delay for the example; the default learns the 95th percentile.
//!     .hedge(|h| h.delay(HedgeDelay::fixed(Duration::from_millis(50))))
//!     .build()?
//!     .layer(replicas);
//!
//! let start = tokio::time::Instant::now();
//! let req = http::Request::post("/orders").body(Full::new(Bytes::from_static(b"order")))?;
//! let res = client.oneshot(req).await?;
//! assert_eq!(res.into_body().collect().await?.to_bytes(), "order");
//! assert_eq!(start.elapsed(), Duration::from_millis(50)); // the hedge answered
//! let keys = keys.lock().unwrap();
//! assert_eq!(keys.len(), 2);
//! assert_eq!(keys[0], keys[1]); // one key for the original and the hedge
//! # Ok(()) }
//! ```
mod builder;
mod hyper;
mod keys;
mod layer;
#[cfg(feature = "tonic")]
mod tonic;
mod transport;

#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub use self::tonic::{grpc_status, Tonic, TonicBody, TonicStatus, TonicStatusFuture};
pub use builder::{
    ClientBuilder, Hedging, HedgingClientBuilder, Retrying, StandardClientBuilder,
    DEFAULT_HEDGE_BUDGET_RATIO, DEFAULT_HEDGE_DELAY,
};
pub use hyper::hyper_client;
pub use keys::MaybeKeyed;
pub use layer::{
    ClientLayer, HedgingClient, HedgingClientLayer, StandardClient, StandardClientLayer,
    DEFAULT_ATTEMPT_TIMEOUT, DEFAULT_TIMEOUT,
};
pub use transport::{Plain, Transport};

use tower_layer::Layer;

use crate::error::ConfigError;

/// The standard client stack with its defaults around `inner` (a hyper-util client from
/// [`hyper_client`], any `Service<http::Request<ReplayBody<_>>>`): see
/// [`StandardClientLayer::builder`] to adjust it, and `tonic()` on it for a tonic `Channel`.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::{service_fn, ServiceExt};
/// use steadfast_http::preset::standard_client;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::BoxError> {
/// let peer = service_fn(|_req: http::Request<_>| async {
///     Ok::<_, std::io::Error>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
/// });
/// let res = standard_client(peer)?.oneshot(http::Request::new(Full::new(Bytes::new()))).await?;
/// assert_eq!(res.status(), 200);
/// # Ok(()) }
/// ```
pub fn standard_client<S>(inner: S) -> Result<StandardClient<S>, ConfigError> {
    Ok(StandardClientLayer::builder().build()?.layer(inner))
}

/// The hedging client stack with its defaults around `inner` (a hyper-util client from
/// [`hyper_client`], any `Service<http::Request<ReplayBody<_>>>` that can be cloned): see
/// [`HedgingClientLayer::builder`] to adjust it. Nothing is hedged until the 95th percentile
/// has been learned from 100 calls.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use tower::{service_fn, ServiceExt};
/// use steadfast_http::preset::hedging_client;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::BoxError> {
/// let peer = service_fn(|req: http::Request<_>| async move {
///     // The key layer gave the POST its Idempotency-Key.
///     assert!(req.headers().contains_key("idempotency-key"));
///     Ok::<_, std::io::Error>(http::Response::new(Full::new(Bytes::from_static(b"created"))))
/// });
/// let req = http::Request::post("/orders").body(Full::new(Bytes::from_static(b"{}")))?;
/// let res = hedging_client(peer)?.oneshot(req).await?;
/// assert_eq!(res.status(), 200);
/// # Ok(()) }
/// ```
pub fn hedging_client<S>(inner: S) -> Result<HedgingClient<S>, ConfigError> {
    Ok(HedgingClientLayer::builder().build()?.layer(inner))
}
