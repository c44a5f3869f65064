//! Waiting for a semaphore permit with an optional bound, shared by the concurrency limit and
//! the bulkhead.
//!
//! Admission first tries `Semaphore::try_acquire_owned`, which neither allocates nor waits. Only
//! a call that has to wait builds a [`PermitWait`]: tokio's `acquire_owned` future is an
//! `async fn` whose type cannot be named, so it is boxed (one allocation, on the waiting path
//! only). tokio's semaphore is fair: permits go to waiters in arrival order, and a newcomer's
//! `try_acquire` fails while anyone is queued, so waiters are never overtaken.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project::pin_project;
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep_until, Instant, Sleep};

type Acquire =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send + Sync>>;

/// A call waiting for a permit, until `deadline` if any.
#[pin_project]
pub(crate) struct PermitWait {
    acquire: Acquire,
    #[pin]
    timer: Option<Sleep>,
}

impl std::fmt::Debug for PermitWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermitWait")
            .field("bounded", &self.timer.is_some())
            .finish_non_exhaustive()
    }
}

/// How a wait ended.
pub(crate) enum Waited {
    Acquired(OwnedSemaphorePermit),
    TimedOut,
}

impl PermitWait {
    pub(crate) fn new(semaphore: Arc<Semaphore>, deadline: Option<Instant>) -> Self {
        Self {
            acquire: Box::pin(semaphore.acquire_owned()),
            timer: deadline.map(sleep_until),
        }
    }

    /// Polls the wait. A permit granted at the same instant as the timer fires wins.
    pub(crate) fn poll_wait(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Waited> {
        let this = self.project();
        match this.acquire.as_mut().poll(cx) {
            Poll::Ready(Ok(permit)) => return Poll::Ready(Waited::Acquired(permit)),
            // Our semaphores are never closed; treat it as a wait that cannot succeed.
            Poll::Ready(Err(_closed)) => return Poll::Ready(Waited::TimedOut),
            Poll::Pending => {}
        }
        match this.timer.as_pin_mut() {
            Some(timer) => timer.poll(cx).map(|()| Waited::TimedOut),
            None => Poll::Pending,
        }
    }
}
