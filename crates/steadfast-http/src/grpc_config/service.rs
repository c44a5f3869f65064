use std::sync::Arc;
use std::task::{Context, Poll};

use steadfast_layers::classify::Classifier;
use steadfast_layers::retry::RetryBudget;
use tower_layer::Layer;
use tower_service::Service;

use super::future::{MethodFuture, RecordFuture};
use crate::classify::GrpcClassifier;

/// One method's stack: the retrying stack or the hedging stack (see
/// [`ServiceConfigLayer`](super::ServiceConfigLayer)); both answer alike.
///
/// ```
/// use steadfast_http::grpc_config::MethodStack;
/// let s: MethodStack<u8, u16> = MethodStack::Retrying(1);
/// assert!(matches!(s, MethodStack::Retrying(1)));
/// ```
#[derive(Clone, Debug)]
pub enum MethodStack<R, H> {
    /// A method with a `retryPolicy`, or with none (one attempt).
    Retrying(R),
    /// A method with a `hedgingPolicy`.
    Hedging(H),
}

impl<R, H, Req> Service<Req> for MethodStack<R, H>
where
    R: Service<Req>,
    H: Service<Req, Response = R::Response, Error = R::Error>,
{
    type Response = R::Response;
    type Error = R::Error;
    type Future = MethodFuture<R::Future, H::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), R::Error>> {
        match self {
            MethodStack::Retrying(r) => r.poll_ready(cx),
            MethodStack::Hedging(h) => h.poll_ready(cx),
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self {
            MethodStack::Retrying(r) => MethodFuture::retrying(r.call(req)),
            MethodStack::Hedging(h) => MethodFuture::hedging(h.call(req)),
        }
    }
}

/// Records each attempt's outcome into a shared retry budget (A6's `retryThrottling` bucket),
/// under a hedge layer, which only withdraws from a shared budget: each attempt whose status
/// is one of `nonFatalStatusCodes` takes a token, each success returns `tokenRatio`.
#[derive(Clone, Debug)]
pub(super) struct ThrottleRecordLayer {
    shared: Option<Arc<Recorder>>,
}

#[derive(Debug)]
pub(super) struct Recorder {
    classifier: GrpcClassifier,
    budget: Arc<dyn RetryBudget>,
}

impl ThrottleRecordLayer {
    pub(super) fn new(classifier: GrpcClassifier, budget: Option<Arc<dyn RetryBudget>>) -> Self {
        ThrottleRecordLayer {
            shared: budget.map(|budget| Arc::new(Recorder { classifier, budget })),
        }
    }
}

impl<S> Layer<S> for ThrottleRecordLayer {
    type Service = ThrottleRecord<S>;

    fn layer(&self, inner: S) -> ThrottleRecord<S> {
        ThrottleRecord {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service of the hedging stack that records each attempt's outcome into the channel's
/// `retryThrottling` bucket (nothing without one).
#[derive(Clone, Debug)]
pub struct ThrottleRecord<S> {
    inner: S,
    shared: Option<Arc<Recorder>>,
}

impl<S, Req> Service<Req> for ThrottleRecord<S>
where
    S: Service<Req>,
    GrpcClassifier: Classifier<S::Response, S::Error>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = RecordFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        RecordFuture::new(self.inner.call(req), self.shared.clone())
    }
}

impl Recorder {
    pub(super) fn record<T, E>(&self, result: &Result<T, E>)
    where
        GrpcClassifier: Classifier<T, E>,
    {
        self.budget.record(&self.classifier.classify(result));
    }
}
