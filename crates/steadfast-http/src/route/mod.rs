//! Per-route policies: one stack per route over one transport, chosen per request by HTTP
//! method and path pattern, or by gRPC service and method.
//!
//! [`RouteLayer`] holds an ordered table of ([`RouteMatch`], layer) pairs and an optional
//! fallback layer. Applied to a transport that can be cloned (a hyper-util client, a tonic
//! `Channel`), it builds a [`Router`]: each route's layer wraps its own clone of the transport,
//! so each route has **its own state** (its breaker, its limits, its learned hedge delay), and a
//! breaker that opens on `/payments` does not refuse `/search`. What the routes should share
//! is shared by giving their layers the same `Arc`: a
//! [`RatioBudget`](steadfast_layers::retry::RatioBudget) or
//! [`TokenBucket`](steadfast_layers::retry::TokenBucket) passed to several routes' retry layers
//! caps their retries together. (Likewise, one breaker layer value cloned into two routes is one
//! breaker: a layer's clones share its state.)
//!
//! - **From a file**: [`PolicySet::route_layer`](crate::config::PolicySet::route_layer)
//!   (feature `serde`) builds this table from a policy file's `routes` and `fallback`.
//! - **Matching**: the **first** route that matches takes the request, in the order the routes
//!   were added (Envoy's rule for its route tables): put specific routes before general ones.
//!   The choice is the reader's to see in one place, with no precedence rules to learn;
//!   [`Router::route_of`] says which route a request would take.
//! - **No match**: the fallback's stack, or, without a fallback, the call fails before anything
//!   is sent with [`NoRoute`], an error (the router sits on the client side, where the caller
//!   expects an error, as from an unknown host, not a made-up `404` or `UNIMPLEMENTED`).
//! - **Readiness**: the router is always ready; each call drives the chosen route's
//!   `poll_ready` inside its [`ResponseFuture`] (as axum's `Router` and tower's `Oneshot` do),
//!   so one route at its concurrency limit never holds up the others.
//! - **One layer type**: every route's layer has the same type `L` (the router holds them in one
//!   table). Vary the settings, not the shape: the presets
//!   ([`StandardClientLayer`](crate::preset::StandardClientLayer) with a breaker in its slot)
//!   give every route the same shape with its own numbers; a route that needs no breaker gets
//!   one that never opens, or a `tower::util::Either` of two shapes.
//!
//! # Example
//!
//! `/search` is retried; `/payments` is tried once behind a breaker that opens after two
//! failures, and its open breaker leaves `/search` alone:
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use http::Method;
//! use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};
//! use steadfast_http::route::{RouteLayer, RouteMatch};
//! use steadfast_layers::breaker::{BreakDuration, CircuitBreakerLayer, CircuitOpen};
//! use steadfast_layers::classify::Outcome;
//! use steadfast_layers::retry::{NotReplayable, RetryLayer};
//! use steadfast_layers::BoxError;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), BoxError> {
//! // The transport: both endpoints fail, /search only the first time.
//! let sent = Arc::new(AtomicU32::new(0));
//! let s = sent.clone();
//! let transport = service_fn(move |req: http::Request<&'static str>| {
//!     let n = s.fetch_add(1, Ordering::SeqCst);
//!     let ok = req.uri().path().starts_with("/search") && n > 0;
//!     async move { Ok::<_, BoxError>(http::Response::new(if ok { 200u16 } else { 503 })) }
//! });
//! fn failed(r: &Result<http::Response<u16>, BoxError>) -> Outcome {
//!     match r {
//!         Ok(res) if *res.body() == 200 => Outcome::Success,
//!         _ => Outcome::retryable("unavailable"),
//!     }
//! }
//! fn copy(r: &mut http::Request<&'static str>) -> Result<http::Request<&'static str>, NotReplayable> {
//!     let mut c = http::Request::new(*r.body());
//!     *c.method_mut() = r.method().clone();
//!     *c.uri_mut() = r.uri().clone();
//!     Ok(c)
//! }
//! // Every route has the same shape: retries around a breaker.
//! let policy = |attempts: u32, failures: u32| -> Result<_, steadfast_http::ConfigError> {
//!     Ok(ServiceBuilder::new()
//!         .layer(RetryLayer::builder().max_attempts(attempts).no_budget().replay(copy).classifier(failed).build()?)
//!         .layer(
//!             CircuitBreakerLayer::builder()
//!                 .consecutive_failures(failures)
//!                 .break_duration(BreakDuration::constant(Duration::from_secs(60)))
//!                 .classifier(failed)
//!                 .build()?,
//!         )
//!         .into_inner())
//! };
//! let client = RouteLayer::builder()
//!     .route(RouteMatch::http("/search/*")?, policy(3, 1000)?)
//!     .route(RouteMatch::http("/payments/{id}")?.method(Method::POST), policy(1, 2)?)
//!     .build()?
//!     .layer(transport);
//!
//! let req = |m: Method, p: &str| http::Request::builder().method(m).uri(p).body("").unwrap();
//! for _ in 0..2 {
//!     let res = client.clone().oneshot(req(Method::POST, "/payments/7")).await?;
//!     assert_eq!(*res.body(), 503);
//! }
//! // The payments breaker is open: refused without a send (the retry layer says why).
//! let err = client.clone().oneshot(req(Method::POST, "/payments/7")).await.unwrap_err();
//! let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
//! while let Some(e) = cause.filter(|e| !e.is::<CircuitOpen>()) { cause = e.source(); }
//! assert!(cause.is_some(), "{err}");
//! assert_eq!(sent.load(Ordering::SeqCst), 2);
//! // /search has its own breaker, closed.
//! let res = client.clone().oneshot(req(Method::GET, "/search/books")).await?;
//! assert_eq!(*res.body(), 200);
//! # Ok(()) }
//! ```

mod error;
mod future;
mod layer;
mod matcher;
mod service;

pub use error::NoRoute;
pub use future::ResponseFuture;
pub use layer::{RouteLayer, RouteLayerBuilder};
pub use matcher::RouteMatch;
pub use service::Router;
