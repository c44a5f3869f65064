//! End-to-end deadlines: one deadline carried with the request, inherited by every call made
//! while serving it, shrunk (never extended) by each hop, and enforced.
//!
//! - [`Deadline`] is the absolute instant by which the original caller needs an answer. It lives
//!   in a task-local scope ([`Deadline::current`], [`Deadline::scope`]) and, for HTTP requests,
//!   in the request extensions ([`HttpExtensions`]).
//! - [`DeadlineLayer`] sets or shrinks the deadline of each call to `now + timeout`, rejects a
//!   request whose deadline has already passed without calling the inner service, runs the inner
//!   call in the deadline's scope, and fails it with [`DeadlineExceeded`] when time runs out.
//! - A per-attempt timeout, capped by the deadline, is [`crate::timeout::AttemptTimeoutLayer`].
//!
//! Cost: with its own timeout and nothing inherited, the layer fixes the absolute deadline the
//! first time anything needs it — an inner layer reading [`Deadline::current`] during `call`, or
//! the layer arming its timer because the call is still pending after its first poll — so a call
//! that completes at once reads the clock zero times (the timeout then counts from the first poll,
//! which follows `call` at once in every tower driver). An inherited deadline costs one clock read
//! (to reject it if already passed). No allocation, and no `Arc` clone with default telemetry.
//! A call still pending arms one timer, and none at all while a timer inside it ends no later
//! and wakes the same task (an [`AttemptTimeoutLayer`](crate::timeout::AttemptTimeoutLayer)
//! below, whose timer the deadline caps, or a shorter nested deadline): the presets' standard
//! order then arms one timer per attempt instead of two.
//!
//! # Example
//!
//! Service A gives its callers 2 s. While serving a request, A calls B through a client that
//! carries [`DeadlineLayer::inherit`]: B's call inherits what is left of the caller's deadline
//! with no plumbing, and is cancelled when the caller's time is up.
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_layers::deadline::{Deadline, DeadlineExceeded, DeadlineLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // B is slow: 5 s.
//! let b = service_fn(|()| async {
//!     tokio::time::sleep(Duration::from_secs(5)).await;
//!     Ok::<_, std::convert::Infallible>("b done")
//! });
//! let client_to_b = DeadlineLayer::inherit().layer(b);
//!
//! // A calls B while serving.
//! let a = service_fn(move |()| {
//!     let client = client_to_b.clone();
//!     async move { client.oneshot(()).await }
//! });
//! let a = DeadlineLayer::new(Duration::from_secs(2)).unwrap().layer(a);
//!
//! let start = tokio::time::Instant::now();
//! let err = a.oneshot(()).await.unwrap_err();
//! assert!(err.downcast_ref::<DeadlineExceeded>().is_some());
//! assert_eq!(start.elapsed(), Duration::from_secs(2));
//! # }
//! ```

mod carrier;
#[cfg(feature = "serde")]
mod config;
mod error;
mod future;
mod layer;
mod service;
mod value;

pub use carrier::{Carrier, HttpExtensions, TaskLocal};
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use config::DeadlineConfig;
pub use error::DeadlineExceeded;
pub use future::ResponseFuture;
pub use layer::{DeadlineLayer, DeadlineLayerBuilder};
pub use service::DeadlineService;
pub(crate) use value::{cover, process_instant};
pub use value::{Deadline, Scoped, MAX_TIMEOUT};

#[cfg(test)]
mod tests;
