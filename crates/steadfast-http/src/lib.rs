//! HTTP and gRPC glue for steadfast's layers: header codecs (`grpc-timeout`, `Retry-After`,
//! `grpc-retry-pushback-ms`, `Idempotency-Key`), deadline propagation across hops, status
//! classifiers, replayable bodies, a standard client stack, and idempotency keys on the client
//! and the server.
//!
//! - [`codec`]: total header codecs with typed errors.
//! - [`propagate`]: [`DeadlineServerLayer`](propagate::DeadlineServerLayer) reads the caller's
//!   deadline from the wire and rejects late requests;
//!   [`DeadlinePropagationLayer`](propagate::DeadlinePropagationLayer) writes what is left of it
//!   into outgoing requests.
//! - [`classify`]: [`HttpClassifier`](classify::HttpClassifier) and
//!   [`GrpcClassifier`](classify::GrpcClassifier) for steadfast's retry layer: retryable
//!   statuses, `Retry-After`, gRPC pushback, and transparent retry of requests that never left.
//! - [`body`]: [`ReplayBody`](body::ReplayBody) and [`HttpReplay`](body::HttpReplay), so that
//!   requests with streaming bodies can be retried.
//! - [`preset`]: [`standard_client`](preset::standard_client), the whole client stack in one
//!   call.
//! - [`route`]: [`RouteLayer`](route::RouteLayer), one policy stack per route (HTTP method
//!   and path pattern, or gRPC service and method), each with its own breaker and limits.
//! - `grpc_config` (feature `tonic`): a gRPC service config (gRFC A6: per-method timeouts,
//!   retries, hedging, retry throttling) parsed, validated and built into stacks over a tonic
//!   `Channel`.
//! - [`idempotency`]: [`IdempotencyKeyLayer`](idempotency::IdempotencyKeyLayer) gives each
//!   logical `POST` one `Idempotency-Key` for all its attempts;
//!   [`IdempotencyLayer`](idempotency::IdempotencyLayer) executes each keyed request once and
//!   replays its response, on memory, Redis or PostgreSQL.
//!
//! Like `steadfast-layers`, every builder validates and returns [`ConfigError`], every client
//! service returns [`BoxError`](steadfast_layers::BoxError), and every decision is traced and
//! counted (`docs/observability.md`). The server layers
//! ([`DeadlineServerLayer`](propagate::DeadlineServerLayer),
//! [`IdempotencyLayer`](idempotency::IdempotencyLayer)) answer with responses and pass the inner
//! service's error type through, so they go straight onto an axum `Router` or a tonic server
//! (`Infallible` stays `Infallible`).
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use tower::{service_fn, ServiceExt};
//! use steadfast_http::preset::standard_client;
//! use steadfast_http::codec::{decode_timeout_ms, REQUEST_TIMEOUT_MS};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), steadfast_layers::BoxError> {
//! // The "network": echo the deadline the callee would see.
//! let peer = service_fn(|req: http::Request<_>| async move {
//!     let left = decode_timeout_ms(&req.headers()[REQUEST_TIMEOUT_MS])?;
//!     Ok::<_, steadfast_http::codec::InvalidHeader>(http::Response::new(Full::new(Bytes::from(format!("{left:?}")))))
//! });
//! let client = standard_client(peer)?;
//! let res = client.oneshot(http::Request::new(Full::new(Bytes::from_static(b"hi")))).await?;
//! assert_eq!(res.status(), 200);
//! # Ok(()) }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod body;
pub mod classify;
pub mod codec;
#[cfg(feature = "serde")]
#[cfg_attr(docsrs, doc(cfg(feature = "serde")))]
pub mod config;
mod error;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod grpc_config;
pub mod idempotency;
pub mod preset;
pub mod propagate;
pub mod respond;
pub mod route;

pub use error::{ConfigError, Problem};
