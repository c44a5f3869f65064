use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use tokio::time::Instant;

use super::layer::Core;
use super::{Algorithm, Overloaded};
use crate::classify::{Classifier, Outcome};
use crate::telemetry::REASON_KEY;
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
                if let Some(guard) = guard.take() {
                    guard.finish(classifier.classify(&result));
                }
                Poll::Ready(result.map_err(Into::into))
            }
        }
    }
}

/// One admitted call's slot: released exactly once, when the call is measured or when it is
/// dropped unmeasured.
pub(super) struct InFlight<A> {
    core: Arc<Core<A>>,
    started: Instant,
    in_flight: usize,
    released: bool,
}

impl<A> InFlight<A> {
    pub(super) fn new(core: Arc<Core<A>>, started: Instant, in_flight: usize) -> Self {
        Self {
            core,
            started,
            in_flight,
            released: false,
        }
    }
}

impl<A: Algorithm> InFlight<A> {
    fn finish(mut self, outcome: Outcome) {
        self.released = true;
        let core = &*self.core;
        core.gate.release();
        let dropped = match outcome {
            Outcome::Success => false,
            Outcome::Retryable { reason, .. } | Outcome::Pushback { reason } => {
                core.attrs
                    .with(REASON_KEY, reason, |a| core.drops.add(1, a));
                true
            }
            // A fatal failure (a bad request) or a call never sent says nothing about load: not
            // measured.
            _ => return,
        };
        let now = Instant::now();
        core.record(
            now.saturating_duration_since(self.started),
            self.in_flight,
            dropped,
            now,
        );
    }
}

impl<A> Drop for InFlight<A> {
    fn drop(&mut self) {
        if !self.released {
            self.core.gate.release();
        }
    }
}
