//! Header codecs: small, total functions with typed errors, for the headers that carry deadlines
//! and retry advice across hops.
//!
//! | header | decode | encode | rounding |
//! |---|---|---|---|
//! | `grpc-timeout` | [`decode_grpc_timeout`] (exact, per the gRPC spec) | [`encode_grpc_timeout`] (finest unit that fits) | down: never extends the deadline |
//! | `x-request-timeout-ms` ([`REQUEST_TIMEOUT_MS`]) | [`decode_timeout_ms`] | [`encode_timeout_ms`] | down |
//! | `Retry-After` | [`RetryAfter::parse`], [`decode_retry_after`] (given `now`) | [`encode_retry_after`], [`RetryAfter::to_header_value`] | up: never invites an early retry |
//! | `grpc-retry-pushback-ms` | [`decode_grpc_retry_pushback`] (negative or malformed = do not retry) | [`encode_grpc_retry_pushback`], [`encode_grpc_do_not_retry`] | up |
//! | `grpc-status` | [`decode_grpc_status`] | [`GrpcCode::to_header_value`] | exact |
//! | `Idempotency-Key` | [`IdempotencyKey::decode`](idempotency_key::IdempotencyKey::decode) (RFC 8941 string, length-limited) | [`IdempotencyKey::to_header_value`](idempotency_key::IdempotencyKey::to_header_value) | exact |
//!
//! Decoders accept `impl AsRef<[u8]>` (a `&HeaderValue`, `&str` or `&[u8]`), never panic on any
//! input (a property test feeds them arbitrary bytes) and say what is wrong with
//! [`InvalidHeader`]. Encoders always produce a valid [`HeaderValue`](http::HeaderValue).
//! Property tests check that every codec round-trips.
//!
//! Wall-clock time (`Retry-After`'s HTTP-date) is an argument, never read here, so the codecs stay
//! pure and testable; see [`WallClock`](crate::classify::WallClock) for where it is read.
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use steadfast_http::codec::*;
//!
//! // A deadline 1.5 s away crosses the wire as microseconds and comes back intact.
//! let v = encode_grpc_timeout(Duration::from_millis(1_500));
//! assert_eq!(v, "1500000u");
//! assert_eq!(decode_grpc_timeout(&v)?, Duration::from_millis(1_500));
//!
//! // Retry-After, either form.
//! let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
//! assert_eq!(decode_retry_after("7", now)?, Duration::from_secs(7));
//! assert_eq!(decode_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now)?, Duration::from_secs(10));
//!
//! // Pushback: a delay, or "stop".
//! assert_eq!(decode_grpc_retry_pushback("100")?, Duration::from_millis(100));
//! assert_eq!(decode_grpc_retry_pushback("-1").unwrap_err().problem(), HeaderProblem::Negative);
//! # Ok::<(), InvalidHeader>(())
//! ```

mod digits;
mod error;
mod grpc_status;
mod grpc_timeout;
pub mod idempotency_key;
mod pushback;
mod retry_after;
mod timeout_ms;

pub use error::{HeaderProblem, InvalidHeader};
pub use grpc_status::{decode_grpc_status, is_grpc, GrpcCode, GRPC_MESSAGE, GRPC_STATUS};
pub use grpc_timeout::{decode_grpc_timeout, encode_grpc_timeout, GRPC_TIMEOUT, MAX_GRPC_TIMEOUT};
pub use pushback::{
    decode_grpc_retry_pushback, encode_grpc_do_not_retry, encode_grpc_retry_pushback,
    GRPC_RETRY_PUSHBACK_MS,
};
pub(crate) use retry_after::http_date_after;
pub use retry_after::{decode_retry_after, encode_retry_after, RetryAfter, RETRY_AFTER};
pub use timeout_ms::{decode_timeout_ms, encode_timeout_ms, REQUEST_TIMEOUT_MS};
