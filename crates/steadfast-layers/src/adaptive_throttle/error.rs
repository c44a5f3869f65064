//! The error this layer returns when it refuses a call: the shared [`Overloaded`] noun.

pub use crate::overload::{OverloadReason, Overloaded};
