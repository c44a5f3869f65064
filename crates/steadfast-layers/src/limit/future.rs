use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use tokio::time::Instant;
use tower_service::Service;
use tracing::Span;

use super::layer::Shared;
use super::{OverloadReason, Overloaded};
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::gate::{GatePermit, GateWait, Queued, Waited};
use crate::telemetry::ms;

/// The response future of [`ConcurrencyLimit`](super::ConcurrencyLimit): waits for a permit if
/// the layer waits, then drives the inner call, holding the permit until the call completes or
/// this future is dropped.
///
/// Admitted calls keep only the inner future and the permit inline; the state of a call that
/// waits (and its span) is boxed, since waiting allocates anyway. A refusal keeps only its
/// reason and becomes the service's error when polled: boxed with [`Boxed`], the default, or
/// made into the caller's type without allocating (see
/// [`ConcurrencyLimitLayer::with_error`](super::ConcurrencyLimitLayer::with_error)).
#[pin_project]
pub struct ResponseFuture<S, Req, K = Boxed>
where
    S: Service<Req>,
{
    #[pin]
    state: State<S::Future, S, Req>,
    _error: PhantomData<fn() -> K>,
}

#[pin_project(project = StateProj)]
enum State<F, S, Req> {
    Calling {
        #[pin]
        fut: F,
        permit: Option<GatePermit>,
        /// The span of a call that waited: the wait and the call show in traces.
        span: Option<Box<Span>>,
    },
    Waiting {
        wait: Pin<Box<Waiting<S, Req>>>,
    },
    Rejected {
        reason: OverloadReason,
    },
}

#[pin_project]
struct Waiting<S, Req> {
    #[pin]
    wait: GateWait,
    service: Option<S>,
    req: Option<Req>,
    started: Option<Instant>,
    shared: Arc<Shared>,
    span: Span,
}

impl<S, Req, K> std::fmt::Debug for ResponseFuture<S, Req, K>
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

impl<S, Req, K> ResponseFuture<S, Req, K>
where
    S: Service<Req>,
{
    /// A call admitted at once: no span (and no `Span` to drop).
    #[inline]
    pub(super) fn called(fut: S::Future, permit: GatePermit) -> Self {
        Self {
            state: State::Calling {
                fut,
                permit: Some(permit),
                span: None,
            },
            _error: PhantomData,
        }
    }

    pub(super) fn rejected(error: Overloaded, _span: Span) -> Self {
        Self {
            state: State::Rejected {
                reason: error.reason(),
            },
            _error: PhantomData,
        }
    }

    pub(super) fn waiting(
        queued: Queued,
        deadline: Option<Instant>,
        started: Option<Instant>,
        service: S,
        req: Req,
        shared: Arc<Shared>,
        span: Span,
    ) -> Self {
        Self {
            state: State::Waiting {
                wait: Box::pin(Waiting {
                    wait: queued.wait(deadline),
                    service: Some(service),
                    req: Some(req),
                    started,
                    shared,
                    span,
                }),
            },
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

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut, permit, span } => {
                    let _entered = span.as_deref().map(Span::enter);
                    let out = ready!(fut.poll(cx));
                    // Release before handing the response back.
                    drop(permit.take());
                    return Poll::Ready(out.map_err(K::inner));
                }
                StateProj::Rejected { reason } => {
                    return Poll::Ready(Err(K::refusal(Overloaded::new("limit", *reason))))
                }
                StateProj::Waiting { wait } => {
                    let next = ready!(wait.as_mut().poll_waited(cx));
                    this.state.set(next);
                }
            }
        }
    }
}

impl<S, Req> Waiting<S, Req>
where
    S: Service<Req>,
{
    /// Polls the wait; once it ends, the next state: the call (holding its permit) or the
    /// rejection. Kept out of line so the admitted call's `poll` stays small.
    #[inline(never)]
    fn poll_waited(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<State<S::Future, S, Req>> {
        let w = self.project();
        let _entered = w.span.enter();
        let waited = ready!(w.wait.poll_wait(cx));
        let shared = &**w.shared;
        if let (Some(h), Some(t0)) = (&shared.wait_time, *w.started) {
            h.record(t0.elapsed().as_secs_f64(), shared.attrs.base());
        }
        let permit = match waited {
            Waited::Acquired(permit) => permit,
            Waited::TimedOut => {
                let reason = OverloadReason::WaitTimeout;
                shared.reject(reason, shared.max_wait.map(ms));
                return Poll::Ready(State::Rejected { reason });
            }
        };
        let (Some(mut service), Some(req)) = (w.service.take(), w.req.take()) else {
            // Unreachable by construction: `Waiting` always holds both.
            return Poll::Ready(State::Rejected {
                reason: OverloadReason::AtCapacity,
            });
        };
        let fut = service.call(req);
        Poll::Ready(State::Calling {
            fut,
            permit: Some(permit),
            span: Some(Box::new(w.span.clone())),
        })
    }
}
