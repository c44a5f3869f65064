//! The presets over a tonic `Channel`, as it is (feature `tonic`).

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::Request;
use pin_project::pin_project;
use steadfast_layers::breaker::CircuitOpen;
use steadfast_layers::deadline::DeadlineExceeded;
use steadfast_layers::overload::{OverloadReason, Overloaded};
use steadfast_layers::retry::{GaveUp, GiveUpReason};
use steadfast_layers::timeout::Elapsed;
use steadfast_layers::BoxError;
use tonic::{Code, Status};
use tower_service::Service;

use super::builder::StandardClientBuilder;
use super::transport::{sealed, Transport};
use crate::body::ReplayBody;
use crate::classify::{server_timer_fired, GrpcClassifier};

/// The tonic transport: the preset wraps a `tonic::transport::Channel` (or any
/// `Service<http::Request<tonic::body::Body>>`) as it is, and its errors are `tonic::Status`es,
/// as a tonic client expects:
///
/// | what happened | `tonic::Code` |
/// |---|---|
/// | the deadline was spent before or during the call (our [`DeadlineExceeded`], an attempt's [`Elapsed`], tonic's own `TimeoutExpired`, a tonic server's `CANCELLED "Timeout expired"`, or a retry the deadline could not hold) | `DeadlineExceeded` |
/// | an open circuit ([`CircuitOpen`]) | `Unavailable`, naming the circuit |
/// | a rate limit ([`Overloaded`] with [`RateLimited`](OverloadReason::RateLimited)) | `ResourceExhausted` |
/// | any other local overload (concurrency limit, bulkhead, shed, throttled) | `Unavailable`, naming the layer and reason |
/// | a `tonic::Status` inside the error | that status |
/// | anything else | tonic's own mapping (`Status::from_error`: `Unavailable` for connection errors, `Unknown` otherwise) |
///
/// The message is the whole error's text, so a `GaveUp` says how many attempts were made and
/// what the last one met.
///
/// Deadlines: the stack writes `grpc-timeout` (what is left, minus the margin, capped at the
/// attempt timeout), and a tonic `Channel` arms its own timer from that header. It fires first,
/// by the margin; the classifiers read its `TimeoutExpired` as an attempt timeout (retryable
/// while the deadline allows), and the caller reads `DEADLINE_EXCEEDED`, never tonic's
/// `CANCELLED "Timeout expired"`. A tonic server arms a timer from the same header and answers
/// `CANCELLED "Timeout expired"` when it fires; on a busy machine that answer can arrive before
/// either client timer fires, so it is read the same way: retryable `timeout`, and
/// `DEADLINE_EXCEEDED` for the caller. (ADR 0007 records the choice.)
///
/// ```
/// use steadfast_http::preset::{StandardClientLayer, Tonic};
/// let layer = StandardClientLayer::builder().tonic().build()?;
/// let _: &StandardClientLayer<_, _, Tonic> = &layer;
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Tonic;

impl sealed::Sealed for Tonic {}

impl Transport for Tonic {
    type Inner<S> = TonicBody<S>;
    type Outer<S> = TonicStatus<S>;

    #[inline]
    fn inner<S>(&self, transport: S) -> TonicBody<S> {
        TonicBody { inner: transport }
    }

    #[inline]
    fn outer<S>(&self, stack: S) -> TonicStatus<S> {
        TonicStatus { inner: stack }
    }
}

impl<Cl, Br, Tr> StandardClientBuilder<Cl, Br, Tr> {
    /// For a tonic `Channel` as it is: [`grpc`](Self::grpc) (the [`GrpcClassifier`], no
    /// idempotency keys, every call eligible for the classifier's retries) plus the [`Tonic`]
    /// transport (tonic's body type next to the wire, `tonic::Status` errors for the caller).
    ///
    /// ```no_run
    /// use steadfast_http::preset::StandardClientLayer;
    /// use tower::Layer;
    /// # async fn f() -> Result<(), Box<dyn std::error::Error>> {
    /// let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051").connect().await?;
    /// let channel = StandardClientLayer::builder().tonic().build()?.layer(channel);
    /// // Hand it to a generated client: `MyServiceClient::new(channel)`.
    /// # let _ = channel; Ok(()) }
    /// ```
    pub fn tonic(self) -> StandardClientBuilder<GrpcClassifier, Br, Tonic> {
        self.grpc().transport(Tonic)
    }
}

/// Next to the wire: hands tonic its own body type, wrapping the stack's replayable body.
///
/// ```
/// use steadfast_http::preset::{Tonic, Transport};
/// let svc = Tonic.inner(tower::service_fn(|_: http::Request<tonic::body::Body>| async {
///     Ok::<_, std::io::Error>(http::Response::new(()))
/// }));
/// # let _ = svc;
/// ```
#[derive(Clone, Debug)]
pub struct TonicBody<S> {
    inner: S,
}

impl<S, B> Service<Request<ReplayBody<B>>> for TonicBody<S>
where
    S: Service<Request<tonic::body::Body>>,
    ReplayBody<B>: http_body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReplayBody<B>>) -> Self::Future {
        self.inner.call(req.map(tonic::body::Body::new))
    }
}

/// Outermost: turns the stack's errors into `tonic::Status` ([`grpc_status`]).
///
/// ```
/// use steadfast_http::preset::{Tonic, Transport};
/// let svc = Tonic.outer(tower::service_fn(|_: ()| async { Ok::<_, std::io::Error>(()) }));
/// # let _ = svc;
/// ```
#[derive(Clone, Debug)]
pub struct TonicStatus<S> {
    inner: S,
}

impl<S, Req, B> Service<Req> for TonicStatus<S>
where
    S: Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = Status;
    type Future = TonicStatusFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.inner.poll_ready(cx).map_err(|e| grpc_status(e.into()))
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        TonicStatusFuture {
            inner: self.inner.call(req),
        }
    }
}

/// The response future of [`TonicStatus`].
#[pin_project]
#[derive(Debug)]
pub struct TonicStatusFuture<F> {
    #[pin]
    inner: F,
}

impl<F, B, E> Future for TonicStatusFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<B>, Status>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match ready!(self.project().inner.poll(cx)) {
            // The server's timer, armed from the `grpc-timeout` we sent, fired before ours
            // (tonic answers `CANCELLED "Timeout expired"`): the deadline is spent all the same.
            Ok(res) if server_timer_fired(res.headers()) => {
                Poll::Ready(Err(Status::deadline_exceeded(SERVER_TIMER_FIRED)))
            }
            res => Poll::Ready(res.map_err(|e| grpc_status(e.into()))),
        }
    }
}

/// The message of the `DEADLINE_EXCEEDED` a caller reads when the server's timer fired first.
const SERVER_TIMER_FIRED: &str =
    "deadline exceeded: the server's timer, armed from the grpc-timeout sent, fired first \
     (it answered CANCELLED \"Timeout expired\")";

/// The gRPC column of steadfast's error table: the `tonic::Status` a tonic caller gets for an
/// error of the stack (see [`Tonic`] for the table).
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::preset::grpc_status;
/// use steadfast_layers::breaker::{BreakerState, CircuitOpen};
/// use steadfast_layers::deadline::DeadlineExceeded;
/// use steadfast_layers::overload::Overloaded;
/// use steadfast_layers::retry::{GaveUp, GiveUpReason};
///
/// assert_eq!(grpc_status(Box::new(DeadlineExceeded::new())).code(), tonic::Code::DeadlineExceeded);
/// let open = CircuitOpen::new(BreakerState::Open, Some(Duration::from_secs(4)));
/// let gave_up = GaveUp::new(GiveUpReason::Deadline, 1, Some(Box::new(open))).with_last_reason("circuit_open");
/// let status = grpc_status(Box::new(gave_up));
/// assert_eq!(status.code(), tonic::Code::Unavailable);
/// assert!(status.message().contains("circuit open"), "{}", status.message());
/// let limited = Overloaded::rate_limited("rate", Duration::from_millis(40));
/// assert_eq!(grpc_status(Box::new(limited)).code(), tonic::Code::ResourceExhausted);
/// ```
pub fn grpc_status(err: BoxError) -> Status {
    match code_of(&*err) {
        Some(code) => Status::new(code, err.to_string()),
        None => match err.downcast::<Status>() {
            Ok(status) => *status,
            Err(err) => Status::from_error(err),
        },
    }
}

/// The code steadfast decides for `err`, or `None` to leave it to tonic.
fn code_of(err: &(dyn std::error::Error + 'static)) -> Option<Code> {
    let mut cause = None;
    let mut spent = false;
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(status) = e.downcast_ref::<Status>() {
            // A status inside the chain (from an interceptor, say) keeps its code.
            cause.get_or_insert(status.code());
        } else if let Some(o) = e.downcast_ref::<Overloaded>() {
            cause.get_or_insert(match o.reason() {
                OverloadReason::RateLimited => Code::ResourceExhausted,
                _ => Code::Unavailable,
            });
        } else if e.is::<CircuitOpen>() {
            cause.get_or_insert(Code::Unavailable);
        } else if e.is::<DeadlineExceeded>() || e.is::<Elapsed>() || e.is::<tonic::TimeoutExpired>()
        {
            spent = true;
        } else if let Some(g) = e.downcast_ref::<GaveUp>() {
            if *g.reason() == GiveUpReason::Deadline {
                spent = true;
            }
        }
        let mut next = e.source();
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            next = Some(inner as &(dyn std::error::Error + 'static));
        }
        cur = next;
    }
    // A refusal (circuit, overload) names the cause even when it also left the deadline unable
    // to wait; a timeout with no such cause is the deadline's.
    match (cause, spent) {
        (Some(code), _) => Some(code),
        (None, true) => Some(Code::DeadlineExceeded),
        (None, false) => None,
    }
}
