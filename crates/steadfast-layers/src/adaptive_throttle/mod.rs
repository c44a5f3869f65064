//! Client-side adaptive throttling (Google SRE, "Handling Overload"): when the backend refuses
//! a large share of requests, reject some locally instead of sending them.
//!
//! Named as the SRE book names it ("adaptive throttling"); Envoy's `admission_control` filter
//! implements the same formula. Not to be confused with gRPC's `retryThrottling` (a token bucket
//! on retries: [`TokenBucket`](crate::retry::TokenBucket)) or with a rate limit
//! ([`rate`](crate::rate)).
//!
//! [`ThrottleLayer`] counts, over a sliding window (2 minutes by default, in time buckets), the
//! `requests` this client attempted (locally rejected ones included) and the `accepts`: the
//! requests the backend accepted, as the shared [`Classifier`](crate::classify::Classifier)
//! says (a success or a fatal failure is an accept; a retryable, pushback or not-sent failure,
//! such as a timeout, a `503`, a `429` or a refused connection, is not). Each call is then rejected locally, with
//! [`Overloaded`] (`throttled`), with probability
//!
//! ```text
//! max(0, (requests − K × accepts) / (requests + 1))
//! ```
//!
//! With K = 2 (the default) nothing is rejected until the backend refuses half of the requests;
//! beyond that the client sends about `K × accepts` requests, enough to notice recovery, and the
//! backend is spared the rest. The draw comes from the layer's seeded random source, so a given
//! seed rejects the same calls. Every clone of the layer shares one window.
//!
//! Cost of a call: one clock read, two short scans of the buckets (12 by default), one atomic
//! increment, and one more when it is accepted; no allocation, no lock. A random draw only
//! when the probability is above zero.
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_layers::adaptive_throttle::{Overloaded, ThrottleLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let healthy = Arc::new(AtomicBool::new(false));
//! let h = healthy.clone();
//! let backend = service_fn(move |()| {
//!     let up = h.load(Ordering::SeqCst);
//!     async move { if up { Ok(()) } else { Err(steadfast_layers::BoxError::from("503")) } }
//! });
//! let layer = ThrottleLayer::builder().seed(42).build().unwrap();
//! let throttle = layer.handle();
//! let svc = layer.layer(backend);
//!
//! // The backend is down: the client soon rejects most calls itself.
//! let mut sent = 0;
//! for _ in 0..200 {
//!     if !svc.clone().oneshot(()).await.unwrap_err().is::<Overloaded>() { sent += 1; }
//! }
//! assert!(sent < 40, "{sent}");
//! assert!(throttle.rejection_probability() > 0.9);
//!
//! // It recovers. Each accepted call lowers the probability, and the outage's requests leave
//! // the 2-minute window as it slides.
//! healthy.store(true, Ordering::SeqCst);
//! tokio::time::advance(Duration::from_secs(130)).await;
//! assert_eq!(throttle.rejection_probability(), 0.0);
//! for _ in 0..100 {
//!     svc.clone().oneshot(()).await.unwrap();
//! }
//! # }
//! ```

#[cfg(feature = "serde")]
mod config;
mod error;
mod future;
mod layer;
mod service;
mod window;

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use config::ThrottleConfig;
pub use error::{OverloadReason, Overloaded};
pub use future::ResponseFuture;
pub use layer::{ThrottleHandle, ThrottleLayer, ThrottleLayerBuilder};
pub use service::Throttle;
