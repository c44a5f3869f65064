use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::{sleep, Sleep};
use tracing::Span;

use super::{FaultKind, InjectedFault};
use crate::BoxError;

/// The response future of [`Chaos`](super::Chaos): the injected delay, then the inner call (or
/// the injected error), with its response dropped when the fault says so.
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    inner: Option<F>,
    #[pin]
    delay: Option<Sleep>,
    fault: Option<FaultKind>,
    span: Span,
}

impl<F> ResponseFuture<F> {
    pub(super) fn passthrough(inner: F) -> Self {
        Self {
            inner: Some(inner),
            delay: None,
            fault: None,
            span: Span::none(),
        }
    }

    pub(super) fn injected(
        inner: Option<F>,
        delay: Option<Duration>,
        fault: Option<FaultKind>,
        span: Span,
    ) -> Self {
        Self {
            inner,
            delay: delay.map(sleep),
            fault,
            span,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        if let Some(delay) = this.delay.as_mut().as_pin_mut() {
            ready!(delay.poll(cx));
            this.delay.set(None);
        }
        match this.inner.as_pin_mut() {
            // The request was never sent.
            None => Poll::Ready(Err(InjectedFault::new(FaultKind::Error).into())),
            Some(fut) => {
                let out = ready!(fut.poll(cx));
                if *this.fault == Some(FaultKind::Abort) {
                    drop(out);
                    tracing::debug!(
                        target: "steadfast::chaos",
                        fault = "abort",
                        "chaos: response dropped"
                    );
                    return Poll::Ready(Err(InjectedFault::new(FaultKind::Abort).into()));
                }
                Poll::Ready(out.map_err(Into::into))
            }
        }
    }
}
