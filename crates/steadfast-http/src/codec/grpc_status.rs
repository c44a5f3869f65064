use std::fmt;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};

use super::digits::parse_u64;
use super::{HeaderProblem, InvalidHeader};

/// `grpc-status`: the status of a gRPC call, in the trailers (or in the headers of a
/// Trailers-Only response).
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`: a human-readable status message.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// A gRPC status code (the canonical codes of `google.rpc.Code`).
///
/// ```
/// use steadfast_http::codec::GrpcCode;
/// assert_eq!(GrpcCode::from_u32(14), GrpcCode::Unavailable);
/// assert_eq!(GrpcCode::Unavailable.label(), "unavailable");
/// assert_eq!(GrpcCode::from_u32(99), GrpcCode::Unknown); // unknown codes read as UNKNOWN
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // the variants are the canonical gRPC codes
pub enum GrpcCode {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

const ALL: [GrpcCode; 17] = [
    GrpcCode::Ok,
    GrpcCode::Cancelled,
    GrpcCode::Unknown,
    GrpcCode::InvalidArgument,
    GrpcCode::DeadlineExceeded,
    GrpcCode::NotFound,
    GrpcCode::AlreadyExists,
    GrpcCode::PermissionDenied,
    GrpcCode::ResourceExhausted,
    GrpcCode::FailedPrecondition,
    GrpcCode::Aborted,
    GrpcCode::OutOfRange,
    GrpcCode::Unimplemented,
    GrpcCode::Internal,
    GrpcCode::Unavailable,
    GrpcCode::DataLoss,
    GrpcCode::Unauthenticated,
];

impl GrpcCode {
    /// The code numbered `n`; numbers outside the canonical range are `Unknown`, as the gRPC spec
    /// asks clients to treat them.
    ///
    /// ```
    /// # use steadfast_http::codec::GrpcCode;
    /// assert_eq!(GrpcCode::from_u32(4), GrpcCode::DeadlineExceeded);
    /// ```
    pub const fn from_u32(n: u32) -> Self {
        if (n as usize) < ALL.len() {
            ALL[n as usize]
        } else {
            GrpcCode::Unknown
        }
    }

    /// The code's number.
    ///
    /// ```
    /// # use steadfast_http::codec::GrpcCode;
    /// assert_eq!(GrpcCode::Unavailable.as_u32(), 14);
    /// ```
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// A short snake_case label, used as the classifier's reason.
    ///
    /// ```
    /// # use steadfast_http::codec::GrpcCode;
    /// assert_eq!(GrpcCode::ResourceExhausted.label(), "resource_exhausted");
    /// ```
    pub const fn label(self) -> &'static str {
        match self {
            GrpcCode::Ok => "ok",
            GrpcCode::Cancelled => "cancelled",
            GrpcCode::Unknown => "unknown",
            GrpcCode::InvalidArgument => "invalid_argument",
            GrpcCode::DeadlineExceeded => "deadline_exceeded",
            GrpcCode::NotFound => "not_found",
            GrpcCode::AlreadyExists => "already_exists",
            GrpcCode::PermissionDenied => "permission_denied",
            GrpcCode::ResourceExhausted => "resource_exhausted",
            GrpcCode::FailedPrecondition => "failed_precondition",
            GrpcCode::Aborted => "aborted",
            GrpcCode::OutOfRange => "out_of_range",
            GrpcCode::Unimplemented => "unimplemented",
            GrpcCode::Internal => "internal",
            GrpcCode::Unavailable => "unavailable",
            GrpcCode::DataLoss => "data_loss",
            GrpcCode::Unauthenticated => "unauthenticated",
        }
    }

    /// The `grpc-status` header value of this code.
    ///
    /// ```
    /// # use steadfast_http::codec::GrpcCode;
    /// assert_eq!(GrpcCode::DeadlineExceeded.to_header_value(), "4");
    /// ```
    pub fn to_header_value(self) -> HeaderValue {
        const VALUES: [&str; 17] = [
            "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
            "16",
        ];
        HeaderValue::from_static(VALUES[self as usize])
    }

    /// The code a gRPC client must assume when an HTTP response has no `grpc-status`, from its
    /// HTTP status (gRPC's `http-grpc-status-mapping.md`).
    ///
    /// ```
    /// # use steadfast_http::codec::GrpcCode;
    /// assert_eq!(GrpcCode::from_http_status(http::StatusCode::SERVICE_UNAVAILABLE), GrpcCode::Unavailable);
    /// assert_eq!(GrpcCode::from_http_status(http::StatusCode::NOT_FOUND), GrpcCode::Unimplemented);
    /// ```
    pub fn from_http_status(status: http::StatusCode) -> Self {
        match status.as_u16() {
            400 => GrpcCode::Internal,
            401 => GrpcCode::Unauthenticated,
            403 => GrpcCode::PermissionDenied,
            404 => GrpcCode::Unimplemented,
            429 | 502 | 503 | 504 => GrpcCode::Unavailable,
            _ => GrpcCode::Unknown,
        }
    }
}

impl fmt::Display for GrpcCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Decodes `grpc-status`: a decimal code. Numbers outside the canonical range decode as
/// [`GrpcCode::Unknown`]; anything that is not a decimal number is an error (which a client
/// should also read as `UNKNOWN`).
///
/// ```
/// use steadfast_http::codec::{decode_grpc_status, GrpcCode};
/// assert_eq!(decode_grpc_status("14"), Ok(GrpcCode::Unavailable));
/// assert_eq!(decode_grpc_status("1000"), Ok(GrpcCode::Unknown));
/// assert!(decode_grpc_status("OK").is_err());
/// ```
pub fn decode_grpc_status(value: impl AsRef<[u8]>) -> Result<GrpcCode, InvalidHeader> {
    let v = value.as_ref();
    if v.is_empty() {
        return Err(InvalidHeader::new("grpc-status", HeaderProblem::Empty));
    }
    match parse_u64(v) {
        None => Err(InvalidHeader::new("grpc-status", HeaderProblem::NotANumber)),
        Some(Ok(n)) => Ok(GrpcCode::from_u32(u32::try_from(n).unwrap_or(u32::MAX))),
        Some(Err(())) => Ok(GrpcCode::Unknown),
    }
}

/// Whether a request or response is gRPC: its `content-type` starts with `application/grpc`
/// (`application/grpc`, `application/grpc+proto`, ...).
///
/// ```
/// use steadfast_http::codec::is_grpc;
/// let mut h = http::HeaderMap::new();
/// assert!(!is_grpc(&h));
/// h.insert(http::header::CONTENT_TYPE, "application/grpc+proto".parse().unwrap());
/// assert!(is_grpc(&h));
/// ```
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
