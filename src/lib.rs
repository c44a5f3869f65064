//! Composable [Tower](https://docs.rs/tower) layers that make calls between services survive
//! slow peers, dead peers, overload and partial failure.
//!
//! The layers wrap any [`tower::Service`](https://docs.rs/tower/latest/tower/trait.Service.html)
//! (a hyper client, a tonic channel, an axum router, or your own): one end-to-end deadline per
//! request, per-attempt timeouts, retries with backoff, jitter and shared budgets, circuit
//! breakers, backpressure (concurrency limits, adaptive limits, bulkheads, rate limits, load
//! shedding, client-side throttling), budgeted hedging, fallbacks and seeded fault injection.
//! Every builder validates its configuration and returns an error instead of panicking; every
//! decision the layers make is traced and counted.
//!
//! This crate is a facade: each part lives in its own crate and is re-exported here behind a
//! feature, so that you build only what you use.
//!
//! # Crate features
//!
//! | feature | default | re-exports | what it adds |
//! |---|---|---|---|
//! | `layers` | yes | `steadfast::layers` ([steadfast-layers](https://docs.rs/steadfast-layers)) | the generic layers above, for any `tower::Service` |
//! | `http` | no | `steadfast::net` ([steadfast-http](https://docs.rs/steadfast-http)) | HTTP and gRPC glue: `grpc-timeout` / `Retry-After` / `Idempotency-Key` codecs, deadline propagation across hops, HTTP and gRPC classifiers, replayable bodies, a standard client preset, idempotency keys on the client and the server with an in-memory store. Named `net` so that it never shadows the `http` crate |
//! | `redis` | no | | the Redis idempotency store (implies `http`) |
//! | `postgres` | no | | the PostgreSQL idempotency store (implies `http`; sqlx with PostgreSQL only) |
//! | `saga` | no | `steadfast::saga` ([steadfast-saga](https://docs.rs/steadfast-saga)) | a saga orchestrator with a durable log on SQLite (`saga::store::SqliteStore`), crash recovery, lease fencing and exactly-once step effects |
//! | `saga-postgres` | no | `steadfast::saga` | the same orchestrator with the PostgreSQL log (`saga::store::PostgresStore`); alone, without the SQLite driver |
//! | `serde` | no | | configuration types that read from JSON, TOML and YAML (durations as `"250ms"`): one per layer (`layers::retry::RetryConfig`, ...), built through the layer's own builder, and with `http`, named policy files (`net::config::PolicySet`); see `docs/config.md` |
//! | `full` | no | | all of the above |
//!
//! Without `redis` and `postgres`, `http` builds no database client. The README lists how many
//! crates each feature adds to a build.
//!
//! # Example
//!
//! The standard client order, outermost first: the total deadline, then retries, each attempt
//! bounded by its own timeout and by what is left of the deadline. Default features only:
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use steadfast::layers::{
//!     classify::Outcome,
//!     deadline::DeadlineLayer,
//!     retry::{Backoff, Jitter, RetryLayer},
//!     timeout::AttemptTimeoutLayer,
//!     BoxError,
//! };
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let sent = Arc::new(AtomicU32::new(0));
//! let counter = Arc::clone(&sent);
//! let client = ServiceBuilder::new()
//!     // 2 s for the whole call, retries included; inherited by everything called inside.
//!     .layer(DeadlineLayer::new(Duration::from_secs(2))?)
//!     // Up to 3 attempts, 25..250 ms exponential backoff with full jitter.
//!     .layer(
//!         RetryLayer::builder()
//!             .max_attempts(3)
//!             .backoff(
//!                 Backoff::exponential(Duration::from_millis(25), Duration::from_millis(250))
//!                     .jitter(Jitter::Full),
//!             )
//!             .classifier(|r: &Result<u16, BoxError>| match r {
//!                 Ok(503) => Outcome::retryable("unavailable"),
//!                 Ok(_) => Outcome::Success,
//!                 Err(_) => Outcome::retryable("transport"),
//!             })
//!             .build()?,
//!     )
//!     // 500 ms per attempt, and never more than the deadline leaves.
//!     .layer(AttemptTimeoutLayer::new(Duration::from_millis(500))?)
//!     .service(service_fn(move |path: &'static str| {
//!         counter.fetch_add(1, Ordering::SeqCst);
//!         // Your hyper / tonic client here; this one is always unavailable on /busy.
//!         async move { Ok::<u16, BoxError>(if path == "/busy" { 503 } else { 200 }) }
//!     }));
//!
//! assert_eq!(client.clone().oneshot("/health").await?, 200);
//! assert_eq!(sent.swap(0, Ordering::SeqCst), 1);
//! // Three attempts, then the last answer.
//! assert_eq!(client.oneshot("/busy").await?, 503);
//! assert_eq!(sent.load(Ordering::SeqCst), 3);
//! # Ok(())
//! # }
//! ```
//!
//! With the `http` feature, `steadfast::net::preset::standard_client` builds this stack for
//! HTTP (plus deadline propagation and replayable bodies) in one call; with `saga`,
//! `steadfast::saga::Saga::builder` defines a saga. The repository's README tours both, and
//! its `examples/` run them against hyper, tonic and axum.

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "layers")]
#[cfg_attr(docsrs, doc(cfg(feature = "layers")))]
#[doc(inline)]
pub use steadfast_layers as layers;

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[doc(inline)]
pub use steadfast_http as net;

/// The one configuration error of every steadfast builder, with the path of the offending field
/// (`retry.max_attempts`), and what is wrong with it. The same type as
/// `steadfast::layers::ConfigError` and `steadfast::net::ConfigError`.
///
/// ```
/// use steadfast::layers::retry::RetryLayer;
/// let err: steadfast::ConfigError = RetryLayer::builder().max_attempts(0).build().unwrap_err();
/// assert_eq!(err.path(), "max_attempts");
/// assert_eq!(err.problem(), &steadfast::Problem::Zero);
/// ```
#[cfg(feature = "layers")]
#[cfg_attr(docsrs, doc(cfg(feature = "layers")))]
pub use steadfast_layers::{ConfigError, Problem};

#[cfg(any(feature = "saga", feature = "saga-postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "saga", feature = "saga-postgres"))))]
#[doc(inline)]
pub use steadfast_saga as saga;

// The README's examples use every capability: compile them as doctests when all are enabled
// (`cargo test --all-features --doc`), without making the README the crate's front page.
#[cfg(all(
    doctest,
    feature = "layers",
    feature = "http",
    feature = "redis",
    feature = "postgres",
    feature = "saga",
    feature = "serde"
))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
