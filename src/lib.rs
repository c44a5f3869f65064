#![doc = include_str!("../README.md")]
//!
//! # Crate features
//!
//! - `layers` (default): the generic layers, re-exported as [`layers`].
//! - `full`: everything.

#[cfg(feature = "layers")]
#[doc(inline)]
pub use steadfast_layers as layers;
