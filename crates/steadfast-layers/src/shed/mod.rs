//! Load shedding: when the inner service is not ready, fail the call at once with
//! [`Overloaded`] (`not_ready`) instead of queueing it.
//!
//! [`LoadShedLayer`] does what tower's `LoadShed` does, with this crate's error and telemetry:
//! its `poll_ready` polls the inner service's and always answers ready (an inner error is still
//! returned); a call made while the inner service was not ready is refused without calling it.
//! Put it above a layer that applies backpressure through readiness (tower's `ConcurrencyLimit`,
//! `Buffer`, `RateLimit`, a balancer) to turn waiting into fast failures that a caller can
//! retry elsewhere.
//!
//! Cost of an admitted call: nothing beyond the inner `poll_ready`; no allocation, no lock, no
//! clock read.
//!
//! # Example
//!
//! ```
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower::limit::ConcurrencyLimitLayer;
//! use steadfast_layers::shed::{LoadShedLayer, OverloadReason, Overloaded};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let (tx, rx) = tokio::sync::oneshot::channel::<()>();
//! let rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
//! let inner = service_fn(move |()| {
//!     let rx = rx.clone();
//!     async move {
//!         if let Some(rx) = rx.lock().await.take() { let _ = rx.await; }
//!         Ok::<_, std::convert::Infallible>("ok")
//!     }
//! });
//! // tower's limit makes the inner service "not ready" while one call is in flight.
//! let svc = LoadShedLayer::new().layer(ConcurrencyLimitLayer::new(1).layer(inner));
//!
//! let first = tokio::spawn(svc.clone().oneshot(()));
//! tokio::task::yield_now().await;
//! let err = svc.clone().oneshot(()).await.unwrap_err();
//! assert_eq!(err.downcast_ref::<Overloaded>().unwrap().reason(), OverloadReason::NotReady);
//! let _ = tx.send(());
//! assert_eq!(first.await.unwrap().unwrap(), "ok");
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
pub use config::LoadShedConfig;
pub use error::{OverloadReason, Overloaded};
pub use future::ResponseFuture;
pub use layer::{LoadShedLayer, LoadShedLayerBuilder};
pub use service::LoadShed;
