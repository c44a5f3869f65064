use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project::pin_project;

use super::Overloaded;
use crate::error_type::{Boxed, MakeError, MakeRefusal};

/// The response future of [`LoadShed`](super::LoadShed). A shed call's error is made when
/// polled: boxed with [`Boxed`], the default, or made into the caller's type without allocating
/// (see [`LoadShedLayer::with_error`](super::LoadShedLayer::with_error)).
#[pin_project]
pub struct ResponseFuture<F, K = Boxed> {
    #[pin]
    kind: Kind<F>,
    _error: PhantomData<fn() -> K>,
}

impl<F: fmt::Debug, K> fmt::Debug for ResponseFuture<F, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("kind", &self.kind)
            .finish()
    }
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

impl<F, K> ResponseFuture<F, K> {
    #[inline]
    pub(super) fn called(fut: F) -> Self {
        Self {
            kind: Kind::Called { fut },
            _error: PhantomData,
        }
    }

    /// A shed call: its `Overloaded` error is built when polled, keeping the future small.
    pub(super) fn shed() -> Self {
        Self {
            kind: Kind::Shed,
            _error: PhantomData,
        }
    }
}

impl<F, T, E, K> Future for ResponseFuture<F, K>
where
    F: Future<Output = Result<T, E>>,
    K: MakeRefusal<E, Overloaded>,
{
    type Output = Result<T, <K as MakeError<E>>::Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called { fut } => fut.poll(cx).map_err(K::inner),
            KindProj::Shed => Poll::Ready(Err(K::refusal(Overloaded::new(
                "shed",
                super::OverloadReason::NotReady,
            )))),
        }
    }
}
