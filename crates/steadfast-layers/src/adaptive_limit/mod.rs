//! Adaptive concurrency limits: the limit follows what the backend can take, computed from each
//! call's latency and outcome by a pluggable [`Algorithm`].
//!
//! Named after what it is: a concurrency limit ([`limit`](crate::limit)) whose limit adapts, as
//! Netflix's concurrency-limits library and Envoy's `adaptive_concurrency` filter call it (and
//! the layer type, [`AdaptiveLimitLayer`]).
//!
//! [`AdaptiveLimitLayer`] admits a call while fewer calls than the current limit are in flight
//! (over every clone of the layer and its services) and refuses it at once with [`Overloaded`]
//! (`at_capacity`) otherwise. It runs on the same concurrency gate as
//! [`limit`](crate::limit) and [`bulkhead`](crate::bulkhead), whose maximum it moves: a lowered
//! limit lets the calls in flight finish and admits no new one until fewer are in flight. Each admitted call is timed (two clock reads: the only way to
//! measure a round-trip time) and classified by the shared
//! [`Classifier`](crate::classify::Classifier): a success, a drop (a retryable or pushback
//! failure: a timeout, a `503`; a deadline that expired while the call ran), or ignored (a fatal
//! failure such as a bad request). A call whose response future is dropped before it completes
//! (its caller gave up: a deadline above this layer) is a drop whose round-trip time is at least
//! what it waited ([`cancelled_as_drops`](AdaptiveLimitLayerBuilder::cancelled_as_drops)): under
//! overload the calls that never finish are the signal that matters. The measurements feed the
//! algorithm once per
//! [`window`](AdaptiveLimitLayerBuilder::window) (100 ms and at least 10 calls by default; zero
//! for an update after every call):
//!
//! - [`Vegas`] (the default): latency-based; estimates the queue from the RTT over the no-load
//!   RTT and keeps it between `alpha = 3 log10(limit)` and `beta = 6 log10(limit)`.
//! - [`Gradient2`]: latency-based; shrinks the limit when the current RTT exceeds 1.5 × its
//!   long-term average (itself held within 2 × a no-load RTT measured by a short low-limit probe
//!   once a minute), or on drops; otherwise grows it by a smoothed queue allowance of 4.
//! - [`Aimd`]: loss-based; ×0.9 on a drop, +1 on success while the limit is in use.
//!
//! All three follow Netflix's concurrency-limits, including its parameters; [`Gradient2`]
//! deviates where Netflix's version fails (documented there). In a simulated backend with a
//! hidden capacity `C` whose latency grows with the calls queued beyond it (`tests/adaptive.rs`),
//! Vegas settles at `C + alpha`, AIMD (against a backend that fails beyond `C`) oscillates
//! between `0.9 C` and `C + 1`, and Gradient2 settles near `1.5 C + 4` (its tolerance lets
//! latency grow by half). Under sustained 2x overload of a server with an unbounded queue and
//! callers that give up after a deadline, Netflix's Gradient2 creeps up until calls queue for
//! the whole deadline (its long-term RTT follows the loaded latency, and abandoned calls gave no
//! sample); ours holds its limit where latency stays within 3 × the no-load RTT, for as long as
//! the overload lasts.
//!
//! The limit is observable: [`LimitHandle::limit`] (from [`AdaptiveLimitLayer::handle`]), a
//! `DEBUG` event "adaptive limit changed" on each change, and the `steadfast.adaptive.limit`
//! gauge.
//!
//! Cost of an admitted call: no allocation and no blocking lock; one compare-and-swap to enter,
//! a few atomic additions to record, two clock reads; the algorithm runs under a `try_lock`
//! (a thread that finds it busy leaves its sample for the next update rather than wait).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_layers::adaptive_limit::{AdaptiveLimitLayer, Vegas};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let layer = AdaptiveLimitLayer::builder()
//!     .algorithm(Vegas::builder().initial_limit(10).build().unwrap())
//!     .window(Duration::ZERO) // update after every call
//!     .min_samples(1)
//!     .seed(1)
//!     .build()
//!     .unwrap();
//! let limit = layer.handle();
//! let svc = layer.layer(service_fn(|()| async {
//!     tokio::time::sleep(Duration::from_millis(10)).await;
//!     Ok::<_, std::convert::Infallible>(())
//! }));
//!
//! // Ten calls at a time, all at the no-load latency: Vegas sees no queue and grows the limit.
//! for _ in 0..3 {
//!     let calls = (0..10).map(|_| svc.clone().oneshot(()));
//!     futures::future::join_all(calls).await;
//! }
//! assert!(limit.limit() > 10, "{}", limit.limit());
//! # }
//! ```

mod aimd;
mod algorithm;
#[cfg(feature = "serde")]
mod config;
mod error;
mod future;
mod gradient2;
mod layer;
mod service;
mod vegas;

pub use aimd::{Aimd, AimdBuilder};
pub use algorithm::{Algorithm, Samples};
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub use config::{
    AdaptiveLimitConfig, AimdConfig, AlgorithmConfig, ConfiguredAlgorithm, Gradient2Config,
    VegasConfig,
};
pub use error::{OverloadReason, Overloaded};
pub use future::ResponseFuture;
pub use gradient2::{Gradient2, Gradient2Builder};
pub use layer::{
    AdaptiveLimitLayer, AdaptiveLimitLayerBuilder, LimitHandle, DEFAULT_MIN_SAMPLES, DEFAULT_WINDOW,
};
pub use service::AdaptiveLimit;
pub use vegas::{Vegas, VegasBuilder};

/// The highest limit any algorithm may set (1,000,000).
pub const MAX_LIMIT: usize = 1_000_000;
