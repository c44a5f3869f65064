//! Concurrency limits shared by every clone: at most `max_in_flight` calls at once, globally or
//! per key, failing fast or waiting for a permit.
//!
//! [`ConcurrencyLimitLayer`] counts calls in flight on one atomic counter (a "gate", with a
//! FIFO queue for the calls that wait) that every clone of the layer, and every clone of the
//! services it makes, shares. (tower's
//! `ConcurrencyLimitLayer` gives each service it makes its own semaphore and its
//! `GlobalConcurrencyLimitLayer` shares one; neither can key it, fail fast or bound the wait, and
//! both take the permit in `poll_ready`.) A call takes a permit when it is made and holds it
//! until its response future completes or is dropped.
//!
//! - **Fail fast** (the default): a call that finds every permit taken fails at once with
//!   [`Overloaded`] (`at_capacity`), without calling the inner service.
//! - **Wait** ([`wait`](ConcurrencyLimitLayerBuilder::wait)): the call queues for a permit, in
//!   arrival order; with [`max_wait`](ConcurrencyLimitLayerBuilder::max_wait) it gives up after
//!   that long with [`Overloaded`] (`wait_timeout`).
//! - **Per key** ([`key_by`](ConcurrencyLimitLayerBuilder::key_by)): each key (a tenant, a
//!   user, a route) gets its own `max_in_flight`; the table of keys is bounded
//!   ([`max_keys`](ConcurrencyLimitLayerBuilder::max_keys)): keys with nothing in flight are
//!   swept out when it fills, and a new key that finds it full of busy keys fails with
//!   [`Overloaded`] (`too_many_keys`). See [`keyed`](crate::keyed).
//!
//! Cost of an admitted call: one CAS to take its permit, one atomic subtraction to give it back
//! and one `Arc` clone (held by the permit); no allocation, no clock read, and no lock when no
//! call is waiting (keyed: plus one shared read lock on the key table). Giving a permit back
//! while calls wait takes one more CAS and hands it to the first of them through a
//! `tokio::sync::Semaphore`, which takes tokio's internal lock; so does a waiting call when it
//! queues or is cancelled. Only a call
//! that waits allocates (its waiting state, its span and its wait for the handoff, boxed) and
//! reads the clock (when a `max_wait` or wait durations are recorded). Telemetry is listed in
//! `docs/observability.md`.
//!
//! # Changing settings at run time
//!
//! [`ConcurrencyLimitLayer::handle`] gives a [`ConcurrencyLimitHandle`] that sets the limit while
//! the layer serves, checked by the builder's rule (the same
//! [`ConfigError`](crate::ConfigError)), for every key. No call in flight is dropped: lowered
//! below the calls in flight, the limit admits nothing new (new calls wait, or are refused when
//! the layer fails fast) until they drain below it; raised, it admits waiting calls at once. The
//! gate's maximum is one atomic, so the call path is unchanged.
//!
//! ```
//! use steadfast_layers::limit::ConcurrencyLimitLayer;
//! let layer = ConcurrencyLimitLayer::builder(32).wait().build()?;
//! let handle = layer.handle();
//! handle.set_max_in_flight(8)?;
//! assert_eq!(layer.max_in_flight(), 8);
//! # Ok::<(), steadfast_layers::ConfigError>(())
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_layers::limit::{ConcurrencyLimitLayer, OverloadReason, Overloaded};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // A slow peer: 1 s per call.
//! let peer = service_fn(|tenant: u32| async move {
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//!     Ok::<_, std::convert::Infallible>(tenant)
//! });
//! // One call per tenant at a time; a second call waits at most 100 ms.
//! let svc = ConcurrencyLimitLayer::builder(1)
//!     .key_by(|tenant: &u32| *tenant)
//!     .max_wait(Duration::from_millis(100))
//!     .build()
//!     .unwrap()
//!     .layer(peer);
//!
//! let a = tokio::spawn(svc.clone().oneshot(7));
//! tokio::task::yield_now().await; // let tenant 7's first call take its permit
//! let (b, c) = tokio::join!(svc.clone().oneshot(7), svc.clone().oneshot(8));
//! let err = b.unwrap_err();
//! assert_eq!(err.downcast_ref::<Overloaded>().unwrap().reason(), OverloadReason::WaitTimeout);
//! assert_eq!(c.unwrap(), 8); // another tenant is not held up
//! assert_eq!(a.await.unwrap().unwrap(), 7);
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
pub use config::ConcurrencyLimitConfig;
pub use error::{OverloadReason, Overloaded};
pub use future::ResponseFuture;
pub use layer::{ConcurrencyLimitHandle, ConcurrencyLimitLayer, ConcurrencyLimitLayerBuilder};
pub use service::ConcurrencyLimit;

pub(crate) use layer::validate_wait;
