//! Configuration errors of this crate's builders.

use std::fmt;

pub use steadfast_layers::Problem;

/// A builder of this crate was given a configuration that cannot work.
///
/// It mirrors [`steadfast_layers::ConfigError`] (the field, as the builder method is called, and
/// the [`Problem`]), and converts from it, so that the [presets](crate::preset), which build
/// layers of both crates, return one error type.
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::propagate::DeadlinePropagationLayer;
/// let err = DeadlinePropagationLayer::builder().max_timeout(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err.field(), "max_timeout");
/// assert!(err.to_string().contains("max_timeout"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    field: &'static str,
    problem: Problem,
}

impl ConfigError {
    pub(crate) fn zero(field: &'static str) -> Self {
        Self {
            field,
            problem: Problem::Zero,
        }
    }

    pub(crate) fn out_of_range(
        field: &'static str,
        value: impl fmt::Debug,
        accepted: &'static str,
    ) -> Self {
        Self {
            field,
            problem: Problem::OutOfRange {
                value: format!("{value:?}"),
                accepted,
            },
        }
    }

    pub(crate) fn conflict(field: &'static str, why: &'static str) -> Self {
        Self {
            field,
            problem: Problem::Conflict(why),
        }
    }

    /// The name of the offending field, as the builder method is called.
    ///
    /// ```
    /// # use steadfast_http::body::ReplayBodyLayer;
    /// let err = ReplayBodyLayer::with_limit(usize::MAX).unwrap_err();
    /// assert_eq!(err.field(), "limit");
    /// ```
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it.
    ///
    /// ```
    /// # use steadfast_http::{body::ReplayBodyLayer, Problem};
    /// let err = ReplayBodyLayer::with_limit(usize::MAX).unwrap_err();
    /// assert!(matches!(err.problem(), Problem::OutOfRange { .. }));
    /// ```
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
}

impl From<steadfast_layers::ConfigError> for ConfigError {
    fn from(e: steadfast_layers::ConfigError) -> Self {
        Self {
            field: e.field(),
            problem: e.problem().clone(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::Zero => write!(
                f,
                "invalid configuration: `{}` must not be zero",
                self.field
            ),
            Problem::NotFinite => write!(
                f,
                "invalid configuration: `{}` must be a finite number",
                self.field
            ),
            Problem::OutOfRange { value, accepted } => write!(
                f,
                "invalid configuration: `{}` = {value} is outside {accepted}",
                self.field
            ),
            Problem::Conflict(why) => {
                write!(f, "invalid configuration: `{}`: {why}", self.field)
            }
            other => write!(f, "invalid configuration: `{}`: {other:?}", self.field),
        }
    }
}

impl std::error::Error for ConfigError {}
