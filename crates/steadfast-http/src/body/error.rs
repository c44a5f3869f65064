use std::fmt;

/// A replayed request body needed bytes that the replay buffer no longer holds: the body was
/// larger than the buffer's limit, or failed, before this copy was sent. The copy fails with
/// this error instead of sending a truncated body; the HTTP and gRPC classifiers call it fatal
/// (`not_replayable`).
///
/// ```
/// use steadfast_http::body::ReplayBufferExceeded;
/// let e = ReplayBufferExceeded::new(65_536);
/// assert_eq!(e.limit(), 65_536);
/// assert_eq!(e.to_string(), "request body exceeds the 65536-byte replay buffer: it cannot be sent again");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayBufferExceeded {
    limit: usize,
}

impl ReplayBufferExceeded {
    /// The error for a buffer of `limit` bytes.
    pub const fn new(limit: usize) -> Self {
        Self { limit }
    }

    /// The buffer's limit in bytes.
    pub const fn limit(&self) -> usize {
        self.limit
    }
}

impl fmt::Display for ReplayBufferExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "request body exceeds the {}-byte replay buffer: it cannot be sent again",
            self.limit
        )
    }
}

impl std::error::Error for ReplayBufferExceeded {}
