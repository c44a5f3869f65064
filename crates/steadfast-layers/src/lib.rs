//! Generic resilience layers for any [`tower::Service`](tower_service::Service): end-to-end
//! deadlines, per-attempt timeouts, retries with backoff, jitter and shared budgets, budgeted
//! hedging ([`hedge`]), fallbacks ([`fallback`]) and fault injection ([`chaos`]).
//!
//! Every layer is built by a builder that validates its configuration and returns
//! [`ConfigError`] rather than panicking; every service returns [`BoxError`] like tower's own
//! layers, with noun errors to match on ([`deadline::DeadlineExceeded`], [`timeout::Elapsed`],
//! [`retry::GaveUp`]); every decision is traced and counted (see [`telemetry`]).
//!
//! The standard order, outermost first: total deadline, then retry (each attempt bounded by its
//! own timeout and the deadline). A fallback goes outside the deadline (to answer when it fires),
//! a hedge layer inside the retry (each attempt is hedged), and a chaos layer innermost, beside
//! the transport it stands in for.
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use steadfast_layers::{deadline::DeadlineLayer, retry::RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let svc = ServiceBuilder::new()
//!     .layer(DeadlineLayer::new(Duration::from_secs(2))?)
//!     .layer(RetryLayer::builder().max_attempts(3).attempt_timeout(Duration::from_millis(500)).build()?)
//!     .service(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x + 1) }));
//! assert_eq!(svc.oneshot(1).await.map_err(|e| e as Box<dyn std::error::Error>)?, 2);
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod breaker;
pub mod chaos;
pub mod classify;
pub mod deadline;
mod error;
pub mod fallback;
pub mod hedge;
pub mod retry;
pub mod rng;
pub mod telemetry;
pub mod timeout;

pub use error::{BoxError, ConfigError, Problem};
