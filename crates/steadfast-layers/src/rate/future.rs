use std::future::Future;
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
use crate::telemetry::{ms, REASON_KEY};
use crate::BoxError;

/// Experiment: small response future.
#[pin_project]
pub struct ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    #[pin]
    state: State<S::Future, S, Req>,
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
    Refused {
        error: Option<Box<Overloaded>>,
    },
}

impl<S, Req> std::fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// Counts and traces a refusal, and makes its error.
fn refusal(shared: &Shared, refusal: Refusal) -> Overloaded {
    let (error, retry_after) = match refusal {
        Refusal::RateLimited(after) => (Overloaded::rate_limited("rate", after), Some(after)),
        Refusal::TooManyKeys => (Overloaded::new("rate", OverloadReason::TooManyKeys), None),
    };
    let reason = error.reason().label();
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
    error
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    #[inline]
    pub(super) fn called(fut: S::Future) -> Self {
        Self {
            state: State::Calling { fut },
        }
    }

    pub(super) fn refused(shared: &Shared, why: Refusal, span: Span) -> Self {
        let error = span.in_scope(|| refusal(shared, why));
        Self {
            state: State::Refused {
                error: Some(Box::new(error)),
            },
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
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut } => return fut.poll(cx).map_err(Into::into),
                StateProj::Refused { error } => {
                    let e: BoxError = match error.take() {
                        Some(e) => e,
                        None => "polled after completion".into(),
                    };
                    return Poll::Ready(Err(e));
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
                            _ => State::Refused {
                                error: Some(Box::new(refusal(shared, Refusal::TooManyKeys))),
                            },
                        },
                        Err(Refusal::RateLimited(wait)) => {
                            let now = Instant::now();
                            if w.deadline.is_some_and(|d| now + wait > d) {
                                State::Refused {
                                    error: Some(Box::new(refusal(
                                        shared,
                                        Refusal::RateLimited(wait),
                                    ))),
                                }
                            } else {
                                sleep.reset(now + wait);
                                continue;
                            }
                        }
                        Err(why) => State::Refused {
                            error: Some(Box::new(refusal(shared, why))),
                        },
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
