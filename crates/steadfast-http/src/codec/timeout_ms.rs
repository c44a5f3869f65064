use std::time::Duration;

use http::header::HeaderName;
use http::HeaderValue;

use super::digits::{decimal_value, parse_u64, trim_ows};
use super::{HeaderProblem, InvalidHeader};

/// `x-request-timeout-ms`: the default header carrying a plain HTTP request's remaining time, in
/// whole milliseconds (the same idea as Envoy's `x-envoy-expected-rq-timeout-ms`, without the
/// vendor prefix). Configurable on both propagation layers.
pub const REQUEST_TIMEOUT_MS: HeaderName = HeaderName::from_static("x-request-timeout-ms");

/// Encodes a timeout as whole milliseconds, **rounded down** so that the receiver's deadline is
/// never later than the sender's (a timeout under 1 ms encodes as `0`, already expired).
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::codec::encode_timeout_ms;
/// assert_eq!(encode_timeout_ms(Duration::from_micros(2_999)), "2");
/// ```
pub fn encode_timeout_ms(timeout: Duration) -> HeaderValue {
    decimal_value(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX), b"")
}

/// Decodes a timeout in whole milliseconds: ASCII digits, surrounding whitespace allowed.
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::codec::{decode_timeout_ms, HeaderProblem};
/// assert_eq!(decode_timeout_ms("1500"), Ok(Duration::from_millis(1500)));
/// assert_eq!(decode_timeout_ms("-5").unwrap_err().problem(), HeaderProblem::NotANumber);
/// assert_eq!(decode_timeout_ms("99999999999999999999").unwrap_err().problem(), HeaderProblem::Overflow);
/// ```
pub fn decode_timeout_ms(value: impl AsRef<[u8]>) -> Result<Duration, InvalidHeader> {
    let err = |p| InvalidHeader::new("x-request-timeout-ms", p);
    let v = trim_ows(value.as_ref());
    if v.is_empty() {
        return Err(err(HeaderProblem::Empty));
    }
    match parse_u64(v) {
        None => Err(err(HeaderProblem::NotANumber)),
        Some(Err(())) => Err(err(HeaderProblem::Overflow)),
        Some(Ok(n)) => Ok(Duration::from_millis(n)),
    }
}
