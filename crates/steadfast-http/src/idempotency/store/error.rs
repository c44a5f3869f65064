use std::fmt;

use steadfast_layers::BoxError;

use super::Lease;

/// A store operation failed. [`kind`](StoreError::kind) says how; the underlying driver error,
/// if any, is the [`source`](std::error::Error::source).
///
/// The server layer answers `503` (problem details) when `begin` fails, so a request is never
/// executed without its idempotency record and never lost silently; when `complete` or
/// `release` fail it returns the response it has and traces the failure.
///
/// ```
/// use steadfast_http::idempotency::store::{StoreError, StoreErrorKind};
/// let e = StoreError::unavailable("connection refused");
/// assert_eq!(e.kind(), StoreErrorKind::Unavailable);
/// assert_eq!(e.to_string(), "idempotency store unavailable: connection refused");
/// ```
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    detail: String,
    source: Option<BoxError>,
}

/// How a store operation failed.
///
/// ```
/// use steadfast_http::idempotency::store::StoreErrorKind;
/// assert_eq!(StoreErrorKind::LeaseLost.label(), "lease_lost");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store could not be reached or failed to answer (connection, I/O, pool exhausted).
    Unavailable,
    /// The store did not answer within the layer's store timeout.
    Timeout,
    /// A stored record could not be read back (corrupt or written by an incompatible version).
    Corrupt,
    /// The caller's lease is no longer the record's: it was taken over after it expired, or the
    /// record was released or has expired. The write was refused (fencing).
    LeaseLost,
    /// The store is full (the in-memory store's capacity) and no record has expired.
    Capacity,
}

impl StoreErrorKind {
    /// A short label for metrics (`reason` attribute) and traces.
    pub const fn label(&self) -> &'static str {
        match self {
            StoreErrorKind::Unavailable => "unavailable",
            StoreErrorKind::Timeout => "timeout",
            StoreErrorKind::Corrupt => "corrupt",
            StoreErrorKind::LeaseLost => "lease_lost",
            StoreErrorKind::Capacity => "capacity",
        }
    }
}

impl StoreError {
    /// An error of `kind` with a human-readable `detail`.
    ///
    /// ```
    /// use steadfast_http::idempotency::store::{StoreError, StoreErrorKind};
    /// let e = StoreError::new(StoreErrorKind::Capacity, "100000 records");
    /// assert_eq!(e.kind(), StoreErrorKind::Capacity);
    /// ```
    pub fn new(kind: StoreErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            source: None,
        }
    }

    /// The store is unreachable or failed; `source` is the driver's error.
    ///
    /// ```
    /// # use steadfast_http::idempotency::store::{StoreError, StoreErrorKind};
    /// let io = std::io::Error::other("reset");
    /// let e = StoreError::unavailable(io);
    /// assert!(std::error::Error::source(&e).is_some());
    /// ```
    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        Self {
            kind: StoreErrorKind::Unavailable,
            detail: source.to_string(),
            source: Some(source),
        }
    }

    /// A stored record could not be read back.
    ///
    /// ```
    /// # use steadfast_http::idempotency::store::{StoreError, StoreErrorKind};
    /// assert_eq!(StoreError::corrupt("bad status 0").kind(), StoreErrorKind::Corrupt);
    /// ```
    pub fn corrupt(detail: impl Into<String>) -> Self {
        Self::new(StoreErrorKind::Corrupt, detail)
    }

    /// The write under `lease` was refused: the lease is no longer the record's.
    ///
    /// ```
    /// # use steadfast_http::codec::idempotency_key::IdempotencyKey;
    /// # use steadfast_http::idempotency::store::{BeginRequest, Fingerprint, StoreError, StoreErrorKind};
    /// let lease = BeginRequest::new("t", IdempotencyKey::new("k")?, Fingerprint::from_bytes([0; 32])).lease_at(1, false);
    /// assert!(StoreError::lease_lost(&lease).is_lease_lost());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lease_lost(lease: &Lease) -> Self {
        Self::new(
            StoreErrorKind::LeaseLost,
            format!(
                "lease epoch {} (owner {}) on key {:?} was taken over, released or expired",
                lease.epoch(),
                lease.owner(),
                lease.key().as_str()
            ),
        )
    }

    /// The store did not answer in time.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::idempotency::store::{StoreError, StoreErrorKind};
    /// assert_eq!(StoreError::timeout(Duration::from_secs(2)).kind(), StoreErrorKind::Timeout);
    /// ```
    pub fn timeout(after: std::time::Duration) -> Self {
        Self::new(
            StoreErrorKind::Timeout,
            format!("no answer within {} ms", after.as_millis()),
        )
    }

    /// Attaches the underlying error.
    ///
    /// ```
    /// # use steadfast_http::idempotency::store::{StoreError, StoreErrorKind};
    /// let e = StoreError::corrupt("bad row").with_source(std::io::Error::other("decode"));
    /// assert!(std::error::Error::source(&e).is_some());
    /// ```
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// How it failed.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// Whether a write was refused because the lease was lost.
    pub fn is_lease_lost(&self) -> bool {
        self.kind == StoreErrorKind::LeaseLost
    }

    /// The human-readable detail.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            StoreErrorKind::Unavailable => "idempotency store unavailable",
            StoreErrorKind::Timeout => "idempotency store timed out",
            StoreErrorKind::Corrupt => "corrupt idempotency record",
            StoreErrorKind::LeaseLost => "idempotency lease lost",
            StoreErrorKind::Capacity => "idempotency store full",
        };
        write!(f, "{what}: {}", self.detail)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
