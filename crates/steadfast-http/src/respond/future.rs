use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use pin_project::pin_project;
use steadfast_layers::BoxError;

use super::refusal_response;

/// The response future of [`Respond`](super::Respond): the inner answer, or the refusal as a
/// response.
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    state: State<F>,
    grpc: bool,
}

#[pin_project(project = StateProj)]
#[derive(Debug)]
enum State<F> {
    Inner(#[pin] F),
    Refused(Option<BoxError>),
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, grpc: bool) -> Self {
        Self {
            state: State::Inner(inner),
            grpc,
        }
    }

    pub(super) fn refused(error: BoxError, grpc: bool) -> Self {
        Self {
            state: State::Refused(Some(error)),
            grpc,
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Default,
{
    type Output = Result<Response<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let e: BoxError = match this.state.project() {
            StateProj::Inner(fut) => match ready!(fut.poll(cx)) {
                Ok(res) => return Poll::Ready(Ok(res)),
                Err(e) => e.into(),
            },
            StateProj::Refused(e) => match e.take() {
                Some(e) => e,
                None => "the response future was polled after it completed".into(),
            },
        };
        Poll::Ready(Ok(answer(&e, *this.grpc)))
    }
}

/// The refusal as a response, with an event saying what was answered.
fn answer<B: Default>(e: &BoxError, grpc: bool) -> Response<B> {
    let res: Response<B> = refusal_response(&**e, grpc);
    let status = res.status().as_u16();
    if status == 500 {
        tracing::error!(target: "steadfast::respond", error = %e, grpc, "error answered 500");
    } else {
        tracing::debug!(target: "steadfast::respond", status, grpc, error = %e, "refusal answered");
    }
    res
}
