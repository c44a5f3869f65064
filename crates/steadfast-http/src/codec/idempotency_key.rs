//! The `Idempotency-Key` header field (IETF draft "The Idempotency-Key HTTP Header Field").
//!
//! Its value is a Structured Field *string* (RFC 8941 §3.3.3): a double-quoted sequence of
//! printable ASCII (`%x20-7E`) in which `"` and `\` are escaped with a backslash, e.g.
//! `Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"`. [`IdempotencyKey`] holds the
//! unescaped value; [`IdempotencyKey::decode`] parses a header value and
//! [`IdempotencyKey::to_header_value`] serializes one. Keys are non-empty and at most
//! [`DEFAULT_MAX_LEN`] characters unless another limit is given. Decoding never panics, whatever
//! the bytes; every failure is an [`InvalidIdempotencyKey`] that says what is wrong.
//!
//! Leading and trailing spaces around the field value are ignored (RFC 8941 §4.2). Parameters
//! (`"k";a=1`) are rejected: the draft defines none, and a strict parser keeps two servers from
//! disagreeing about which key a request carries. Several `Idempotency-Key` field lines are
//! rejected too ([`InvalidIdempotencyKey::Multiple`]): combined, they are not a single string.
//!
//! ```
//! use steadfast_http::codec::idempotency_key::{IdempotencyKey, InvalidIdempotencyKey, IDEMPOTENCY_KEY};
//!
//! let key = IdempotencyKey::decode(br#""order-42 \"retry\"""#)?;
//! assert_eq!(key.as_str(), r#"order-42 "retry""#);
//! assert_eq!(key.to_header_value(), r#""order-42 \"retry\"""#);
//!
//! assert_eq!(IdempotencyKey::decode(b"order-42"), Err(InvalidIdempotencyKey::NotAString));
//!
//! let mut headers = http::HeaderMap::new();
//! headers.insert(IDEMPOTENCY_KEY, IdempotencyKey::generate().to_header_value());
//! assert!(IdempotencyKey::from_headers(&headers, 255)?.is_some());
//! # Ok::<(), InvalidIdempotencyKey>(())
//! ```

use std::fmt;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The `Idempotency-Key` header name.
///
/// ```
/// assert_eq!(steadfast_http::codec::idempotency_key::IDEMPOTENCY_KEY, "idempotency-key");
/// ```
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The default longest key, in characters (after unescaping).
///
/// ```
/// use steadfast_http::codec::idempotency_key::{IdempotencyKey, DEFAULT_MAX_LEN};
/// assert!(IdempotencyKey::new("k".repeat(DEFAULT_MAX_LEN)).is_ok());
/// assert!(IdempotencyKey::new("k".repeat(DEFAULT_MAX_LEN + 1)).is_err());
/// ```
pub const DEFAULT_MAX_LEN: usize = 255;

/// The largest length limit a caller may configure (8 KiB, a common header-line limit). Keys up
/// to this length are storable on every idempotency store: stores address records by a
/// fixed-size digest of principal and key
/// ([`RecordId`](crate::idempotency::store::RecordId)), never by the key itself.
///
/// ```
/// use steadfast_http::codec::idempotency_key::{IdempotencyKey, MAX_LEN_LIMIT};
/// assert!(IdempotencyKey::with_max_len("k".repeat(1000), MAX_LEN_LIMIT).is_ok());
/// ```
pub const MAX_LEN_LIMIT: usize = 8 * 1024;

/// An idempotency key: a non-empty string of printable ASCII, stored unescaped.
///
/// ```
/// use steadfast_http::codec::idempotency_key::IdempotencyKey;
/// let key = IdempotencyKey::new("a\\b")?;
/// assert_eq!(key.as_str(), "a\\b");
/// assert_eq!(key.encode(), r#""a\\b""#);
/// # Ok::<(), steadfast_http::codec::idempotency_key::InvalidIdempotencyKey>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(Box<str>);

/// Why an `Idempotency-Key` value (or a would-be key) is not valid.
///
/// ```
/// use steadfast_http::codec::idempotency_key::{IdempotencyKey, InvalidIdempotencyKey};
/// assert_eq!(IdempotencyKey::decode(br#""abc"#), Err(InvalidIdempotencyKey::Unterminated));
/// assert_eq!(InvalidIdempotencyKey::Unterminated.label(), "unterminated");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidIdempotencyKey {
    /// The value (or the string inside the quotes) is empty.
    Empty,
    /// The value does not start with a double quote: it is not a Structured Field string.
    NotAString,
    /// The closing double quote is missing.
    Unterminated,
    /// A byte outside printable ASCII (`%x20-7E`), at this offset of the field value.
    InvalidCharacter {
        /// Byte offset in the field value.
        position: usize,
    },
    /// A backslash not followed by `"` or `\`, at this offset of the field value.
    InvalidEscape {
        /// Byte offset in the field value.
        position: usize,
    },
    /// Something other than spaces follows the closing quote (parameters included).
    TrailingCharacters {
        /// Byte offset in the field value.
        position: usize,
    },
    /// The key is longer than the limit.
    TooLong {
        /// The limit, in characters.
        max_len: usize,
    },
    /// The request carries more than one `Idempotency-Key` field line.
    Multiple,
}

impl InvalidIdempotencyKey {
    /// A short label for metrics (`reason` attribute) and traces.
    ///
    /// ```
    /// use steadfast_http::codec::idempotency_key::InvalidIdempotencyKey;
    /// assert_eq!(InvalidIdempotencyKey::TooLong { max_len: 255 }.label(), "too_long");
    /// ```
    pub const fn label(&self) -> &'static str {
        match self {
            InvalidIdempotencyKey::Empty => "empty",
            InvalidIdempotencyKey::NotAString => "not_a_string",
            InvalidIdempotencyKey::Unterminated => "unterminated",
            InvalidIdempotencyKey::InvalidCharacter { .. } => "invalid_character",
            InvalidIdempotencyKey::InvalidEscape { .. } => "invalid_escape",
            InvalidIdempotencyKey::TrailingCharacters { .. } => "trailing_characters",
            InvalidIdempotencyKey::TooLong { .. } => "too_long",
            InvalidIdempotencyKey::Multiple => "multiple",
        }
    }
}

impl fmt::Display for InvalidIdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid Idempotency-Key: ")?;
        match self {
            InvalidIdempotencyKey::Empty => f.write_str("the key is empty"),
            InvalidIdempotencyKey::NotAString => {
                f.write_str("the value must be a quoted Structured Field string")
            }
            InvalidIdempotencyKey::Unterminated => f.write_str("the closing quote is missing"),
            InvalidIdempotencyKey::InvalidCharacter { position } => {
                write!(f, "a character outside printable ASCII at byte {position}")
            }
            InvalidIdempotencyKey::InvalidEscape { position } => {
                write!(
                    f,
                    "a backslash at byte {position} escapes neither '\"' nor '\\'"
                )
            }
            InvalidIdempotencyKey::TrailingCharacters { position } => {
                write!(
                    f,
                    "unexpected characters after the string at byte {position}"
                )
            }
            InvalidIdempotencyKey::TooLong { max_len } => {
                write!(f, "the key is longer than {max_len} characters")
            }
            InvalidIdempotencyKey::Multiple => {
                f.write_str("the request carries more than one Idempotency-Key field")
            }
        }
    }
}

impl std::error::Error for InvalidIdempotencyKey {}

/// Checks a field value and returns the key's length, without allocating.
///
/// ```
/// use steadfast_http::codec::idempotency_key::{validate, InvalidIdempotencyKey};
/// assert_eq!(validate(br#" "a\"b" "#, 255), Ok(3));
/// assert_eq!(validate(br#""a";p=1"#, 255), Err(InvalidIdempotencyKey::TrailingCharacters { position: 3 }));
/// assert_eq!(validate(br#""abcd""#, 3), Err(InvalidIdempotencyKey::TooLong { max_len: 3 }));
/// ```
pub fn validate(value: &[u8], max_len: usize) -> Result<usize, InvalidIdempotencyKey> {
    scan(value, max_len, |_| {})
}

/// Walks a field value, handing each unescaped byte of the key to `push`.
fn scan(
    value: &[u8],
    max_len: usize,
    mut push: impl FnMut(u8),
) -> Result<usize, InvalidIdempotencyKey> {
    let start = value.iter().take_while(|b| **b == b' ').count();
    if start == value.len() {
        return Err(InvalidIdempotencyKey::Empty);
    }
    if value[start] != b'"' {
        return Err(InvalidIdempotencyKey::NotAString);
    }
    let mut i = start + 1;
    let mut len = 0usize;
    loop {
        let Some(&b) = value.get(i) else {
            return Err(InvalidIdempotencyKey::Unterminated);
        };
        let c = match b {
            b'"' => break,
            b'\\' => match value.get(i + 1) {
                Some(&e @ (b'"' | b'\\')) => {
                    i += 1;
                    e
                }
                Some(_) => return Err(InvalidIdempotencyKey::InvalidEscape { position: i }),
                None => return Err(InvalidIdempotencyKey::Unterminated),
            },
            0x20..=0x7e => b,
            _ => return Err(InvalidIdempotencyKey::InvalidCharacter { position: i }),
        };
        len += 1;
        if len > max_len {
            return Err(InvalidIdempotencyKey::TooLong { max_len });
        }
        push(c);
        i += 1;
    }
    // `i` is at the closing quote: only spaces may follow.
    if let Some(off) = value[i + 1..].iter().position(|b| *b != b' ') {
        return Err(InvalidIdempotencyKey::TrailingCharacters {
            position: i + 1 + off,
        });
    }
    if len == 0 {
        return Err(InvalidIdempotencyKey::Empty);
    }
    Ok(len)
}

impl IdempotencyKey {
    /// A key from its unescaped value: non-empty printable ASCII, at most [`DEFAULT_MAX_LEN`]
    /// characters.
    ///
    /// ```
    /// use steadfast_http::codec::idempotency_key::{IdempotencyKey, InvalidIdempotencyKey};
    /// assert!(IdempotencyKey::new("order-42").is_ok());
    /// assert_eq!(IdempotencyKey::new(""), Err(InvalidIdempotencyKey::Empty));
    /// assert_eq!(IdempotencyKey::new("é"), Err(InvalidIdempotencyKey::InvalidCharacter { position: 0 }));
    /// ```
    pub fn new(value: impl Into<String>) -> Result<Self, InvalidIdempotencyKey> {
        Self::with_max_len(value, DEFAULT_MAX_LEN)
    }

    /// A key from its unescaped value, at most `max_len` characters.
    ///
    /// ```
    /// use steadfast_http::codec::idempotency_key::{IdempotencyKey, InvalidIdempotencyKey};
    /// assert_eq!(IdempotencyKey::with_max_len("abcd", 3), Err(InvalidIdempotencyKey::TooLong { max_len: 3 }));
    /// ```
    pub fn with_max_len(
        value: impl Into<String>,
        max_len: usize,
    ) -> Result<Self, InvalidIdempotencyKey> {
        let value = value.into();
        if value.is_empty() {
            return Err(InvalidIdempotencyKey::Empty);
        }
        if let Some(position) = value.bytes().position(|b| !(0x20..=0x7e).contains(&b)) {
            return Err(InvalidIdempotencyKey::InvalidCharacter { position });
        }
        if value.len() > max_len {
            return Err(InvalidIdempotencyKey::TooLong { max_len });
        }
        Ok(Self(value.into_boxed_str()))
    }

    /// A fresh key: a UUID version 7 (time-ordered, 36 characters), as the draft recommends.
    ///
    /// ```
    /// use steadfast_http::codec::idempotency_key::IdempotencyKey;
    /// let (a, b) = (IdempotencyKey::generate(), IdempotencyKey::generate());
    /// assert_ne!(a, b);
    /// assert_eq!(a.as_str().len(), 36);
    /// ```
    pub fn generate() -> Self {
        Self(
            uuid::Uuid::now_v7()
                .hyphenated()
                .to_string()
                .into_boxed_str(),
        )
    }

    /// Parses a field value with the default length limit.
    ///
    /// ```
    /// use steadfast_http::codec::idempotency_key::IdempotencyKey;
    /// assert_eq!(IdempotencyKey::decode(b"\"k-1\"").unwrap().as_str(), "k-1");
    /// ```
    pub fn decode(value: &[u8]) -> Result<Self, InvalidIdempotencyKey> {
        Self::decode_with_max_len(value, DEFAULT_MAX_LEN)
    }

    /// Parses a field value whose key may be at most `max_len` characters.
    ///
    /// ```
    /// use steadfast_http::codec::idempotency_key::IdempotencyKey;
    /// assert!(IdempotencyKey::decode_with_max_len(b"\"abcd\"", 3).is_err());
    /// ```
    pub fn decode_with_max_len(
        value: &[u8],
        max_len: usize,
    ) -> Result<Self, InvalidIdempotencyKey> {
        let mut out = String::with_capacity(value.len().min(max_len.saturating_add(2)));
        scan(value, max_len, |b| out.push(char::from(b)))?;
        Ok(Self(out.into_boxed_str()))
    }

    /// The key a request carries: `Ok(None)` without the header, an error when it is malformed
    /// or repeated.
    ///
    /// ```
    /// use http::HeaderMap;
    /// use steadfast_http::codec::idempotency_key::{IdempotencyKey, InvalidIdempotencyKey, IDEMPOTENCY_KEY};
    /// let mut h = HeaderMap::new();
    /// assert_eq!(IdempotencyKey::from_headers(&h, 255), Ok(None));
    /// h.append(IDEMPOTENCY_KEY, "\"a\"".parse().unwrap());
    /// assert_eq!(IdempotencyKey::from_headers(&h, 255)?.unwrap().as_str(), "a");
    /// h.append(IDEMPOTENCY_KEY, "\"b\"".parse().unwrap());
    /// assert_eq!(IdempotencyKey::from_headers(&h, 255), Err(InvalidIdempotencyKey::Multiple));
    /// # Ok::<(), InvalidIdempotencyKey>(())
    /// ```
    pub fn from_headers(
        headers: &HeaderMap,
        max_len: usize,
    ) -> Result<Option<Self>, InvalidIdempotencyKey> {
        let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(InvalidIdempotencyKey::Multiple);
        }
        Self::decode_with_max_len(first.as_bytes(), max_len).map(Some)
    }

    /// The unescaped key.
    ///
    /// ```
    /// # use steadfast_http::codec::idempotency_key::IdempotencyKey;
    /// assert_eq!(IdempotencyKey::new("k")?.as_str(), "k");
    /// # Ok::<(), steadfast_http::codec::idempotency_key::InvalidIdempotencyKey>(())
    /// ```
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The Structured Field serialization: quoted, with `"` and `\` escaped.
    ///
    /// ```
    /// # use steadfast_http::codec::idempotency_key::IdempotencyKey;
    /// assert_eq!(IdempotencyKey::new(r#"say "hi""#)?.encode(), r#""say \"hi\"""#);
    /// # Ok::<(), steadfast_http::codec::idempotency_key::InvalidIdempotencyKey>(())
    /// ```
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 2);
        out.push('"');
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
        out
    }

    /// The header value for this key.
    ///
    /// ```
    /// # use steadfast_http::codec::idempotency_key::IdempotencyKey;
    /// assert_eq!(IdempotencyKey::new("k")?.to_header_value(), "\"k\"");
    /// # Ok::<(), steadfast_http::codec::idempotency_key::InvalidIdempotencyKey>(())
    /// ```
    pub fn to_header_value(&self) -> HeaderValue {
        // Printable ASCII plus quotes: always a valid header value.
        HeaderValue::try_from(self.encode()).unwrap_or_else(|_| HeaderValue::from_static("\"\""))
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("IdempotencyKey").field(&&*self.0).finish()
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for IdempotencyKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&HeaderValue> for IdempotencyKey {
    type Error = InvalidIdempotencyKey;

    /// Parses a header value with the default length limit.
    fn try_from(value: &HeaderValue) -> Result<Self, Self::Error> {
        Self::decode(value.as_bytes())
    }
}

impl From<IdempotencyKey> for HeaderValue {
    fn from(key: IdempotencyKey) -> Self {
        key.to_header_value()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_per_rfc_8941() {
        let ok: &[(&[u8], &str)] = &[
            (b"\"a\"", "a"),
            (b"  \"a b\"  ", "a b"),
            (br#""\\\"""#, "\\\""),
            (b"\"~ !\"", "~ !"),
        ];
        for (input, want) in ok {
            assert_eq!(IdempotencyKey::decode(input).unwrap().as_str(), *want);
        }
        let bad: &[(&[u8], InvalidIdempotencyKey)] = &[
            (b"", InvalidIdempotencyKey::Empty),
            (b"   ", InvalidIdempotencyKey::Empty),
            (b"\"\"", InvalidIdempotencyKey::Empty),
            (b"a", InvalidIdempotencyKey::NotAString),
            (b"\"a", InvalidIdempotencyKey::Unterminated),
            (b"\"a\\", InvalidIdempotencyKey::Unterminated),
            (
                b"\"a\\n\"",
                InvalidIdempotencyKey::InvalidEscape { position: 2 },
            ),
            (
                b"\"a\tb\"",
                InvalidIdempotencyKey::InvalidCharacter { position: 2 },
            ),
            (
                b"\"\xff\"",
                InvalidIdempotencyKey::InvalidCharacter { position: 1 },
            ),
            (
                b"\"a\" x",
                InvalidIdempotencyKey::TrailingCharacters { position: 4 },
            ),
            (
                b"\"a\",\"b\"",
                InvalidIdempotencyKey::TrailingCharacters { position: 3 },
            ),
        ];
        for (input, want) in bad {
            assert_eq!(
                IdempotencyKey::decode(input).unwrap_err(),
                *want,
                "{input:?}"
            );
        }
    }

    #[test]
    fn length_counts_unescaped_characters() {
        let escaped = format!("\"{}\"", "\\\"".repeat(255));
        assert_eq!(
            IdempotencyKey::decode(escaped.as_bytes())
                .unwrap()
                .as_str()
                .len(),
            255
        );
        let too_long = format!("\"{}\"", "a".repeat(256));
        assert_eq!(
            IdempotencyKey::decode(too_long.as_bytes()).unwrap_err(),
            InvalidIdempotencyKey::TooLong { max_len: 255 }
        );
    }
}
