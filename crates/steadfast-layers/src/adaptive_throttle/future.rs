use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;

use super::layer::Shared;
use super::Overloaded;
use crate::classify::{Classifier, Outcome};
use crate::BoxError;

/// The response future of [`Throttle`](super::Throttle): drives the inner call, then counts it
/// as accepted or not.
#[pin_project]
pub struct ResponseFuture<F, C> {
    #[pin]
    kind: Kind<F, C>,
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

impl<F, C> std::fmt::Debug for ResponseFuture<F, C> {
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

impl<F, C> ResponseFuture<F, C> {
    pub(super) fn called(fut: F, classifier: C, index: u64, shared: Arc<Shared>) -> Self {
        Self {
            kind: Kind::Called {
                fut,
                classifier,
                index,
                shared,
            },
        }
    }

    pub(super) fn rejected(error: Overloaded) -> Self {
        Self {
            kind: Kind::Rejected { error },
        }
    }
}

impl<F, C, Res, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    C: Classifier<Res, E>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { error } => Poll::Ready(Err((*error).into())),
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
                Poll::Ready(result.map_err(Into::into))
            }
        }
    }
}
