//! Retries with backoff and jitter, limited by a shared budget and by the end-to-end deadline.
//!
//! [`RetryLayer`] wraps a service so that a failed call is tried again. What counts as a failure
//! is the [`Classifier`](crate::classify::Classifier)'s call, so a `503` inside `Ok` can be
//! retried. Each retry must pass, in order:
//!
//! 1. **attempts**: fewer than `max_attempts` made so far;
//! 2. **pushback**: the server did not ask to stop ([`Outcome::Pushback`](crate::classify::Outcome));
//! 3. **replay**: the request could be copied ([`Replay`]; `Clone` requests work as they are);
//! 4. **deadline**: after the backoff (or the server's `Retry-After`, which replaces it), at least
//!    `min_attempt_time` of the [deadline](crate::deadline) must remain; the layer never sleeps
//!    past the deadline;
//! 5. **budget**: the shared [`RetryBudget`] grants it (a [`RatioBudget`] by default).
//!
//! When it stops, the caller learns why: an error comes back as [`GaveUp`] (reason, attempts,
//! and the last error as its source); a response comes back as it is, and the classifier's
//! [`on_give_up`](crate::classify::Classifier::on_give_up) hears why. Every decision is a
//! `tracing` event inside a `steadfast.retry` span and a metric (see `docs/observability.md`);
//! each attempt runs in a `steadfast.retry.attempt` span of its own under it (attempt number,
//! `http.request.resend_count`, the reason for the retry, the backoff slept as an event, the
//! outcome), so a trace view draws the attempts and the backoffs between them.
//!
//! Cost on a call whose first attempt succeeds: no allocation, no lock; one clock read for the
//! default [`RatioBudget`] deposit (none with [`TokenBucket`] or no budget).
//!
//! # Changing settings at run time
//!
//! [`RetryLayer::handle`] gives a [`RetryHandle`] that changes the maximum number of attempts and
//! the backoff while the layer serves, for every clone of the layer and every service it made.
//! Each setter checks the value by the builder's rule and returns the same
//! [`ConfigError`](crate::ConfigError). A call keeps the maximum of attempts it started with (it
//! is read once per call, one relaxed atomic load); a new backoff applies to the next retry of
//! any call. The budget, the classifier and `min_attempt_time` are fixed when the layer is built.
//!
//! ```
//! use std::time::Duration;
//! use steadfast_layers::retry::{Backoff, RetryLayer};
//!
//! let layer = RetryLayer::builder().max_attempts(3).build()?;
//! let handle = layer.handle();
//! handle.set_max_attempts(5)?;
//! handle.set_backoff(Backoff::exponential(Duration::from_millis(50), Duration::from_secs(2)))?;
//! assert_eq!(layer.max_attempts(), 5);
//! assert_eq!(handle.set_max_attempts(0).unwrap_err().path(), "max_attempts");
//! # Ok::<(), steadfast_layers::ConfigError>(())
//! ```
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_layers::classify::Outcome;
//! use steadfast_layers::retry::{Backoff, GaveUp, GiveUpReason, Jitter, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // A peer that always answers "503".
//! let calls = Arc::new(AtomicU32::new(0));
//! let c = calls.clone();
//! let peer = service_fn(move |_req: &'static str| {
//!     c.fetch_add(1, Ordering::SeqCst);
//!     async { Ok::<u16, steadfast_layers::BoxError>(503) }
//! });
//!
//! let layer = RetryLayer::builder()
//!     .max_attempts(4)
//!     .backoff(Backoff::exponential(Duration::from_millis(10), Duration::from_millis(100)).jitter(Jitter::Equal))
//!     .classifier(|r: &Result<u16, steadfast_layers::BoxError>| match r {
//!         Ok(503) => Outcome::retryable("unavailable"),
//!         Ok(_) => Outcome::Success,
//!         Err(_) => Outcome::retryable("error"),
//!     })
//!     .seed(7)
//!     .build()
//!     .unwrap();
//!
//! let status = layer.layer(peer).oneshot("GET /").await.unwrap();
//! assert_eq!(status, 503); // the last response, not swallowed
//! assert_eq!(calls.load(Ordering::SeqCst), 4);
//! # }
//! ```

mod backoff;
pub mod budget;
#[cfg(feature = "serde")]
mod config;
mod error;
mod future;
mod layer;
mod policy;
mod service;

pub use backoff::{Backoff, Jitter, MAX_BACKOFF};
pub use budget::{RatioBudget, RatioBudgetBuilder, RetryBudget, TokenBucket, TokenBucketBuilder};
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use config::{BackoffConfig, BudgetConfig, JitterConfig, RatioBudgetConfig, RetryConfig};
pub use error::{GaveUp, GiveUpReason};
pub use future::ResponseFuture;
pub use layer::{RetryHandle, RetryLayer, RetryLayerBuilder, MAX_ATTEMPTS};
pub use policy::{CloneReplay, NotReplayable, Replay};
pub use service::Retry;
