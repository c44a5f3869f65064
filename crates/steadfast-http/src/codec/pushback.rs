use std::time::Duration;

use http::header::HeaderName;
use http::HeaderValue;

use super::digits::{decimal_value, parse_u64};
use super::{HeaderProblem, InvalidHeader};

/// `grpc-retry-pushback-ms` (gRPC A6): the server's word on when, or whether, to retry.
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// Encodes a pushback delay in whole milliseconds, **rounded up** (the server asks the client to
/// wait at least this long, so a client must never come back earlier).
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::codec::encode_grpc_retry_pushback;
/// assert_eq!(encode_grpc_retry_pushback(Duration::from_micros(1_001)), "2");
/// assert_eq!(encode_grpc_retry_pushback(Duration::ZERO), "0");
/// ```
pub fn encode_grpc_retry_pushback(delay: Duration) -> HeaderValue {
    let ms = delay.as_nanos().div_ceil(1_000_000);
    decimal_value(u64::try_from(ms).unwrap_or(u64::MAX), b"")
}

/// The pushback value that tells clients not to retry at all: `-1`.
///
/// ```
/// use steadfast_http::codec::{decode_grpc_retry_pushback, encode_grpc_do_not_retry};
/// assert!(decode_grpc_retry_pushback(encode_grpc_do_not_retry()).is_err());
/// ```
pub fn encode_grpc_do_not_retry() -> HeaderValue {
    HeaderValue::from_static("-1")
}

/// Decodes `grpc-retry-pushback-ms`: a non-negative decimal integer is the delay before the next
/// attempt. Per gRPC A6, a **negative or unparseable value means "do not retry"**: both come
/// back as an error ([`HeaderProblem::Negative`] for `-N`, [`HeaderProblem::NotANumber`] or
/// [`HeaderProblem::Overflow`] otherwise), and the gRPC classifier turns any error into
/// [`Outcome::Pushback`](steadfast_layers::classify::Outcome::Pushback). No whitespace or `+`
/// sign is accepted.
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::codec::{decode_grpc_retry_pushback, HeaderProblem};
/// assert_eq!(decode_grpc_retry_pushback("250"), Ok(Duration::from_millis(250)));
/// assert_eq!(decode_grpc_retry_pushback("-1").unwrap_err().problem(), HeaderProblem::Negative);
/// assert_eq!(decode_grpc_retry_pushback("soon").unwrap_err().problem(), HeaderProblem::NotANumber);
/// ```
pub fn decode_grpc_retry_pushback(value: impl AsRef<[u8]>) -> Result<Duration, InvalidHeader> {
    let err = |p| InvalidHeader::new("grpc-retry-pushback-ms", p);
    let v = value.as_ref();
    if v.is_empty() {
        return Err(err(HeaderProblem::Empty));
    }
    if let Some(rest) = v.strip_prefix(b"-") {
        return match parse_u64(rest) {
            // `-0` is zero, as every gRPC implementation parses it.
            Some(Ok(0)) => Ok(Duration::ZERO),
            Some(_) => Err(err(HeaderProblem::Negative)),
            None => Err(err(HeaderProblem::NotANumber)),
        };
    }
    match parse_u64(v) {
        None => Err(err(HeaderProblem::NotANumber)),
        Some(Err(())) => Err(err(HeaderProblem::Overflow)),
        Some(Ok(ms)) => Ok(Duration::from_millis(ms)),
    }
}
