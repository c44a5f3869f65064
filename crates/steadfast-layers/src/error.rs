//! Errors shared by every layer: the boxed error alias and configuration errors.

use std::fmt;

/// The error type every steadfast service returns, as in tower: any inner error, or one of the
/// noun errors of this crate (`DeadlineExceeded`, `Elapsed`, `GaveUp`), boxed.
///
/// Match on it with [`downcast_ref`](std::error::Error):
///
/// ```
/// use steadfast_layers::{BoxError, deadline::DeadlineExceeded};
/// let err: BoxError = Box::new(DeadlineExceeded::new());
/// assert!(err.downcast_ref::<DeadlineExceeded>().is_some());
/// ```
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A builder was given a configuration that cannot work.
///
/// Every builder in this crate validates what it is given and returns this error instead of
/// panicking.
///
/// ```
/// use steadfast_layers::retry::RetryLayer;
/// let err = RetryLayer::builder().max_attempts(0).build().unwrap_err();
/// assert_eq!(err.field(), "max_attempts");
/// assert!(err.to_string().contains("max_attempts"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    field: &'static str,
    problem: Problem,
}

/// What is wrong with a configuration field.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Problem {
    /// The value must not be zero.
    Zero,
    /// The value is not a finite number.
    NotFinite,
    /// The value is outside the accepted range.
    OutOfRange {
        /// The rejected value, formatted.
        value: String,
        /// The accepted range, formatted.
        accepted: &'static str,
    },
    /// Two fields contradict each other.
    Conflict(&'static str),
}

impl ConfigError {
    pub(crate) fn zero(field: &'static str) -> Self {
        Self {
            field,
            problem: Problem::Zero,
        }
    }

    pub(crate) fn not_finite(field: &'static str) -> Self {
        Self {
            field,
            problem: Problem::NotFinite,
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
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it.
    pub fn problem(&self) -> &Problem {
        &self.problem
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
        }
    }
}

impl std::error::Error for ConfigError {}

/// Checks that an `f64` is finite and inside `[min, max]`.
pub(crate) fn check_f64(
    field: &'static str,
    value: f64,
    min: f64,
    max: f64,
    accepted: &'static str,
) -> Result<f64, ConfigError> {
    if !value.is_finite() {
        return Err(ConfigError::not_finite(field));
    }
    if value < min || value > max {
        return Err(ConfigError::out_of_range(field, value, accepted));
    }
    Ok(value)
}
