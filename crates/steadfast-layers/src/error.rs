//! Errors shared by every layer: the boxed error alias and configuration errors.

use std::borrow::Cow;
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

/// A configuration that cannot work, and where it is: the one configuration error of every
/// steadfast builder (layers, HTTP glue, presets).
///
/// Every builder validates what it is given and returns this error instead of panicking. Its
/// [`path`](Self::path) names the offending field as the builder method is called, prefixed by
/// the builders it is nested in, dot-separated: `max_attempts` from a retry layer's builder,
/// `retry.max_attempts` from a preset's `.retry(..)`, `break_duration.cap` for a part of a
/// setting. Code that nests a builder (a preset, a configuration file loader) adds its part
/// with [`at`](Self::at).
///
/// ```
/// use steadfast_layers::{retry::RetryLayer, ConfigError, Problem};
/// let err = RetryLayer::builder().max_attempts(0).build().unwrap_err();
/// assert_eq!(err.path(), "max_attempts");
/// assert_eq!(err.problem(), &Problem::Zero);
/// let err = err.at("routes[2].retry");
/// assert_eq!(err.path(), "routes[2].retry.max_attempts");
/// assert_eq!(err.to_string(), "invalid configuration: `routes[2].retry.max_attempts` must not be zero");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    path: Cow<'static, str>,
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
    /// An error at `path` (a field, or a dotted path to it), for `problem`.
    ///
    /// ```
    /// use steadfast_layers::{ConfigError, Problem};
    /// let e = ConfigError::new("lease.ttl", Problem::Zero);
    /// assert_eq!(e.path(), "lease.ttl");
    /// ```
    pub fn new(path: impl Into<Cow<'static, str>>, problem: Problem) -> Self {
        Self {
            path: path.into(),
            problem,
        }
    }

    /// `path` must not be zero.
    ///
    /// ```
    /// # use steadfast_layers::{ConfigError, Problem};
    /// assert_eq!(ConfigError::zero("max_keys").problem(), &Problem::Zero);
    /// ```
    pub fn zero(path: impl Into<Cow<'static, str>>) -> Self {
        Self::new(path, Problem::Zero)
    }

    /// `path` must be a finite number.
    ///
    /// ```
    /// # use steadfast_layers::{ConfigError, Problem};
    /// assert_eq!(ConfigError::not_finite("ratio").problem(), &Problem::NotFinite);
    /// ```
    pub fn not_finite(path: impl Into<Cow<'static, str>>) -> Self {
        Self::new(path, Problem::NotFinite)
    }

    /// `path` is `value`, outside the `accepted` range.
    ///
    /// ```
    /// # use steadfast_layers::ConfigError;
    /// let e = ConfigError::out_of_range("max_hedges", 11, "[1, 10]");
    /// assert_eq!(e.to_string(), "invalid configuration: `max_hedges` = 11 is outside [1, 10]");
    /// ```
    pub fn out_of_range(
        path: impl Into<Cow<'static, str>>,
        value: impl fmt::Debug,
        accepted: &'static str,
    ) -> Self {
        Self::new(
            path,
            Problem::OutOfRange {
                value: format!("{value:?}"),
                accepted,
            },
        )
    }

    /// `path` contradicts another setting, for the reason `why`.
    ///
    /// ```
    /// # use steadfast_layers::ConfigError;
    /// let e = ConfigError::conflict("mode", "needs a single breaker");
    /// assert_eq!(e.to_string(), "invalid configuration: `mode`: needs a single breaker");
    /// ```
    pub fn conflict(path: impl Into<Cow<'static, str>>, why: &'static str) -> Self {
        Self::new(path, Problem::Conflict(why))
    }

    /// The same error, nested under `parent`: the path becomes `parent.path`.
    ///
    /// ```
    /// # use steadfast_layers::ConfigError;
    /// assert_eq!(ConfigError::zero("max").at("backoff").at("retry").path(), "retry.backoff.max");
    /// ```
    #[must_use]
    pub fn at(self, parent: &str) -> Self {
        Self {
            path: Cow::Owned(format!("{parent}.{}", self.path)),
            problem: self.problem,
        }
    }

    /// The dotted path of the offending field, each part as the builder method is called.
    ///
    /// ```
    /// # use steadfast_layers::retry::RetryLayer;
    /// assert_eq!(RetryLayer::builder().max_attempts(0).build().unwrap_err().path(), "max_attempts");
    /// ```
    pub fn path(&self) -> &str {
        &self.path
    }

    /// What is wrong with it.
    ///
    /// ```
    /// # use steadfast_layers::{retry::RetryLayer, Problem};
    /// let err = RetryLayer::builder().max_attempts(0).build().unwrap_err();
    /// assert_eq!(err.problem(), &Problem::Zero);
    /// ```
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = &self.path;
        match &self.problem {
            Problem::Zero => write!(f, "invalid configuration: `{path}` must not be zero"),
            Problem::NotFinite => {
                write!(f, "invalid configuration: `{path}` must be a finite number")
            }
            Problem::OutOfRange { value, accepted } => write!(
                f,
                "invalid configuration: `{path}` = {value} is outside {accepted}"
            ),
            Problem::Conflict(why) => write!(f, "invalid configuration: `{path}`: {why}"),
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
