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

/// The response future of [`RateLimit`](super::RateLimit): waits for a cell if the layer
/// waits, then drives the inner call.
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
    },
    Waiting {
        #[pin]
        sleep: Sleep,
        started: Instant,
        deadline: Option<Instant>,
        key: Option<u64>,
        service: Option<S>,
        req: Option<Req>,
        shared: Arc<Shared>,
    },
    Refused {
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
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
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
    pub(super) fn called(fut: S::Future, span: Span) -> Self {
        Self {
            state: State::Calling { fut },
            span,
        }
    }

    pub(super) fn refused(shared: &Shared, why: Refusal, span: Span) -> Self {
        let error = span.in_scope(|| refusal(shared, why));
        Self {
            state: State::Refused { error },
            span,
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
                sleep: sleep_until(now + wait),
                started: now,
                deadline,
                key,
                service: Some(service),
                req: Some(req),
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
                StateProj::Calling { fut } => return fut.poll(cx).map_err(Into::into),
                StateProj::Refused { error } => return Poll::Ready(Err((*error).into())),
                StateProj::Waiting {
                    mut sleep,
                    started,
                    deadline,
                    key,
                    service,
                    req,
                    shared,
                } => {
                    ready!(sleep.as_mut().poll(cx));
                    // Another caller may have taken the cell we waited for: check again.
                    let next = match shared.check(*key) {
                        Ok(()) => match (service.take(), req.take()) {
                            (Some(mut service), Some(req)) => State::Calling {
                                fut: service.call(req),
                            },
                            // Unreachable by construction: `Waiting` holds both.
                            _ => State::Refused {
                                error: refusal(shared, Refusal::TooManyKeys),
                            },
                        },
                        Err(Refusal::RateLimited(wait)) => {
                            let now = Instant::now();
                            if deadline.is_some_and(|d| now + wait > d) {
                                State::Refused {
                                    error: refusal(shared, Refusal::RateLimited(wait)),
                                }
                            } else {
                                sleep.reset(now + wait);
                                continue;
                            }
                        }
                        Err(why) => State::Refused {
                            error: refusal(shared, why),
                        },
                    };
                    if let Some(h) = &shared.wait_time {
                        h.record(started.elapsed().as_secs_f64(), shared.attrs.base());
                    }
                    this.state.set(next);
                }
            }
        }
    }
}
