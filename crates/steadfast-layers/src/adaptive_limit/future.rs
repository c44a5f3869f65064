use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use tokio::time::Instant;

use super::layer::Core;
use super::{Algorithm, Overloaded};
use crate::classify::{Classifier, Outcome};
use crate::deadline::DeadlineExceeded;
use crate::telemetry::ERROR_TYPE_KEY;
use crate::BoxError;

/// The response future of [`AdaptiveLimit`](super::AdaptiveLimit): drives the inner call,
/// then measures it and frees its slot.
#[pin_project]
pub struct ResponseFuture<F, C, A> {
    #[pin]
    kind: Kind<F, C, A>,
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

impl<F, C, A> std::fmt::Debug for ResponseFuture<F, C, A> {
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

impl<F, C, A> ResponseFuture<F, C, A> {
    pub(super) fn admitted(fut: F, classifier: C, guard: InFlight<A>) -> Self {
        Self {
            kind: Kind::Admitted {
                fut,
                classifier,
                guard: Some(guard),
            },
        }
    }

    pub(super) fn rejected(error: Overloaded) -> Self {
        Self {
            kind: Kind::Rejected { error },
        }
    }
}

impl<F, C, A, Res, E> Future for ResponseFuture<F, C, A>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    C: Classifier<Res, E>,
    A: Algorithm,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { error } => Poll::Ready(Err((*error).into())),
            KindProj::Admitted {
                fut,
                classifier,
                guard,
            } => {
                let result = ready!(fut.poll(cx));
                let outcome = classifier.classify(&result);
                let result = result.map_err(Into::into);
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

    fn finish<Res>(mut self, outcome: Outcome, result: &Result<Res, BoxError>) {
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
