use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use tokio::time::Instant;

use super::layer::Core;
use super::{Algorithm, Overloaded};
use crate::classify::{AsErrorRef, Classifier, Outcome};
use crate::deadline::DeadlineExceeded;
use crate::error_type::{Boxed, MakeError, MakeRefusal};
use crate::telemetry::ERROR_TYPE_KEY;

/// The response future of [`AdaptiveLimit`](super::AdaptiveLimit): drives the inner call,
/// then measures it and frees its slot. A refusal becomes the service's error when polled: boxed
/// with [`Boxed`], the default, or made into the caller's type without allocating (see
/// [`AdaptiveLimitLayer::with_error`](super::AdaptiveLimitLayer::with_error)).
#[pin_project]
pub struct ResponseFuture<F, C, A, K = Boxed> {
    #[pin]
    kind: Kind<F, C, A>,
    _error: PhantomData<fn() -> K>,
}

#[pin_project(project = KindProj)]
enum Kind<F, C, A> {
    Admitted {
        #[pin]
        fut: F,
        classifier: C,
        guard: Option<InFlight<A>>,
    },
    Rejected {
        error: Overloaded,
    },
}

impl<F, C, A, K> std::fmt::Debug for ResponseFuture<F, C, A, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Admitted { .. } => "admitted",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl<F, C, A, K> ResponseFuture<F, C, A, K> {
    pub(super) fn admitted(fut: F, classifier: C, guard: InFlight<A>) -> Self {
        Self {
            kind: Kind::Admitted {
                fut,
                classifier,
                guard: Some(guard),
            },
            _error: PhantomData,
        }
    }

    pub(super) fn rejected(error: Overloaded) -> Self {
        Self {
            kind: Kind::Rejected { error },
            _error: PhantomData,
        }
    }
}

impl<F, C, A, K, Res, E> Future for ResponseFuture<F, C, A, K>
where
    F: Future<Output = Result<Res, E>>,
    K: MakeRefusal<E, Overloaded>,
    <K as MakeError<E>>::Error: AsErrorRef,
    C: Classifier<Res, E>,
    A: Algorithm,
{
    type Output = Result<Res, <K as MakeError<E>>::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { error } => Poll::Ready(Err(K::refusal(*error))),
            KindProj::Admitted {
                fut,
                classifier,
                guard,
            } => {
                let result = ready!(fut.poll(cx));
                let outcome = classifier.classify(&result);
                let result = result.map_err(K::inner);
                if let Some(guard) = guard.take() {
                    guard.finish(outcome, &result);
                }
                Poll::Ready(result)
            }
        }
    }
}

/// One admitted call's slot: released exactly once, when the call is measured, or when its
/// future is dropped first (the caller gave up: measured as a drop whose round-trip time is at
/// least the time waited).
pub(super) struct InFlight<A> {
    core: Arc<Core<A>>,
    started: Instant,
    in_flight: usize,
    released: bool,
    /// `Core::<A>::record_cancelled`, set where `A: Algorithm` is known (a `Drop` impl cannot
    /// carry that bound).
    on_cancel: fn(&Core<A>, Instant, usize),
}

impl<A: Algorithm> InFlight<A> {
    pub(super) fn new(core: Arc<Core<A>>, started: Instant, in_flight: usize) -> Self {
        Self {
            core,
            started,
            in_flight,
            released: false,
            on_cancel: Core::<A>::record_cancelled,
        }
    }

    /// `result` is the call's, as the service returns it: a [`DeadlineExceeded`] is found in a
    /// `BoxError` or, with [`Typed<E>`](crate::error_type::Typed), in the caller's `E` through
    /// [`AsErrorRef`].
    fn finish<Res, Err: AsErrorRef>(mut self, outcome: Outcome, result: &Result<Res, Err>) {
        self.released = true;
        let core = &*self.core;
        core.gate.release();
        let now = Instant::now();
        let rtt = now.saturating_duration_since(self.started);
        let reason = match outcome {
            Outcome::Success => None,
            Outcome::Retryable { reason, .. } | Outcome::Pushback { reason } => Some(reason),
            // A deadline that expired while the call ran is a timeout: the backend did not answer
            // in time. (One refused before the call started, in no time, says nothing.)
            Outcome::Fatal { .. }
                if !rtt.is_zero()
                    && result
                        .as_ref()
                        .err()
                        .and_then(AsErrorRef::as_error_ref)
                        .is_some_and(|e| e.is::<DeadlineExceeded>()) =>
            {
                Some("deadline_exceeded")
            }
            // A fatal failure (a bad request) or a call never sent says nothing about load: not
            // measured.
            _ => return,
        };
        if let Some(reason) = reason {
            core.attrs
                .with(ERROR_TYPE_KEY, reason, |a| core.drops.add(1, a));
        }
        core.record(rtt, self.in_flight, reason.is_some(), true, now);
    }
}

impl<A> Drop for InFlight<A> {
    fn drop(&mut self) {
        if !self.released {
            self.core.gate.release();
            // Not while unwinding: a panic is not a measurement.
            if !std::thread::panicking() {
                (self.on_cancel)(&self.core, self.started, self.in_flight);
            }
        }
    }
}
