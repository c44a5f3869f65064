use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use tokio::time::Instant;
use tower_service::Service;
use tracing::Span;

use std::sync::Arc;

use super::layer::Shared;
use super::{OverloadReason, Overloaded};
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::gate::{GatePermit, GateWait, Queued, Waited};
use crate::telemetry::{ms, REASON_KEY};

/// The response future of [`Bulkhead`](super::Bulkhead): waits in the queue if it must, then
/// drives the inner call, holding the slot until the call completes or this future is dropped.
/// A refusal becomes the service's error when polled: boxed with [`Boxed`], the default, or made
/// into the caller's type without allocating (see
/// [`BulkheadLayer::with_error`](super::BulkheadLayer::with_error)).
#[pin_project]
pub struct ResponseFuture<S, Req, K = Boxed>
where
    S: Service<Req>,
{
    #[pin]
    state: State<S::Future, S, Req>,
    span: Span,
    _error: PhantomData<fn() -> K>,
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

impl<S, Req, K> std::fmt::Debug for ResponseFuture<S, Req, K>
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

impl<S, Req, K> ResponseFuture<S, Req, K>
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
            _error: PhantomData,
        }
    }

    pub(super) fn rejected(error: Overloaded, span: Span) -> Self {
        Self {
            state: State::Rejected { error },
            span,
            _error: PhantomData,
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
            _error: PhantomData,
        }
    }
}

impl<S, Req, K> Future for ResponseFuture<S, Req, K>
where
    S: Service<Req>,
    K: MakeRefusal<S::Error, Overloaded>,
{
    type Output = Result<S::Response, <K as MakeError<S::Error>>::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let _entered = this.span.enter();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut, permit } => {
                    let out = ready!(fut.poll(cx));
                    drop(permit.take());
                    return Poll::Ready(out.map_err(K::inner));
                }
                StateProj::Rejected { error } => return Poll::Ready(Err(K::refusal(*error))),
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
