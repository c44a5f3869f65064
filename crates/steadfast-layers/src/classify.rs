//! Classifying call results: the one vocabulary that retries, breakers and hedges share.
//!
//! A [`Classifier`] looks at a finished call, `Result<Response, Error>`, and says what it was:
//! a [`Outcome::Success`], a failure worth retrying ([`Outcome::Retryable`], optionally with a
//! server-given delay such as `Retry-After`), a failure the server asked not to retry
//! ([`Outcome::Pushback`], e.g. a negative `grpc-retry-pushback-ms`), or a failure that retrying
//! cannot mend ([`Outcome::Fatal`]). Because it sees `Ok` responses too, a `503` inside `Ok` can be
//! a failure.
//!
//! ```
//! use std::time::Duration;
//! use steadfast_layers::classify::{Classifier, Outcome};
//!
//! // A response-level classifier: status codes inside `Ok` decide.
//! #[derive(Clone)]
//! struct ByStatus;
//! impl<E> Classifier<u16, E> for ByStatus {
//!     fn classify(&self, result: &Result<u16, E>) -> Outcome {
//!         match result {
//!             Ok(503) => Outcome::retryable("unavailable"),
//!             Ok(429) => Outcome::retry_after("throttled", Duration::from_secs(1)),
//!             Ok(s) if *s >= 500 => Outcome::fatal("server_error"),
//!             Ok(_) => Outcome::Success,
//!             Err(_) => Outcome::retryable("transport"),
//!         }
//!     }
//! }
//! let c = ByStatus;
//! assert!(Classifier::<u16, ()>::classify(&c, &Ok(503)).is_retryable());
//! assert!(!Classifier::<u16, ()>::classify(&c, &Ok(200)).is_failure());
//! ```

use std::time::Duration;

/// What a finished call was, as far as resilience layers care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The call succeeded.
    Success,
    /// The call failed and another attempt may succeed.
    Retryable {
        /// A short, low-cardinality label for metrics and traces (`"unavailable"`, `"timeout"`).
        reason: &'static str,
        /// A delay the server asked for (`Retry-After`, `grpc-retry-pushback-ms`); when present it
        /// replaces the computed backoff.
        after: Option<Duration>,
    },
    /// The call failed and the server asked the client not to retry.
    Pushback {
        /// A short, low-cardinality label.
        reason: &'static str,
    },
    /// The request never reached the server (e.g. connection refused before anything was sent).
    /// A retry layer retries it at once, without counting an attempt or spending budget (gRPC A6
    /// transparent retry), at most `max_attempts` times per call.
    NotSent {
        /// A short, low-cardinality label.
        reason: &'static str,
    },
    /// The call failed and retrying cannot help (a bad request, a deadline already spent).
    Fatal {
        /// A short, low-cardinality label.
        reason: &'static str,
    },
}

impl Outcome {
    /// A retryable failure with no server-given delay.
    ///
    /// ```
    /// # use steadfast_layers::classify::Outcome;
    /// assert!(Outcome::retryable("unavailable").is_retryable());
    /// ```
    pub const fn retryable(reason: &'static str) -> Self {
        Outcome::Retryable {
            reason,
            after: None,
        }
    }

    /// A retryable failure that the server asked to retry no sooner than `after`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::classify::Outcome;
    /// let o = Outcome::retry_after("throttled", Duration::from_millis(250));
    /// assert_eq!(o.server_delay(), Some(Duration::from_millis(250)));
    /// ```
    pub const fn retry_after(reason: &'static str, after: Duration) -> Self {
        Outcome::Retryable {
            reason,
            after: Some(after),
        }
    }

    /// A failure that must not be retried.
    ///
    /// ```
    /// # use steadfast_layers::classify::Outcome;
    /// assert!(Outcome::fatal("bad_request").is_failure());
    /// assert!(!Outcome::fatal("bad_request").is_retryable());
    /// ```
    pub const fn fatal(reason: &'static str) -> Self {
        Outcome::Fatal { reason }
    }

    /// Whether the call failed (anything but [`Outcome::Success`]).
    ///
    /// ```
    /// # use steadfast_layers::classify::Outcome;
    /// assert!(!Outcome::Success.is_failure());
    /// ```
    pub const fn is_failure(&self) -> bool {
        !matches!(self, Outcome::Success)
    }

    /// Whether another attempt may be made.
    ///
    /// ```
    /// # use steadfast_layers::classify::Outcome;
    /// assert!(!Outcome::Pushback { reason: "pushback" }.is_retryable());
    /// ```
    pub const fn is_retryable(&self) -> bool {
        matches!(self, Outcome::Retryable { .. } | Outcome::NotSent { .. })
    }

    /// The server-given delay of a retryable failure.
    ///
    /// ```
    /// # use steadfast_layers::classify::Outcome;
    /// assert_eq!(Outcome::retryable("x").server_delay(), None);
    /// ```
    pub const fn server_delay(&self) -> Option<Duration> {
        match self {
            Outcome::Retryable { after, .. } => *after,
            _ => None,
        }
    }

    /// The label of a failure (`"success"` for a success).
    ///
    /// ```
    /// # use steadfast_layers::classify::Outcome;
    /// assert_eq!(Outcome::fatal("bad_request").reason(), "bad_request");
    /// assert_eq!(Outcome::Success.reason(), "success");
    /// ```
    pub const fn reason(&self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Retryable { reason, .. }
            | Outcome::Pushback { reason }
            | Outcome::NotSent { reason }
            | Outcome::Fatal { reason } => reason,
        }
    }
}

/// Maps a finished call to an [`Outcome`].
///
/// Implemented for closures `Fn(&Result<Res, E>) -> Outcome`, and by [`RetryOnError`] (the
/// default: every error is retryable, every response a success). The HTTP crate provides status-
/// code classifiers.
///
/// ```
/// use steadfast_layers::classify::{Classifier, Outcome};
/// let by_value = |r: &Result<u32, ()>| match r {
///     Ok(0) => Outcome::retryable("zero"),
///     Ok(_) => Outcome::Success,
///     Err(()) => Outcome::fatal("error"),
/// };
/// assert!(by_value.classify(&Ok(0)).is_retryable());
/// ```
pub trait Classifier<Res, E> {
    /// Classifies one finished attempt.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;

    /// Called when a retry layer gives up and hands back a response (not an error), so that the
    /// classifier can note why on it (the HTTP classifier inserts a response extension). The
    /// default does nothing.
    ///
    /// ```
    /// use steadfast_layers::classify::{Classifier, Outcome};
    /// use steadfast_layers::retry::GiveUpReason;
    /// struct Noting;
    /// impl Classifier<Vec<&'static str>, ()> for Noting {
    ///     fn classify(&self, _: &Result<Vec<&'static str>, ()>) -> Outcome { Outcome::Success }
    ///     fn on_give_up(&self, res: &mut Vec<&'static str>, why: &GiveUpReason, _attempts: u32) {
    ///         res.push(why.label());
    ///     }
    /// }
    /// let mut res = vec![];
    /// Noting.on_give_up(&mut res, &GiveUpReason::AttemptsExhausted, 3);
    /// assert_eq!(res, ["attempts_exhausted"]);
    /// ```
    fn on_give_up(&self, response: &mut Res, why: &crate::retry::GiveUpReason, attempts: u32) {
        let _ = (response, why, attempts);
    }
}

impl<F, Res, E> Classifier<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result)
    }
}

/// The default classifier: a response is a success, an error is retryable (`error`), except
/// this crate's own nouns, which [`error_outcome`] (the one error table) classifies: a spent
/// deadline is fatal, an open circuit is retried no sooner than the breaker's next probe (or not
/// at all when forced open), local overload after the rate limit's `retry_after` (or not at all
/// when client-side throttling refused the call).
///
/// ```
/// use steadfast_layers::{BoxError, classify::{Classifier, Outcome, RetryOnError}};
/// use steadfast_layers::deadline::DeadlineExceeded;
/// let ok: Result<(), BoxError> = Ok(());
/// assert_eq!(RetryOnError.classify(&ok), Outcome::Success);
/// let io: Result<(), BoxError> = Err("connection reset".into());
/// assert!(RetryOnError.classify(&io).is_retryable());
/// let late: Result<(), BoxError> = Err(Box::new(DeadlineExceeded::new()));
/// assert!(!RetryOnError.classify(&late).is_retryable());
/// use std::time::Duration;
/// use steadfast_layers::breaker::{BreakerState, CircuitOpen};
/// let open: Result<(), BoxError> =
///     Err(Box::new(CircuitOpen::new(BreakerState::Open, Some(Duration::from_secs(3)))));
/// assert_eq!(RetryOnError.classify(&open).server_delay(), Some(Duration::from_secs(3)));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RetryOnError;

impl<Res, E> Classifier<Res, E> for RetryOnError
where
    E: AsErrorRef,
{
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(e) => e
                .as_error_ref()
                .and_then(error_outcome)
                .unwrap_or(Outcome::retryable("error")),
        }
    }
}

/// **The one error table**: what each of steadfast's own error nouns means for another attempt.
///
/// Walks `err`'s source chain (looking inside `io::Error`s too) and answers for the first noun it
/// finds, or `None` when there is none (the caller's own rules apply: "retryable `error`" for
/// [`RetryOnError`], transport rules for the HTTP and gRPC classifiers, which also start here).
///
/// | error | outcome | why |
/// |---|---|---|
/// | [`DeadlineExceeded`](crate::deadline::DeadlineExceeded) | fatal `deadline_exceeded` | the caller no longer waits |
/// | [`Elapsed`](crate::timeout::Elapsed) (attempt timeout) | retryable `timeout` | the next attempt may be faster |
/// | [`CircuitOpen`](crate::breaker::CircuitOpen), open | retry after the rest of the break, `circuit_open` | the breaker's next probe is the earliest a retry can pass; the retry layer stops (naming the circuit) when the deadline cannot wait that long |
/// | `CircuitOpen`, half-open (every probe in flight) | retryable `circuit_open` | the probes decide soon |
/// | `CircuitOpen`, forced open | pushback `circuit_open` | an operator closed the route |
/// | [`Overloaded`](crate::overload::Overloaded) with a `retry_after` (rate limit) | retry after that, `rate_limited` | the limiter said when |
/// | `Overloaded`, [`Throttled`](crate::overload::OverloadReason::Throttled) | pushback `throttled` | retrying would defeat client-side throttling |
/// | `Overloaded`, any other reason | retryable, the reason's label (`at_capacity`, `queue_full`, ...) | capacity frees up |
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::breaker::{BreakerState, CircuitOpen};
/// use steadfast_layers::classify::{error_outcome, Outcome};
/// use steadfast_layers::deadline::DeadlineExceeded;
/// use steadfast_layers::overload::{OverloadReason, Overloaded};
///
/// let open = CircuitOpen::new(BreakerState::Open, Some(Duration::from_secs(2)));
/// assert_eq!(error_outcome(&open), Some(Outcome::retry_after("circuit_open", Duration::from_secs(2))));
/// assert_eq!(error_outcome(&DeadlineExceeded::new()), Some(Outcome::fatal("deadline_exceeded")));
/// let full = Overloaded::new("limit", OverloadReason::AtCapacity);
/// assert_eq!(error_outcome(&full), Some(Outcome::retryable("at_capacity")));
/// // Found through a wrapper's source chain too:
/// let wrapped = std::io::Error::other(DeadlineExceeded::new());
/// assert_eq!(error_outcome(&wrapped), Some(Outcome::fatal("deadline_exceeded")));
/// assert_eq!(error_outcome(&std::io::Error::other("reset")), None);
/// ```
pub fn error_outcome(err: &(dyn std::error::Error + 'static)) -> Option<Outcome> {
    use crate::breaker::{BreakerState, CircuitOpen};
    use crate::overload::{OverloadReason, Overloaded};
    let mut cur = Some(err);
    while let Some(e) = cur {
        if e.is::<crate::deadline::DeadlineExceeded>() {
            return Some(Outcome::fatal("deadline_exceeded"));
        }
        if e.is::<crate::timeout::Elapsed>() {
            return Some(Outcome::retryable("timeout"));
        }
        if let Some(open) = e.downcast_ref::<CircuitOpen>() {
            return Some(match (open.remaining(), open.state()) {
                (_, BreakerState::ForcedOpen) => Outcome::Pushback {
                    reason: "circuit_open",
                },
                (Some(wait), BreakerState::Open) => Outcome::retry_after("circuit_open", wait),
                _ => Outcome::retryable("circuit_open"),
            });
        }
        if let Some(o) = e.downcast_ref::<Overloaded>() {
            return Some(match (o.retry_after(), o.reason()) {
                (Some(wait), reason) => Outcome::retry_after(reason.label(), wait),
                (None, OverloadReason::Throttled) => Outcome::Pushback {
                    reason: "throttled",
                },
                (None, reason) => Outcome::retryable(reason.label()),
            });
        }
        let mut next = e.source();
        // `io::Error::source` skips the error it wraps; look at that error itself.
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            next = Some(inner as &(dyn std::error::Error + 'static));
        }
        cur = next;
    }
    None
}

/// Lets [`RetryOnError`] look inside an error for this crate's noun errors.
///
/// Implemented for [`BoxError`](crate::BoxError) and for `std::io::Error`; implement it for your
/// own error type (returning `None` is fine) to use [`RetryOnError`] with it.
///
/// ```
/// use steadfast_layers::classify::AsErrorRef;
/// #[derive(Debug)]
/// struct MyError;
/// impl AsErrorRef for MyError {
///     fn as_error_ref(&self) -> Option<&(dyn std::error::Error + 'static)> { None }
/// }
/// assert!(MyError.as_error_ref().is_none());
/// ```
pub trait AsErrorRef {
    /// The error as a `dyn Error`, if it is one.
    fn as_error_ref(&self) -> Option<&(dyn std::error::Error + 'static)>;
}

impl AsErrorRef for crate::BoxError {
    #[inline]
    fn as_error_ref(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self)
    }
}

impl AsErrorRef for std::io::Error {
    fn as_error_ref(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self)
    }
}

impl AsErrorRef for std::convert::Infallible {
    fn as_error_ref(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match *self {}
    }
}
