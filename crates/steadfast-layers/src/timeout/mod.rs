//! Per-attempt timeouts bounded by the end-to-end deadline.
//!
//! [`AttemptTimeoutLayer`] gives each attempt `min(timeout, remaining deadline)`. Put it below a
//! [`RetryLayer`](crate::retry::RetryLayer) (which owns no timer of its own), so that it bounds
//! each attempt: a slow attempt fails with [`Elapsed`] and may be retried, while an attempt cut
//! short by the deadline fails with [`DeadlineExceeded`](crate::deadline::DeadlineExceeded) and
//! is not.
//!
//! Cost: no clock read and no timer for an attempt that completes on its first poll; a pending
//! attempt's timer also stands for the deadline above it, which then arms none of its own.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_layers::deadline::{Deadline, DeadlineExceeded};
//! use steadfast_layers::timeout::AttemptTimeoutLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let slow = service_fn(|()| async {
//!     tokio::time::sleep(Duration::from_secs(10)).await;
//!     Ok::<_, std::convert::Infallible>(())
//! });
//! let svc = AttemptTimeoutLayer::new(Duration::from_secs(5)).unwrap().layer(slow);
//!
//! // Only 1 s of deadline is left: the attempt gets 1 s, not 5, and the error says why.
//! let deadline = Deadline::after(Duration::from_secs(1)).unwrap();
//! let err = deadline.scope(svc.oneshot(())).await.unwrap_err();
//! assert!(err.is::<DeadlineExceeded>());
//! # }
//! ```

#[cfg(feature = "serde")]
mod config;
mod error;
mod future;
mod layer;
mod service;

#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use config::AttemptTimeoutConfig;
pub use error::Elapsed;
pub use future::ResponseFuture;
pub use layer::AttemptTimeoutLayer;
pub use service::AttemptTimeout;
