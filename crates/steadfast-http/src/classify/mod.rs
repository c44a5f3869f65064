//! Classifiers for HTTP and gRPC calls: what steadfast's retry layer (and later breakers and
//! hedges) should make of a response or an error.
//!
//! - [`HttpClassifier`]: `5xx`, `429`, `408` and transport errors retryable (configurable sets),
//!   `Retry-After` honoured ([`Outcome::retry_after`]).
//! - [`GrpcClassifier`]: gRPC A6 semantics: `UNAVAILABLE` retryable, `RESOURCE_EXHAUSTED`
//!   retryable with pushback, `grpc-retry-pushback-ms` honoured (negative → [`Outcome::Pushback`]).
//!   It classifies Trailers-Only responses on their headers; statuses in trailers are observed
//!   with a body wrapper ([`GrpcClassifier::observe`]).
//!
//! Both share the error rules (walking the error's source chain):
//!
//! | error | outcome |
//! |---|---|
//! | steadfast's own nouns: [`DeadlineExceeded`](steadfast_layers::deadline::DeadlineExceeded), [`Elapsed`](steadfast_layers::timeout::Elapsed), [`CircuitOpen`](steadfast_layers::breaker::CircuitOpen), [`Overloaded`](steadfast_layers::overload::Overloaded) | the one error table, [`error_outcome`](steadfast_layers::classify::error_outcome) (the generic [`RetryOnError`](steadfast_layers::classify::RetryOnError) uses it too): a spent deadline is fatal, an attempt timeout retryable, an open circuit retried after its break, a rate limit after its `retry_after` |
//! | [`ReplayBufferExceeded`](crate::body::ReplayBufferExceeded) | fatal `not_replayable` |
//! | hyper-util legacy client error with `is_connect()` | [`Outcome::NotSent`] `connect` |
//! | `io::Error` of kind `ConnectionRefused` (e.g. tonic's transport) | [`Outcome::NotSent`] `connection_refused` |
//! | anything else | retryable `error` (fatal with `retry_errors(false)`) |
//!
//! [`Outcome::NotSent`] makes the retry layer re-send once at once, without counting an attempt or
//! spending budget (gRPC A6 transparent retry): the request never reached the server. A peer
//! that refuses again is a dead peer: further re-sends count as attempts, with backoff and
//! budget, under the same reason label.
//!
//! When the retry layer gives up on a response (the last attempt was a `503`), both classifiers
//! insert a [`RetryGaveUp`] extension into it, so the caller can tell "the server said 503 three
//! times" from "the server said 503".
//!
//! # Example
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tower::{service_fn, Layer, ServiceExt};
//! use steadfast_http::classify::{HttpClassifier, RetryGaveUp};
//! use steadfast_layers::retry::{GiveUpReason, RetryLayer};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! // A peer that is down for maintenance, and says so.
//! let calls = Arc::new(AtomicU32::new(0));
//! let c = calls.clone();
//! let peer = service_fn(move |_req: http::Request<()>| {
//!     c.fetch_add(1, Ordering::SeqCst);
//!     async {
//!         let res = http::Response::builder().status(503).header("retry-after", "1").body(()).unwrap();
//!         Ok::<_, std::io::Error>(res)
//!     }
//! });
//! let client = RetryLayer::builder()
//!     .max_attempts(3)
//!     .no_budget()
//!     .classifier(HttpClassifier::new())
//!     .build()
//!     .unwrap()
//!     .layer(peer);
//!
//! let start = tokio::time::Instant::now();
//! let res = client.oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(res.status(), 503);
//! assert_eq!(calls.load(Ordering::SeqCst), 3);
//! assert_eq!(start.elapsed(), Duration::from_secs(2)); // Retry-After: 1, twice
//! let why = res.extensions().get::<RetryGaveUp>().unwrap();
//! assert_eq!((why.reason, why.attempts), (GiveUpReason::AttemptsExhausted, 3));
//! # }
//! ```

// `SystemTime` is the type of wall-clock time; `WallClock::system` is the one place in this
// crate that reads it (for `Retry-After` HTTP-dates).
#![allow(clippy::disallowed_types)]

use std::fmt;
use std::time::{Duration, SystemTime};

#[cfg(doc)]
use steadfast_layers::classify::Outcome;
use steadfast_layers::retry::GiveUpReason;

mod error;
mod grpc;
mod http;
mod sets;

#[cfg(feature = "tonic")]
pub(crate) use self::grpc::server_timer_fired;
pub use self::grpc::{GrpcClassifier, GrpcClassifierBuilder, GrpcStatusBody};
pub use self::http::{HttpClassifier, HttpClassifierBuilder};

/// The longest server-asked delay a classifier accepts by default: 30 s.
pub const DEFAULT_MAX_SERVER_DELAY: Duration = Duration::from_secs(30);

/// Why the retry layer returned this failed response: a response extension inserted by the
/// classifiers' [`on_give_up`](steadfast_layers::classify::Classifier::on_give_up).
///
/// ```
/// use steadfast_http::classify::RetryGaveUp;
/// use steadfast_layers::retry::GiveUpReason;
/// let mut res = http::Response::new(());
/// res.extensions_mut().insert(RetryGaveUp { reason: GiveUpReason::BudgetExhausted, attempts: 1 });
/// assert_eq!(res.extensions().get::<RetryGaveUp>().unwrap().reason.label(), "budget_exhausted");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryGaveUp {
    /// Why the retry layer stopped.
    pub reason: GiveUpReason,
    /// How many attempts were made.
    pub attempts: u32,
}

/// Where wall-clock time comes from, to turn a `Retry-After` HTTP-date into a delay.
///
/// Deadlines and backoffs run on `tokio::time`; an HTTP-date is the one input that needs wall
/// time. [`WallClock::system`] reads `SystemTime::now()`; tests inject a fixed clock.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use steadfast_http::classify::WallClock;
/// let fixed = WallClock::new(|| UNIX_EPOCH + Duration::from_secs(10));
/// assert_eq!(fixed.now(), UNIX_EPOCH + Duration::from_secs(10));
/// ```
#[derive(Clone, Copy)]
pub struct WallClock(fn() -> SystemTime);

impl WallClock {
    /// A clock reading `now` (a function, so that the classifier stays cheap to clone).
    ///
    /// ```
    /// # use std::time::UNIX_EPOCH;
    /// # use steadfast_http::classify::WallClock;
    /// let epoch = WallClock::new(|| UNIX_EPOCH);
    /// assert_eq!(epoch.now(), UNIX_EPOCH);
    /// ```
    pub const fn new(now: fn() -> SystemTime) -> Self {
        WallClock(now)
    }

    /// The system clock: the one boundary in this crate that reads wall-clock time.
    ///
    /// ```
    /// # use steadfast_http::classify::WallClock;
    /// assert!(WallClock::system().now() > std::time::UNIX_EPOCH);
    /// ```
    pub const fn system() -> Self {
        WallClock(SystemTime::now)
    }

    /// The current wall-clock time.
    ///
    /// ```
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # use steadfast_http::classify::WallClock;
    /// assert_eq!(WallClock::new(|| UNIX_EPOCH + Duration::from_secs(1)).now(), UNIX_EPOCH + Duration::from_secs(1));
    /// ```
    pub fn now(&self) -> SystemTime {
        (self.0)()
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for WallClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WallClock")
    }
}
