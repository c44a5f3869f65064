use std::time::Duration;

use http::header::HeaderName;
use http::HeaderValue;

use super::digits::{decimal_value, parse_u64};
use super::{HeaderProblem, InvalidHeader};

/// `grpc-timeout`: the time the caller still waits, sent with every gRPC request that has a
/// deadline.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The largest `grpc-timeout` number: 8 ASCII digits.
const MAX_VALUE: u64 = 99_999_999;

/// The units of `grpc-timeout`, finest first, with their length in nanoseconds.
const UNITS: [(u128, u8); 6] = [
    (1, b'n'),
    (1_000, b'u'),
    (1_000_000, b'm'),
    (1_000_000_000, b'S'),
    (60_000_000_000, b'M'),
    (3_600_000_000_000, b'H'),
];

/// The longest timeout `grpc-timeout` can express: 99,999,999 hours.
pub const MAX_GRPC_TIMEOUT: Duration = Duration::from_secs(MAX_VALUE * 3600);

/// Encodes a timeout as a `grpc-timeout` value: at most 8 digits and a unit, the finest unit in
/// which the value fits.
///
/// **Rounding: down, never up.** A timeout that needs a coarser unit than nanoseconds is
/// truncated to that unit, so the receiver's deadline is never later than the sender's: a callee
/// never works for a caller that has already given up. Because the finest unit that fits is
/// chosen, the value then has at least 6 digits and the loss is under 10 ppm of the timeout
/// (under 1 µs for anything below 100 s). (grpc-go rounds up instead; the difference is below
/// one unit.) Timeouts under 100 ms are exact, in nanoseconds.
///
/// Zero encodes as `0n`, which receivers treat as already expired (grpc-go does the same; the
/// spec asks for a positive integer, so callers should fail fast instead of sending it, as
/// [`DeadlinePropagationLayer`](crate::propagate::DeadlinePropagationLayer) does). A timeout
/// above [`MAX_GRPC_TIMEOUT`] is clamped to `99999999H` (shrinking, never extending).
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::codec::encode_grpc_timeout;
/// assert_eq!(encode_grpc_timeout(Duration::from_millis(50)), "50000000n");
/// assert_eq!(encode_grpc_timeout(Duration::from_secs(1)), "1000000u");
/// assert_eq!(encode_grpc_timeout(Duration::from_nanos(100_000_001)), "100000u"); // truncated
/// assert_eq!(encode_grpc_timeout(Duration::from_secs(3600 * 200_000)), "12000000M");
/// assert_eq!(encode_grpc_timeout(Duration::MAX), "99999999H");
/// ```
pub fn encode_grpc_timeout(timeout: Duration) -> HeaderValue {
    let nanos = timeout.as_nanos();
    for (unit_nanos, unit) in UNITS {
        let value = nanos / unit_nanos;
        if value <= u128::from(MAX_VALUE) {
            return decimal_value(value as u64, &[unit]);
        }
    }
    decimal_value(MAX_VALUE, b"H")
}

/// Decodes a `grpc-timeout` value exactly, per the gRPC over HTTP/2 spec: 1 to 8 ASCII digits
/// followed by one unit (`H` hours, `M` minutes, `S` seconds, `m` milliseconds, `u`
/// microseconds, `n` nanoseconds). No whitespace, sign or other character is accepted. `0`
/// is accepted (an already expired deadline).
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::codec::{decode_grpc_timeout, HeaderProblem};
/// assert_eq!(decode_grpc_timeout("250m"), Ok(Duration::from_millis(250)));
/// assert_eq!(decode_grpc_timeout("2H"), Ok(Duration::from_secs(7200)));
/// assert_eq!(decode_grpc_timeout("5").unwrap_err().problem(), HeaderProblem::BadUnit);
/// assert_eq!(decode_grpc_timeout("1.5S").unwrap_err().problem(), HeaderProblem::NotANumber);
/// assert_eq!(decode_grpc_timeout("").unwrap_err().problem(), HeaderProblem::Empty);
/// ```
pub fn decode_grpc_timeout(value: impl AsRef<[u8]>) -> Result<Duration, InvalidHeader> {
    let err = |p| InvalidHeader::new("grpc-timeout", p);
    let v = value.as_ref();
    let Some((&unit, digits)) = v.split_last() else {
        return Err(err(HeaderProblem::Empty));
    };
    if !matches!(unit, b'H' | b'M' | b'S' | b'm' | b'u' | b'n') {
        return Err(err(HeaderProblem::BadUnit));
    }
    let n = match parse_u64(digits) {
        None => return Err(err(HeaderProblem::NotANumber)),
        Some(_) if digits.len() > 8 => return Err(err(HeaderProblem::TooLong { max_digits: 8 })),
        Some(Ok(n)) => n,
        Some(Err(())) => return Err(err(HeaderProblem::Overflow)),
    };
    Ok(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        _ => Duration::from_nanos(n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_boundaries() {
        assert_eq!(
            encode_grpc_timeout(Duration::from_nanos(99_999_999)),
            "99999999n"
        );
        assert_eq!(
            encode_grpc_timeout(Duration::from_nanos(100_000_000)),
            "100000u"
        );
        assert_eq!(encode_grpc_timeout(Duration::ZERO), "0n");
        assert_eq!(encode_grpc_timeout(MAX_GRPC_TIMEOUT), "99999999H");
        assert_eq!(decode_grpc_timeout("99999999H"), Ok(MAX_GRPC_TIMEOUT));
        assert_eq!(
            decode_grpc_timeout("123456789n").unwrap_err().problem(),
            HeaderProblem::TooLong { max_digits: 8 }
        );
        assert_eq!(
            decode_grpc_timeout("-1S").unwrap_err().problem(),
            HeaderProblem::NotANumber
        );
        assert_eq!(
            decode_grpc_timeout("1s").unwrap_err().problem(),
            HeaderProblem::BadUnit
        );
        assert_eq!(
            decode_grpc_timeout("S").unwrap_err().problem(),
            HeaderProblem::NotANumber
        );
    }
}
