use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project::pin_project;
use tokio::time::{sleep_until, Instant, Sleep};

use super::layer::Shared;
use super::Elapsed;
use crate::deadline::{Deadline, DeadlineExceeded};
use crate::telemetry::REASON_KEY;
use crate::BoxError;

/// The response future of [`AttemptTimeout`](super::AttemptTimeout).
///
/// The timer is armed (one clock read) only when the inner call is still pending after its first
/// poll; the attempt's time counts from then.
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    inner: F,
    #[pin]
    sleep: Option<Sleep>,
    bound: Option<Bound>,
}

#[derive(Debug)]
struct Bound {
    timeout: Option<Duration>,
    deadline: Option<Deadline>,
    /// Which of the two the armed timer stands for.
    deadline_first: bool,
    shared: Arc<Shared>,
}

impl<F> ResponseFuture<F> {
    pub(super) fn passthrough(inner: F) -> Self {
        Self {
            inner,
            sleep: None,
            bound: None,
        }
    }

    pub(super) fn bounded(
        inner: F,
        timeout: Option<Duration>,
        deadline: Option<Deadline>,
        shared: Arc<Shared>,
    ) -> Self {
        Self {
            inner,
            sleep: None,
            bound: Some(Bound {
                timeout,
                deadline,
                deadline_first: false,
                shared,
            }),
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
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(out.map_err(Into::into));
        }
        let Some(bound) = this.bound.as_mut() else {
            return Poll::Pending;
        };
        if this.sleep.is_none() {
            let attempt_end = bound.timeout.and_then(|t| Instant::now().checked_add(t));
            let end = match (attempt_end, bound.deadline) {
                (Some(a), Some(d)) if d.instant() <= a => {
                    bound.deadline_first = true;
                    d.instant()
                }
                (Some(a), _) => a,
                (None, Some(d)) => {
                    bound.deadline_first = true;
                    d.instant()
                }
                (None, None) => return Poll::Pending,
            };
            this.sleep.set(Some(sleep_until(end)));
        }
        if let Some(timer) = this.sleep.as_pin_mut() {
            ready!(timer.poll(cx));
        }
        if bound.deadline_first {
            bound.shared.attrs.with(REASON_KEY, "attempt", |a| {
                bound.shared.deadline_exceeded.add(1, a);
            });
            tracing::debug!(
                target: "steadfast::timeout",
                reason = "attempt",
                "deadline exceeded during an attempt: attempt cancelled"
            );
            Poll::Ready(Err(DeadlineExceeded::new().into()))
        } else {
            let timeout = bound.timeout.unwrap_or_default();
            bound.shared.elapsed.add(1, bound.shared.attrs.base());
            tracing::debug!(
                target: "steadfast::timeout",
                timeout_ms = crate::telemetry::ms(timeout),
                "attempt timed out: attempt cancelled"
            );
            Poll::Ready(Err(Elapsed::new(timeout).into()))
        }
    }
}
