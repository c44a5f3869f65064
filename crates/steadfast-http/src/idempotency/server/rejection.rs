use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::codec::idempotency_key::InvalidIdempotencyKey;
use crate::idempotency::store::StoreErrorKind;

/// The media type of every rejection (RFC 9457).
///
/// ```
/// assert_eq!(steadfast_http::idempotency::PROBLEM_JSON, "application/problem+json");
/// ```
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Why [`Idempotency`](super::Idempotency) answered a request itself instead of executing or
/// replaying it. Each becomes an RFC 9457 problem-details response
/// (`application/problem+json`) with a stable `type` URI.
///
/// | rejection | status | `type` |
/// |---|---|---|
/// | [`KeyMissing`](Rejection::KeyMissing) | 400 | `urn:steadfast:idempotency:key-missing` |
/// | [`KeyInvalid`](Rejection::KeyInvalid) | 400 | `urn:steadfast:idempotency:key-invalid` |
/// | [`PrincipalMissing`](Rejection::PrincipalMissing) | 403 | `urn:steadfast:idempotency:principal-missing` |
/// | [`BodyTooLarge`](Rejection::BodyTooLarge) | 413 | `urn:steadfast:idempotency:body-too-large` |
/// | [`BodyUnreadable`](Rejection::BodyUnreadable) | 400 | `urn:steadfast:idempotency:body-unreadable` |
/// | [`InFlight`](Rejection::InFlight) | 409 + `Retry-After` | `urn:steadfast:idempotency:in-flight` |
/// | [`Mismatch`](Rejection::Mismatch) | 422 | `urn:steadfast:idempotency:key-reused` |
/// | [`StoreUnavailable`](Rejection::StoreUnavailable) | 503 + `Retry-After: 1` | `urn:steadfast:idempotency:store-unavailable` |
/// | [`StoreFailed`](Rejection::StoreFailed) | 500, no `Retry-After` | `urn:steadfast:idempotency:store-failed` |
/// | [`Internal`](Rejection::Internal) | 500 | `urn:steadfast:idempotency:internal` |
///
/// A failed store call becomes [`StoreUnavailable`](Rejection::StoreUnavailable) when the error
/// is [transient](crate::idempotency::StoreError::is_transient) (retrying later may work) and
/// [`StoreFailed`](Rejection::StoreFailed) when it is permanent (a corrupt record, a missing
/// table, a permission): a `503` with `Retry-After` would invite clients to retry, forever,
/// something that cannot succeed until an operator acts ([`Rejection::store`]).
///
/// The layer never fails with an error of its own: its service's error type is the inner
/// service's, so that it goes straight onto an axum `Router`.
///
/// ```
/// use steadfast_http::idempotency::Rejection;
/// let r = Rejection::Mismatch;
/// assert_eq!(r.status(), 422);
/// let res = r.to_response();
/// assert_eq!(res.headers()["content-type"], "application/problem+json");
/// let doc: serde_json::Value = serde_json::from_slice(res.body()).unwrap();
/// assert_eq!(doc["status"], 422);
/// assert_eq!(doc["type"], "urn:steadfast:idempotency:key-reused");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// The method requires an `Idempotency-Key` and the request has none.
    KeyMissing,
    /// The `Idempotency-Key` header is malformed, too long or repeated.
    KeyInvalid(InvalidIdempotencyKey),
    /// The principal extractor found no principal to scope the key to.
    PrincipalMissing,
    /// The request body is larger than the layer buffers to fingerprint it.
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The request body could not be read.
    BodyUnreadable,
    /// A request with this key is still being processed.
    InFlight {
        /// When to try again (the holder's remaining lease, at least 1 s).
        retry_after: Duration,
    },
    /// The key was first used with a different request (method, path or body).
    Mismatch,
    /// The idempotency store failed with a transient error; the request was not executed.
    StoreUnavailable(StoreErrorKind),
    /// The idempotency store failed with an error that retrying will not clear; the request was
    /// not executed.
    StoreFailed(StoreErrorKind),
    /// The layer's response future was polled after it had completed (a bug in the caller):
    /// there is nothing left to answer.
    Internal,
}

impl Rejection {
    /// The answer to a failed store call: [`StoreUnavailable`](Rejection::StoreUnavailable)
    /// (`503`) if the error is transient, [`StoreFailed`](Rejection::StoreFailed) (`500`) if not.
    ///
    /// ```
    /// use steadfast_http::idempotency::{Rejection, StoreError};
    /// let down = Rejection::store(&StoreError::unavailable("connection refused"));
    /// assert_eq!(down.status(), 503);
    /// assert_eq!(down.to_response().headers()["retry-after"], "1");
    /// let broken = Rejection::store(&StoreError::corrupt("bad row"));
    /// assert_eq!(broken.status(), 500);
    /// assert!(broken.to_response().headers().get("retry-after").is_none());
    /// ```
    pub fn store(error: &crate::idempotency::StoreError) -> Self {
        if error.is_transient() {
            Rejection::StoreUnavailable(error.kind())
        } else {
            Rejection::StoreFailed(error.kind())
        }
    }

    /// The response status.
    ///
    /// ```
    /// use std::time::Duration;
    /// use steadfast_http::idempotency::Rejection;
    /// assert_eq!(Rejection::InFlight { retry_after: Duration::from_secs(3) }.status(), 409);
    /// assert_eq!(Rejection::KeyMissing.problem_type(), "urn:steadfast:idempotency:key-missing");
    /// assert_eq!(Rejection::KeyMissing.title(), "Idempotency-Key is missing");
    /// ```
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::KeyMissing | Rejection::KeyInvalid(_) | Rejection::BodyUnreadable => {
                StatusCode::BAD_REQUEST
            }
            Rejection::PrincipalMissing => StatusCode::FORBIDDEN,
            Rejection::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::InFlight { .. } => StatusCode::CONFLICT,
            Rejection::Mismatch => StatusCode::UNPROCESSABLE_ENTITY,
            Rejection::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::StoreFailed(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Rejection::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short label for metrics (`reason` attribute) and traces.
    ///
    /// ```
    /// assert_eq!(steadfast_http::idempotency::Rejection::KeyMissing.label(), "key_missing");
    /// ```
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::KeyMissing => "key_missing",
            Rejection::KeyInvalid(_) => "key_invalid",
            Rejection::PrincipalMissing => "principal_missing",
            Rejection::BodyTooLarge { .. } => "body_too_large",
            Rejection::BodyUnreadable => "body_unreadable",
            Rejection::InFlight { .. } => "in_flight",
            Rejection::Mismatch => "mismatch",
            Rejection::StoreUnavailable(_) => "store_unavailable",
            Rejection::StoreFailed(_) => "store_failed",
            Rejection::Internal => "internal",
        }
    }

    /// The problem `type` URI.
    pub fn problem_type(&self) -> &'static str {
        match self {
            Rejection::KeyMissing => "urn:steadfast:idempotency:key-missing",
            Rejection::KeyInvalid(_) => "urn:steadfast:idempotency:key-invalid",
            Rejection::PrincipalMissing => "urn:steadfast:idempotency:principal-missing",
            Rejection::BodyTooLarge { .. } => "urn:steadfast:idempotency:body-too-large",
            Rejection::BodyUnreadable => "urn:steadfast:idempotency:body-unreadable",
            Rejection::InFlight { .. } => "urn:steadfast:idempotency:in-flight",
            Rejection::Mismatch => "urn:steadfast:idempotency:key-reused",
            Rejection::StoreUnavailable(_) => "urn:steadfast:idempotency:store-unavailable",
            Rejection::StoreFailed(_) => "urn:steadfast:idempotency:store-failed",
            Rejection::Internal => "urn:steadfast:idempotency:internal",
        }
    }

    /// The problem `title`.
    pub fn title(&self) -> &'static str {
        match self {
            Rejection::KeyMissing => "Idempotency-Key is missing",
            Rejection::KeyInvalid(_) => "Idempotency-Key is invalid",
            Rejection::PrincipalMissing => "No principal to scope the Idempotency-Key to",
            Rejection::BodyTooLarge { .. } => "Request body too large for an idempotent request",
            Rejection::BodyUnreadable => "Request body could not be read",
            Rejection::InFlight { .. } => "A request is outstanding for this Idempotency-Key",
            Rejection::Mismatch => "Idempotency-Key is already used",
            Rejection::StoreUnavailable(_) => "Idempotency store unavailable",
            Rejection::StoreFailed(_) => "Idempotency store failed",
            Rejection::Internal => "Idempotency layer error",
        }
    }

    fn detail(&self) -> String {
        match self {
            Rejection::KeyMissing => "This operation is idempotent and it requires correct usage of Idempotency Key.".to_owned(),
            Rejection::KeyInvalid(e) => format!("{e}. The key must be a Structured Field string, e.g. Idempotency-Key: \"8e03978e-40d5-43e8-bc93-6894a57f9324\"."),
            Rejection::PrincipalMissing => "The request carries no tenant, account or subject to scope its Idempotency-Key to.".to_owned(),
            Rejection::BodyTooLarge { limit } => format!("Requests with an Idempotency-Key may carry at most {limit} bytes of body."),
            Rejection::BodyUnreadable => "The request body ended with an error before it could be fingerprinted.".to_owned(),
            Rejection::InFlight { retry_after } => format!("A request with this Idempotency-Key is still being processed; retry in {} s.", retry_after_secs(*retry_after)),
            Rejection::Mismatch => "This operation is idempotent and it requires correct usage of Idempotency Key. Idempotency Key MUST not be reused across different payloads of this operation.".to_owned(),
            Rejection::StoreUnavailable(kind) => format!("The request was not executed: the idempotency store failed ({}). Retry with the same Idempotency-Key.", kind.label()),
            Rejection::StoreFailed(kind) => format!("The request was not executed: the idempotency store failed with an error that retrying will not clear ({}). This is a server-side fault; retrying the same request fails the same way until it is fixed.", kind.label()),
            Rejection::Internal => "The idempotency layer was asked for an answer it had already given.".to_owned(),
        }
    }

    /// The problem-details response (`Retry-After` on `409` and `503`, never on `500`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use steadfast_http::idempotency::Rejection;
    /// let res = Rejection::InFlight { retry_after: Duration::from_millis(1500) }.to_response();
    /// assert_eq!(res.headers()["retry-after"], "2");
    /// ```
    pub fn to_response(&self) -> Response<Bytes> {
        let status = self.status();
        let doc = serde_json::json!({
            "type": self.problem_type(),
            "title": self.title(),
            "status": status.as_u16(),
            "detail": self.detail(),
        });
        let mut res = Response::new(Bytes::from(doc.to_string()));
        *res.status_mut() = status;
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        let retry_after = match self {
            Rejection::InFlight { retry_after } => Some(retry_after_secs(*retry_after)),
            Rejection::StoreUnavailable(_) => Some(1),
            _ => None,
        };
        if let Some(secs) = retry_after {
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

/// Whole seconds, rounded up, at least 1.
fn retry_after_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.title(), self.status().as_u16())
    }
}
