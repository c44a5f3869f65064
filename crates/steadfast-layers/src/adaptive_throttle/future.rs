use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;

use super::layer::Shared;
use super::Overloaded;
use crate::classify::{Classifier, Outcome};
use crate::error_type::{Boxed, MakeError, MakeRefusal};

/// The response future of [`Throttle`](super::Throttle): drives the inner call, then counts it
/// as accepted or not. A local rejection becomes the service's error when polled: boxed with
/// [`Boxed`], the default, or made into the caller's type without allocating (see
/// [`ThrottleLayer::with_error`](super::ThrottleLayer::with_error)).
#[pin_project]
pub struct ResponseFuture<F, C, K = Boxed> {
    #[pin]
    kind: Kind<F, C>,
    _error: PhantomData<fn() -> K>,
}

#[pin_project(project = KindProj)]
enum Kind<F, C> {
    Called {
        #[pin]
        fut: F,
        classifier: C,
        /// The window bucket the request was counted in.
        index: u64,
        shared: Arc<Shared>,
    },
    Rejected {
        error: Overloaded,
    },
}

impl<F, C, K> std::fmt::Debug for ResponseFuture<F, C, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Called { .. } => "called",
            Kind::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

impl<F, C, K> ResponseFuture<F, C, K> {
    pub(super) fn called(fut: F, classifier: C, index: u64, shared: Arc<Shared>) -> Self {
        Self {
            kind: Kind::Called {
                fut,
                classifier,
                index,
                shared,
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

impl<F, C, K, Res, E> Future for ResponseFuture<F, C, K>
where
    F: Future<Output = Result<Res, E>>,
    K: MakeRefusal<E, Overloaded>,
    C: Classifier<Res, E>,
{
    type Output = Result<Res, <K as MakeError<E>>::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { error } => Poll::Ready(Err(K::refusal(*error))),
            KindProj::Called {
                fut,
                classifier,
                index,
                shared,
            } => {
                let result = ready!(fut.poll(cx));
                // The backend accepted the request if it answered it, even with a failure that is
                // the request's own fault; not if it refused it for load or never got it.
                let accepted = matches!(
                    classifier.classify(&result),
                    Outcome::Success | Outcome::Fatal { .. }
                );
                if accepted {
                    shared.window.add_accept(*index);
                }
                Poll::Ready(result.map_err(K::inner))
            }
        }
    }
}
