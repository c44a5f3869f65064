use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use steadfast_layers::classify::{AsErrorRef, Classifier, Outcome};
use steadfast_layers::retry::GiveUpReason;

use super::error::classify_error;
use super::http::check_max_server_delay;
use super::sets::CodeSet;
use super::{RetryGaveUp, DEFAULT_MAX_SERVER_DELAY};
use crate::codec::{
    decode_grpc_retry_pushback, decode_grpc_status, GrpcCode, GRPC_MESSAGE, GRPC_RETRY_PUSHBACK_MS,
    GRPC_STATUS,
};
use crate::error::ConfigError;

const DEFAULT_RETRYABLE: CodeSet = CodeSet::of(&[GrpcCode::Unavailable]);
const DEFAULT_WITH_PUSHBACK: CodeSet = CodeSet::of(&[GrpcCode::ResourceExhausted]);
const DEFAULT_FAILURES: CodeSet = CodeSet::of(&[
    GrpcCode::Unknown,
    GrpcCode::DeadlineExceeded,
    GrpcCode::ResourceExhausted,
    GrpcCode::Unimplemented,
    GrpcCode::Internal,
    GrpcCode::Unavailable,
    GrpcCode::DataLoss,
]);

/// Classifies gRPC calls with gRPC A6's retry semantics.
///
/// **Where the status is.** A gRPC status travels in the trailers, which arrive after the body;
/// a classifier sees the response when its headers arrive. Two cases:
///
/// - **Trailers-Only** responses (no messages: the usual shape of an error) carry `grpc-status`
///   in the headers. They are classified at once, and may be retried.
/// - Responses whose headers carry no `grpc-status` have **committed** the call (A6: once
///   response headers are received, the RPC is no longer retried), so the classifier reports
///   [`Outcome::Success`] for them. Their final status is observed, for breakers, metrics or
///   logs, by wrapping the body with [`GrpcClassifier::observe`], which classifies the trailers
///   ([`GrpcClassifier::classify_trailers`]) when they arrive.
///
/// A non-`200` HTTP status is mapped to a gRPC code first ([`GrpcCode::from_http_status`]:
/// `503` is `UNAVAILABLE`, so a proxy's `503` is retried).
///
/// **Codes** (A6 defaults): `UNAVAILABLE` is retryable; `RESOURCE_EXHAUSTED` is retryable only
/// when the server sends a non-negative `grpc-retry-pushback-ms` (it said when); `UNKNOWN`,
/// `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED` otherwise, `UNIMPLEMENTED`, `INTERNAL` and
/// `DATA_LOSS` are fatal failures; the other codes are answers about the request
/// (`NOT_FOUND`, `INVALID_ARGUMENT`, ...) and count as [`Outcome::Success`] for resilience.
///
/// **Pushback** (`grpc-retry-pushback-ms`): on a failure, a non-negative value is the delay
/// before the retry ([`Outcome::retry_after`]); a negative or malformed one means "do not
/// retry" ([`Outcome::Pushback`]); one longer than
/// [`max_server_delay`](GrpcClassifierBuilder::max_server_delay) (default 30 s) is pushback too.
///
/// **Errors** are classified as by [`HttpClassifier`](super::HttpClassifier): a request that
/// never reached the server is [`Outcome::NotSent`] (transparent retry, A6).
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::classify::GrpcClassifier;
/// use steadfast_layers::classify::Outcome;
///
/// let c = GrpcClassifier::new();
/// let trailers_only = |status: &str, pushback: Option<&str>| {
///     let mut b = http::Response::builder()
///         .header("content-type", "application/grpc")
///         .header("grpc-status", status);
///     if let Some(p) = pushback { b = b.header("grpc-retry-pushback-ms", p); }
///     b.body(()).unwrap()
/// };
/// assert_eq!(c.classify_response(&trailers_only("14", None)), Outcome::retryable("unavailable"));
/// assert_eq!(c.classify_response(&trailers_only("14", Some("-1"))), Outcome::Pushback { reason: "pushback" });
/// assert_eq!(
///     c.classify_response(&trailers_only("8", Some("250"))),
///     Outcome::retry_after("resource_exhausted", Duration::from_millis(250))
/// );
/// assert_eq!(c.classify_response(&trailers_only("8", None)), Outcome::fatal("resource_exhausted"));
/// assert_eq!(c.classify_response(&trailers_only("5", None)), Outcome::Success); // NOT_FOUND: an answer
/// ```
#[derive(Clone, Debug)]
pub struct GrpcClassifier {
    retryable: CodeSet,
    with_pushback: CodeSet,
    failures: CodeSet,
    retry_errors: bool,
    max_server_delay: Duration,
    /// A fatal code stays fatal whatever pushback comes with it (the hedging stack's reading).
    fatal_over_pushback: bool,
}

impl Default for GrpcClassifier {
    fn default() -> Self {
        Self::new()
    }
}

impl GrpcClassifier {
    /// The A6 defaults described on the type.
    ///
    /// ```
    /// # use steadfast_http::{classify::GrpcClassifier, codec::GrpcCode};
    /// assert!(GrpcClassifier::new().is_retryable(GrpcCode::Unavailable));
    /// ```
    pub fn new() -> Self {
        GrpcClassifier {
            retryable: DEFAULT_RETRYABLE,
            with_pushback: DEFAULT_WITH_PUSHBACK,
            failures: DEFAULT_FAILURES,
            retry_errors: true,
            max_server_delay: DEFAULT_MAX_SERVER_DELAY,
            fatal_over_pushback: false,
        }
    }

    /// The same classifier, for which a failure code that is not retryable is fatal whatever
    /// `grpc-retry-pushback-ms` comes with it (otherwise a negative or malformed pushback makes
    /// it [`Outcome::Pushback`], as a throttling bucket counts it). gRPC A6's hedging: a status
    /// not in `nonFatalStatusCodes` ends the call, pushback or not (used by `grpc_config`).
    #[cfg(feature = "tonic")]
    pub(crate) fn fatal_over_pushback(mut self) -> Self {
        self.fatal_over_pushback = true;
        self
    }

    /// A builder starting from the defaults.
    ///
    /// ```
    /// # use steadfast_http::{classify::GrpcClassifier, codec::GrpcCode};
    /// let c = GrpcClassifier::builder().retry_on(GrpcCode::Aborted).build()?;
    /// assert!(c.is_retryable(GrpcCode::Aborted));
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn builder() -> GrpcClassifierBuilder {
        GrpcClassifierBuilder {
            classifier: Self::new(),
        }
    }

    /// Whether `code` is retryable without pushback.
    ///
    /// ```
    /// # use steadfast_http::{classify::GrpcClassifier, codec::GrpcCode};
    /// assert!(!GrpcClassifier::new().is_retryable(GrpcCode::ResourceExhausted));
    /// ```
    pub fn is_retryable(&self, code: GrpcCode) -> bool {
        self.retryable.contains(code)
    }

    /// Classifies a status `code` given the metadata that came with it (for the pushback).
    ///
    /// ```
    /// # use steadfast_http::{classify::GrpcClassifier, codec::GrpcCode};
    /// # use steadfast_layers::classify::Outcome;
    /// let c = GrpcClassifier::new();
    /// assert_eq!(c.classify_code(GrpcCode::Internal, &http::HeaderMap::new()), Outcome::fatal("internal"));
    /// ```
    pub fn classify_code(&self, code: GrpcCode, metadata: &HeaderMap) -> Outcome {
        if code == GrpcCode::Ok {
            return Outcome::Success;
        }
        let retryable = self.retryable.contains(code);
        let with_pushback = self.with_pushback.contains(code);
        let failure = retryable || with_pushback || self.failures.contains(code);
        if !failure {
            return Outcome::Success;
        }
        let label = code.label();
        if self.fatal_over_pushback && !(retryable || with_pushback) {
            return Outcome::fatal(label);
        }
        match metadata
            .get(GRPC_RETRY_PUSHBACK_MS)
            .map(decode_grpc_retry_pushback)
        {
            Some(Err(_)) => Outcome::Pushback { reason: "pushback" },
            Some(Ok(d)) if retryable || with_pushback => {
                if d > self.max_server_delay {
                    Outcome::Pushback {
                        reason: "pushback_too_long",
                    }
                } else {
                    Outcome::retry_after(label, d)
                }
            }
            _ if retryable => Outcome::retryable(label),
            _ => Outcome::fatal(label),
        }
    }

    /// Classifies a response on its headers: Trailers-Only and non-`200` responses by their
    /// status; other responses are committed, hence [`Outcome::Success`] (see the type's docs).
    ///
    /// ```
    /// # use steadfast_http::classify::GrpcClassifier;
    /// # use steadfast_layers::classify::Outcome;
    /// let streaming = http::Response::builder().header("content-type", "application/grpc").body(()).unwrap();
    /// assert_eq!(GrpcClassifier::new().classify_response(&streaming), Outcome::Success);
    /// let proxy_503 = http::Response::builder().status(503).body(()).unwrap();
    /// assert_eq!(GrpcClassifier::new().classify_response(&proxy_503), Outcome::retryable("unavailable"));
    /// ```
    ///
    /// A Trailers-Only `CANCELLED` with `grpc-message: Timeout expired` is a tonic server's own
    /// timer, armed from the `grpc-timeout` the client sent (tonic reports a spent server
    /// deadline as `CANCELLED`, where the gRPC spec says `DEADLINE_EXCEEDED`): it is this
    /// attempt's timeout, retryable `timeout` as an attempt timeout is, while the deadline allows.
    ///
    /// ```
    /// # use steadfast_http::classify::GrpcClassifier;
    /// # use steadfast_layers::classify::Outcome;
    /// let server_timer = http::Response::builder()
    ///     .header("grpc-status", "1")
    ///     .header("grpc-message", "Timeout expired")
    ///     .body(())
    ///     .unwrap();
    /// assert_eq!(GrpcClassifier::new().classify_response(&server_timer), Outcome::retryable("timeout"));
    /// ```
    pub fn classify_response<B>(&self, res: &Response<B>) -> Outcome {
        match self.header_status(res) {
            Some(GrpcCode::Cancelled) if server_timer_fired(res.headers()) => {
                Outcome::retryable("timeout")
            }
            Some(code) => self.classify_code(code, res.headers()),
            None => Outcome::Success,
        }
    }

    /// Classifies trailers: their `grpc-status` (missing or malformed reads as `UNKNOWN`).
    ///
    /// ```
    /// # use steadfast_http::classify::GrpcClassifier;
    /// # use steadfast_layers::classify::Outcome;
    /// let mut t = http::HeaderMap::new();
    /// t.insert("grpc-status", "0".parse().unwrap());
    /// assert_eq!(GrpcClassifier::new().classify_trailers(&t), Outcome::Success);
    /// t.insert("grpc-status", "13".parse().unwrap());
    /// assert_eq!(GrpcClassifier::new().classify_trailers(&t), Outcome::fatal("internal"));
    /// ```
    pub fn classify_trailers(&self, trailers: &HeaderMap) -> Outcome {
        let code = trailers
            .get(GRPC_STATUS)
            .and_then(|v| decode_grpc_status(v).ok())
            .unwrap_or(GrpcCode::Unknown);
        self.classify_code(code, trailers)
    }

    /// The status a response's headers decide, if they do.
    fn header_status<B>(&self, res: &Response<B>) -> Option<GrpcCode> {
        if res.status() != StatusCode::OK {
            return Some(GrpcCode::from_http_status(res.status()));
        }
        res.headers()
            .get(GRPC_STATUS)
            .map(|v| decode_grpc_status(v).unwrap_or(GrpcCode::Unknown))
    }

    /// Classifies a transport error (as [`HttpClassifier::classify_error`](super::HttpClassifier::classify_error)).
    ///
    /// ```
    /// # use steadfast_http::classify::GrpcClassifier;
    /// # use steadfast_layers::{classify::Outcome, timeout::Elapsed};
    /// assert_eq!(GrpcClassifier::new().classify_error(&Elapsed::new(std::time::Duration::from_secs(1))), Outcome::retryable("timeout"));
    /// ```
    pub fn classify_error(&self, err: &(dyn std::error::Error + 'static)) -> Outcome {
        classify_error(err, self.retry_errors)
    }

    /// Observes the final status of a response: `on_outcome` is called once, with the outcome
    /// of the headers for a Trailers-Only or non-`200` response (at once), or else with the
    /// outcome of the trailers when the body yields them (a body that ends without trailers is
    /// fatal `missing_status`; a body error is retryable `stream_error`). Not called if the body
    /// is dropped before its end.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, StreamBody};
    /// use http_body::Frame;
    /// use steadfast_http::classify::GrpcClassifier;
    /// use steadfast_layers::classify::Outcome;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut trailers = http::HeaderMap::new();
    /// trailers.insert("grpc-status", "14".parse().unwrap());
    /// let frames = vec![
    ///     Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"msg"))),
    ///     Ok(Frame::trailers(trailers)),
    /// ];
    /// let res = http::Response::builder()
    ///     .header("content-type", "application/grpc")
    ///     .body(StreamBody::new(futures::stream::iter(frames)))
    ///     .unwrap();
    /// let seen = Arc::new(Mutex::new(None));
    /// let s = seen.clone();
    /// let res = GrpcClassifier::new().observe(res, move |o| *s.lock().unwrap() = Some(o));
    /// let _ = res.into_body().collect().await;
    /// assert_eq!(*seen.lock().unwrap(), Some(Outcome::retryable("unavailable")));
    /// # }
    /// ```
    pub fn observe<B, F>(&self, res: Response<B>, on_outcome: F) -> Response<GrpcStatusBody<B, F>>
    where
        F: FnOnce(Outcome),
    {
        let decided = self
            .header_status(&res)
            .map(|c| self.classify_code(c, res.headers()));
        let (parts, body) = res.into_parts();
        let on_outcome = match decided {
            Some(outcome) => {
                on_outcome(outcome);
                None
            }
            None => Some(on_outcome),
        };
        Response::from_parts(
            parts,
            GrpcStatusBody {
                inner: body,
                classifier: self.clone(),
                on_outcome,
            },
        )
    }
}

impl<B, E> Classifier<Response<B>, E> for GrpcClassifier
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

/// A response body that reports the gRPC status in its trailers; made by
/// [`GrpcClassifier::observe`].
#[pin_project]
#[derive(Debug)]
pub struct GrpcStatusBody<B, F> {
    #[pin]
    inner: B,
    classifier: GrpcClassifier,
    on_outcome: Option<F>,
}

impl<B, F> GrpcStatusBody<B, F> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the body (the outcome is then never reported).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B, F> Body for GrpcStatusBody<B, F>
where
    B: Body,
    F: FnOnce(Outcome),
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        let outcome = match &frame {
            Some(Ok(f)) => f
                .trailers_ref()
                .map(|t| this.classifier.classify_trailers(t)),
            Some(Err(_)) => Some(Outcome::retryable("stream_error")),
            None => Some(Outcome::fatal("missing_status")),
        };
        if let Some(outcome) = outcome {
            if let Some(report) = this.on_outcome.take() {
                report(outcome);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Builds a [`GrpcClassifier`], validating its configuration.
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::{classify::GrpcClassifier, codec::GrpcCode};
/// let c = GrpcClassifier::builder()
///     .retry_on(GrpcCode::Internal)
///     .max_server_delay(Duration::from_secs(1))
///     .build()?;
/// assert!(c.is_retryable(GrpcCode::Internal));
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct GrpcClassifierBuilder {
    classifier: GrpcClassifier,
}

impl GrpcClassifierBuilder {
    /// Makes `code` retryable (it is then a failure too).
    ///
    /// ```
    /// # use steadfast_http::{classify::GrpcClassifier, codec::GrpcCode};
    /// assert!(GrpcClassifier::builder().retry_on(GrpcCode::Aborted).build()?.is_retryable(GrpcCode::Aborted));
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn retry_on(mut self, code: GrpcCode) -> Self {
        self.classifier.retryable.insert(code);
        self.classifier.failures.insert(code);
        self
    }

    /// Makes `code` not retryable, with or without pushback (it stays a failure if it was one).
    ///
    /// ```
    /// # use steadfast_http::{classify::GrpcClassifier, codec::GrpcCode};
    /// # use steadfast_layers::classify::Outcome;
    /// let c = GrpcClassifier::builder().no_retry_on(GrpcCode::Unavailable).build()?;
    /// assert_eq!(c.classify_code(GrpcCode::Unavailable, &http::HeaderMap::new()), Outcome::fatal("unavailable"));
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn no_retry_on(mut self, code: GrpcCode) -> Self {
        self.classifier.retryable.remove(code);
        self.classifier.with_pushback.remove(code);
        self
    }

    /// Makes `code` retryable only when the server sends a non-negative
    /// `grpc-retry-pushback-ms` (default: `RESOURCE_EXHAUSTED`).
    ///
    /// ```
    /// # use steadfast_http::{classify::GrpcClassifier, codec::GrpcCode};
    /// let c = GrpcClassifier::builder().retry_with_pushback_on(GrpcCode::Aborted).build()?;
    /// # let _ = c;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn retry_with_pushback_on(mut self, code: GrpcCode) -> Self {
        self.classifier.with_pushback.insert(code);
        self.classifier.failures.insert(code);
        self
    }

    /// Counts `code` as a failure (fatal unless retryable), e.g. for breakers.
    ///
    /// ```
    /// # use steadfast_http::{classify::GrpcClassifier, codec::GrpcCode};
    /// # use steadfast_layers::classify::Outcome;
    /// let c = GrpcClassifier::builder().failure_on(GrpcCode::Aborted).build()?;
    /// assert_eq!(c.classify_code(GrpcCode::Aborted, &http::HeaderMap::new()), Outcome::fatal("aborted"));
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn failure_on(mut self, code: GrpcCode) -> Self {
        if code != GrpcCode::Ok {
            self.classifier.failures.insert(code);
        }
        self
    }

    /// Whether transport errors other than "never sent", timeouts and deadlines are retryable
    /// (default `true`).
    ///
    /// ```
    /// # use steadfast_http::classify::GrpcClassifier;
    /// let c = GrpcClassifier::builder().retry_errors(false).build()?;
    /// # let _ = c;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn retry_errors(mut self, yes: bool) -> Self {
        self.classifier.retry_errors = yes;
        self
    }

    /// The longest pushback this client waits (default 30 s, at most one day); longer is
    /// [`Outcome::Pushback`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::classify::GrpcClassifier;
    /// assert!(GrpcClassifier::builder().max_server_delay(Duration::MAX).build().is_err());
    /// ```
    pub fn max_server_delay(mut self, max: Duration) -> Self {
        self.classifier.max_server_delay = max;
        self
    }

    /// Validates and builds the classifier.
    ///
    /// ```
    /// # use steadfast_http::classify::GrpcClassifier;
    /// assert!(GrpcClassifier::builder().build().is_ok());
    /// ```
    pub fn build(self) -> Result<GrpcClassifier, ConfigError> {
        check_max_server_delay(self.classifier.max_server_delay)?;
        Ok(self.classifier)
    }
}

/// Whether `headers` carry a tonic server's answer to its own deadline timer: `grpc-status: 1`
/// (`CANCELLED`) with `grpc-message: Timeout expired` (as tonic writes it, or percent-encoded).
pub(crate) fn server_timer_fired(headers: &HeaderMap) -> bool {
    headers.get(GRPC_STATUS).map(|v| v.as_bytes()) == Some(b"1")
        && matches!(
            headers.get(GRPC_MESSAGE).map(|v| v.as_bytes()),
            Some(b"Timeout expired" | b"Timeout%20expired")
        )
}
