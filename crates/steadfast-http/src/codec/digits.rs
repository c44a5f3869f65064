//! Small, allocation-free helpers shared by the codecs.

use http::HeaderValue;

/// Parses a non-empty run of ASCII digits; `None` if empty or anything else is present, and
/// `Some(Err(()))` on overflow of `u64`.
pub(super) fn parse_u64(digits: &[u8]) -> Option<Result<u64, ()>> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for d in digits {
        n = match n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(d - b'0')))
        {
            Some(n) => n,
            None => return Some(Err(())),
        };
    }
    Some(Ok(n))
}

/// Strips optional whitespace (SP and HTAB, RFC 9110 OWS) from both ends.
pub(super) fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |i| i + 1);
    &v[start..end]
}

/// A header value made of `n` in decimal followed by `suffix` (ASCII), without allocating a
/// `String`.
pub(super) fn decimal_value(n: u64, suffix: &[u8]) -> HeaderValue {
    // u64::MAX has 20 digits; the digits end at index 20 and the suffix (at most 4 bytes)
    // follows them.
    let mut buf = [0u8; 24];
    let mut start = 20;
    let mut n = n;
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let suffix = &suffix[..suffix.len().min(4)];
    buf[20..20 + suffix.len()].copy_from_slice(suffix);
    // Digits and an ASCII suffix are always a valid header value.
    HeaderValue::from_bytes(&buf[start..20 + suffix.len()]).unwrap_or(HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_u64(b"0"), Some(Ok(0)));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(Ok(u64::MAX)));
        assert_eq!(parse_u64(b"18446744073709551616"), Some(Err(())));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"1a"), None);
        assert_eq!(decimal_value(0, b"n"), "0n");
        assert_eq!(decimal_value(u64::MAX, b""), "18446744073709551615");
        assert_eq!(trim_ows(b" \t 5 \t"), b"5");
        assert_eq!(trim_ows(b"   "), b"");
    }
}
