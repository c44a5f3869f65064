//! Rate limits on governor's GCRA, shared by every clone, globally or per key, failing fast with
//! the time to wait or waiting for a cell.
//!
//! [`RateLimitLayer`] lets `requests` calls through per `per`, with bursts of up to
//! [`burst`](RateLimitLayerBuilder::burst) calls after a quiet period (the generic cell rate
//! algorithm of [`governor`]: one atomic compare-and-swap per call, no lock, no background
//! task). Every clone of the layer and of its services draws on the same cells (tower's
//! `RateLimit` keeps its state in the service, which is not `Clone`: sharing it takes a `Buffer`;
//! see tower#794).
//!
//! - **Fail fast** (the default): a call with no cell fails at once with [`Overloaded`]
//!   (`rate_limited`), whose [`retry_after`](Overloaded::retry_after) says when a cell will be
//!   available: ready for a `Retry-After` header.
//! - **Wait** ([`wait`](RateLimitLayerBuilder::wait)): the call sleeps until its cell, then
//!   checks again; with [`max_wait`](RateLimitLayerBuilder::max_wait), a call whose cell is
//!   further away than that fails at once instead.
//! - **Per key** ([`key_by`](RateLimitLayerBuilder::key_by)): each key gets its own quota, in a
//!   bounded table ([`max_keys`](RateLimitLayerBuilder::max_keys)); a key whose bucket has
//!   refilled is indistinguishable from a new one and is swept out when the table fills. See
//!   [`keyed`](crate::keyed).
//!
//! Time comes from [`TokioClock`], governor's clock trait over `tokio::time`, so that paused
//! clocks in tests drive the limit exactly.
//!
//! Cost of an admitted call: one clock read and one compare-and-swap; keyed, one shared read lock
//! more. No allocation. A global limit faster than one cell per
//! [`precision`](RateLimitLayerBuilder::precision) (100 µs by default) claims cells in batches,
//! one clock read per batch: most of its calls cost one compare-and-swap and no clock read.
//!
//! # Changing settings at run time
//!
//! [`RateLimitLayer::handle`] gives a [`RateLimitHandle`] whose
//! [`set_rate`](RateLimitHandle::set_rate) changes the rate and burst while the layer serves,
//! checked by the builder's rule. It swaps in a governor limiter for the new quota over the
//! same state: what each caller (each key) has spent is kept, as GCRA keeps it, in time (the
//! instant its bucket is full again), and the new rate and burst count from there; nobody gets
//! a fresh burst from a change. Each service sees the new quota at its next call (one relaxed
//! load per call, through an `arc_swap::Cache`). The key table, `precision` and the wait
//! settings are fixed when the layer is built.
//!
//! ```
//! use std::time::Duration;
//! use steadfast_layers::rate::RateLimitLayer;
//! let layer = RateLimitLayer::builder(100, Duration::from_secs(1)).build()?;
//! layer.handle().set_rate(10, Duration::from_secs(1), Some(5))?;
//! assert_eq!(layer.burst(), 5);
//! # Ok::<(), steadfast_layers::ConfigError>(())
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_layers::rate::RateLimitLayer;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // 10 calls per second, no burst, waiting for a cell.
//! let svc = RateLimitLayer::builder(10, Duration::from_secs(1))
//!     .burst(1)
//!     .wait()
//!     .build()
//!     .unwrap()
//!     .layer(service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n) }));
//!
//! let start = tokio::time::Instant::now();
//! for n in 0..5 {
//!     assert_eq!(svc.clone().oneshot(n).await.unwrap(), n);
//! }
//! // One call at once, then one every 100 ms.
//! assert_eq!(start.elapsed(), Duration::from_millis(400));
//! # }
//! ```

mod clock;
#[cfg(feature = "serde")]
mod config;
mod error;
mod future;
mod layer;
mod service;
mod store;

pub use clock::TokioClock;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use config::RateLimitConfig;
pub use error::{OverloadReason, Overloaded};
pub use future::ResponseFuture;
pub use layer::{RateLimitHandle, RateLimitLayer, RateLimitLayerBuilder, DEFAULT_PRECISION};
pub use service::RateLimit;
