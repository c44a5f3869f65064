use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;

use super::Overloaded;
use crate::BoxError;

/// The response future of [`LoadShed`](super::LoadShed).
#[pin_project]
#[derive(Debug)]
pub struct ResponseFuture<F> {
    #[pin]
    kind: Kind<F>,
}

#[pin_project(project = KindProj)]
#[derive(Debug)]
enum Kind<F> {
    Called {
        #[pin]
        fut: F,
    },
    Shed,
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(super) fn called(fut: F) -> Self {
        Self {
            kind: Kind::Called { fut },
        }
    }

    /// A shed call: its `Overloaded` error is built when polled, keeping the future small.
    pub(super) fn shed() -> Self {
        Self { kind: Kind::Shed }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { fut } => fut.poll(cx).map_err(Into::into),
            KindProj::Shed => Poll::Ready(Err(Overloaded::new(
                "shed",
                super::OverloadReason::NotReady,
            )
            .into())),
        }
    }
}
