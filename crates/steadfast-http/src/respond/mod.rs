//! Server side: steadfast's refusals as responses, so that any steadfast layer goes onto an axum
//! `Router` (or a hyper or tonic server) without `HandleErrorLayer`.
//!
//! [`DeadlineServerLayer`](crate::propagate::DeadlineServerLayer) and
//! [`IdempotencyLayer`](crate::idempotency::IdempotencyLayer) answer their own rejections and
//! pass the inner error type through. The generic layers of `steadfast-layers` (load shedding,
//! concurrency limits, rate limits, bulkheads, adaptive limits, breakers, timeouts) fail a call
//! they refuse with a noun in a `BoxError`. [`RespondLayer`], outside them, turns those nouns
//! into the answers a client and its retry layer understand; its error type is `Infallible`.
//! On axum, wrap each such layer with [`RespondLayer::around`] (`Router::layer` checks every
//! layer's error type on its own):
//!
//! | refusal | HTTP | gRPC (Trailers-Only `200`) |
//! |---|---|---|
//! | [`Overloaded`](steadfast_layers::overload::Overloaded), rate limited | `429` + `Retry-After` | `RESOURCE_EXHAUSTED` |
//! | `Overloaded`, any other reason (at capacity, queue full, shed, throttled) | `503` (+ `Retry-After` when known) | `UNAVAILABLE` |
//! | [`CircuitOpen`](steadfast_layers::breaker::CircuitOpen) | `503` + `Retry-After` (the rest of the break) | `UNAVAILABLE` |
//! | [`DeadlineExceeded`](steadfast_layers::deadline::DeadlineExceeded), [`Elapsed`](steadfast_layers::timeout::Elapsed) | `504` | `DEADLINE_EXCEEDED` |
//! | any other error | `500` (and an ERROR event with its text) | `INTERNAL` |
//!
//! `Retry-After` is in whole seconds, rounded up (at least 1), so a client that honours it (the
//! HTTP classifier does) comes back no sooner than the refusal allows. Each answer is a
//! `tracing` event (`steadfast::respond`).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_http::respond::RespondLayer;
//! use steadfast_layers::rate::RateLimitLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let handler = service_fn(|_req: http::Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(String::from("hello")))
//! });
//! // One request a minute; the second is answered 429, not failed.
//! let limited = RateLimitLayer::builder(1, Duration::from_secs(60)).build().unwrap().layer(handler);
//! let svc = RespondLayer::new().layer(limited);
//! assert_eq!(svc.clone().oneshot(http::Request::new(())).await.unwrap().status(), 200);
//! let refused = svc.oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(refused.status(), 429);
//! assert_eq!(refused.headers()["retry-after"], "60");
//! # }
//! ```

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{Around, RespondLayer};
pub use service::{refusal_response, Respond};
