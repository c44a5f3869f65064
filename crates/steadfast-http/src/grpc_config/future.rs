use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project::pin_project;
use steadfast_layers::classify::Classifier;

use super::service::Recorder;
use crate::classify::GrpcClassifier;

/// The response future of [`MethodStack`](super::MethodStack).
#[pin_project(project = MethodProj)]
#[derive(Debug)]
pub enum MethodFuture<R, H> {
    /// The retrying stack's future.
    Retrying(#[pin] R),
    /// The hedging stack's future.
    Hedging(#[pin] H),
}

impl<R, H> MethodFuture<R, H> {
    pub(super) fn retrying(f: R) -> Self {
        MethodFuture::Retrying(f)
    }

    pub(super) fn hedging(f: H) -> Self {
        MethodFuture::Hedging(f)
    }
}

impl<R, H> Future for MethodFuture<R, H>
where
    R: Future,
    H: Future<Output = R::Output>,
{
    type Output = R::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<R::Output> {
        match self.project() {
            MethodProj::Retrying(f) => f.poll(cx),
            MethodProj::Hedging(f) => f.poll(cx),
        }
    }
}

/// The response future of [`ThrottleRecord`](super::ThrottleRecord): the attempt's result,
/// recorded into the bucket when it arrives.
#[pin_project]
#[derive(Debug)]
pub struct RecordFuture<F> {
    #[pin]
    inner: F,
    shared: Option<Arc<Recorder>>,
}

impl<F> RecordFuture<F> {
    pub(super) fn new(inner: F, shared: Option<Arc<Recorder>>) -> Self {
        RecordFuture { inner, shared }
    }
}

impl<F, T, E> Future for RecordFuture<F>
where
    F: Future<Output = Result<T, E>>,
    GrpcClassifier: Classifier<T, E>,
{
    type Output = Result<T, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Some(shared) = this.shared.take() {
            shared.record(&result);
        }
        Poll::Ready(result)
    }
}
