use std::fmt;

use crate::BoxError;

/// The fallback itself failed: it carries why the fallback ran ([`FallbackFailed::reason`]) and
/// the fallback's own error as its [`source`](std::error::Error::source).
///
/// ```
/// use steadfast_layers::fallback::FallbackFailed;
/// let e = FallbackFailed::new("deadline", "cache unavailable".into());
/// assert_eq!(e.reason(), "deadline");
/// assert_eq!(e.to_string(), "fallback failed (it ran on: deadline)");
/// assert_eq!(std::error::Error::source(&e).unwrap().to_string(), "cache unavailable");
/// ```
#[derive(Debug)]
pub struct FallbackFailed {
    reason: &'static str,
    source: BoxError,
}

impl FallbackFailed {
    /// The fallback run for a `reason` failure failed with `source`.
    pub fn new(reason: &'static str, source: BoxError) -> Self {
        Self { reason, source }
    }

    /// Why the fallback ran (the policy's label, e.g. `"deadline"`).
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// Takes the fallback's own error.
    ///
    /// ```
    /// # use steadfast_layers::fallback::FallbackFailed;
    /// let e = FallbackFailed::new("error", "boom".into());
    /// assert_eq!(e.into_source().to_string(), "boom");
    /// ```
    pub fn into_source(self) -> BoxError {
        self.source
    }
}

impl fmt::Display for FallbackFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fallback failed (it ran on: {})", self.reason)
    }
}

impl std::error::Error for FallbackFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source as &(dyn std::error::Error + 'static))
    }
}
