#![doc = include_str!("../README.md")]
//!
//! # Crate features
//!
//! - `layers` (default): the generic layers, re-exported as [`layers`].
//! - `http`: HTTP and gRPC glue, re-exported as `http`.
//! - `saga`: the saga orchestrator with a durable log, re-exported as [`saga`].
//! - `full`: everything.

#[cfg(feature = "layers")]
#[doc(inline)]
pub use steadfast_layers as layers;

#[cfg(feature = "http")]
#[doc(inline)]
pub use steadfast_http as http;
#[cfg(feature = "saga")]
#[doc(inline)]
pub use steadfast_saga as saga;
