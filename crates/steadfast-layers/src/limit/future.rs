use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower_service::Service;
use tracing::Span;

use super::layer::Shared;
use super::{OverloadReason, Overloaded};
use crate::permit::{PermitWait, Waited};
use crate::telemetry::{ms, REASON_KEY};
use crate::BoxError;

/// The response future of [`ConcurrencyLimit`](super::ConcurrencyLimit): waits for a permit if
/// the layer waits, then drives the inner call, holding the permit until the call completes or
/// this future is dropped.
#[pin_project]
pub struct ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    #[pin]
    state: State<S::Future, S, Req>,
    span: Span,
}

#[pin_project(project = StateProj)]
enum State<F, S, Req> {
    Calling {
        #[pin]
        fut: F,
        permit: Option<OwnedSemaphorePermit>,
    },
    Waiting {
        #[pin]
        wait: PermitWait,
        service: Option<S>,
        req: Option<Req>,
        started: Option<Instant>,
        shared: Arc<Shared>,
    },
    Rejected {
        error: Overloaded,
    },
}

impl<S, Req> std::fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Calling { .. } => "calling",
            State::Waiting { .. } => "waiting",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    pub(super) fn called(fut: S::Future, permit: OwnedSemaphorePermit, span: Span) -> Self {
        Self {
            state: State::Calling {
                fut,
                permit: Some(permit),
            },
            span,
        }
    }

    pub(super) fn rejected(error: Overloaded, span: Span) -> Self {
        Self {
            state: State::Rejected { error },
            span,
        }
    }

    pub(super) fn waiting(
        semaphore: Arc<Semaphore>,
        deadline: Option<Instant>,
        started: Option<Instant>,
        service: S,
        req: Req,
        shared: Arc<Shared>,
        span: Span,
    ) -> Self {
        Self {
            state: State::Waiting {
                wait: PermitWait::new(semaphore, deadline),
                service: Some(service),
                req: Some(req),
                started,
                shared,
            },
            span,
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut, permit } => {
                    let out = ready!(fut.poll(cx));
                    // Release before handing the response back.
                    drop(permit.take());
                    return Poll::Ready(out.map_err(Into::into));
                }
                StateProj::Rejected { error } => return Poll::Ready(Err((*error).into())),
                StateProj::Waiting {
                    wait,
                    service,
                    req,
                    started,
                    shared,
                } => {
                    let waited = ready!(wait.poll_wait(cx));
                    if let (Some(h), Some(t0)) = (&shared.wait_time, *started) {
                        h.record(t0.elapsed().as_secs_f64(), shared.attrs.base());
                    }
                    let permit = match waited {
                        Waited::Acquired(permit) => permit,
                        Waited::TimedOut => {
                            let reason = OverloadReason::WaitTimeout;
                            shared.attrs.with(REASON_KEY, reason.label(), |a| {
                                shared.rejected.add(1, a);
                            });
                            tracing::debug!(
                                target: "steadfast::limit",
                                instance = shared.telemetry.span_name(),
                                reason = reason.label(),
                                waited_ms = shared.max_wait.map(ms),
                                "concurrency limit: call rejected"
                            );
                            let error = Overloaded::new("limit", reason);
                            this.state.set(State::Rejected { error });
                            continue;
                        }
                    };
                    let (Some(mut service), Some(req)) = (service.take(), req.take()) else {
                        // Unreachable by construction: `Waiting` always holds both.
                        let error = Overloaded::new("limit", OverloadReason::AtCapacity);
                        this.state.set(State::Rejected { error });
                        continue;
                    };
                    let fut = service.call(req);
                    this.state.set(State::Calling {
                        fut,
                        permit: Some(permit),
                    });
                }
            }
        }
    }
}
