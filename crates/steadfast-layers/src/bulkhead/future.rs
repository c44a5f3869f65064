use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use tokio::time::Instant;
use tower_service::Service;
use tracing::Span;

use std::sync::Arc;

use super::layer::Shared;
use super::{OverloadReason, Overloaded};
use crate::gate::{GatePermit, GateWait, Queued, Waited};
use crate::telemetry::{ms, REASON_KEY};
use crate::BoxError;

/// The response future of [`Bulkhead`](super::Bulkhead): waits in the queue if it must, then
/// drives the inner call, holding the slot until the call completes or this future is dropped.
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
        permit: Option<GatePermit>,
    },
    Queued {
        #[pin]
        wait: GateWait,
        service: Option<S>,
        req: Option<Req>,
        started: Instant,
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
            State::Queued { .. } => "queued",
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
    pub(super) fn called(fut: S::Future, permit: GatePermit, span: Span) -> Self {
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

    pub(super) fn queued(
        queued: Queued,
        started: Instant,
        service: S,
        req: Req,
        shared: Arc<Shared>,
        span: Span,
    ) -> Self {
        let deadline = started.checked_add(shared.max_wait);
        Self {
            state: State::Queued {
                wait: queued.wait(deadline),
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
                    drop(permit.take());
                    return Poll::Ready(out.map_err(Into::into));
                }
                StateProj::Rejected { error } => return Poll::Ready(Err((*error).into())),
                StateProj::Queued {
                    wait,
                    service,
                    req,
                    started,
                    shared,
                } => {
                    let waited = ready!(wait.poll_wait(cx));
                    let shared = &**shared;
                    if let Some(h) = &shared.wait_time {
                        h.record(started.elapsed().as_secs_f64(), shared.attrs.base());
                    }
                    let next = match (waited, service.take(), req.take()) {
                        (Waited::Acquired(permit), Some(mut service), Some(req)) => {
                            State::Calling {
                                fut: service.call(req),
                                permit: Some(permit),
                            }
                        }
                        _ => {
                            let reason = OverloadReason::WaitTimeout;
                            shared.attrs.with(REASON_KEY, reason.label(), |a| {
                                shared.rejected.add(1, a);
                            });
                            tracing::debug!(
                                target: "steadfast::bulkhead",
                                instance = shared.telemetry.span_name(),
                                reason = reason.label(),
                                waited_ms = ms(shared.max_wait),
                                "bulkhead wait timed out: call rejected"
                            );
                            State::Rejected {
                                error: Overloaded::new("bulkhead", reason),
                            }
                        }
                    };
                    this.state.set(next);
                }
            }
        }
    }
}
