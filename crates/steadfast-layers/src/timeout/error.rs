use std::fmt;
use std::time::Duration;

/// A single attempt took longer than its per-attempt timeout. The end-to-end deadline may still
/// allow another attempt, so this error is retryable by default.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::timeout::Elapsed;
/// let e = Elapsed::new(Duration::from_millis(200));
/// assert_eq!(e.timeout(), Duration::from_millis(200));
/// assert_eq!(e.to_string(), "attempt timed out after 200ms");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Elapsed {
    timeout: Duration,
}

impl Elapsed {
    /// An attempt timed out after `timeout`.
    pub const fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// The configured per-attempt timeout that elapsed.
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt timed out after {:?}", self.timeout)
    }
}

impl std::error::Error for Elapsed {}
