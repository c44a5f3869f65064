// The README's examples use every capability: compile them as doctests when all are enabled.
#![cfg_attr(
    all(
        feature = "layers",
        feature = "http",
        feature = "redis",
        feature = "postgres",
        feature = "saga"
    ),
    doc = include_str!("../README.md")
)]
#![cfg_attr(
    not(all(
        feature = "layers",
        feature = "http",
        feature = "redis",
        feature = "postgres",
        feature = "saga"
    )),
    doc = "Composable Tower layers that make calls between services survive the real world. \
           See the README for a tour (its examples are compiled with `--all-features`)."
)]
//!
//! # Crate features
//!
//! - `layers` (default): the generic layers, re-exported as [`layers`].
//! - `http`: HTTP and gRPC glue, re-exported as `net` (so that it never shadows the `http` crate), with the in-memory idempotency store.
//! - `redis`, `postgres`: the idempotency stores on Redis and on PostgreSQL (each implies
//!   `http`); without them `http` builds neither client library.
//! - `saga`: the saga orchestrator with a durable log, re-exported as [`saga`].
//! - `full`: everything.

#[cfg(feature = "layers")]
#[doc(inline)]
pub use steadfast_layers as layers;

#[cfg(feature = "http")]
#[doc(inline)]
pub use steadfast_http as net;
#[cfg(feature = "saga")]
#[doc(inline)]
pub use steadfast_saga as saga;
