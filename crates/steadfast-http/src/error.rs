//! Configuration errors of this crate's builders: the one [`ConfigError`] of every steadfast
//! builder, from `steadfast-layers` (the presets build layers of both crates and return it
//! unchanged, their own part of the path added).
//!
//! ```
//! use std::time::Duration;
//! use steadfast_http::propagate::DeadlinePropagationLayer;
//! let err = DeadlinePropagationLayer::builder().max_timeout(Duration::ZERO).build().unwrap_err();
//! assert_eq!(err.path(), "max_timeout");
//! // The same type as the layers' error.
//! let _: steadfast_layers::ConfigError = err;
//! ```

pub use steadfast_layers::{ConfigError, Problem};
