//! Fallbacks: on chosen failures, answer with an alternative response instead.
//!
//! [`FallbackLayer`] runs the inner call and, when its result is a failure the
//! [`FallbackPolicy`] chooses, calls a function for an alternative: a cached or default value
//! (synchronous, [`FallbackLayer::from_fn`]) or another source (asynchronous and fallible,
//! [`FallbackLayer::from_async_fn`]). The function is given the [`Failure`]: why, and the error or
//! failed response it replaces.
//!
//! Which failures: every error by default ([`AnyError`]); only some errors with
//! [`on_error`](FallbackLayerBuilder::on_error) and a predicate such as
//! `e.is::<DeadlineExceeded>()` (this crate's noun errors: `DeadlineExceeded`, `Elapsed`,
//! `GaveUp`, `InjectedFault`, later an open breaker or an overload rejection); whatever a
//! [`Classifier`](crate::classify::Classifier) calls a failure, `503` responses included, with
//! [`on_failure`](FallbackLayerBuilder::on_failure); or both with [`Or`]. Anything else passes
//! through untouched. A readiness failure the policy chooses (an open breaker in readiness mode)
//! is answered too: `poll_ready` reports ready and the next call goes straight to the fallback
//! without calling the inner service, as tower's `LoadShed` answers overload.
//!
//! A fallback that fails returns [`FallbackFailed`] (why it ran, and its own error as the
//! source). Each fallback is a `tracing` event inside a `steadfast.fallback` span and counts in
//! `steadfast.fallback.invoked{reason}` (and `steadfast.fallback.failed{reason}`); see
//! `docs/observability.md`. A call that succeeds costs nothing but the policy's check: no clock
//! read, no allocation, no span.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use steadfast_layers::deadline::{DeadlineExceeded, DeadlineLayer};
//! use steadfast_layers::fallback::{Failure, FallbackLayer};
//! use steadfast_layers::BoxError;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // Recommendations are slow today; after 100 ms, show the best sellers instead.
//! let recommendations = service_fn(|user: u32| async move {
//!     tokio::time::sleep(Duration::from_secs(2)).await;
//!     Ok::<_, BoxError>(vec![format!("picked for {user}")])
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(
//!         FallbackLayer::from_fn(|f: Failure<Vec<String>>| {
//!             assert_eq!(f.reason(), "deadline");
//!             vec!["best seller".to_string()]
//!         })
//!         .on_error(|e: &BoxError| e.is::<DeadlineExceeded>())
//!         .build()
//!         .unwrap(),
//!     )
//!     .layer(DeadlineLayer::new(Duration::from_millis(100)).unwrap())
//!     .service(recommendations);
//! assert_eq!(svc.oneshot(7).await.unwrap(), ["best seller"]);
//! # }
//! ```

mod action;
mod error;
mod future;
mod layer;
mod policy;
mod service;

pub use action::{AsyncFallback, Failure, FallbackAction, SyncFallback};
pub use error::FallbackFailed;
pub use future::ResponseFuture;
pub use layer::{FallbackLayer, FallbackLayerBuilder};
pub use policy::{error_reason, AnyError, FallbackPolicy, OnError, OnFailure, Or};
pub use service::Fallback;
