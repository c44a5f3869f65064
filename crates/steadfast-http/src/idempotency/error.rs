use std::fmt;

use steadfast_layers::Problem;

/// An idempotency layer or store builder was given a configuration that cannot work.
///
/// The same shape as [`steadfast_layers::ConfigError`]: the offending field, as the builder
/// method is called, and a [`Problem`].
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::idempotency::{IdempotencyLayer, store::MemoryStore};
/// let err = IdempotencyLayer::builder(MemoryStore::new())
///     .single_tenant()
///     .lease(Duration::ZERO)
///     .build()
///     .unwrap_err();
/// assert_eq!(err.field(), "lease");
/// assert!(err.to_string().contains("lease"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct IdempotencyConfigError {
    field: &'static str,
    problem: Problem,
}

impl IdempotencyConfigError {
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
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// What is wrong with it.
    pub fn problem(&self) -> &Problem {
        &self.problem
    }
}

impl fmt::Display for IdempotencyConfigError {
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
            _ => write!(f, "invalid configuration: `{}`", self.field),
        }
    }
}

impl std::error::Error for IdempotencyConfigError {}
