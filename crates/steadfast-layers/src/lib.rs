//! Generic resilience layers for any [`tower::Service`](tower_service::Service): end-to-end
//! deadlines, per-attempt timeouts, retries with backoff, jitter and shared budgets, budgeted
//! hedging ([`hedge`]), fallbacks ([`fallback`]) and fault injection ([`chaos`]).
//!
//! Every layer is built by a builder that validates its configuration and returns
//! [`ConfigError`] rather than panicking; every service returns [`BoxError`] like tower's own
//! layers, with noun errors to match on ([`deadline::DeadlineExceeded`], [`timeout::Elapsed`],
//! [`retry::GaveUp`]); every decision is traced and counted (see [`telemetry`]).
//!
//! Backpressure layers keep a caller within what its peer can take, shared by every clone of a
//! layer: concurrency limits, fixed ([`limit`]) or adaptive ([`adaptive_limit`]: AIMD, Gradient2,
//! Vegas), a [`bulkhead`] with a bounded queue, rate limits ([`rate`], on governor's GCRA),
//! client-side adaptive throttling ([`adaptive_throttle`]) and load shedding ([`shed`]); limits, rates
//! and circuit breakers can be per key, all entered with `.key_by(f)` and `.max_keys(n)` and
//! kept in one kind of bounded table ([`keyed`]). Each refuses a call with the same [`overload::Overloaded`] error.
//!
//! Settings change at run time through a handle from each layer ([`breaker::BreakerHandle`],
//! [`retry::RetryHandle`], [`limit::ConcurrencyLimitHandle`], [`bulkhead::BulkheadHandle`],
//! [`hedge::HedgeHandle`], [`rate::RateLimitHandle`]): each setter checks its value as the builder
//! does, the change applies to calls that start after it, calls in flight and breaker state are
//! kept, and the call path stays lock-free and allocation-free (see each module's "Changing
//! settings at run time").
//!
//! The standard order, outermost first: total deadline, then retry (each attempt bounded by its
//! own timeout and the deadline). A fallback goes outside the deadline (to answer when it fires),
//! a hedge layer inside the retry (each attempt is hedged), backpressure layers inside the retry
//! too (each attempt takes a permit or a cell; client-side throttling sees every attempt), and a
//! chaos layer innermost, beside the transport it stands in for.
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use steadfast_layers::{deadline::DeadlineLayer, retry::RetryLayer, timeout::AttemptTimeoutLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let svc = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(2))?)
//!     .layer(RetryLayer::builder().max_attempts(3).build()?)
//!     .layer(AttemptTimeoutLayer::new(Duration::from_millis(500))?)
//!     .service(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x + 1) }));
//! assert_eq!(svc.oneshot(1).await.map_err(|e| e as Box<dyn std::error::Error>)?, 2);
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adaptive_limit;
pub mod adaptive_throttle;
pub mod breaker;
pub mod bulkhead;
pub mod chaos;
pub mod classify;
#[cfg(feature = "serde")]
mod config;
pub mod deadline;
mod error;
pub mod error_type;
pub mod fallback;
mod gate;
pub mod hedge;
pub mod keyed;
pub mod limit;
mod live;
pub mod overload;
pub mod rate;
pub mod retry;
pub mod rng;
pub mod shed;
pub mod telemetry;
pub mod timeout;
mod timer;

pub use error::{BoxError, ConfigError, Problem};
