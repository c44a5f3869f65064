use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::{sleep_until, Instant, Sleep};
use tower_service::Service;
use tracing::Span;

use super::layer::{Refusal, Shared};
use super::{OverloadReason, Overloaded};
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::telemetry::{ms, REASON_KEY};

/// The response future of [`RateLimit`](super::RateLimit): the inner call, a wait for a cell
/// (boxed: waiting allocates anyway), or a refusal. A refusal keeps only why (16 bytes: the
/// future over a `Ready` inner future stays 16 bytes) and becomes the service's error when
/// polled: boxed with [`Boxed`], the default, or made into the caller's type without allocating
/// (see [`RateLimitLayer::with_error`](super::RateLimitLayer::with_error)).
#[pin_project]
pub struct ResponseFuture<S, Req, K = Boxed>
where
    S: Service<Req>,
{
    #[pin]
    state: State<S::Future, S, Req>,
    _error: PhantomData<fn() -> K>,
}

#[pin_project]
struct WaitingState<S, Req> {
    #[pin]
    sleep: Sleep,
    started: Instant,
    deadline: Option<Instant>,
    key: Option<u64>,
    service: Option<S>,
    req: Option<Req>,
    shared: Arc<Shared>,
    span: Span,
}

#[pin_project(project = StateProj)]
enum State<F, S, Req> {
    Calling {
        #[pin]
        fut: F,
    },
    Waiting {
        waiting: Pin<Box<WaitingState<S, Req>>>,
    },
    /// Counted and traced when made; polled again after completion, it gives the same refusal
    /// again.
    Refused { why: Refusal },
}

impl<S, Req, K> std::fmt::Debug for ResponseFuture<S, Req, K>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// The error of a refusal.
#[inline]
fn overloaded(why: Refusal) -> Overloaded {
    match why {
        Refusal::RateLimited(after) => Overloaded::rate_limited("rate", after),
        Refusal::TooManyKeys => Overloaded::new("rate", OverloadReason::TooManyKeys),
    }
}

/// Counts and traces a refusal, and returns the state that gives its error.
fn refusal<F, S, Req>(shared: &Shared, why: Refusal) -> State<F, S, Req> {
    let retry_after = match why {
        Refusal::RateLimited(after) => Some(after),
        Refusal::TooManyKeys => None,
    };
    let reason = overloaded(why).reason().label();
    shared.attrs.with(REASON_KEY, reason, |a| {
        shared.rejected.add(1, a);
    });
    tracing::debug!(
        target: "steadfast::rate",
        instance = shared.telemetry.span_name(),
        reason,
        retry_after_ms = retry_after.map(ms),
        "rate limit: call rejected"
    );
    State::Refused { why }
}

impl<S, Req, K> ResponseFuture<S, Req, K>
where
    S: Service<Req>,
{
    #[inline]
    pub(super) fn called(fut: S::Future) -> Self {
        Self {
            state: State::Calling { fut },
            _error: PhantomData,
        }
    }

    pub(super) fn refused(shared: &Shared, why: Refusal, span: Span) -> Self {
        Self {
            state: span.in_scope(|| refusal(shared, why)),
            _error: PhantomData,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn waiting(
        now: Instant,
        wait: Duration,
        deadline: Option<Instant>,
        key: Option<u64>,
        service: S,
        req: Req,
        shared: Arc<Shared>,
        span: Span,
    ) -> Self {
        Self {
            state: State::Waiting {
                waiting: Box::pin(WaitingState {
                    sleep: sleep_until(now + wait),
                    started: now,
                    deadline,
                    key,
                    service: Some(service),
                    req: Some(req),
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
                StateProj::Calling { fut } => return fut.poll(cx).map_err(K::inner),
                StateProj::Refused { why } => {
                    return Poll::Ready(Err(K::refusal(overloaded(*why))));
                }
                StateProj::Waiting { waiting } => {
                    let w = waiting.as_mut().project();
                    let entered = w.span.enter();
                    let mut sleep = w.sleep;
                    let shared = &*w.shared;
                    ready!(sleep.as_mut().poll(cx));
                    let next = match shared.check(*w.key) {
                        Ok(()) => match (w.service.take(), w.req.take()) {
                            (Some(mut service), Some(req)) => State::Calling {
                                fut: service.call(req),
                            },
                            _ => refusal(shared, Refusal::TooManyKeys),
                        },
                        Err(Refusal::RateLimited(wait)) => {
                            let now = Instant::now();
                            if w.deadline.is_some_and(|d| now + wait > d) {
                                refusal(shared, Refusal::RateLimited(wait))
                            } else {
                                sleep.reset(now + wait);
                                continue;
                            }
                        }
                        Err(why) => refusal(shared, why),
                    };
                    if let Some(h) = &shared.wait_time {
                        h.record(w.started.elapsed().as_secs_f64(), shared.attrs.base());
                    }
                    drop(entered);
                    this.state.set(next);
                }
            }
        }
    }
}
