//! Idempotency keys (IETF draft "The Idempotency-Key HTTP Header Field"), on both sides.
//!
//! - **Client**: [`IdempotencyKeyLayer`] gives each logical `POST`/`PATCH` one
//!   `Idempotency-Key` (UUID v7), outside retries and hedges, so that every attempt carries the
//!   same key. [`may_resend`] and [`IdempotentOrKeyed`] tell retries and hedges which requests may be sent
//!   twice.
//! - **Server**: [`IdempotencyLayer`] executes each keyed request once per principal and key:
//!   duplicates get the stored response (`Idempotent-Replayed: true`), or `409` while the first
//!   is in flight, or `422` if the key was used for another request; missing or malformed keys
//!   get `400`. Every such answer is RFC 9457 problem details ([`Rejection`]).
//! - **Stores** ([`store`]): one trait, [`IdempotencyStore`], with an in-memory store and
//!   Redis and PostgreSQL stores (features `redis` and `postgres`, on by default). The in-flight
//!   marker is a lease with an owner and an epoch, renewed while the handler runs: a holder
//!   that dies is taken over when its lease expires, and a holder that was taken over cannot
//!   overwrite the result.
//!
//! Keys expire 24 h after completion by default ([`DEFAULT_EXPIRY`]); stored responses carry
//! `Idempotency-Key-Expires` with the date. Keys are scoped by a [`PrincipalExtractor`], so
//! one tenant can never replay another's response. Telemetry: a `steadfast.idempotency` span
//! per handled request, events for each decision, and the `steadfast.idempotency.*` counters
//! (see `docs/observability.md`), also readable as [`IdempotencyStats`].
//!
//! On a server that also takes deadlines from its callers, put
//! [`DeadlineServerLayer`](crate::propagate::DeadlineServerLayer) **outside** the idempotency
//! layer: an attempt that arrives after its deadline is then answered at once without taking
//! its key, so the retry that follows with the same key still executes. (Its answer's body is
//! [`ResponseBody::default`], an empty body.) Inside it, that answer would take the key, and a
//! policy that stores every response, or a gRPC `DEADLINE_EXCEEDED` (HTTP 200), would replay it
//! for the key's lifetime. A handler cut off by the deadline while it runs is a holder that
//! stopped without an answer, as after a crash: its key stays in flight until the lease expires
//! ([`DEFAULT_LEASE`]; copies get `409` with `Retry-After` meanwhile), then the next copy
//! executes, since nobody knows whether the cut-off handler's effect took place.
//!
//! # Inputs and store failures
//!
//! Every key the layer accepts (up to [`max_key_len`](IdempotencyLayerBuilder::max_key_len),
//! at most 8192 characters) and every principal (any length, any characters) is storable on
//! every store: records are addressed by a fixed-size digest of the principal and key (see
//! [`store`](store#how-records-are-addressed)).
//!
//! When the store fails before execution (`begin`), the request is not executed: a transient
//! failure (unreachable, timed out, full) is answered `503` with `Retry-After: 1`; a permanent
//! one (a corrupt record, a missing table, a permission; see [`StoreErrorKind`]) `500` without
//! `Retry-After`, because retrying cannot clear it.
//!
//! When the store fails **after the handler ran but before its response was stored**
//! (`complete` fails, or times out):
//!
//! - the client gets the handler's response as executed, without `Idempotency-Key-Expires`
//!   (nothing was stored); the failure is counted (`store_errors`, `op = "complete"`) and
//!   traced at WARN;
//! - the record stays in flight under the dead lease, so a retry with the same key gets `409`
//!   with `Retry-After` (the rest of the lease, at most [`DEFAULT_LEASE`] by default) and does
//!   not execute;
//! - once the lease expires, the next retry takes the key over and **executes again**, and its
//!   response is stored and replayed from then on. Nobody recorded the first outcome, so the
//!   layer cannot replay it; it refuses to execute twice only for as long as the lease
//!   protects the first execution. Handlers whose effects must never repeat should make the
//!   effect itself idempotent (e.g. a unique constraint on the key in the same database
//!   transaction).
//!
//! # Example
//!
//! A client with keys and retries, calling a server with the idempotency layer; the server's
//! handler fails the first response on the wire, the client retries, and the retry is a replay.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http_body_util::{BodyExt, Full};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use steadfast_http::idempotency::{HeaderPrincipal, IdempotencyKeyLayer, IdempotencyLayer, RequestBody, IdempotentOrKeyed, store::MemoryStore};
//! use steadfast_layers::{retry::{CloneReplay, RetryLayer}, BoxError};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let executions = Arc::new(AtomicU32::new(0));
//! let e = executions.clone();
//! let handler = service_fn(move |_req: http::Request<RequestBody<Full<Bytes>>>| {
//!     let n = e.fetch_add(1, Ordering::SeqCst) + 1;
//!     async move { Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(format!("order #{n}"))))) }
//! });
//! let server = ServiceBuilder::new()
//!     .layer(IdempotencyLayer::builder(MemoryStore::new())
//!         .principal(HeaderPrincipal::new(http::HeaderName::from_static("x-tenant")))
//!         .build().unwrap())
//!     .service(handler);
//!
//! // The network loses the first response.
//! let lost = Arc::new(AtomicU32::new(0));
//! let network = service_fn(move |req: http::Request<Full<Bytes>>| {
//!     let server = server.clone();
//!     let first = lost.fetch_add(1, Ordering::SeqCst) == 0;
//!     async move {
//!         let res = server.oneshot(req).await?;
//!         if first { return Err::<_, BoxError>("connection reset".into()); }
//!         Ok(res)
//!     }
//! });
//! let client = ServiceBuilder::new()
//!     .layer(IdempotencyKeyLayer::new())
//!     .layer(RetryLayer::builder().replay(IdempotentOrKeyed::wrap(CloneReplay)).seed(1).build().unwrap())
//!     .service(network);
//!
//! let req = http::Request::post("/orders").header("x-tenant", "acme").body(Full::new(Bytes::from("{}"))).unwrap();
//! let res = client.oneshot(req).await.unwrap();
//! assert_eq!(res.headers()["idempotent-replayed"], "true");
//! assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "order #1");
//! assert_eq!(executions.load(Ordering::SeqCst), 1);
//! # }
//! ```

mod client;
mod server;
pub mod store;
mod telemetry;

pub use client::{
    is_keyed, may_resend, AddIdempotencyKey, IdempotencyKeyLayer, IdempotencyKeyLayerBuilder,
    IdempotentOrKeyed,
};
pub use server::{
    ExtensionPrincipal, HeaderPrincipal, Idempotency, IdempotencyLayer, IdempotencyLayerBuilder,
    NoPrincipal, PrincipalExtractor, Rejection, RequestBody, ResponseBody, ResponseFuture,
    SingleTenant, StoreResponses, DEFAULT_EXPIRY, DEFAULT_LEASE, DEFAULT_MAX_REQUEST_BODY,
    DEFAULT_MAX_RESPONSE_BODY, DEFAULT_STORE_TIMEOUT, IDEMPOTENCY_KEY_EXPIRES, IDEMPOTENT_REPLAYED,
    PROBLEM_JSON,
};
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub use store::PostgresStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use store::RedisStore;
pub use store::{IdempotencyStore, MemoryStore, StoreError, StoreErrorKind};
pub use telemetry::IdempotencyStats;
