//! Fault injection, like Polly's chaos strategies: prove that the other layers work before
//! production does it for you.
//!
//! [`ChaosLayer`] injects, each with its own probability:
//!
//! - **latency**: the call starts `delay` late (it then runs normally, or meets another fault);
//! - **error**: the call fails at once with [`InjectedFault`] ([`FaultKind::Error`]) and the inner
//!   service is not called: the request was never sent;
//! - **abort**: the request is sent and served, but its response is dropped and the call fails
//!   with [`InjectedFault`] ([`FaultKind::Abort`]): the caller cannot know whether it took effect,
//!   the case idempotency keys exist for.
//!
//! Error and abort are exclusive (one draw decides); latency is drawn separately. Randomness comes
//! from an injectable [`RandomSource`](crate::rng::RandomSource): with
//! [`seed`](ChaosLayerBuilder::seed), the same sequence of calls meets exactly the same faults.
//!
//! Off unless configured: a layer built without faults passes every call through, and a
//! [`ChaosHandle`] switches injection on and off at run time, atomically, for every clone of the
//! layer and every service made from it. A passed-through call costs one atomic load; a call that
//! meets a fault gets a `steadfast.chaos` span, a `tracing` event and a
//! `steadfast.chaos.injected{fault}` count (see `docs/observability.md`).
//!
//! The lab runs any of its scenarios with this layer on its client:
//! `cargo run --release -p steadfast-lab -- --chaos error=0.05,abort=0.02,latency=0.05:30ms`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_layers::chaos::{ChaosLayer, InjectedFault};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let echo = service_fn(|x: u32| async move { Ok::<_, std::convert::Infallible>(x) });
//! let layer = ChaosLayer::builder()
//!     .latency(0.5, Duration::from_millis(100))
//!     .error(0.1)
//!     .abort(0.1)
//!     .seed(42)
//!     .build()
//!     .unwrap();
//! let svc = layer.layer(echo);
//!
//! let mut failed = 0;
//! for x in 0..1000 {
//!     match svc.clone().oneshot(x).await {
//!         Ok(y) => assert_eq!(x, y),
//!         Err(e) => {
//!             assert!(e.is::<InjectedFault>());
//!             failed += 1;
//!         }
//!     }
//! }
//! assert!((150..250).contains(&failed), "{failed}"); // 20 % of 1000
//!
//! // Chaos off: everything passes.
//! layer.handle().disable();
//! assert_eq!(svc.oneshot(7).await.unwrap(), 7);
//! # }
//! ```

mod error;
mod future;
mod layer;
mod service;

pub use error::{FaultKind, InjectedFault};
pub use future::ResponseFuture;
pub use layer::{ChaosHandle, ChaosLayer, ChaosLayerBuilder, MAX_INJECTED_LATENCY};
pub use service::Chaos;
