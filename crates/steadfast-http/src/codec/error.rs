use std::fmt;

/// A header value that a codec could not decode, and why.
///
/// Every decoder in [`codec`](super) is total: it returns this error for any malformed input and
/// never panics (a property test feeds them arbitrary bytes).
///
/// ```
/// use steadfast_http::codec::{decode_grpc_timeout, HeaderProblem};
/// let err = decode_grpc_timeout("123456789S").unwrap_err();
/// assert_eq!(err.header(), "grpc-timeout");
/// assert_eq!(err.problem(), HeaderProblem::TooLong { max_digits: 8 });
/// assert_eq!(err.to_string(), "invalid grpc-timeout: more than 8 digits");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidHeader {
    header: &'static str,
    problem: HeaderProblem,
}

/// What is wrong with a header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderProblem {
    /// The value is empty (or only whitespace where whitespace is allowed).
    Empty,
    /// The value has more digits than the format allows.
    TooLong {
        /// The most digits accepted.
        max_digits: usize,
    },
    /// The value is not a decimal integer where one is expected.
    NotANumber,
    /// The number is too large to represent.
    Overflow,
    /// The value is a negative number (for `grpc-retry-pushback-ms`: "do not retry").
    Negative,
    /// The `grpc-timeout` unit is missing or not one of `H M S m u n`.
    BadUnit,
    /// The value is neither delay-seconds nor an HTTP-date (`Retry-After`).
    BadDate,
}

impl InvalidHeader {
    pub(crate) const fn new(header: &'static str, problem: HeaderProblem) -> Self {
        Self { header, problem }
    }

    /// The header's name.
    ///
    /// ```
    /// # use steadfast_http::codec::decode_retry_after;
    /// # use std::time::UNIX_EPOCH;
    /// assert_eq!(decode_retry_after("soon", UNIX_EPOCH).unwrap_err().header(), "retry-after");
    /// ```
    pub const fn header(&self) -> &'static str {
        self.header
    }

    /// What is wrong with the value.
    ///
    /// ```
    /// # use steadfast_http::codec::{decode_grpc_retry_pushback, HeaderProblem};
    /// assert_eq!(decode_grpc_retry_pushback("-1").unwrap_err().problem(), HeaderProblem::Negative);
    /// ```
    pub const fn problem(&self) -> HeaderProblem {
        self.problem
    }
}

impl fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderProblem::Empty => f.write_str("empty value"),
            HeaderProblem::TooLong { max_digits } => write!(f, "more than {max_digits} digits"),
            HeaderProblem::NotANumber => f.write_str("not a decimal integer"),
            HeaderProblem::Overflow => f.write_str("number too large"),
            HeaderProblem::Negative => f.write_str("negative value"),
            HeaderProblem::BadUnit => f.write_str("missing or unknown unit (expected H M S m u n)"),
            HeaderProblem::BadDate => f.write_str("neither delay-seconds nor an HTTP-date"),
        }
    }
}

impl fmt::Display for InvalidHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.header, self.problem)
    }
}

impl std::error::Error for InvalidHeader {}
