// Wall-clock time is an *input* of this module (`now`, and the instant of an HTTP-date): nothing
// here reads the clock. The one place that does is `classify::WallClock::system`.
#![allow(clippy::disallowed_types)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::HeaderName;
use http::HeaderValue;

use super::digits::{decimal_value, parse_u64, trim_ows};
use super::{HeaderProblem, InvalidHeader};

/// `Retry-After` (RFC 9110 §10.2.3).
pub const RETRY_AFTER: HeaderName = http::header::RETRY_AFTER;

/// The latest instant an HTTP-date can express: 9999-12-31 23:59:59 UTC.
const MAX_HTTP_DATE_SECS: u64 = 253_402_300_799;

/// A decoded `Retry-After` value: a delay in seconds or an HTTP-date.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use steadfast_http::codec::RetryAfter;
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_772); // Sun, 06 Nov 1994 08:49:32 GMT
/// let v = RetryAfter::parse("Sun, 06 Nov 1994 08:49:37 GMT")?;
/// assert_eq!(v.delay_from(now), Duration::from_secs(5));
/// assert_eq!(RetryAfter::parse("120")?, RetryAfter::Delay(Duration::from_secs(120)));
/// # Ok::<(), steadfast_http::codec::InvalidHeader>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryAfter {
    /// `delay-seconds`: retry after this long.
    Delay(Duration),
    /// `HTTP-date`: retry no sooner than this wall-clock instant.
    Date(SystemTime),
}

impl RetryAfter {
    /// Parses a `Retry-After` value: `1*DIGIT` delay-seconds, or an HTTP-date in any of the three
    /// formats RFC 9110 requires recipients to accept (IMF-fixdate, RFC 850, asctime).
    /// Surrounding whitespace is ignored. Delay-seconds too large for a `u64` saturate (a server
    /// asking for more than 584 billion years will not be retried in any case).
    ///
    /// ```
    /// use steadfast_http::codec::{HeaderProblem, RetryAfter};
    /// assert!(RetryAfter::parse("Sunday, 06-Nov-94 08:49:37 GMT").is_ok());
    /// assert!(RetryAfter::parse("Sun Nov  6 08:49:37 1994").is_ok());
    /// assert_eq!(RetryAfter::parse("-5").unwrap_err().problem(), HeaderProblem::BadDate);
    /// assert_eq!(RetryAfter::parse(" ").unwrap_err().problem(), HeaderProblem::Empty);
    /// ```
    pub fn parse(value: impl AsRef<[u8]>) -> Result<Self, InvalidHeader> {
        let err = |p| InvalidHeader::new("retry-after", p);
        let v = trim_ows(value.as_ref());
        if v.is_empty() {
            return Err(err(HeaderProblem::Empty));
        }
        match parse_u64(v) {
            Some(Ok(secs)) => return Ok(RetryAfter::Delay(Duration::from_secs(secs))),
            Some(Err(())) => return Ok(RetryAfter::Delay(Duration::from_secs(u64::MAX))),
            None => {}
        }
        let text = std::str::from_utf8(v).map_err(|_| err(HeaderProblem::BadDate))?;
        httpdate::parse_http_date(text)
            .map(RetryAfter::Date)
            .map_err(|_| err(HeaderProblem::BadDate))
    }

    /// How long to wait, seen at wall-clock `now`: the delay itself, or the time until the date
    /// (zero for a date in the past).
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use steadfast_http::codec::RetryAfter;
    /// let past = RetryAfter::Date(UNIX_EPOCH);
    /// assert_eq!(past.delay_from(UNIX_EPOCH + Duration::from_secs(9)), Duration::ZERO);
    /// ```
    pub fn delay_from(&self, now: SystemTime) -> Duration {
        match *self {
            RetryAfter::Delay(d) => d,
            RetryAfter::Date(at) => at.duration_since(now).unwrap_or(Duration::ZERO),
        }
    }

    /// Encodes the value: delay-seconds **rounded up** to whole seconds (a client must not come
    /// back early), or an IMF-fixdate truncated to the second and clamped to the range an
    /// HTTP-date can express (1970 to 9999).
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use steadfast_http::codec::RetryAfter;
    /// assert_eq!(RetryAfter::Delay(Duration::from_millis(1_200)).to_header_value(), "2");
    /// assert_eq!(
    ///     RetryAfter::Date(UNIX_EPOCH + Duration::from_secs(784_111_777)).to_header_value(),
    ///     "Sun, 06 Nov 1994 08:49:37 GMT"
    /// );
    /// ```
    pub fn to_header_value(&self) -> HeaderValue {
        match *self {
            RetryAfter::Delay(d) => encode_retry_after(d),
            RetryAfter::Date(at) => http_date(at),
        }
    }
}

/// `at` as an HTTP-date, clamped to what one can express (1970 to 9999).
fn http_date(at: SystemTime) -> HeaderValue {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(MAX_HTTP_DATE_SECS);
    let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs));
    HeaderValue::from_str(&text)
        .unwrap_or(HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

/// The HTTP-date `after` past `now` (a wall clock's reading), clamped as [`http_date`]: a
/// reading and a span that pass the year 9999 together give its last second, not a panic.
pub(crate) fn http_date_after(now: SystemTime, after: Duration) -> HeaderValue {
    let at = now
        .checked_add(after)
        .unwrap_or(UNIX_EPOCH + Duration::from_secs(MAX_HTTP_DATE_SECS));
    http_date(at)
}

/// Decodes `Retry-After` into the delay to wait, seen at wall-clock `now` (pass
/// `SystemTime::now()`; a date in the past means "now").
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use steadfast_http::codec::decode_retry_after;
/// assert_eq!(decode_retry_after("3", UNIX_EPOCH), Ok(Duration::from_secs(3)));
/// assert!(decode_retry_after("tomorrow", UNIX_EPOCH).is_err());
/// ```
pub fn decode_retry_after(
    value: impl AsRef<[u8]>,
    now: SystemTime,
) -> Result<Duration, InvalidHeader> {
    RetryAfter::parse(value).map(|r| r.delay_from(now))
}

/// Encodes a delay as `Retry-After` delay-seconds, rounded up.
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::codec::encode_retry_after;
/// assert_eq!(encode_retry_after(Duration::from_secs(30)), "30");
/// assert_eq!(encode_retry_after(Duration::from_nanos(1)), "1");
/// ```
pub fn encode_retry_after(delay: Duration) -> HeaderValue {
    let secs = delay
        .as_secs()
        .saturating_add(u64::from(delay.subsec_nanos() > 0));
    decimal_value(secs, b"")
}
