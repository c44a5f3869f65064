use std::error::Error;
use std::io;

use steadfast_layers::classify::{error_outcome, Outcome};

use crate::body::ReplayBufferExceeded;

/// Classifies a transport error by walking its source chain, for both HTTP and gRPC:
///
/// - steadfast's own nouns (deadline, attempt timeout, open circuit, overload) → the one error
///   table, [`error_outcome`];
/// - [`ReplayBufferExceeded`] (a body that could not be re-sent) → fatal `not_replayable`;
/// - tonic's `TimeoutExpired` (feature `tonic`: the `Channel`'s own timer, armed from the
///   `grpc-timeout` the stack wrote) → retryable `timeout`, as an attempt timeout;
/// - tonic's `ConnectError`, a hyper-util legacy client error with `is_connect()`, or an `io::Error` of kind
///   `ConnectionRefused` → [`Outcome::NotSent`] (`connect`, `connection_refused`): the request
///   never reached the server, so the retry layer retries it transparently;
/// - anything else → retryable `error` when `retry_errors`, else fatal `error`.
pub(super) fn classify_error(err: &(dyn Error + 'static), retry_errors: bool) -> Outcome {
    if let Some(outcome) = error_outcome(err) {
        return outcome;
    }
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<ReplayBufferExceeded>() {
            return Outcome::fatal("not_replayable");
        }
        // tonic's `Channel` times an attempt out itself, from the `grpc-timeout` the stack
        // wrote: that is this attempt's timeout, as `Elapsed` would be.
        #[cfg(feature = "tonic")]
        if e.is::<tonic::TimeoutExpired>() {
            return Outcome::retryable("timeout");
        }
        #[cfg(feature = "tonic")]
        if e.is::<tonic::ConnectError>() {
            return Outcome::NotSent { reason: "connect" };
        }
        if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            if h.is_connect() {
                return Outcome::NotSent { reason: "connect" };
            }
        }
        let mut next = e.source();
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::ConnectionRefused {
                return Outcome::NotSent {
                    reason: "connection_refused",
                };
            }
            // `io::Error::source` skips the error it wraps; look at that error itself.
            if let Some(inner) = io.get_ref() {
                next = Some(inner as &(dyn Error + 'static));
            }
        }
        cur = next;
    }
    if retry_errors {
        Outcome::retryable("error")
    } else {
        Outcome::fatal("error")
    }
}
