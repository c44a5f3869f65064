//! The client layer, [`IdempotencyKeyLayer`]: gives each logical non-idempotent request one
//! `Idempotency-Key`, so that every retry and hedge of it carries the same key and the server
//! executes it once.
//!
//! Put it **outside** retries and hedges: it runs once per logical request, and the retry and
//! hedge layers then copy the keyed request for each attempt. Keyed requests are marked
//! [`Idempotent`](steadfast_layers::hedge::Idempotent), which the hedge layer's default policy
//! requires. [`may_resend`] is the one rule for whether a request may be sent twice (an
//! idempotent method, or a well-formed key); [`IdempotentOrKeyed`] applies it as a hedge policy
//! or around a retry layer's [`Replay`](steadfast_layers::retry::Replay).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use steadfast_http::idempotency::{IdempotencyKeyLayer, IdempotentOrKeyed};
//! use steadfast_layers::retry::{CloneReplay, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let s = seen.clone();
//! let peer = service_fn(move |req: http::Request<String>| {
//!     s.lock().unwrap().push(req.headers()["idempotency-key"].clone());
//!     let n = s.lock().unwrap().len();
//!     async move { if n < 3 { Err("connection reset") } else { Ok(()) } }
//! });
//! let client = ServiceBuilder::new()
//!     .layer(IdempotencyKeyLayer::new())
//!     .layer(RetryLayer::builder().max_attempts(3).replay(IdempotentOrKeyed::wrap(CloneReplay)).seed(1).build().unwrap())
//!     .service(peer);
//! client.oneshot(http::Request::post("/orders").body(String::new()).unwrap()).await.unwrap();
//! let seen = seen.lock().unwrap();
//! assert_eq!(seen.len(), 3);
//! assert!(seen.iter().all(|k| k == &seen[0])); // one key for every attempt
//! # }
//! ```

mod eligibility;
mod layer;
mod service;

pub use eligibility::{is_keyed, may_resend, IdempotentOrKeyed};
pub use layer::{IdempotencyKeyLayer, IdempotencyKeyLayerBuilder};
pub use service::AddIdempotencyKey;
