//! A deadline arms no timer of its own while a timer inside it, polled with the same task's
//! waker, ends no later (ADR 0008, decision 16), and is enforced by its own timer whenever
//! nothing covers it: the inner timer gone, polled with another waker, dropped in the poll that
//! marked it, or ending later. Unit tests, because they count the timers armed.

use std::future::{pending, Future};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::{sleep, timeout, Instant};
use tower::{service_fn, Layer, ServiceBuilder, ServiceExt};

use super::{Deadline, DeadlineExceeded, DeadlineLayer};
use crate::timeout::{AttemptTimeoutLayer, Elapsed};
use crate::timer::ARMED;
use crate::BoxError;

const DEADLINE: Duration = Duration::from_secs(1);
/// Longer than any test's deadline: a test that reaches it found its deadline unenforced.
const GUARD: Duration = Duration::from_secs(60);

fn deadline(t: Duration) -> DeadlineLayer {
    DeadlineLayer::new(t).unwrap()
}

fn attempt(t: Duration) -> AttemptTimeoutLayer {
    AttemptTimeoutLayer::new(t).unwrap()
}

fn armed() -> u32 {
    ARMED.with(|n| n.replace(0))
}

/// Never answers.
async fn stuck(_: ()) -> Result<(), BoxError> {
    pending().await
}

/// What a call through `svc` ended with, and when, on the paused clock; `GUARD` passing first
/// fails the test.
async fn outcome<S>(svc: S) -> (BoxError, Duration)
where
    S: tower::Service<(), Response = (), Error = BoxError>,
{
    armed();
    let start = Instant::now();
    let err = timeout(GUARD, svc.oneshot(()))
        .await
        .expect("the deadline was not enforced")
        .expect_err("the call cannot succeed");
    (err, start.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_deadline_over_a_longer_attempt_timeout_arms_one_timer() {
    let svc = ServiceBuilder::new()
        .layer(deadline(DEADLINE))
        .layer(attempt(Duration::from_secs(10)))
        .service(service_fn(stuck));
    let (err, took) = outcome(svc).await;
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(took, DEADLINE);
    assert_eq!(
        armed(),
        1,
        "the attempt's timer, capped at the deadline, and no other"
    );
}

#[tokio::test(start_paused = true)]
async fn a_deadline_over_a_shorter_attempt_timeout_arms_one_timer() {
    let svc = ServiceBuilder::new()
        .layer(deadline(DEADLINE))
        .layer(attempt(Duration::from_millis(100)))
        .service(service_fn(stuck));
    let (err, took) = outcome(svc).await;
    assert!(err.is::<Elapsed>(), "{err}");
    assert_eq!(took, Duration::from_millis(100));
    assert_eq!(armed(), 1);
}

#[tokio::test(start_paused = true)]
async fn nested_deadlines_arm_the_inner_timer_only() {
    let svc = ServiceBuilder::new()
        .layer(deadline(Duration::from_secs(2)))
        .layer(deadline(DEADLINE))
        .service(service_fn(stuck));
    let (err, took) = outcome(svc).await;
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(took, DEADLINE);
    assert_eq!(armed(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_arms_its_own_timer_once_the_timer_inside_is_gone() {
    // An attempt that answers in 5 ms, then a wait with no timer inside.
    let svc = deadline(DEADLINE).layer(service_fn(|()| async {
        let quick = attempt(Duration::from_millis(10)).layer(service_fn(|()| async {
            sleep(Duration::from_millis(5)).await;
            Ok::<_, BoxError>(())
        }));
        quick.oneshot(()).await?;
        pending::<Result<(), BoxError>>().await
    }));
    let (err, took) = outcome(svc).await;
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(took, DEADLINE);
    assert_eq!(armed(), 2, "the attempt's, then the deadline's own");
}

/// Polls `inner` on every poll, with another waker or dropping it at once, and never answers.
struct Sneaky<F> {
    inner: Option<Pin<Box<F>>>,
    noop_waker: bool,
}

impl<F: Future> Future for Sneaky<F> {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.noop_waker {
            if let Some(inner) = self.inner.as_mut() {
                let mut other = Context::from_waker(Waker::noop());
                let _ = inner.as_mut().poll(&mut other);
            }
        } else if let Some(mut inner) = self.inner.take() {
            // Polled with this task's waker (its timer marks the poll), then dropped in the
            // same poll.
            let _ = inner.as_mut().poll(cx);
        }
        Poll::Pending
    }
}

/// A call under [`DEADLINE`] whose inner future is a [`Sneaky`] around a pending attempt (its
/// timer capped at the deadline): it must still end at the deadline, by the deadline's own timer.
async fn sneaky_call_ends_at_the_deadline(noop_waker: bool) {
    let svc = deadline(DEADLINE).layer(service_fn(move |()| Sneaky {
        inner: Some(Box::pin(
            attempt(Duration::from_secs(10))
                .layer(service_fn(stuck))
                .oneshot(()),
        )),
        noop_waker,
    }));
    let (err, took) = outcome(svc).await;
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(took, DEADLINE);
    assert_eq!(armed(), 2, "the attempt's and the deadline's own");
}

#[tokio::test(start_paused = true)]
async fn a_timer_polled_with_another_waker_does_not_cover_the_deadline() {
    sneaky_call_ends_at_the_deadline(true).await;
}

#[tokio::test(start_paused = true)]
async fn a_timer_dropped_in_the_poll_that_marked_it_does_not_cover_the_deadline() {
    sneaky_call_ends_at_the_deadline(false).await;
}

#[tokio::test(start_paused = true)]
async fn a_timer_ending_after_the_deadline_does_not_cover_it() {
    // An attempt in a scope of 10 s made outside the call (so not shrunk to its deadline),
    // polled inside a deadline of 1 s: its timer, capped at 10 s, marks the poll.
    let mut early = Some(
        Deadline::after(Duration::from_secs(10)).unwrap().scope(
            attempt(Duration::from_secs(30))
                .layer(service_fn(stuck))
                .oneshot(()),
        ),
    );
    let svc = deadline(DEADLINE).layer(service_fn(move |()| early.take().expect("called once")));
    let (err, took) = outcome(svc).await;
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(took, DEADLINE);
    assert_eq!(
        armed(),
        2,
        "the attempt's, ending later, and the deadline's own"
    );
}
