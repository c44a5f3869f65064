use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use tracing::Span;

use super::layer::Shared;
use super::{Failure, FallbackAction, FallbackFailed, FallbackPolicy};
use crate::telemetry::ERROR_TYPE_KEY;
use crate::BoxError;

/// The response future of [`Fallback`](super::Fallback): the inner call, then, on a chosen
/// failure, the fallback, in one pinned state machine with no allocation of its own.
#[pin_project]
pub struct ResponseFuture<F, A, P, Res>
where
    A: FallbackAction<Res>,
{
    #[pin]
    state: State<F, A::Future>,
    shared: Arc<Shared<A, P>>,
}

#[pin_project(project = StateProj)]
enum State<F, G> {
    Calling {
        #[pin]
        fut: F,
    },
    /// The inner service failed to become ready, with an error the policy chose.
    Rejected { error: Option<BoxError> },
    Falling {
        #[pin]
        fut: G,
        reason: &'static str,
        span: Span,
    },
}

impl<F, A, P, Res> fmt::Debug for ResponseFuture<F, A, P, Res>
where
    A: FallbackAction<Res>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Calling { .. } | State::Rejected { .. } => "calling",
            State::Falling { .. } => "falling back",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<F, A, P, Res> ResponseFuture<F, A, P, Res>
where
    A: FallbackAction<Res>,
{
    pub(super) fn new(fut: F, shared: Arc<Shared<A, P>>) -> Self {
        Self {
            state: State::Calling { fut },
            shared,
        }
    }

    pub(super) fn rejected(error: BoxError, shared: Arc<Shared<A, P>>) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
            shared,
        }
    }
}

impl<F, E, A, P, Res> Future for ResponseFuture<F, A, P, Res>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    A: FallbackAction<Res>,
    P: FallbackPolicy<Res>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared: &Shared<A, P> = this.shared;
        loop {
            let result = match this.state.as_mut().project() {
                StateProj::Calling { fut } => ready!(fut.poll(cx)).map_err(Into::into),
                StateProj::Rejected { error } => match error.take() {
                    Some(e) => Err(e),
                    None => panic!("fallback ResponseFuture polled after completion"),
                },
                StateProj::Falling { fut, reason, span } => {
                    let _entered = span.enter();
                    let out = ready!(fut.poll(cx));
                    return Poll::Ready(out.map_err(|e| failed(shared, reason, e)));
                }
            };
            let Some(reason) = shared.policy.check(&result) else {
                return Poll::Ready(result);
            };
            shared
                .attrs
                .with(ERROR_TYPE_KEY, reason, |a| shared.invoked.add(1, a));
            let span = tracing::debug_span!(
                target: "steadfast::fallback",
                "steadfast.fallback",
                instance = shared.telemetry.span_name(),
                reason,
            );
            let fut = span.in_scope(|| {
                tracing::debug!(
                    target: "steadfast::fallback",
                    reason,
                    error = result.as_ref().err().map(tracing::field::display),
                    "fallback invoked"
                );
                shared.action.fallback(Failure::new(reason, result))
            });
            this.state.set(State::Falling { fut, reason, span });
        }
    }
}

/// Counts and traces a failed fallback, and wraps its error.
fn failed<A, P>(shared: &Shared<A, P>, reason: &'static str, e: BoxError) -> BoxError {
    shared
        .attrs
        .with(ERROR_TYPE_KEY, reason, |a| shared.failed.add(1, a));
    tracing::debug!(
        target: "steadfast::fallback",
        reason,
        error = %e,
        "fallback failed"
    );
    FallbackFailed::new(reason, e).into()
}
