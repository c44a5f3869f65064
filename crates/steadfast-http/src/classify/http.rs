use std::time::Duration;

use http::{Response, StatusCode};
use steadfast_layers::classify::{AsErrorRef, Classifier, Outcome};
use steadfast_layers::retry::{GiveUpReason, MAX_BACKOFF};

use super::error::classify_error;
use super::sets::StatusSet;
use super::{RetryGaveUp, WallClock, DEFAULT_MAX_SERVER_DELAY};
use crate::codec::{RetryAfter, RETRY_AFTER};
use crate::error::ConfigError;

/// Classifies plain HTTP calls for steadfast's retry layer (and, later, breakers and hedges).
///
/// - **Responses**: a status in the retryable set (default: every `5xx`, `429`, `408`) is
///   [`Outcome::Retryable`]; with a `Retry-After` header (delay-seconds or HTTP-date, see
///   [`RetryAfter`]) it is [`Outcome::retry_after`], so that the retry layer waits what the
///   server asked instead of its own backoff. A `Retry-After` longer than
///   [`max_server_delay`](HttpClassifierBuilder::max_server_delay) (default 30 s) is
///   [`Outcome::Pushback`]: the server asked for more than this client will wait, so it does not
///   retry (rather than retry early). A malformed `Retry-After` is ignored (the backoff applies).
///   Any other `5xx` is [`Outcome::Fatal`]; everything else (`2xx`, `3xx`, other `4xx`) is a
///   [`Outcome::Success`] as far as resilience goes: the server answered.
/// - **Errors** (see [`classify`](super)): requests that never reached the server are
///   [`Outcome::NotSent`]; per-attempt timeouts and other transport errors are retryable
///   (configurable); a spent deadline is fatal.
/// - **Giving up**: when the retry layer returns a failed response (a final `503`), the
///   classifier inserts a [`RetryGaveUp`] extension saying why.
///
/// The classifier cannot see the request: a transport error after a non-idempotent request was
/// sent is retried too. Restrict that with
/// [`HttpReplay::idempotent_only`](crate::body::HttpReplay::idempotent_only).
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::classify::HttpClassifier;
/// use steadfast_layers::classify::{Classifier, Outcome};
/// use steadfast_layers::BoxError;
///
/// let c = HttpClassifier::new();
/// let res = |status: u16, retry_after: Option<&str>| -> Result<http::Response<()>, BoxError> {
///     let mut b = http::Response::builder().status(status);
///     if let Some(v) = retry_after { b = b.header("retry-after", v); }
///     Ok(b.body(()).unwrap())
/// };
/// assert_eq!(c.classify(&res(503, Some("2"))), Outcome::retry_after("unavailable", Duration::from_secs(2)));
/// assert_eq!(c.classify(&res(429, None)), Outcome::retryable("too_many_requests"));
/// assert_eq!(c.classify(&res(501, None)), Outcome::retryable("server_error"));
/// assert_eq!(c.classify(&res(404, None)), Outcome::Success);
/// assert_eq!(c.classify(&res(503, Some("3600"))), Outcome::Pushback { reason: "retry_after_too_long" });
/// ```
#[derive(Clone, Debug)]
pub struct HttpClassifier {
    retryable: StatusSet,
    retry_errors: bool,
    honor_retry_after: bool,
    max_server_delay: Duration,
    wall_clock: WallClock,
}

impl Default for HttpClassifier {
    fn default() -> Self {
        Self::new()
    }
}

/// A short, low-cardinality label for a status.
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        408 => "request_timeout",
        429 => "too_many_requests",
        500 => "internal_server_error",
        502 => "bad_gateway",
        503 => "unavailable",
        504 => "gateway_timeout",
        501 | 505..=599 => "server_error",
        400..=407 | 409..=428 | 430..=499 => "client_error",
        _ => "status",
    }
}

impl HttpClassifier {
    /// The defaults: `5xx`, `429` and `408` retryable, `Retry-After` honoured up to 30 s,
    /// transport errors retryable, wall time from the system clock.
    ///
    /// ```
    /// # use steadfast_http::classify::HttpClassifier;
    /// assert!(HttpClassifier::new().is_retryable_status(http::StatusCode::BAD_GATEWAY));
    /// ```
    pub fn new() -> Self {
        HttpClassifier {
            retryable: StatusSet::default_retryable(),
            retry_errors: true,
            honor_retry_after: true,
            max_server_delay: DEFAULT_MAX_SERVER_DELAY,
            wall_clock: WallClock::system(),
        }
    }

    /// A builder starting from the defaults of [`HttpClassifier::new`].
    ///
    /// ```
    /// # use steadfast_http::classify::HttpClassifier;
    /// let c = HttpClassifier::builder().no_retry_on(http::StatusCode::NOT_IMPLEMENTED).build()?;
    /// assert!(!c.is_retryable_status(http::StatusCode::NOT_IMPLEMENTED));
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn builder() -> HttpClassifierBuilder {
        HttpClassifierBuilder {
            classifier: Self::new(),
        }
    }

    /// The same classifier with `status` in the retryable set (infallible: only the builder's
    /// delays need validating).
    pub(crate) fn with_retryable(mut self, status: StatusCode) -> Self {
        self.retryable.insert(status);
        self
    }

    /// Whether `status` is in the retryable set.
    ///
    /// ```
    /// # use steadfast_http::classify::HttpClassifier;
    /// assert!(HttpClassifier::new().is_retryable_status(http::StatusCode::REQUEST_TIMEOUT));
    /// assert!(!HttpClassifier::new().is_retryable_status(http::StatusCode::CONFLICT));
    /// ```
    pub fn is_retryable_status(&self, status: StatusCode) -> bool {
        self.retryable.contains(status)
    }

    /// Classifies a response (see the type's docs).
    ///
    /// ```
    /// # use steadfast_http::classify::HttpClassifier;
    /// # use steadfast_layers::classify::Outcome;
    /// let res = http::Response::builder().status(500).body(()).unwrap();
    /// assert_eq!(HttpClassifier::new().classify_response(&res), Outcome::retryable("internal_server_error"));
    /// ```
    pub fn classify_response<B>(&self, res: &Response<B>) -> Outcome {
        let status = res.status();
        let reason = status_label(status);
        // A 409 with Retry-After is an idempotency server saying "the first request with this
        // key is still in progress" (IETF Idempotency-Key draft): not an answer, retry later.
        // A plain 409 Conflict is an answer.
        let in_progress =
            status == http::StatusCode::CONFLICT && res.headers().contains_key(RETRY_AFTER);
        let reason = if in_progress { "in_progress" } else { reason };
        if !in_progress && !self.retryable.contains(status) {
            return if status.is_server_error() {
                Outcome::fatal(reason)
            } else {
                Outcome::Success
            };
        }
        if !self.honor_retry_after {
            return Outcome::retryable(reason);
        }
        let Some(value) = res.headers().get(RETRY_AFTER) else {
            return Outcome::retryable(reason);
        };
        let delay = match RetryAfter::parse(value) {
            Ok(RetryAfter::Delay(d)) => d,
            Ok(date) => date.delay_from(self.wall_clock.now()),
            Err(e) => {
                tracing::debug!(
                    target: "steadfast::classify",
                    error = %e,
                    "malformed Retry-After ignored: the computed backoff applies"
                );
                return Outcome::retryable(reason);
            }
        };
        if delay > self.max_server_delay {
            return Outcome::Pushback {
                reason: "retry_after_too_long",
            };
        }
        Outcome::retry_after(reason, delay)
    }

    /// Classifies a transport error (see the [module docs](super)).
    ///
    /// ```
    /// # use steadfast_http::classify::HttpClassifier;
    /// # use steadfast_layers::classify::Outcome;
    /// let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    /// assert_eq!(HttpClassifier::new().classify_error(&refused), Outcome::NotSent { reason: "connection_refused" });
    /// ```
    pub fn classify_error(&self, err: &(dyn std::error::Error + 'static)) -> Outcome {
        classify_error(err, self.retry_errors)
    }
}

impl<B, E> Classifier<Response<B>, E> for HttpClassifier
where
    E: AsErrorRef,
{
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(res) => self.classify_response(res),
            Err(e) => match e.as_error_ref() {
                Some(err) => self.classify_error(err),
                None if self.retry_errors => Outcome::retryable("error"),
                None => Outcome::fatal("error"),
            },
        }
    }

    fn on_give_up(&self, response: &mut Response<B>, why: &GiveUpReason, attempts: u32) {
        response.extensions_mut().insert(RetryGaveUp {
            reason: *why,
            attempts,
        });
    }
}

/// Builds an [`HttpClassifier`], validating its configuration.
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::classify::HttpClassifier;
/// let c = HttpClassifier::builder()
///     .retryable_statuses([http::StatusCode::SERVICE_UNAVAILABLE, http::StatusCode::TOO_MANY_REQUESTS])
///     .max_server_delay(Duration::from_secs(5))
///     .retry_errors(false)
///     .build()?;
/// assert!(!c.is_retryable_status(http::StatusCode::INTERNAL_SERVER_ERROR));
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct HttpClassifierBuilder {
    classifier: HttpClassifier,
}

impl HttpClassifierBuilder {
    /// Adds `status` to the retryable set.
    ///
    /// ```
    /// # use steadfast_http::classify::HttpClassifier;
    /// let c = HttpClassifier::builder().retry_on(http::StatusCode::CONFLICT).build()?;
    /// assert!(c.is_retryable_status(http::StatusCode::CONFLICT));
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn retry_on(mut self, status: StatusCode) -> Self {
        self.classifier.retryable.insert(status);
        self
    }

    /// Removes `status` from the retryable set (a `5xx` removed is then fatal).
    ///
    /// ```
    /// # use steadfast_http::classify::HttpClassifier;
    /// let c = HttpClassifier::builder().no_retry_on(http::StatusCode::INTERNAL_SERVER_ERROR).build()?;
    /// assert!(!c.is_retryable_status(http::StatusCode::INTERNAL_SERVER_ERROR));
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn no_retry_on(mut self, status: StatusCode) -> Self {
        self.classifier.retryable.remove(status);
        self
    }

    /// Replaces the retryable set.
    ///
    /// ```
    /// # use steadfast_http::classify::HttpClassifier;
    /// let c = HttpClassifier::builder().retryable_statuses([http::StatusCode::BAD_GATEWAY]).build()?;
    /// assert!(!c.is_retryable_status(http::StatusCode::SERVICE_UNAVAILABLE));
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn retryable_statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.classifier.retryable = StatusSet::default();
        for s in statuses {
            self.classifier.retryable.insert(s);
        }
        self
    }

    /// Whether transport errors other than "never sent", timeouts and deadlines are retryable
    /// (default `true`; with `false` they are fatal).
    ///
    /// ```
    /// # use steadfast_http::classify::HttpClassifier;
    /// let c = HttpClassifier::builder().retry_errors(false).build()?;
    /// # let _ = c;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn retry_errors(mut self, yes: bool) -> Self {
        self.classifier.retry_errors = yes;
        self
    }

    /// Whether `Retry-After` replaces the computed backoff (default `true`).
    ///
    /// ```
    /// # use steadfast_http::classify::HttpClassifier;
    /// let c = HttpClassifier::builder().honor_retry_after(false).build()?;
    /// # let _ = c;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn honor_retry_after(mut self, yes: bool) -> Self {
        self.classifier.honor_retry_after = yes;
        self
    }

    /// The longest server-asked delay this client waits (default 30 s, at most
    /// [`MAX_BACKOFF`], one day); longer is [`Outcome::Pushback`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::classify::HttpClassifier;
    /// assert!(HttpClassifier::builder().max_server_delay(Duration::from_secs(2 * 86_400)).build().is_err());
    /// ```
    pub fn max_server_delay(mut self, max: Duration) -> Self {
        self.classifier.max_server_delay = max;
        self
    }

    /// Where wall-clock time comes from, for `Retry-After` HTTP-dates (default the system
    /// clock; inject a fixed one in tests).
    ///
    /// ```
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// # use steadfast_http::classify::{HttpClassifier, WallClock};
    /// let c = HttpClassifier::builder()
    ///     .wall_clock(WallClock::new(|| UNIX_EPOCH + Duration::from_secs(784_111_777)))
    ///     .build()?;
    /// # let _ = c;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn wall_clock(mut self, clock: WallClock) -> Self {
        self.classifier.wall_clock = clock;
        self
    }

    /// Validates and builds the classifier.
    ///
    /// ```
    /// # use steadfast_http::classify::HttpClassifier;
    /// assert!(HttpClassifier::builder().build().is_ok());
    /// ```
    pub fn build(self) -> Result<HttpClassifier, ConfigError> {
        check_max_server_delay(self.classifier.max_server_delay)?;
        Ok(self.classifier)
    }
}

pub(super) fn check_max_server_delay(d: Duration) -> Result<(), ConfigError> {
    if d > MAX_BACKOFF {
        return Err(ConfigError::out_of_range(
            "max_server_delay",
            d,
            "[0, 24 h]",
        ));
    }
    Ok(())
}
