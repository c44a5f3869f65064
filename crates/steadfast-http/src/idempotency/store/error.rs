use std::fmt;

use steadfast_layers::BoxError;

use super::Lease;

/// A store operation failed. [`kind`](StoreError::kind) says how; the underlying driver error,
/// if any, is the [`source`](std::error::Error::source).
///
/// Every error is [transient](StoreError::is_transient) or permanent, by its kind. When `begin`
/// fails the server layer does not execute the request (it is never executed without its
/// idempotency record, nor lost silently) and answers problem details: `503` with
/// `Retry-After: 1` for a transient error, `500` without `Retry-After` for a permanent one (see
/// [`Rejection`](crate::idempotency::Rejection)). When `complete` or `release` fail it returns
/// the response it has and traces the failure.
///
/// ```
/// use steadfast_http::idempotency::store::{StoreError, StoreErrorKind};
/// let e = StoreError::unavailable("connection refused");
/// assert_eq!(e.kind(), StoreErrorKind::Unavailable);
/// assert!(e.is_transient());
/// assert_eq!(e.to_string(), "idempotency store unavailable: connection refused");
/// assert!(!StoreError::refused("relation does not exist").is_transient());
/// ```
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    detail: String,
    source: Option<BoxError>,
}

/// How a store operation failed, and so whether retrying may help.
///
/// | kind | transient | the layer answers a failed `begin` with |
/// |---|---|---|
/// | [`Unavailable`](Self::Unavailable) | yes | `503` + `Retry-After: 1` |
/// | [`Timeout`](Self::Timeout) | yes | `503` + `Retry-After: 1` |
/// | [`Capacity`](Self::Capacity) | yes | `503` + `Retry-After: 1` |
/// | [`Corrupt`](Self::Corrupt) | no | `500`, no `Retry-After` |
/// | [`Refused`](Self::Refused) | no | `500`, no `Retry-After` |
/// | [`LeaseLost`](Self::LeaseLost) | no | (never returned by `begin`) |
///
/// ```
/// use steadfast_http::idempotency::store::StoreErrorKind;
/// assert_eq!(StoreErrorKind::LeaseLost.label(), "lease_lost");
/// assert!(StoreErrorKind::Timeout.is_transient());
/// assert!(!StoreErrorKind::Corrupt.is_transient());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The store could not be reached or failed to answer (connection, I/O, pool exhausted, a
    /// failover in progress, a serialization failure). Transient.
    Unavailable,
    /// The store did not answer within the layer's store timeout. Transient.
    Timeout,
    /// A stored record could not be read back (corrupt or written by an incompatible version).
    /// Permanent: the record stays unreadable until it expires or an operator removes it.
    Corrupt,
    /// The caller's lease is no longer the record's: it was taken over after it expired, or the
    /// record was released or has expired. The write was refused (fencing). Permanent for this
    /// lease.
    LeaseLost,
    /// The store is full (the in-memory store's capacity, Redis `OOM`) and no record has
    /// expired. Transient: records expire.
    Capacity,
    /// The store refused the operation and will refuse it again: its table is missing or has
    /// the wrong shape, a permission is lacking, a script or statement is invalid, or it cannot
    /// hold the value. Permanent until an operator fixes the store or the code.
    Refused,
}

impl StoreErrorKind {
    /// A short label for metrics (the `error.type` attribute) and traces.
    pub const fn label(&self) -> &'static str {
        match self {
            StoreErrorKind::Unavailable => "unavailable",
            StoreErrorKind::Timeout => "timeout",
            StoreErrorKind::Corrupt => "corrupt",
            StoreErrorKind::LeaseLost => "lease_lost",
            StoreErrorKind::Capacity => "capacity",
            StoreErrorKind::Refused => "refused",
        }
    }

    /// Whether retrying the operation later may succeed (see the table on [`StoreErrorKind`]).
    pub const fn is_transient(&self) -> bool {
        match self {
            StoreErrorKind::Unavailable | StoreErrorKind::Timeout | StoreErrorKind::Capacity => {
                true
            }
            StoreErrorKind::Corrupt | StoreErrorKind::LeaseLost | StoreErrorKind::Refused => false,
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

    /// The store refused the operation and will refuse it again (permanent); `source` is the
    /// driver's error.
    ///
    /// ```
    /// # use steadfast_http::idempotency::store::{StoreError, StoreErrorKind};
    /// let e = StoreError::refused("permission denied for table steadfast_idempotency");
    /// assert_eq!(e.kind(), StoreErrorKind::Refused);
    /// assert!(!e.is_transient());
    /// ```
    pub fn refused(source: impl Into<BoxError>) -> Self {
        let source = source.into();
        Self {
            kind: StoreErrorKind::Refused,
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
                "lease epoch {} (owner {}) on record {} was taken over, released or expired",
                lease.epoch(),
                lease.owner(),
                lease.id()
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

    /// Whether retrying later may succeed: the store was unreachable, slow or full. `false` for
    /// an error that will recur (see [`StoreErrorKind`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::idempotency::store::StoreError;
    /// assert!(StoreError::timeout(Duration::from_secs(5)).is_transient());
    /// assert!(!StoreError::corrupt("bad row").is_transient());
    /// ```
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
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
            StoreErrorKind::Refused => "idempotency store refused the operation",
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
