//! Bulkheads: at most `max_concurrent` calls in flight, a bounded queue of at most `max_queue`
//! calls waiting at most `max_wait` each, and an immediate refusal beyond that.
//!
//! [`BulkheadLayer`] isolates a dependency so that when it slows down it can tie up only its
//! own share of the caller's capacity. Every clone of the layer and of its services shares one
//! bulkhead. A call that finds a free slot goes straight through; one that finds the bulkhead
//! full joins the queue (first come, first served) if there is room, and otherwise fails at once
//! with [`Overloaded`] (`queue_full`); a queued call that has not got a slot after `max_wait`
//! fails with [`Overloaded`] (`wait_timeout`). A slot is held until the response future
//! completes or is dropped; a cancelled queued call leaves the queue.
//!
//! A bulkhead is a concurrency limit with a bounded queue: it runs on the same gate as
//! [`ConcurrencyLimitLayer`](crate::limit::ConcurrencyLimitLayer) and the adaptive limit, with
//! the gate's queue bound set. Unlike the concurrency limit in waiting mode, whose queue is
//! unbounded, the bulkhead bounds both the queue and the wait, so memory and latency under
//! overload are bounded too. A queued call leaves the queue when it is handed its slot.
//!
//! Cost of a call that finds a free slot: one CAS to take it, one atomic subtraction to give it
//! back, one `Arc` clone; no allocation, no clock read, and no lock when no call is queued (a
//! slot given back while calls are queued is handed to the first of them through a
//! `tokio::sync::Semaphore`, which takes tokio's internal lock). A queued call allocates once (its wait for the handoff)
//! and reads the clock once.
//!
//! # Changing settings at run time
//!
//! [`BulkheadLayer::handle`] gives a [`BulkheadHandle`] that sets `max_concurrent` while the
//! layer serves, checked by the builder's rule. It is the maximum of the concurrency limit's
//! gate: raised, it serves queued calls at once; lowered below the calls in flight, it drops
//! none and admits nothing new until they drain below it (new calls queue meanwhile).
//!
//! ```
//! use steadfast_layers::bulkhead::BulkheadLayer;
//! let layer = BulkheadLayer::builder(10).max_queue(20).build()?;
//! layer.handle().set_max_concurrent(5)?;
//! assert_eq!(layer.max_concurrent(), 5);
//! # Ok::<(), steadfast_layers::ConfigError>(())
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_layers::bulkhead::{BulkheadLayer, OverloadReason, Overloaded};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let slow = service_fn(|n: u32| async move {
//!     tokio::time::sleep(Duration::from_millis(100)).await;
//!     Ok::<_, std::convert::Infallible>(n)
//! });
//! // One in flight, one waiting at most 150 ms.
//! let svc = BulkheadLayer::builder(1)
//!     .max_queue(1)
//!     .max_wait(Duration::from_millis(150))
//!     .build()
//!     .unwrap()
//!     .layer(slow);
//!
//! let calls = (0..3).map(|n| svc.clone().oneshot(n));
//! let results = futures::future::join_all(calls).await;
//! assert_eq!(results[0].as_ref().unwrap(), &0); // in flight at once
//! assert_eq!(results[1].as_ref().unwrap(), &1); // queued 100 ms, then served
//! let err = results[2].as_ref().unwrap_err();   // no room in the queue
//! assert_eq!(err.downcast_ref::<Overloaded>().unwrap().reason(), OverloadReason::QueueFull);
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
pub use config::BulkheadConfig;
pub use error::{OverloadReason, Overloaded};
pub use future::ResponseFuture;
pub use layer::{BulkheadHandle, BulkheadLayer, BulkheadLayerBuilder, MAX_QUEUE};
pub use service::Bulkhead;
